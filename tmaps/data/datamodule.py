"""``SpeechDataModule``: a corpus (synthetic or real) as Lightning data loaders."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from tmaps.data.dataset import DurationBatchSampler, SpeechDataset, check_records, collate, filter_records
from tmaps.data.features import LogMel, SpecAugment
from tmaps.data.manifest import SPLITS, read_manifest
from tmaps.data.readers import build_corpus
from tmaps.data.synth import synthesize_corpus
from tmaps.text import Alphabet

log = logging.getLogger(__name__)

FEATURE_DEFAULTS = {"n_mels": 40, "log_floor": 1e-6, "cache": False}
SPEC_AUGMENT_DEFAULTS = {"freq_masks": 2, "freq_width": 8, "time_masks": 2, "time_width": 20}
BATCHING_DEFAULTS = {"max_batch_seconds": 160.0, "max_duration_s": 16.0, "num_workers": 2, "seed": 0}
STAGE_SPLITS = {"fit": ("train", "dev"), "validate": ("dev",), "test": ("test", "test_unseen"), "predict": ("test",)}
TEST_SPLITS = ("test", "test_unseen")


class SpeechDataModule(pl.LightningDataModule):
    """Loaders of the batch dicts of docs/design.md for the splits of one corpus.

    The arguments mirror the ``data`` config group, so ``SpeechDataModule(**plain_data_config)``
    works. ``prepare_data`` synthesizes or reads the corpus under ``root``; ``setup`` reads the
    manifests, checks the files (``on_error``), drops training utterances that are too long or
    too short for CTC at ``output_stride`` and logs what it dropped. Set ``output_stride`` from
    the model (``model.stride``) before ``setup``. Evaluation splits are not filtered, so that
    error rates cover every utterance of a test set.

    Args:
        source: the corpus: ``kind`` ``"synth"`` (the rest is the config of
            :func:`tmaps.data.synth.synthesize_corpus`) or ``"librispeech"``, ``"commonvoice"``,
            ``"manifest"`` (``path`` and ``splits``, see :func:`tmaps.data.readers.build_corpus`).
            A synthetic corpus is spoken by ``batching.num_workers`` processes.
        root: folder under which corpora and their manifests are cached.
        language: selects the alphabet (``Alphabet.for_language``).
        oov: ``"error"`` or ``"drop"`` for real-corpus transcripts with characters outside the alphabet.
        on_error: ``"skip"`` or ``"error"`` for missing, unreadable or empty-transcript utterances.
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
        features: Mapping | None = None,
        spec_augment: Mapping | None = None,
        batching: Mapping | None = None,
        train_fraction: float = 1.0,
        output_stride: int | None = None,
    ) -> None:
        super().__init__()
        if source.get("kind") not in ("synth", "librispeech", "commonvoice", "manifest", "hf"):
            raise ValueError(f"data.source.kind must be synth, librispeech, commonvoice, manifest or hf, got {source.get('kind')!r}")
        if source["kind"] == "synth" and source.get("language", language) != language:
            raise ValueError(f"data.source.language {source['language']!r} differs from data.language {language!r}, which selects the alphabet")
        if not 0 < train_fraction <= 1:
            raise ValueError(f"data.train_fraction must be in (0, 1], got {train_fraction}")
        self.source = dict(source)
        self.root = Path(root)
        self.language = language
        self.alphabet = Alphabet.for_language(language)
        self.oov = oov
        self.on_error = on_error
        feature_options = _with_defaults("features", features, FEATURE_DEFAULTS)
        self.cache_features = bool(feature_options.pop("cache"))
        self.log_mel = LogMel(**feature_options)
        self.spec_augment = SpecAugment(**_with_defaults("spec_augment", spec_augment, SPEC_AUGMENT_DEFAULTS)) if spec_augment else None
        self.batching = _with_defaults("batching", batching, BATCHING_DEFAULTS)
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

    def _build_dataset(self, split: str) -> SpeechDataset:
        manifest = self.manifest_path(split)
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
            raise ValueError(f"no utterances of {manifest} are left to use: {self.reports[split]}")
        return SpeechDataset(
            kept,
            self.alphabet,
            self.log_mel,
            augment=self.spec_augment if split == "train" else None,
            on_error=self.on_error,
            feature_cache=self.corpus_dir / "features" if self.cache_features else None,
        )

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
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("dev")

    def test_loaders(self) -> dict[str, DataLoader]:
        """``{"test": ..., "test_unseen": ...}`` for the test splits the corpus has."""
        return {split: self.loader(split) for split in TEST_SPLITS if self.manifest_path(split).is_file()}

    def test_dataloader(self) -> list[DataLoader]:
        return list(self.test_loaders().values())

    def predict_dataloader(self) -> DataLoader:
        return self.loader("test")


def _with_defaults(group: str, options: Mapping | None, defaults: Mapping) -> dict:
    unknown = set(options or {}) - set(defaults)
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} in data.{group}; known: {sorted(defaults)}")
    return {**defaults, **(options or {})}
