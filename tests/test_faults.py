"""Faults that used to pass silently (issue 11), each fed for real: the run fails or warns naming
the folder, file, line, key or split at fault, and nothing written before is lost."""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import TINY_CORPUS, TINY_MODEL, compose_train

from tmaps.checkpoint import CheckpointWriteError, check_writable, read_checkpoint, save_checkpoint
from tmaps.commands.train import plain, train
from tmaps.data import SpeechDataModule
from tmaps.data.dataset import SpeechDataset
from tmaps.data.features import LogMel
from tmaps.data.manifest import SPLITS, read_manifest, write_manifest
from tmaps.data.readers import read_generic_manifest
from tmaps.introspect import Profiles
from tmaps.text import Alphabet
from tmaps.training.schema import ConfigTypeError, check_config_types

# One short epoch of the tiny model, with only the CSV logger; on the tiny synthetic corpus
# (TINY_CORPUS) or on manifests (manifest_data).
BRIEF_RUN = [
    *TINY_MODEL,
    "trainer.max_epochs=1",
    "logger=csv",
    "callbacks=none",
    "data.batching.num_workers=0",
    "data.batching.max_batch_seconds=12",
]
UNSAFE_ADVICE = ("weights_only=False", "`weights_only` set to `False`", "allow_pickle")


