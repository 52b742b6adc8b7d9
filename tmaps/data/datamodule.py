"""``SpeechDataModule``: a corpus (synthetic or real) as Lightning data loaders."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypedDict

import numpy
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from tmaps.config_types import check_config
from tmaps.data.dataset import DurationBatchSampler, SpeechDataset, check_records, collate, filter_records
from tmaps.data.features import LogMel, SpecAugment
from tmaps.data.manifest import SPLITS, read_manifest
from tmaps.data.readers import READERS, build_corpus
from tmaps.data.synth import synthesize_corpus
from tmaps.processes import die_with_parent
from tmaps.text import Alphabet

log = logging.getLogger(__name__)

# The synthetic corpus, and every corpus reader of tmaps.data.readers.
SOURCE_KINDS = ("synth", *READERS)
FEATURE_DEFAULTS = {"n_mels": 40, "log_floor": 1e-6, "cache": False}
BATCHING_DEFAULTS = {"max_batch_seconds": 160.0, "max_duration_s": 16.0, "num_workers": 2, "seed": 0}
TEST_SPLITS = ("test", "test_unseen")
# A fit checks the test splits as well, so that one left empty is found before training, not after it.
STAGE_SPLITS = {"fit": SPLITS, "validate": ("dev",), "test": TEST_SPLITS, "predict": ("test",)}
EMPTY_SPLIT_POLICIES = ("error", "skip")


class FeatureOptions(TypedDict, total=False):
    """``data.features``: :class:`LogMel`'s arguments and ``cache``; what is left out is :data:`FEATURE_DEFAULTS`'s."""

    n_mels: int
    log_floor: float
    cache: bool


class BatchingOptions(TypedDict, total=False):
    """``data.batching``; what is left out is :data:`BATCHING_DEFAULTS`'s."""

    max_batch_seconds: float
    max_duration_s: float
    num_workers: int
    seed: int


