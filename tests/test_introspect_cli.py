"""``tmaps-introspect``: profiles file, summary and figures of a real checkpoint; forced alignment; errors; topo_vs_baseline."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
from hydra import compose, initialize_config_module
from PIL import Image

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.introspect import introspect
from tmaps.commands.introspect import main as introspect_command
from tmaps.data import SpeechDataModule, Utterances
from tmaps.data.manifest import read_manifest, write_manifest
from tmaps.introspect import NAP, Profiles
from tmaps.introspect.clustering import leaf_order
from tmaps.topo import Grid
from tmaps.training.module import ASRModule

REPO = Path(__file__).resolve().parents[1]
# The 11-layer layout of conf/model/small.yaml, narrowed so that a training step takes a moment.
TINY = {"channels": [16] * 8 + [32, 32], "kernel_sizes": [11] + [7] * 7 + [1, 1], "strides": [2] + [1] * 9, "norm": "batch", "dropout": 0.1}
TOPO = {"layers": ["conv2", "conv3"], "loss": "weight_similarity", "weight": 1.0, "grid": {"shape": [2, 8]}, "options": {"metric": "cosine"}}
# data=synth_en narrowed to the corpus of conftest.tiny_synth_config("en"), so that it reuses synth_corpus_en.
TINY_SYNTH = [
    "data.source.n_utterances={train:32,dev:8,test:8,test_unseen:8}",
    "data.source.words_per_utterance=[3,6]",
    "data.batching.num_workers=0",
]
LAYERS = ["conv0", "conv5", "head"]


def train_checkpoint(corpus: Path, folder: Path, topo: dict | None = None, model: dict = TINY) -> Path:
    """A tiny English ASRModule (``model``: the TINY Wav2Letter by default) after two real training steps, saved as a tmaps checkpoint."""
    pl.seed_everything(0)
    data = SpeechDataModule(
        source={"kind": "manifest", "path": str(corpus), "splits": {"train": "train.jsonl"}},
        root=str(folder / "cache"),
        batching={"max_batch_seconds": 12.0, "num_workers": 0},
    )
    data.prepare_data()
    module = ASRModule(model=model, alphabet=data.alphabet.chars, features=data.feature_config, optim={"lr": 1e-3, "schedule": "constant"}, topo=topo)
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(module, train_dataloaders=data.loader("train"))
    path = folder / ("topo.ckpt" if topo else "baseline.ckpt")
    trainer.save_checkpoint(path, weights_only=True)
    return path


@pytest.fixture(scope="module")
def checkpoint(synth_corpus_en, tmp_path_factory) -> Path:
    return train_checkpoint(synth_corpus_en, tmp_path_factory.mktemp("baseline"))


@pytest.fixture(scope="module")
def topo_checkpoint(synth_corpus_en, tmp_path_factory) -> Path:
    return train_checkpoint(synth_corpus_en, tmp_path_factory.mktemp("topo"), topo=TOPO)


def compose_introspect(overrides: list[str], output_dir: Path, data_dir: Path, data: list[str] = TINY_SYNTH):
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        return compose(
            config_name="introspect",
            overrides=[f"paths.output_dir={output_dir}", f"paths.data_dir={data_dir}", *data, *overrides],
        )


@pytest.fixture(scope="module")
def phoneme_run(checkpoint, synth_data_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("phoneme_run")
    layers = ",".join(LAYERS)
    return introspect(compose_introspect([f"ckpt_path={checkpoint}", f"layers=[{layers}]"], output_dir, synth_data_dir))


def test_profiles_file_records_checkpoint_groups_counts_and_normalization(phoneme_run, checkpoint, synth_corpus_en):
    stored = Profiles.load(phoneme_run.profiles_path)
    metadata = stored.metadata
    assert stored.layers == LAYERS and metadata["normalize"] == "center" and metadata["window"] is None
    assert metadata["checkpoint"] == str(checkpoint) and metadata["kind"] == "NAP" and metadata["grouping"] == "phoneme"
    assert metadata["model_config"] == load_checkpoint(checkpoint).hyper_parameters["model"]
    test_records = read_manifest(synth_corpus_en / "test.jsonl")
    assert metadata["split"] == "test" and metadata["utterances"] == len(test_records) and metadata["segments"] == "manifest"
    phonemes = {segment[0] for record in test_records for segment in record["phonemes"]}
    assert set(stored.all_groups) == phonemes
    for layer in LAYERS:
        counts = metadata["group_counts"][layer]
        assert all(counts[group] > 0 for group in stored.groups)
        assert counts == dict(zip(stored.all_groups, stored.counts[layer].tolist()))
    assert metadata["grids"] == {}


def test_profiles_equal_a_direct_nap_of_the_checkpoint(phoneme_run, checkpoint, synth_corpus_en, tmp_path):
    loaded = load_checkpoint(checkpoint)
    data = SpeechDataModule(
        source={"kind": "manifest", "path": str(synth_corpus_en), "splits": {"test": "test.jsonl"}},
        root=str(tmp_path),
        features=loaded.features,
        batching={"num_workers": 0},
    )
    data.prepare_data()
    direct = NAP(loaded.model, LAYERS).compute(data.loader("test"), "phoneme")
    stored = Profiles.load(phoneme_run.profiles_path)
    assert stored.groups == direct.groups
    for layer in LAYERS:
        np.testing.assert_array_equal(stored.counts[layer], direct.counts[layer])
        np.testing.assert_allclose(stored[layer].mean, direct[layer].mean, rtol=1e-6, atol=1e-9)


def test_summary_has_silhouette_and_adjusted_rand_per_layer(phoneme_run, checkpoint):
    summary = phoneme_run.summary
    assert list(summary["layer"]) == LAYERS
    assert list(summary["units"]) == [16, 16, load_checkpoint(checkpoint).alphabet.n_classes]
    assert summary["silhouette"].between(-1, 1).all() and summary["adjusted_rand"].between(-1, 1).all()
    written = pd.read_csv(phoneme_run.profiles_path.with_suffix(".csv"))
    pd.testing.assert_frame_equal(written, summary, check_dtype=False)


def test_figures_are_non_trivial_pngs(phoneme_run):
    folder = phoneme_run.figures[0].parent
    expected = {f"{kind}_{layer}.png" for kind in ("heatmap", "dendrogram") for layer in LAYERS} | {"adjusted_rand.png"}
    assert {path.name for path in phoneme_run.figures} == expected
    for name in expected:
        with Image.open(folder / name) as image:
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert image.format == "PNG" and min(pixels.shape) > 150
        assert pixels.std() > 10  # more than a blank canvas


def test_leaf_order_keeps_similar_profiles_together_and_zero_profiles_last():
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=8), rng.normal(size=8)
    rows = np.stack([first, second, np.zeros(8), first * 2, second + 0.01, first + 0.01])
    order = leaf_order(rows).tolist()
    assert sorted(order) == list(range(6)) and order[-1] == 2
    blocks = ["a" if i in (0, 3, 5) else "b" for i in order[:-1]]
    assert blocks in (["a"] * 3 + ["b"] * 2, ["b"] * 2 + ["a"] * 3)


def test_character_gradnaps_of_a_corpus_without_segments_come_from_forced_alignment(checkpoint, synth_corpus_en, tmp_path):
    bare = [{key: value for key, value in record.items() if key not in ("words", "phonemes")} for record in read_manifest(synth_corpus_en / "test.jsonl")]
    write_manifest(bare, tmp_path / "corpus" / "test.jsonl")
    data = ["data=manifest", f"data.source.path={tmp_path / 'corpus'}", "data.source.splits={test:test.jsonl}", "data.batching.num_workers=0"]
    overrides = [f"ckpt_path={checkpoint}", "groups=character", "kind=gradnap", "max_utterances=5", "layers=[conv3]"]
    result = introspect(compose_introspect(overrides, tmp_path / "out", tmp_path / "data", data))
    metadata = Profiles.load(result.profiles_path).metadata
    assert metadata["segments"] == "forced alignment" and metadata["kind"] == "GradNAP" and metadata["utterances"] == 5
    assert set(metadata["groups"]) <= set("abcdefghijklmnopqrstuvwxyz'") and len(metadata["groups"]) >= 5
    assert all(count > 0 for count in metadata["group_counts"]["conv3"].values())
    with pytest.raises(ValueError, match="no 'phonemes' segments.*groups=character"):
        introspect(compose_introspect([f"ckpt_path={checkpoint}"], tmp_path / "out", tmp_path / "data", data))


def test_max_utterances_serves_the_same_subset_on_every_pass(synth_corpus_en, tmp_path):
    source = {"kind": "manifest", "path": str(synth_corpus_en), "splits": {"train": "train.jsonl"}}
    data = SpeechDataModule(source=source, root=str(tmp_path), batching={"max_batch_seconds": 10.0, "num_workers": 0})
    data.prepare_data()
    utterances = Utterances(data.loader("train", shuffle=True), max_utterances=11)
    passes = [[record["id"] for batch in utterances for record in batch["records"]] for _ in range(2)]
    assert passes[0] == passes[1] and len(passes[0]) == 11 == utterances.count
    assert passes[0] != [record["id"] for batch in data.loader("train", shuffle=False) for record in batch["records"]][:11]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ckpt_path=/nowhere/model.ckpt", "checkpoint /nowhere/model.ckpt does not exist"),
        ("layers=[conv0,conv99]", r"\['conv99'\] are not layers.*'conv0', 'conv1'"),
        ("groups=accent", "group field 'accent' is not in the records"),
    ],
)
def test_bad_input_names_the_culprit(override, message, checkpoint, synth_data_dir, tmp_path):
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        introspect(compose_introspect([f"ckpt_path={checkpoint}", override], tmp_path, synth_data_dir))


def run_script(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TMAPS_ROOT": str(cwd), "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *arguments], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


def test_the_command_prints_the_summary_and_writes_time_resolved_profiles(checkpoint, synth_data_dir, tmp_path):
    overrides = [f"ckpt_path={checkpoint}", "groups=phoneme_class", "window=2", "layers=[conv1,conv8]", f"paths.data_dir={synth_data_dir}"]
    result = run_script("-m", "tmaps.commands.introspect", *overrides, *TINY_SYNTH, "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "silhouette" in result.stdout and "conv8" in result.stdout
    stored = Profiles.load(tmp_path / "run" / "profiles.npz")
    assert stored.window == 2 and stored["conv8"].mean.shape == (len(stored.groups), 32, 5)
    assert (tmp_path / "run" / "figures" / "heatmap_conv1.png").is_file()


def test_the_command_exits_with_the_message_of_bad_input(checkpoint, synth_data_dir, tmp_path):
    with pytest.raises(SystemExit, match=r"^tmaps-introspect: layers \['conv99'\] are not layers"):
        introspect_command(compose_introspect([f"ckpt_path={checkpoint}", "layers=[conv99]"], tmp_path, synth_data_dir))


def test_topo_vs_baseline_reports_adjusted_rand_and_morans_i(checkpoint, topo_checkpoint, synth_data_dir, tmp_path, capsys):
    report = tmp_path / "report"
    topo_vs_baseline = runpy.run_path(str(REPO / "scripts" / "topo_vs_baseline.py"))["main"]
    arguments = [f"--baseline={checkpoint}", f"--topo={topo_checkpoint}", f"--output-dir={report}", "--permutations=99"]
    table = topo_vs_baseline([*arguments, f"paths.data_dir={synth_data_dir}", *TINY_SYNTH])
    assert list(table["layer"]) == [f"conv{i}" for i in range(10)] + ["head"]
    pd.testing.assert_frame_equal(pd.read_csv(report / "topo_vs_baseline.csv"), table, check_dtype=False)
    by_layer = table.set_index("layer")
    topographic = by_layer.loc[["conv2", "conv3"]]
    assert list(topographic["grid"]) == ["2x8", "2x8"]
    assert topographic[["morans_i_topo", "morans_i_baseline"]].apply(lambda value: value.between(-1.5, 1.5)).all().all()
    assert topographic[["p_below_05_topo", "p_below_05_baseline"]].apply(lambda share: share.between(0, 1)).all().all()
    assert by_layer.drop(["conv2", "conv3"])[["morans_i_topo", "morans_i_baseline"]].isna().all().all()
    assert table[["ari_topo", "ari_baseline"]].apply(lambda column: column.between(-1, 1)).all().all()
    markdown = (report / "topo_vs_baseline.md").read_text()
    assert markdown.count("| conv") == 10 and "nan" not in markdown and markdown in capsys.readouterr().out
    grids = Profiles.load(report / "profiles_topo.npz").info["grids"]
    assert grids == {layer: Grid(16, shape=(2, 8)).to_dict() for layer in ("conv2", "conv3")}
    with Image.open(report / "topo_vs_baseline.png") as image:
        assert np.asarray(image.convert("L"), dtype=float).std() > 10


def test_a_checkpoint_gives_its_full_grids_and_the_module_it_rebuilds_trains_on_them(topo_checkpoint):
    loaded = load_checkpoint(topo_checkpoint)
    assert {layer: grid.to_dict() for layer, grid in loaded.grids.items()} == {
        layer: {"n_units": 16, "shape": [2, 8], "boundary": "flat", "neighbourhood": "4", "sigma": 1.0} for layer in ("conv2", "conv3")
    }
    module = ASRModule.from_checkpoint(topo_checkpoint)
    assert module.hparams.topo == TOPO
    assert {layer: grid.to_dict() for layer, grid in module.topo.grids.items()} == {layer: grid.to_dict() for layer, grid in loaded.grids.items()}