@contextlib.contextmanager
def file_size_limit(max_bytes: int):
    """No file of this process may grow past ``max_bytes``: writes beyond fail as on a full disk (EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def manifest_data(folder: Path) -> list[str]:
    """Overrides that read the JSONL manifests in ``folder`` with ``data=manifest``."""
    splits = ",".join(f"{split}:{split}.jsonl" for split in SPLITS if (folder / f"{split}.jsonl").is_file())
    return ["data=manifest", f"data.source.path={folder}", f"data.source.splits={{{splits}}}"]


def copy_corpus(corpus: Path, folder: Path, splits=SPLITS) -> dict[str, list[dict]]:
    """The manifests of ``splits`` of ``corpus`` written into ``folder`` (the audio stays where it is); their records."""
    records = {split: read_manifest(corpus / f"{split}.jsonl") for split in splits}
    for split, split_records in records.items():
        write_manifest(split_records, folder / f"{split}.jsonl")
    return records


def csv_metrics(run_dir: Path) -> list[dict]:
    return list(csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open()))


def checkpoint_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("checkpoints/*.ckpt"))


# Checkpoints


def test_a_checkpoint_folder_that_cannot_be_written_stops_the_run_before_training(tmp_path, synth_data_dir):
    (tmp_path / "notes.txt").write_text("written before")
    (tmp_path / "checkpoints").write_text("a file where the checkpoint folder should be")
    cfg = compose_train([*BRIEF_RUN, *TINY_CORPUS], tmp_path, synth_data_dir)
    with pytest.raises(CheckpointWriteError, match=f"checkpoints cannot be written into the folder {re.escape(str(tmp_path / 'checkpoints'))}"):
        train(cfg)
    assert (tmp_path / "notes.txt").read_text() == "written before"
    assert (tmp_path / "checkpoints").read_text() == "a file where the checkpoint folder should be"
    assert not (tmp_path / "csv").exists(), "training started"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_checkpoint_folder_is_named(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir(mode=0o555)
    with pytest.raises(CheckpointWriteError, match=f"folder {re.escape(str(folder))}.*Permission denied"):
        check_writable(folder)


def test_a_checkpoint_write_that_fails_midway_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    save_checkpoint({"weights": torch.zeros(4)}, path)
    before = path.read_bytes()
    with file_size_limit(64 * 1024), pytest.raises(CheckpointWriteError, match=f"{re.escape(str(path))} into the folder {re.escape(str(path.parent))}"):
        save_checkpoint({"weights": torch.ones(1_000_000)}, path)
    assert path.read_bytes() == before
    assert list(path.parent.iterdir()) == [path], "a partial file was left behind"


def test_training_fails_when_lightning_cannot_write_a_checkpoint(tmp_path, synth_data_dir):
    cfg = compose_train([*BRIEF_RUN, *TINY_CORPUS], tmp_path, synth_data_dir)
    SpeechDataModule(**plain(cfg.data)).prepare_data()  # the corpus is written before the limit
    previous = tmp_path / "checkpoints" / "last.ckpt"
    save_checkpoint({"previous": torch.arange(3)}, previous)
    with file_size_limit(64 * 1024), pytest.raises(CheckpointWriteError, match=re.escape(str(tmp_path / "checkpoints"))):
        train(cfg)
    assert torch.equal(torch.load(previous, weights_only=True)["previous"], torch.arange(3))
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_callbacks_none_keeps_checkpointing_and_checkpoints_none_says_so(tmp_path, synth_data_dir, caplog):
    train(compose_train([*BRIEF_RUN, *TINY_CORPUS, "test=false"], tmp_path / "kept", synth_data_dir))
    assert {path.name for path in checkpoint_files(tmp_path / "kept")} >= {"last.ckpt"} and len(checkpoint_files(tmp_path / "kept")) == 2
    with caplog.at_level(logging.WARNING):
        train(compose_train([*BRIEF_RUN, *TINY_CORPUS, "test=false", "checkpoints=none"], tmp_path / "none", synth_data_dir))
    assert "checkpoints=none: this run writes no checkpoint" in caplog.text
    assert not checkpoint_files(tmp_path / "none")


# Run folders and config types


def test_runs_started_together_get_a_folder_each_and_a_bad_type_is_named(tmp_path):
    environment = {**os.environ, "TMAPS_ROOT": str(tmp_path), "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "tmaps.commands.train", "hydra.run.dir=${new_folder:runs/same}", f"seed={seed}", "trainer.max_epochs=abc"],
            cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for seed in (1, 2, 3)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode != 0 for run in runs)
    message = "tmaps-train: config values of the wrong type or unknown keys: trainer.max_epochs='abc': expected int or None, got str"
    for _, stderr in outputs:
        assert stderr.strip().splitlines() == [message], stderr  # one line, no traceback
    assert [path.name for path in tmp_path.iterdir()] == ["runs"], "a run made another folder (the unused sweep folder?)"
    folders = sorted((tmp_path / "runs").iterdir())
    assert [folder.name for folder in folders] == ["same", "same_2", "same_3"]
    seeds = sorted(next(line for line in (folder / ".hydra" / "overrides.yaml").read_text().splitlines() if "seed=" in line) for folder in folders)
    assert seeds == ["- seed=1", "- seed=2", "- seed=3"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_epochs=abc", "trainer.fast_dev_run=true"], "trainer.max_epochs='abc': expected int or None, got str"),
        (["optim.lr=fast"], "optim.lr='fast': expected float, got str"),
        (["optim.schedule=linear"], "optim.schedule='linear': expected 'constant' or 'cosine' or 'onecycle', got str"),
        (["+trainer.max_epoch=3"], "trainer.max_epoch: Trainer has no such argument"),
        (["checkpoints.best.save_top_k=all"], "checkpoints.best.save_top_k='all': expected int, got str"),
        (["model.arch=transformer"], "model.arch='transformer': expected one of ['conformer', 'wav2letter']"),
        (["data.batching.num_workers=many"], "data.batching.num_workers='many': expected int, got str"),
        (["+data.features.n_mel=80"], "data.features.n_mel: FeatureOptions has no such argument"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_a_config_value_of_the_wrong_type_is_named_before_anything_runs(overrides, message, tmp_path, synth_data_dir):
    cfg = compose_train([*BRIEF_RUN, *TINY_CORPUS, *overrides], tmp_path, synth_data_dir)
    with pytest.raises(ConfigTypeError, match=re.escape(message)):
        train(cfg)
    assert not any(tmp_path.iterdir())


SHIPPED = [
    *([f"experiment={name}"] for name in ("quickstart", "transfer_de", "source_en")),
    *([f"model={name}"] for name in ("small", "wav2letter", "conformer_small")),
]


@pytest.mark.parametrize("overrides", SHIPPED, ids=lambda overrides: overrides[0])
def test_every_shipped_experiment_and_model_passes_the_type_check(overrides, tmp_path, synth_data_dir):
    check_config_types(compose_train(overrides, tmp_path, synth_data_dir))


# Data


def test_a_damaged_feature_cache_file_is_named_and_computed_anew(synth_corpus_en, tmp_path, caplog):
    records = read_manifest(synth_corpus_en / "dev.jsonl")[:2]
    for record in records:
        record["duration"] = 1.0
    dataset = SpeechDataset(records, Alphabet.for_language("en"), LogMel(), on_error="error", feature_cache=tmp_path)
    fresh = dataset[0]["features"]
    (cached,) = list(tmp_path.glob("*/*.pt"))
    cached.write_bytes(cached.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        assert torch.equal(dataset[0]["features"], fresh)
    assert f"feature cache file {cached} (utterance {records[0]['id']}) cannot be read" in caplog.text
    assert torch.equal(torch.load(cached, weights_only=True), fresh), "the cache file was not rebuilt"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('["en-0001", "audio/x.flac", "hello"]', "a record is a JSON object, this line holds an array"),
        ('{"id": "en-0001", "audio": "audio/x.flac", "text": null}', "text is null; id, audio, text must be strings"),
    ],
)
def test_a_malformed_line_of_a_built_manifest_is_named_by_file_and_line(synth_corpus_en, tmp_path, line, message):
    lines = (synth_corpus_en / "dev.jsonl").read_text().splitlines()[:2]
    manifest = tmp_path / "dev.jsonl"
    manifest.write_text("\n".join([*lines, line]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{manifest}:3: {message}")):
        read_manifest(manifest)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("set.jsonl", '{"audio": "a.flac", "text": "one"}\n\n{"audio": "b.flac", "text": null}\n', ":3: column 'text' holds null, not text"),
        ("set.jsonl", '{"audio": "a.flac", "text": "one"}\n"b.flac"\n', ":2: a row is a JSON object, this line holds a string"),
        ("set.csv", "audio,text\na.flac,one\nb.flac\n", ":3: column 'text' holds null, not text"),
    ],
)
def test_a_missing_transcript_in_a_corpus_manifest_is_an_error_never_the_text_none(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / name}{message}")):
        read_generic_manifest(tmp_path, {"train": name})


def test_skipped_utterances_are_counted_per_split_and_reason_at_the_end_of_the_run(synth_corpus_en, tmp_path, synth_data_dir, capsys):
    corpus = tmp_path / "corpus"
    records = copy_corpus(synth_corpus_en, corpus)
    truncated = tmp_path / "truncated.flac"
    whole = Path(records["train"][0]["audio"]).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 3])  # the header reads, the audio does not decode
    records["train"][0]["audio"] = str(truncated)
    records["train"][1]["text"] = ""
    write_manifest(records["train"], corpus / "train.jsonl")
    run_dir = tmp_path / "run"
    train(compose_train([*BRIEF_RUN, *manifest_data(corpus)], run_dir, tmp_path / "data"))
    printed = capsys.readouterr().out
    table = printed[printed.index("tmaps: utterances kept and skipped per split") :].splitlines()
    assert re.search(r"^train\s+32\s+30\s+empty transcript: 1; cannot decode: 1$", "\n".join(table), re.M), printed
    assert re.search(r"^test_unseen\s+8\s+8\s+none$", "\n".join(table), re.M), printed
    (logged,) = [row for row in csv_metrics(run_dir) if row.get("data/train/kept")]
    assert (float(logged["data/train/kept"]), float(logged["data/train/skipped"]), float(logged["data/dev/skipped"])) == (30, 2, 0)


def test_an_empty_test_split_is_found_before_training_or_skipped_as_configured(synth_corpus_en, tmp_path, caplog, capsys):
    corpus = tmp_path / "corpus"
    records = copy_corpus(synth_corpus_en, corpus)
    write_manifest([{**record, "audio": str(tmp_path / "gone.flac")} for record in records["test_unseen"]], corpus / "test_unseen.jsonl")
    overrides = [*BRIEF_RUN, *manifest_data(corpus)]
    with pytest.raises(ValueError, match=r"split test_unseen is empty: no utterance of \S+test_unseen\.jsonl is left .*data\.empty_split=skip"):
        train(compose_train(overrides, tmp_path / "failed", tmp_path / "data"))
    assert not checkpoint_files(tmp_path / "failed") and not (tmp_path / "failed" / "csv" / "version_0" / "metrics.csv").exists(), "training started"
    with caplog.at_level(logging.WARNING):
        train(compose_train([*overrides, "data.empty_split=skip"], tmp_path / "run", tmp_path / "data"))
    assert "split test_unseen is empty" in caplog.text and "left out of testing (data.empty_split=skip)" in caplog.text
    results = capsys.readouterr().out.split("tmaps: test results")[1].split("tmaps: utterances")[0]
    assert re.search(r"^test\s+8\s", results, re.M) and "test_unseen" not in results


def test_a_missing_dev_split_names_the_config_key_that_sets_it(synth_corpus_en, tmp_path):
    corpus = tmp_path / "corpus"
    copy_corpus(synth_corpus_en, corpus, splits=("train", "test"))
    cfg = compose_train([*BRIEF_RUN, *manifest_data(corpus)], tmp_path / "run", tmp_path / "data")
    with pytest.raises(FileNotFoundError, match=f"training needs a dev split, and the corpus {re.escape(str(corpus))} has none: set data.source.splits.dev"):
        train(cfg)


# Transfer and misleading advice


@pytest.mark.parametrize("recipe", ["freeze", "finetune"])
def test_an_empty_transfer_init_from_is_an_error_naming_the_key(recipe, tmp_path, synth_data_dir):
    cfg = compose_train([*BRIEF_RUN, *TINY_CORPUS, f"transfer={recipe}", "transfer.init_from="], tmp_path, synth_data_dir)
    assert cfg.transfer.init_from == ""
    with pytest.raises(ValueError, match=r"transfer\.init_from is empty \(an unset shell variable\?\)"):
        train(cfg)
    assert not checkpoint_files(tmp_path)


def not_a_checkpoint(tmp_path: Path) -> dict[str, Path]:
    files = {"text": tmp_path / "notes.ckpt", "npz": tmp_path / "profiles.ckpt", "pickle": tmp_path / "objects.ckpt"}
    files["text"].write_text("hello\n" * 20)
    with files["npz"].open("wb") as out:
        np.savez(out, sums=np.zeros(3))
    torch.save({"state_dict": {}, "path": Path("x")}, files["pickle"])
    return files


def test_a_file_that_is_not_a_checkpoint_is_named_without_advising_unsafe_loading(tmp_path):
    files = not_a_checkpoint(tmp_path)
    expected = {
        "text": "is not a checkpoint: torch.save writes a zip archive holding data.pkl, and this file is not one",
        "npz": "is not a checkpoint: torch.save writes a zip archive holding data.pkl, and this file is not one",
        "pickle": "holds pathlib.PosixPath, not only tensors and plain values, so it is not a tmaps checkpoint",
    }
    for kind, path in files.items():
        with pytest.raises(ValueError) as error:
            read_checkpoint(path)
        assert str(path) in str(error.value) and expected[kind] in str(error.value)
        assert not any(advice in str(error.value) for advice in UNSAFE_ADVICE), str(error.value)


def test_a_file_that_is_not_profiles_is_named_without_advising_unsafe_loading(tmp_path):
    text, checkpoint, objects = tmp_path / "notes.npz", tmp_path / "model.npz", tmp_path / "objects.npz"
    text.write_text("hello\n" * 20)
    torch.save({"weights": torch.zeros(2)}, checkpoint)
    np.savez(objects, metadata=np.array([{"a": 1}], dtype=object))
    expected = {
        text: "is not a tmaps profiles file: profiles are NPZ (zip) archives, and this file is not one",
        checkpoint: "is not a tmaps profiles file: it has no 'metadata' entry",
        objects: "is not a tmaps profiles file: its entry 'metadata' holds Python objects, not numbers or text",
    }
    for path, message in expected.items():
        with pytest.raises(ValueError) as error:
            Profiles.load(path)
        assert f"{path} {message}" == str(error.value)