class SpeechDataModule(pl.LightningDataModule):
    """Loaders of the batch dicts of docs/design.md for the splits of one corpus.

    The arguments mirror the ``data`` config group, so ``SpeechDataModule(**plain_data_config)``
    works. ``prepare_data`` synthesizes or reads the corpus under ``root``; ``setup`` reads the
    manifests, checks the files (``on_error``), drops training utterances that are too long or
    too short for CTC at ``output_stride`` and logs what it dropped. Set ``output_stride`` from
    the model (``model.stride``) before ``setup``. Evaluation splits are not filtered, so that
    error rates cover every utterance of a test set. :meth:`skip_report` counts, per split,
    the utterances kept and those skipped by reason, files that failed to decode included.

    Args:
        source: the corpus: ``kind`` ``"synth"`` (the rest is the config of
            :func:`tmaps.data.synth.synthesize_corpus`) or ``"librispeech"``, ``"commonvoice"``,
            ``"manifest"`` (``path`` and ``splits``, see :func:`tmaps.data.readers.build_corpus`).
            A synthetic corpus is spoken by ``batching.num_workers`` processes.
        root: folder under which corpora and their manifests are cached.
        language: selects the alphabet (``Alphabet.for_language``).
        oov: ``"error"`` or ``"drop"`` for real-corpus transcripts with characters outside the alphabet.
        on_error: ``"skip"`` or ``"error"`` for missing, unreadable or empty-transcript utterances.
        empty_split: ``"error"`` or ``"skip"`` for a test split with no utterance left (an
            empty ``train`` or ``dev`` split is always an error).
        features: ``n_mels``, ``log_floor`` (see :class:`LogMel`) and ``cache`` (keep computed
            features on disk next to the manifests).
        spec_augment: :class:`SpecAugment` arguments for training batches; ``None`` for none.
        batching: ``max_batch_seconds`` (padded seconds per batch), ``max_duration_s`` (longer training
            utterances are dropped), ``num_workers`` and ``seed`` (batch order and ``train_fraction``).
        train_fraction: use this deterministic fraction of the train manifest; smaller
            fractions are subsets of larger ones.
        output_stride: the model's total stride, for the CTC feasibility filter; ``None`` skips it.
    """

    def __init__(
        self,
        source: Mapping,
        root: str,
        language: str = "en",
        oov: str = "error",
        on_error: str = "skip",
        empty_split: str = "error",
        features: FeatureOptions | None = None,
        spec_augment: Mapping | None = None,
        batching: BatchingOptions | None = None,
        train_fraction: float = 1.0,
        output_stride: int | None = None,
    ) -> None:
        super().__init__()
        if source.get("kind") not in SOURCE_KINDS:
            raise ValueError(f"data.source.kind must be one of {list(SOURCE_KINDS)}, got {source.get('kind')!r}")
        if source["kind"] == "synth" and source.get("language", language) != language:
            raise ValueError(f"data.source.language {source['language']!r} differs from data.language {language!r}, which selects the alphabet")
        if empty_split not in EMPTY_SPLIT_POLICIES:
            raise ValueError(f"data.empty_split must be one of {EMPTY_SPLIT_POLICIES}, got {empty_split!r}")
        if not 0 < train_fraction <= 1:
            raise ValueError(f"data.train_fraction must be in (0, 1], got {train_fraction}")
        self.source = dict(source)
        self.root = Path(root)
        self.language = language
        self.alphabet = Alphabet.for_language(language)
        self.oov = oov
        self.on_error = on_error
        self.empty_split = empty_split
        feature_options = {**FEATURE_DEFAULTS, **check_config(features or {}, FeatureOptions, "data.features")}
        self.cache_features = bool(feature_options.pop("cache"))
        self.log_mel = LogMel(**feature_options)
        self.spec_augment = SpecAugment(**check_config(spec_augment, SpecAugment, "data.spec_augment")) if spec_augment else None
        self.batching = {**BATCHING_DEFAULTS, **check_config(batching or {}, BatchingOptions, "data.batching")}
        self.train_fraction = train_fraction
        self._output_stride = output_stride
        self.corpus_dir: Path | None = None
        self.reports: dict[str, dict] = {}
        self._datasets: dict[str, SpeechDataset] = {}

    @property
    def feature_config(self) -> dict:
        """The feature arguments a checkpoint stores (``n_mels``, ``log_floor``)."""
        return self.log_mel.config

    @property
    def output_stride(self) -> int | None:
        return self._output_stride

    @output_stride.setter
    def output_stride(self, stride: int | None) -> None:
        if stride != self._output_stride:
            self._datasets.clear()
        self._output_stride = stride

    def prepare_data(self) -> None:
        self.corpus_dir = self._build_corpus()

    def _build_corpus(self) -> Path:
        if self.source["kind"] == "synth":
            return synthesize_corpus(self.source, self.root, num_workers=max(1, self.batching["num_workers"]))
        return build_corpus(self.source, self.root, self.language, self.oov)

    def setup(self, stage: str | None = None) -> None:
        """Locate the corpus and check the splits of ``stage`` (all splits when ``None``)."""
        if self.corpus_dir is None:
            self.corpus_dir = self._build_corpus()
        for split in STAGE_SPLITS.get(stage, SPLITS) if stage else SPLITS:
            if split in TEST_SPLITS and not self.manifest_path(split).is_file():
                continue
            self.dataset(split)

    def manifest_path(self, split: str) -> Path:
        if self.corpus_dir is None:
            raise RuntimeError("call prepare_data() or setup() before asking for splits")
        return self.corpus_dir / f"{split}.jsonl"

    def dataset(self, split: str) -> SpeechDataset:
        """The checked and filtered dataset of a split (built once per ``output_stride``)."""
        if split not in self._datasets:
            self._datasets[split] = self._build_dataset(split)
        return self._datasets[split]

    def split_setting(self, split: str) -> str:
        """The config key that gives the corpus its ``split``."""
        return f"data.source.n_utterances.{split}" if self.source["kind"] == "synth" else f"data.source.splits.{split}"

    def _build_dataset(self, split: str) -> SpeechDataset:
        manifest = self.manifest_path(split)
        if split not in TEST_SPLITS and not manifest.is_file():
            raise FileNotFoundError(
                f"training needs a {split} split, and the corpus {self.source.get('path', self.corpus_dir)} has none: "
                f"set {self.split_setting(split)}"
            )
        records = read_manifest(manifest)
        if split == "train" and self.train_fraction < 1:
            keep = numpy.random.default_rng(self.batching["seed"]).permutation(len(records))[: round(self.train_fraction * len(records))]
            records = [records[i] for i in sorted(keep)]
        checked, problems = check_records(records, self.alphabet, self.on_error, str(manifest))
        kept, filtered = checked, {}
        if split == "train":
            kept, filtered = filter_records(checked, self.alphabet, self.batching["max_duration_s"], self.output_stride, str(manifest))
        self.reports[split] = {
            "manifest": len(records),
            "skipped": {problem: len(files) for problem, files in problems.items()},
            "filtered": dict(filtered),
            "kept": len(kept),
        }
        log.info("%s: %s", split, self.reports[split])
        if not kept:
            empty = f"split {split} is empty: no utterance of {manifest} is left ({self.reports[split]})"
            if split not in TEST_SPLITS:
                raise ValueError(f"{empty}; training needs it (see {self.split_setting(split)} and data.on_error)")
            if self.empty_split == "error":
                raise ValueError(f"{empty}; data.empty_split=skip leaves it out of testing")
            log.warning("%s; it is left out of testing (data.empty_split=skip)", empty)
        return SpeechDataset(
            kept,
            self.alphabet,
            self.log_mel,
            augment=self.spec_augment if split == "train" else None,
            on_error=self.on_error,
            feature_cache=self.corpus_dir / "features" if self.cache_features else None,
        )

    def skip_report(self) -> dict[str, dict]:
        """Per split read so far: ``manifest`` (utterances listed), ``kept`` and ``skipped`` ``{reason: count}``.

        Reasons are the checks of :func:`~tmaps.data.dataset.check_records`, the filters of
        :func:`~tmaps.data.dataset.filter_records` and ``"cannot decode"`` for files that failed
        when read so far (all ranks counted under ``torch.distributed``).
        """
        report = {}
        for split, counts in self.reports.items():
            undecodable = self._datasets[split].undecodable.clone() if split in self._datasets else torch.zeros(0, dtype=torch.bool)
            if torch.distributed.is_available() and torch.distributed.is_initialized() and len(undecodable):
                undecodable = undecodable.to(torch.uint8)
                torch.distributed.all_reduce(undecodable, op=torch.distributed.ReduceOp.MAX)
            skipped = {**counts["skipped"], **counts["filtered"]}
            if undecodable.any():
                skipped["cannot decode"] = int(undecodable.sum())
            report[split] = {"manifest": counts["manifest"], "kept": counts["manifest"] - sum(skipped.values()), "skipped": skipped}
        return report

    def loader(self, split: str, shuffle: bool | None = None) -> DataLoader:
        """Batches of any split; shuffled by default for ``train`` only."""
        dataset = self.dataset(split)
        workers = self.batching["num_workers"]
        sampler = DurationBatchSampler(
            dataset.durations,
            self.batching["max_batch_seconds"],
            shuffle=split == "train" if shuffle is None else shuffle,
            seed=self.batching["seed"],
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=die_with_parent,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("dev")

    def test_loaders(self) -> dict[str, DataLoader]:
        """``{"test": ..., "test_unseen": ...}`` for the test splits the corpus has (and that are not empty)."""
        return {split: self.loader(split) for split in TEST_SPLITS if self.manifest_path(split).is_file() and len(self.dataset(split))}

    def test_dataloader(self) -> list[DataLoader]:
        return list(self.test_loaders().values())

    def predict_dataloader(self) -> DataLoader:
        return self.loader("test")


def skip_report_lines(report: Mapping[str, Mapping]) -> list[str]:
    """:meth:`SpeechDataModule.skip_report` as a table of lines: split, manifest, kept, skipped by reason."""
    lines = [f"{'split':<14}{'manifest':>9}{'kept':>7}  skipped"]
    for split, row in report.items():
        skipped = "; ".join(f"{reason}: {count}" for reason, count in row["skipped"].items()) or "none"
        lines.append(f"{split:<14}{row['manifest']:>9}{row['kept']:>7}  {skipped}")
    return lines


def manifest_loader(
    corpus: str | Path, split: str, features: Mapping, cache: str | Path, language: str = "en", max_batch_seconds: float = 60.0
) -> DataLoader:
    """Batches of one split (``<corpus>/<split>.jsonl``) of a folder of manifests, in a fixed order.

    Args:
        corpus: the folder of manifests.
        split: the split, e.g. ``"test"``.
        features: the feature config (a checkpoint's ``LoadedCheckpoint.features``).
        cache: where the data module keeps its copy of the manifests.
        language: the transcripts' language (selects the alphabet).
        max_batch_seconds: audio per batch.
    """
    data = SpeechDataModule(
        source={"kind": "manifest", "path": str(corpus), "splits": {split: f"{split}.jsonl"}},
        root=str(cache),
        language=language,
        features=features,
        batching={"max_batch_seconds": max_batch_seconds, "num_workers": 0},
    )
    data.prepare_data()
    return data.loader(split, shuffle=False)


def checkpoint_datamodule(data: Mapping, alphabet: Alphabet, features: Mapping, checkpoint_path: str | Path) -> SpeechDataModule:
    """The corpus of a ``data`` config read with a checkpoint's features, for its model.

    Raises:
        ValueError: the data's language has another alphabet than the checkpoint's output.
    """
    datamodule = SpeechDataModule(**{**data, "features": {**(data.get("features") or {}), **features}})
    if datamodule.alphabet != alphabet:
        raise ValueError(
            f"checkpoint {checkpoint_path} predicts the alphabet {alphabet.chars!r}, but data "
            f"language {data.get('language')!r} uses {datamodule.alphabet.chars!r}"
        )
    return datamodule


class Utterances:
    """Re-iterable batches of ``loader``, at most ``max_utterances`` utterances, the same on every pass.

    The loader's batch sampler is reset to epoch 0 before each pass, so a shuffled loader
    serves the same batches to forced alignment and to profiling. The last batch is cut to fit.

    Attributes:
        count: utterances served by the last complete pass.
    """

    def __init__(self, loader: DataLoader, max_utterances: int | None = None) -> None:
        if max_utterances is not None and max_utterances < 1:
            raise ValueError(f"max_utterances must be at least 1 or null, got {max_utterances}")
        self.loader = loader
        self.max_utterances = max_utterances
        self.count = 0

    def __iter__(self) -> Iterator[dict]:
        self.loader.batch_sampler.set_epoch(0)
        served = 0
        for batch in self.loader:
            room = len(batch["records"]) if self.max_utterances is None else self.max_utterances - served
            batch = {key: value[:room] for key, value in batch.items()}
            served += len(batch["records"])
            yield batch
            if served == self.max_utterances:
                break
        self.count = served

