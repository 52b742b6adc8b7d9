"""SpeechDataModule and SpeechDataset on the synthetic corpus: batches, bucketing, bad input, filters, subsets."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy
import pytest
import soundfile
import torch
import torchaudio
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from tmaps.data import SpeechDataModule, manifest_loader
from tmaps.data.dataset import DurationBatchSampler, ctc_frames_needed, filter_records, load_audio
from tmaps.data.features import num_frames
from tmaps.data.manifest import SPLITS, read_manifest, write_manifest
from tmaps.text import Alphabet

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"
ENGLISH = Alphabet.for_language("en")
SPEC_AUGMENT = {"freq_masks": 2, "freq_width": 8, "time_masks": 2, "time_width": 20}
MAX_BATCH_SECONDS = 10.0


def datamodule(corpus: Path, root: Path, **options) -> SpeechDataModule:
    """A SpeechDataModule over JSONL manifests in ``corpus`` (the synthetic corpus is one such folder)."""
    splits = {split: f"{split}.jsonl" for split in SPLITS if (corpus / f"{split}.jsonl").is_file()}
    batching = {"max_batch_seconds": MAX_BATCH_SECONDS, "max_duration_s": 16.0, "num_workers": 0, "seed": 0, **options.pop("batching", {})}
    return SpeechDataModule(source={"kind": "manifest", "path": str(corpus), "splits": splits}, root=str(root), batching=batching, **options)


@pytest.fixture(scope="module")
def english(synth_corpus_en, tmp_path_factory) -> SpeechDataModule:
    module = datamodule(synth_corpus_en, tmp_path_factory.mktemp("cache"), output_stride=2, spec_augment=SPEC_AUGMENT)
    module.prepare_data()
    module.setup()
    return module


def padding_fraction(batches: list[list[int]], durations: list[float]) -> float:
    padded = sum(len(batch) * max(durations[i] for i in batch) for batch in batches)
    return 1 - sum(durations) / padded


def test_batches_match_the_design_contract(english):
    batch = next(iter(english.loader("dev")))
    features, lengths, targets, target_lengths, records = (batch[key] for key in ("features", "feature_lengths", "targets", "target_lengths", "records"))
    assert features.dtype == torch.float32 and features.shape[:2] == (len(records), 40) and features.shape[2] == int(lengths.max())
    assert lengths.dtype == targets.dtype == target_lengths.dtype == torch.long
    assert targets.shape == (len(records), int(target_lengths.max()))
    for i, record in enumerate(records):
        assert int(lengths[i]) == num_frames(len(load_audio(record["audio"])))
        assert not features[i, :, lengths[i] :].any() and features[i, :, : lengths[i]].std() > 0.5
        assert ENGLISH.decode(targets[i, : target_lengths[i]].tolist()) == record["text"]
        assert not targets[i, target_lengths[i] :].any()
    assert {"id", "audio", "text", "speaker", "duration"} <= set(records[0])


def test_the_synthetic_corpus_reads_as_a_generic_manifest(english, synth_corpus_en):
    for split in ("train", "dev", "test", "test_unseen"):
        original = read_manifest(synth_corpus_en / f"{split}.jsonl")
        assert [record["id"] for record in english.dataset(split).records] == [record["id"] for record in original]
    assert set(english.test_loaders()) == {"test", "test_unseen"} and len(english.test_dataloader()) == 2


def test_a_synth_source_reuses_the_synthesized_corpus(synth_config_en, synth_data_dir, synth_corpus_en):
    module = SpeechDataModule(source=synth_config_en, root=str(synth_data_dir), language="en", batching={"num_workers": 0})
    module.setup("test")
    assert module.corpus_dir == synth_corpus_en
    assert len(module.test_loaders()["test_unseen"].dataset) == len(read_manifest(synth_corpus_en / "test_unseen.jsonl"))
    with pytest.raises(ValueError, match="data.language"):
        SpeechDataModule(source=synth_config_en, root=str(synth_data_dir), language="de")


def test_duration_buckets_pad_far_less_than_random_batches(english):
    durations = english.dataset("train").durations
    budget = sum(durations) / 6
    batches = DurationBatchSampler(durations, budget).batches
    assert len(batches) >= 4
    assert all(len(batch) * max(durations[i] for i in batch) <= budget for batch in batches if len(batch) > 1)
    generator = numpy.random.default_rng(0)
    sizes = numpy.cumsum([len(batch) for batch in batches])[:-1]
    random = [padding_fraction([list(part) for part in numpy.split(generator.permutation(len(durations)), sizes)], durations) for _ in range(20)]
    assert padding_fraction(batches, durations) < 0.5 * numpy.mean(random)


def test_the_train_loader_serves_the_duration_buckets(english):
    position = {record["id"]: index for index, record in enumerate(english.dataset("train").records)}
    served = [sorted(position[record["id"]] for record in batch["records"]) for batch in english.loader("train")]
    expected = DurationBatchSampler(english.dataset("train").durations, MAX_BATCH_SECONDS).batches
    assert sorted(served) == sorted(sorted(batch) for batch in expected)


def test_sampler_serves_every_utterance_once_per_epoch_and_reshuffles_deterministically():
    durations = list(numpy.random.default_rng(1).uniform(0.5, 6.0, size=200))
    sampler = DurationBatchSampler(durations, max_batch_seconds=20.0, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(i for batch in first for i in batch) == list(range(200))
    assert first != second and sorted(first) == sorted(second) and len(first) == len(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(DurationBatchSampler(durations, 20.0, seed=3)) == first
    assert list(DurationBatchSampler(durations, 20.0, seed=4)) != first
    evaluation = DurationBatchSampler(durations, 20.0, shuffle=False)
    assert list(evaluation) == list(evaluation) == evaluation.batches


def test_sampler_shards_batches_evenly_across_ranks():
    durations = list(numpy.random.default_rng(2).uniform(0.5, 6.0, size=101))
    shards = [list(DurationBatchSampler(durations, 15.0, seed=0, num_replicas=3, rank=rank)) for rank in range(3)]
    everything = DurationBatchSampler(durations, 15.0, seed=0).batches
    assert len({len(shard) for shard in shards}) == 1
    assert sorted(map(tuple, everything)) == sorted({tuple(batch) for shard in shards for batch in shard})


def test_spec_augment_touches_train_batches_only(english):
    torch.manual_seed(0)
    assert english.dataset("train").augment is not None and english.dataset("dev").augment is None
    assert torch.equal(english.dataset("dev")[0]["features"], english.dataset("dev")[0]["features"])
    masked = [english.dataset("train")[0]["features"] for _ in range(2)]
    assert not torch.equal(*masked)
    assert all((features == 0).all(dim=0).any() or (features == 0).all(dim=1).any() for features in masked)


def test_worker_processes_give_the_same_batches(english, synth_corpus_en, tmp_path):
    with_workers = datamodule(synth_corpus_en, tmp_path, batching={"num_workers": 2}, output_stride=2)
    with_workers.prepare_data()
    batches = [(b["features"], [r["id"] for r in b["records"]]) for b in with_workers.loader("dev")]
    for (features, ids), expected in zip(batches, english.loader("dev")):
        assert ids == [r["id"] for r in expected["records"]] and torch.equal(features, expected["features"])


def test_feature_cache_is_keyed_by_the_feature_config(synth_corpus_en, tmp_path):
    cached = datamodule(synth_corpus_en, tmp_path, features={"n_mels": 40, "cache": True})
    cached.prepare_data()
    dev = cached.dataset("dev")
    computed = [dev[i]["features"] for i in range(len(dev))]
    assert len(list((cached.corpus_dir / "features").rglob("*.pt"))) == len(dev)
    assert all(torch.equal(computed[i], dev[i]["features"]) for i in range(len(dev)))
    wider = datamodule(synth_corpus_en, tmp_path, features={"n_mels": 64, "cache": True})
    wider.prepare_data()
    assert wider.dataset("dev")[0]["features"].shape[0] == 64
    assert len(list((cached.corpus_dir / "features").iterdir())) == 2


def write_resampled(source: str, target: Path, sample_rate: int) -> None:
    samples, rate = soundfile.read(source, dtype="float32")
    soundfile.write(target, torchaudio.functional.resample(torch.from_numpy(samples), rate, sample_rate).numpy(), sample_rate)


@pytest.fixture(scope="module")
def damaged(synth_corpus_en, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A copy of the corpus whose train split has a missing file, a corrupt file, an empty
    transcript, an 8 kHz file, a 22.05 kHz file and a FLAC truncated after its header."""
    folder = tmp_path_factory.mktemp("damaged")
    write_manifest(read_manifest(synth_corpus_en / "dev.jsonl"), folder / "dev.jsonl")
    records = read_manifest(synth_corpus_en / "train.jsonl")
    bad = {name: folder / f"{name}.flac" for name in ("missing", "corrupt", "empty", "rate8000", "rate22050", "truncated")}
    bad["corrupt"].write_bytes(b"not audio at all" * 100)
    shutil.copy(records[2]["audio"], bad["empty"])
    write_resampled(records[3]["audio"], bad["rate8000"], 8000)
    write_resampled(records[4]["audio"], bad["rate22050"], 22050)
    whole = Path(records[5]["audio"]).read_bytes()
    bad["truncated"].write_bytes(whole[: len(whole) // 3])
    for number, name in enumerate(bad):
        records[number] = {**records[number], "audio": str(bad[name]), "text": "?!" if name == "empty" else records[number]["text"]}
    write_manifest(records, folder / "train.jsonl")
    return folder, bad


def test_skip_policy_drops_bad_files_up_front_and_reports_counts(damaged, tmp_path, caplog, synth_corpus_en):
    folder, bad = damaged
    module = datamodule(folder, tmp_path, on_error="skip")
    module.prepare_data()
    with caplog.at_level(logging.INFO):
        module.setup("fit")
    report = module.reports["train"]
    assert report["skipped"] == {"missing audio file": 1, "unreadable audio": 1, "empty transcript": 1}
    assert report["kept"] == report["manifest"] - 3 == len(module.dataset("train"))
    for name in ("missing", "corrupt", "empty"):
        assert str(bad[name]) in caplog.text


def test_other_sample_rates_are_resampled_to_16_khz(damaged, tmp_path, synth_corpus_en):
    folder, bad = damaged
    module = datamodule(folder, tmp_path)
    module.prepare_data()
    originals = read_manifest(synth_corpus_en / "train.jsonl")
    items = {Path(record["audio"]).stem: index for index, record in enumerate(module.dataset("train").records)}
    for name, original in (("rate8000", originals[3]), ("rate22050", originals[4])):
        record = module.dataset("train").records[items[name]]
        assert record["sample_rate"] == int(name.removeprefix("rate"))
        features = module.dataset("train").features(load_audio(record["audio"]))
        reference = module.dataset("train").features(load_audio(original["audio"]))
        assert abs(features.shape[1] - reference.shape[1]) <= 1
        frames = min(features.shape[1], reference.shape[1])
        # Bands below 4 kHz survive 8 kHz sampling: they follow the original closely.
        low = slice(0, 25)
        correlation = numpy.corrcoef(features[low, :frames].flatten(), reference[low, :frames].flatten())[0, 1]
        assert correlation > 0.9


def test_a_file_that_fails_to_decode_is_skipped_in_the_batch_and_named(damaged, tmp_path, caplog):
    folder, bad = damaged
    module = datamodule(folder, tmp_path, on_error="skip")
    module.prepare_data()
    train = module.dataset("train")
    with caplog.at_level(logging.WARNING):
        ids = [record["id"] for batch in module.loader("train") for record in batch["records"]]
    truncated = next(record for record in train.records if record["audio"] == str(bad["truncated"]))
    assert truncated["id"] not in ids and len(ids) == len(train) - 1
    assert str(bad["truncated"]) in caplog.text


def test_error_policy_names_the_bad_files(damaged, tmp_path):
    folder, bad = damaged
    module = datamodule(folder, tmp_path, on_error="error")
    module.prepare_data()
    with pytest.raises(ValueError, match="on_error=error") as error:
        module.setup("fit")
    for name in ("missing", "corrupt", "empty"):
        assert str(bad[name]) in str(error.value)
    assert str(bad["rate8000"]) not in str(error.value)


def test_error_policy_raises_on_a_file_that_fails_to_decode(damaged, tmp_path):
    folder, bad = damaged
    train = [record for record in read_manifest(folder / "train.jsonl") if record["audio"] == str(bad["truncated"])]
    write_manifest(train, tmp_path / "corpus" / "train.jsonl")
    write_manifest(read_manifest(folder / "dev.jsonl"), tmp_path / "corpus" / "dev.jsonl")
    module = datamodule(tmp_path / "corpus", tmp_path / "cache", on_error="error")
    module.prepare_data()
    with pytest.raises(RuntimeError, match=re.escape(str(bad["truncated"]))):
        next(iter(module.loader("train")))


def test_an_empty_dataset_is_an_error_naming_the_manifest(damaged, tmp_path):
    folder, bad = damaged
    train = [record for record in read_manifest(folder / "train.jsonl") if record["audio"] in (str(bad["missing"]), str(bad["corrupt"]))]
    write_manifest(train, tmp_path / "corpus" / "train.jsonl")
    write_manifest(read_manifest(folder / "dev.jsonl"), tmp_path / "corpus" / "dev.jsonl")
    module = datamodule(tmp_path / "corpus", tmp_path / "cache")
    module.prepare_data()
    with pytest.raises(ValueError, match=r"split train is empty: no utterance of .*train\.jsonl is left"):
        module.setup("fit")


def ctc_is_finite(text: str, output_frames: int) -> bool:
    labels = torch.tensor([ENGLISH.encode(text)])
    log_probs = torch.randn(output_frames, 1, ENGLISH.n_classes).log_softmax(-1)
    loss = torch.nn.functional.ctc_loss(log_probs, labels, torch.tensor([output_frames]), torch.tensor([labels.shape[1]]), reduction="sum")
    return bool(torch.isfinite(loss))


@pytest.mark.parametrize("text", ["a cat", "look", "little bee", "aaa"])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_ctc_filter_keeps_exactly_what_ctc_can_align(text, stride):
    records = [{"id": str(frames), "text": text, "duration": (frames * 160 - 1) / 16000} for frames in range(1, 40)]
    kept, reasons = filter_records(records, ENGLISH, max_duration_s=None, output_stride=stride, source="test")
    assert len(kept) < len(records) and sum(reasons.values()) == len(records) - len(kept)
    for record in records:
        output_frames = num_frames(round(record["duration"] * 16000)) // stride
        assert (record in kept) == (output_frames > 0 and ctc_is_finite(text, output_frames))


def test_datamodule_filters_long_and_ctc_infeasible_utterances(synth_corpus_en, tmp_path, english):
    records = english.dataset("train").records
    durations = sorted(record["duration"] for record in records)
    module = datamodule(synth_corpus_en, tmp_path, batching={"max_duration_s": durations[-3]}, output_stride=1)
    module.prepare_data()
    module.setup("fit")
    assert module.reports["train"]["filtered"] == {f"longer than {durations[-3]} s": 2}
    # The largest stride at which some utterance is still long enough for its transcript.
    frames_per_label = [num_frames(round(r["duration"] * 16000)) / ctc_frames_needed(ENGLISH.encode(r["text"])) for r in records]
    module.output_stride = int(max(frames_per_label))
    kept = module.dataset("train").records
    assert 0 < len(kept) < len(records) - 2
    assert sum(module.reports["train"]["filtered"].values()) == len(records) - len(kept)
    assert len(module.dataset("dev")) == module.reports["dev"]["manifest"] and not module.reports["dev"]["filtered"]
    for record in kept:
        output_frames = num_frames(round(record["duration"] * 16000)) // module.output_stride
        assert ctc_is_finite(record["text"], output_frames)


def test_train_fraction_gives_deterministic_nested_subsets(synth_corpus_en, tmp_path):
    def train_ids(fraction: float, seed: int = 0) -> list[str]:
        module = datamodule(synth_corpus_en, tmp_path, train_fraction=fraction, batching={"seed": seed})
        module.prepare_data()
        return [record["id"] for record in module.dataset("train").records]

    everything, half, quarter = train_ids(1.0), train_ids(0.5), train_ids(0.25)
    assert len(half) == round(0.5 * len(everything)) and len(quarter) == round(0.25 * len(everything))
    assert set(quarter) < set(half) < set(everything)
    assert train_ids(0.5) == half and train_ids(0.5, seed=1) != half


def test_bad_configuration_is_named(synth_corpus_en, tmp_path):
    with pytest.raises(ValueError, match="max_batch_second"):
        datamodule(synth_corpus_en, tmp_path, batching={"max_batch_second": 10})
    with pytest.raises(ValueError, match="train_fraction"):
        datamodule(synth_corpus_en, tmp_path, train_fraction=0.0)
    with pytest.raises(ValueError, match=r"source.kind must be one of \['synth', 'librispeech', 'commonvoice', 'manifest'.*got 'timit'"):
        SpeechDataModule(source={"kind": "timit"}, root=str(tmp_path))


@pytest.mark.parametrize("config", sorted(CONF.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_data_config_builds_a_datamodule_whose_batch_order_follows_the_run_seed(config, tmp_path):
    # Composed by Hydra, since a preset such as synth_en_hard extends another through its defaults list.
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"data={config.stem}", "seed=5"]).data
    with open_dict(cfg):
        cfg.root = str(tmp_path)
    if cfg.source.get("path") == "???":
        cfg.source.path = str(tmp_path)
    module = SpeechDataModule(**OmegaConf.to_container(cfg, resolve=True))
    assert module.alphabet == Alphabet.for_language(cfg.language)
    assert module.feature_config["n_mels"] == cfg.features.n_mels
    assert module.batching["seed"] == 5


def test_a_manifest_loader_serves_every_utterance_of_a_split_with_the_given_features_in_the_same_order_twice(synth_corpus_en, tmp_path):
    loader = manifest_loader(synth_corpus_en, "test", {"n_mels": 24}, tmp_path, max_batch_seconds=10.0)
    first = [record["id"] for batch in loader for record in batch["records"]]
    assert sorted(first) == sorted(record["id"] for record in read_manifest(synth_corpus_en / "test.jsonl"))
    assert [record["id"] for batch in loader for record in batch["records"]] == first
    assert next(iter(loader))["features"].shape[1] == 24
