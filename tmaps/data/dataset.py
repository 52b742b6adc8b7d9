"""Utterance records -> feature tensors and batches, with checks, filters and duration bucketing."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy
import soundfile
import torch
import torchaudio
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Sampler

from tmaps.data.features import SAMPLE_RATE, LogMel, SpecAugment, num_frames
from tmaps.text import Alphabet

log = logging.getLogger(__name__)

ON_ERROR_POLICIES = ("skip", "error")


def load_audio(path: str | os.PathLike) -> Tensor:
    """Mono waveform ``(samples,)`` at 16 kHz: channels averaged, other rates resampled."""
    samples, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)
    waveform = torch.from_numpy(samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1))  # mono: no copy
    if sample_rate != SAMPLE_RATE:
        waveform = torchaudio.functional.resample(waveform, sample_rate, SAMPLE_RATE)
    return waveform


def check_records(records: Sequence[dict], alphabet: Alphabet, on_error: str, source: str) -> tuple[list[dict], dict[str, list[str]]]:
    """Check what is cheap to check before training, and set ``duration`` and ``sample_rate`` from the audio headers.

    Problems are an empty transcript, a missing audio file and a header that soundfile cannot
    read. ``on_error="error"`` raises a ``ValueError`` naming ``source`` and every bad file;
    ``"skip"`` drops those records and logs the counts. Characters outside ``alphabet``
    always raise: the manifest was normalized for another language.

    Returns the kept records and ``{problem: [audio files]}``.
    """
    if on_error not in ON_ERROR_POLICIES:
        raise ValueError(f"on_error must be one of {ON_ERROR_POLICIES}, got {on_error!r}")
    unknown = {record["id"]: sorted(chars) for record in records if (chars := alphabet.unknown_chars(record["text"]))}
    if unknown:
        raise ValueError(f"{source}: transcripts with characters outside the alphabet {alphabet.chars!r} (wrong data.language?): {unknown}")
    kept, problems = [], {}
    for record in records:
        problem, checked = _check_record(record)
        if problem:
            problems.setdefault(problem, []).append(record["audio"])
        else:
            kept.append(checked)
    if problems and on_error == "error":
        raise ValueError(f"{source}: bad utterances (data.on_error=error; data.on_error=skip skips them): {_summary(problems)}")
    if problems:
        log.warning("%s: skipped bad utterances: %s", source, _summary(problems))
    return kept, problems


def _summary(problems: Mapping[str, list[str]], limit: int = 10) -> str:
    return "; ".join(
        f"{problem}: {len(files)} ({', '.join(files[:limit])}{', ...' if len(files) > limit else ''})" for problem, files in problems.items()
    )


def _check_record(record: dict) -> tuple[str | None, dict]:
    if not record["text"].strip():
        return "empty transcript", record
    if not Path(record["audio"]).is_file():
        return "missing audio file", record
    try:
        info = soundfile.info(record["audio"])
    except soundfile.SoundFileError:
        return "unreadable audio", record
    if info.frames <= 0:
        return "unreadable audio", record
    return None, {**record, "duration": info.frames / info.samplerate, "sample_rate": info.samplerate}


def ctc_frames_needed(labels: Sequence[int]) -> int:
    """Fewest output frames a CTC alignment of ``labels`` needs: one per label, plus a blank between repeats."""
    return len(labels) + sum(1 for previous, current in zip(labels, labels[1:]) if previous == current)


def filter_records(
    records: Sequence[dict], alphabet: Alphabet, max_duration_s: float | None, output_stride: int | None, source: str
) -> tuple[list[dict], Counter]:
    """Drop utterances longer than ``max_duration_s`` and those CTC cannot align.

    An utterance of ``n`` feature frames gets about ``n // output_stride`` output frames from
    a model of that total stride (exact for odd kernel widths, one more than the model gives
    per even-width layer); CTC needs at least :func:`ctc_frames_needed` of them. ``None``
    skips a filter. Returns the kept records and the counts of each reason, which are logged.
    """
    kept, reasons = [], Counter()
    for record in records:
        if max_duration_s is not None and record["duration"] > max_duration_s:
            reasons[f"longer than {max_duration_s} s"] += 1
            continue
        frames = num_frames(round(record["duration"] * SAMPLE_RATE))
        if output_stride is not None and frames // output_stride < ctc_frames_needed(alphabet.encode(record["text"])):
            reasons[f"too short for CTC at output stride {output_stride}"] += 1
            continue
        kept.append(record)
    if reasons:
        log.info("%s: filtered %d utterances: %s", source, sum(reasons.values()), dict(reasons))
    return kept, reasons


class SpeechDataset(Dataset):
    """Utterances as normalized log-mel features and encoded transcripts.

    Audio is read with soundfile and resampled to 16 kHz; features are computed in the
    DataLoader worker or read from ``feature_cache``. Run :func:`check_records` first: a file
    that fails only when decoded is named in the log and skipped (``on_error="skip"``, item
    ``None``, which :func:`collate` drops) or raises (``"error"``). Skipped utterances are
    marked in ``undecodable``, a mask in shared memory that DataLoader workers write to.
    A cached feature file that cannot be read is named in the log and computed anew.

    Args:
        records: manifest records with ``duration`` (see :func:`check_records`).
        alphabet: encodes the transcripts.
        features: the feature extractor.
        augment: SpecAugment for training, applied after the cache; ``None`` for evaluation.
        on_error: ``"skip"`` or ``"error"`` for files that fail to decode.
        feature_cache: folder for cached features, keyed by feature config, record and audio
            file size and time; ``None`` computes them every time.

    Shapes:
        ``dataset[i]`` is ``{"features": (n_mels, frames), "targets": (labels,), "record": dict}``.
    """

    def __init__(
        self,
        records: Sequence[dict],
        alphabet: Alphabet,
        features: LogMel,
        augment: SpecAugment | None = None,
        on_error: str = "skip",
        feature_cache: str | os.PathLike | None = None,
    ) -> None:
        if on_error not in ON_ERROR_POLICIES:
            raise ValueError(f"on_error must be one of {ON_ERROR_POLICIES}, got {on_error!r}")
        self.records = list(records)
        self.alphabet = alphabet
        self.features = features
        self.augment = augment
        self.on_error = on_error
        self.undecodable = torch.zeros(len(self.records), dtype=torch.bool).share_memory_()
        self.feature_cache = None
        if feature_cache is not None:
            config_key = hashlib.sha1(json.dumps(features.config, sort_keys=True).encode()).hexdigest()[:10]
            self.feature_cache = Path(feature_cache) / config_key
            self.feature_cache.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def durations(self) -> list[float]:
        return [record["duration"] for record in self.records]

    def __getitem__(self, index: int) -> dict | None:
        record = self.records[index]
        try:
            features = self._features(record)
        except (soundfile.SoundFileError, OSError) as error:
            if self.on_error == "error":
                raise RuntimeError(f"cannot decode {record['audio']} (utterance {record['id']}): {error}") from error
            log.warning("skipped %s (utterance %s): cannot decode it: %s", record["audio"], record["id"], error)
            self.undecodable[index] = True
            return None
        if self.augment is not None:
            features = self.augment(features)
        targets = torch.tensor(self.alphabet.encode(record["text"]), dtype=torch.long)
        return {"features": features, "targets": targets, "record": record}

    @torch.no_grad()
    def _features(self, record: dict) -> Tensor:
        if self.feature_cache is None:
            return self.features(load_audio(record["audio"]))
        stat = os.stat(record["audio"])
        key = f"{record['id']}|{record['audio']}|{stat.st_size}|{stat.st_mtime_ns}"
        cached = self.feature_cache / f"{hashlib.sha1(key.encode()).hexdigest()}.pt"
        if cached.is_file():
            try:
                features = torch.load(cached, weights_only=True)
            except Exception as error:  # whatever a damaged file makes torch.load raise
                log.warning("feature cache file %s (utterance %s) cannot be read (%s); computing it anew", cached, record["id"], error)
            else:
                if isinstance(features, Tensor) and features.dim() == 2 and features.shape[0] == self.features.n_mels:
                    return features
                log.warning("feature cache file %s (utterance %s) holds no (n_mels, frames) tensor; computing it anew", cached, record["id"])
        features = self.features(load_audio(record["audio"]))
        temporary = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        torch.save(features, temporary)
        temporary.replace(cached)
        return features


def collate(items: Sequence[dict | None]) -> dict:
    """The batch dict of docs/design.md from dataset items; ``None`` items (skipped files) are dropped.

    Shapes:
        ``features (B, n_mels, T_max)`` and ``targets (B, S_max)``, both zero padded, with
        ``feature_lengths (B,)`` and ``target_lengths (B,)``; ``records`` in the same order.
    """
    items = [item for item in items if item is not None]
    if not items:
        raise RuntimeError("every utterance of this batch failed to decode; the warnings above name the files")
    return {
        "features": pad_sequence([item["features"].T for item in items], batch_first=True).transpose(1, 2),
        "feature_lengths": torch.tensor([item["features"].shape[-1] for item in items], dtype=torch.long),
        "targets": pad_sequence([item["targets"] for item in items], batch_first=True),
        "target_lengths": torch.tensor([len(item["targets"]) for item in items], dtype=torch.long),
        "records": [item["record"] for item in items],
    }


class DurationBatchSampler(Sampler[list[int]]):
    """Batches of utterances of similar duration, bounded by padded seconds.

    Utterances sorted by duration are cut into batches whose size times longest duration
    stays within ``max_batch_seconds`` (an utterance longer than that forms a batch alone).
    The batches are fixed, so every epoch has the same number of steps; with ``shuffle``
    their order is drawn from ``seed`` and the epoch (``set_epoch``, which Lightning calls;
    otherwise each iteration advances the epoch), without it they come shortest first.

    Under distributed training every rank makes the same batches and takes every
    ``num_replicas``-th from ``rank`` on, repeating the first ones so that ranks get equally many.

    Args:
        durations: seconds of each utterance of the dataset.
        max_batch_seconds: bound on ``batch size * longest duration in the batch``.
        shuffle: shuffle the batch order each epoch (training) or not (evaluation).
        seed: seed of the shuffles.
        num_replicas: ranks sharing the data; defaults to the distributed world size, or 1.
        rank: this rank; defaults to the distributed rank, or 0.
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_batch_seconds: float,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds must be positive, got {max_batch_seconds}")
        if len(durations) == 0:
            raise ValueError("DurationBatchSampler needs at least one utterance")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.num_replicas = num_replicas if num_replicas is not None else (torch.distributed.get_world_size() if distributed else 1)
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, {self.num_replicas})")
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.batches: list[list[int]] = []
        longest = 0.0
        for index in numpy.argsort(durations, kind="stable").tolist():
            longest = max(longest, durations[index])
            if self.batches and (len(self.batches[-1]) + 1) * longest <= max_batch_seconds:
                self.batches[-1].append(index)
            else:
                self.batches.append([index])
                longest = durations[index]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = numpy.arange(len(self.batches))
        if self.shuffle:
            order = numpy.random.default_rng((self.seed, self.epoch)).permutation(order)
        self.epoch += 1
        order = numpy.resize(order, len(self) * self.num_replicas)
        return iter([self.batches[i] for i in order[self.rank :: self.num_replicas]])

    def __len__(self) -> int:
        return math.ceil(len(self.batches) / self.num_replicas)
