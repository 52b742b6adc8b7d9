"""The synthetic speech corpus: espeak-ng speech with word and phoneme segments, cached by config.

:func:`synthesize_corpus` writes ``train.jsonl``, ``dev.jsonl``, ``test.jsonl``,
``test_unseen.jsonl`` (records as in docs/design.md) and ``audio/*.flac`` (16 kHz PCM_16)
into ``root / f"synth-{language}-{key}"``, where ``key`` hashes the config, the generator
version and the versions of espeak-ng, wordfreq and pyspellchecker. A complete folder is
reused; a changed config gets a new folder.

Texts are word sequences drawn from the ``vocabulary_size`` most frequent wordfreq words
(weighted by frequency), or the sentences of ``text_file``. Each utterance draws its text,
rate and pitch from a random generator seeded by ``(seed, split, index)``; speakers take
turns, so every voice of a split gets an equal share.

Determinism: the same config gives byte-identical manifests and audio. libespeak-ng keeps
state across utterances (see :mod:`tmaps.data.synth.espeak`), so utterances are spoken in
fixed chunks of ``CHUNK_SIZE``, each by a new child process with a fresh copy of the library;
the number of workers only changes how many chunks run at once.

Interruption: the corpus is built in a hidden sibling folder and renamed into place when
complete, so a killed build never leaves a folder that looks complete. Leftovers of killed
builds on this host are removed by the next build of the same config.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from importlib.metadata import version
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np
import soundfile

from tmaps.data.manifest import SPLITS, write_manifest
from tmaps.data.synth.espeak import (
    PITCH_RANGE,
    RATE_RANGE_WPM,
    SAMPLE_RATE,
    AlignmentError,
    Espeak,
    check_voice,
    voice_gender,
)
from tmaps.progress import progress_bar
from tmaps.text import ALPHABETS, Alphabet, normalize

logger = logging.getLogger(__name__)

# Bump when a change to the generator changes its output for the same config.
GENERATOR_VERSION = 1
CHUNK_SIZE = 64
CONFIG_FILE = "synth_config.json"
DEFAULT_N_UTTERANCES = {"train": 2000, "dev": 100, "test": 100, "test_unseen": 100}
DEFAULT_VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4")
DEFAULT_UNSEEN_VARIANTS = ("m7", "f5")
# wordfreq's lists hold fragments of contractions ("s", "t", "d") and spelled letters as
# words; only these single letters are words of their own.
_SINGLE_LETTER_WORDS = {"en": frozenset({"a", "i"})}
# espeak rarely reads a drawn word as several (roman numerals: "iii" as "the third"); such a
# draw is replaced by the next draw of the same generator.
_MAX_DRAWS = 20
# prctl option of Linux: a signal for this process when its parent dies.
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesize; ``data.source`` of the Hydra data config (``kind: synth`` beside it).

    ``voices`` and ``unseen_voices`` default to the variants m1-m4, f1-f4 and m7, f5 of
    ``language``. Ranges (``words_per_utterance``, ``rate_wpm``, ``pitch``) are inclusive
    ``(low, high)`` pairs drawn uniformly per utterance. With ``text_file`` (UTF-8, one
    sentence per line, blank lines skipped), sentences are normalized and a sentence with a
    character outside the alphabet is an error naming its line; the splits get disjoint
    sentences (in proportion to their sizes, reused in turn when the file is short).
    ``snr_db`` adds pink noise at that signal-to-noise ratio over the whole utterance.
    """

    language: str = "en"
    n_utterances: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_N_UTTERANCES))
    voices: tuple[str, ...] | None = None
    unseen_voices: tuple[str, ...] | None = None
    words_per_utterance: tuple[int, int] = (3, 10)
    vocabulary_size: int = 3000
    text_file: str | None = None
    rate_wpm: tuple[int, int] = (140, 200)
    pitch: tuple[int, int] = (35, 65)
    snr_db: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.language not in ALPHABETS:
            raise ValueError(f"synth config: language {self.language!r} has no alphabet; known: {sorted(ALPHABETS)}")
        unknown_splits = set(self.n_utterances) - set(SPLITS)
        if unknown_splits:
            raise ValueError(f"synth config: n_utterances has unknown splits {sorted(unknown_splits)}; known: {SPLITS}")
        counts = {**DEFAULT_N_UTTERANCES, **self.n_utterances}
        for split, count in counts.items():
            if not isinstance(count, int) or count < 0:
                raise ValueError(f"synth config: n_utterances.{split} must be a non-negative integer, got {count!r}")
        object.__setattr__(self, "n_utterances", {split: counts[split] for split in SPLITS})
        for name, variants in (("voices", DEFAULT_VARIANTS), ("unseen_voices", DEFAULT_UNSEEN_VARIANTS)):
            given = getattr(self, name)
            voices = tuple(f"{self.language}+{variant}" for variant in variants) if given is None else tuple(given)
            if not voices or not all(isinstance(voice, str) for voice in voices):
                raise ValueError(f"synth config: {name} must be a non-empty list of espeak voices, got {given!r}")
            object.__setattr__(self, name, voices)
        shared = set(self.voices) & set(self.unseen_voices)
        if shared:
            raise ValueError(f"synth config: voices {sorted(shared)} are in both voices and unseen_voices")
        self._set_range("words_per_utterance", (1, None))
        self._set_range("rate_wpm", RATE_RANGE_WPM)
        self._set_range("pitch", PITCH_RANGE)
        if not isinstance(self.vocabulary_size, int) or self.vocabulary_size < 1:
            raise ValueError(f"synth config: vocabulary_size must be a positive integer, got {self.vocabulary_size!r}")
        if self.text_file is not None and not Path(self.text_file).is_file():
            raise ValueError(f"synth config: text_file {self.text_file!r} does not exist")
        if self.snr_db is not None and not isinstance(self.snr_db, (int, float)):
            raise ValueError(f"synth config: snr_db must be a number or null, got {self.snr_db!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"synth config: seed must be a non-negative integer, got {self.seed!r}")

    def _set_range(self, name: str, limits: tuple[int, int | None]) -> None:
        value = getattr(self, name)
        if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
            raise ValueError(f"synth config: {name} must be a [low, high] pair, got {value!r}")
        low, high = value
        lowest, highest = limits
        if not all(isinstance(bound, int) for bound in value) or not lowest <= low <= high:
            raise ValueError(f"synth config: {name} must be integers with {lowest} <= low <= high, got {list(value)}")
        if highest is not None and high > highest:
            raise ValueError(f"synth config: {name} must lie within {list(limits)}, got {list(value)}")
        object.__setattr__(self, name, (low, high))

    @classmethod
    def from_mapping(cls, mapping: Mapping) -> SynthConfig:
        """Config from a plain mapping; unknown keys are errors, ``kind: synth`` is accepted."""
        known = {config_field.name for config_field in fields(cls)}
        values = dict(mapping)
        kind = values.pop("kind", "synth")
        if kind != "synth":
            raise ValueError(f"synth config: kind must be 'synth', got {kind!r}")
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"synth config: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        if values.get("n_utterances") is not None:
            values["n_utterances"] = dict(values["n_utterances"])
        return cls(**values)


@dataclass(frozen=True)
class _UtterancePlan:
    """One utterance to speak: its text is ``sentence`` or, when None, drawn from the vocabulary."""

    split: str
    index: int
    sentence: str | None = None
    line_number: int | None = None


@dataclass(frozen=True)
class _Chunk:
    config: SynthConfig
    folder: Path
    plans: list[_UtterancePlan]
    vocabulary: tuple[tuple[str, ...], np.ndarray] | None


def _restore_eszett(words: list[str]) -> list[str]:
    """German words with the ß that wordfreq's case folding turned into "ss" ("strasse" -> "straße").

    Each "ss" stays or becomes "ß", whichever spelling pyspellchecker's German word counts
    (which keep ß) know better; ties keep "ss" ("masse", "dass").
    """
    from spellchecker import SpellChecker

    counts = SpellChecker(language="de", distance=1).word_frequency.dictionary
    spelled = []
    for word in words:
        pieces = word.split("ss")
        candidates = [
            "".join(piece + joint for piece, joint in zip(pieces, (*joints, "")))
            for joints in itertools.product(("ss", "ß"), repeat=len(pieces) - 1)
        ]
        spelled.append(max(candidates, key=lambda candidate: (counts.get(candidate, 0), candidate == word)))
    return spelled


@lru_cache(maxsize=4)
def vocabulary(language: str, size: int) -> tuple[tuple[str, ...], np.ndarray]:
    """The ``size`` most frequent wordfreq words spelled within the alphabet, and their probabilities.

    Words that normalization would change ("u.s"), that hold characters outside the
    alphabet (digits) or that are single letters other than real one-letter words are left
    out. German words get back their ß (:func:`_restore_eszett`).

    Returns:
        ``(words, probabilities)``, ``probabilities`` a read-only ``(size,)`` array summing to 1.
    """
    import wordfreq

    letters = set(Alphabet.for_language(language).chars) - {" "}
    single_letter_words = _SINGLE_LETTER_WORDS.get(language, frozenset())
    words: list[str] = []
    requested = 2 * size
    while len(words) < size:
        candidates = wordfreq.top_n_list(language, requested)
        words = [
            word
            for word in candidates
            if normalize(word) == word and set(word) <= letters and (len(word) > 1 or word in single_letter_words)
        ][:size]
        if len(candidates) < requested and len(words) < size:
            raise ValueError(
                f"wordfreq has only {len(words)} usable {language!r} words, fewer than vocabulary_size {size}"
            )
        requested *= 2
    frequencies = np.array([wordfreq.word_frequency(word, language) for word in words])
    probabilities = frequencies / frequencies.sum()
    probabilities.setflags(write=False)
    return tuple(_restore_eszett(words) if language == "de" else words), probabilities


def _text_file_sentences(config: SynthConfig) -> dict[str, list[tuple[str, int]]]:
    """Normalized ``(sentence, line number)`` pairs of ``text_file``, dealt out to the splits."""
    alphabet = Alphabet.for_language(config.language)
    sentences = []
    with open(config.text_file, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            sentence = normalize(line)
            if not sentence:
                continue
            unknown = alphabet.unknown_chars(sentence)
            if unknown:
                raise ValueError(
                    f"{config.text_file}:{line_number}: characters {sorted(unknown)} are outside the "
                    f"{config.language!r} alphabet; spell them out or remove the line"
                )
            sentences.append((sentence, line_number))
    order = np.random.default_rng([config.seed, len(SPLITS)]).permutation(len(sentences))
    total = sum(config.n_utterances.values())
    scale = min(1.0, len(sentences) / total) if total else 1.0
    portions, start = {}, 0
    for split in SPLITS:
        share = int(config.n_utterances[split] * scale)
        if config.n_utterances[split] and not share:
            raise ValueError(
                f"text_file {config.text_file} has {len(sentences)} sentences, too few to give every split its own"
            )
        portions[split] = [sentences[index] for index in order[start : start + share]]
        start += share
    return portions


def _plans(config: SynthConfig) -> list[_UtterancePlan]:
    portions = _text_file_sentences(config) if config.text_file else None
    plans = []
    for split in SPLITS:
        for index in range(config.n_utterances[split]):
            if portions is None:
                plans.append(_UtterancePlan(split, index))
            else:
                sentence, line_number = portions[split][index % len(portions[split])]
                plans.append(_UtterancePlan(split, index, sentence, line_number))
    return plans


def _pink_noise(n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_samples,)`` noise with power falling as 1/f (white noise shaped in the frequency domain)."""
    spectrum = np.fft.rfft(rng.standard_normal(n_samples))
    frequencies = np.fft.rfftfreq(n_samples)
    frequencies[0] = frequencies[1] if n_samples > 1 else 1.0
    return np.fft.irfft(spectrum / np.sqrt(frequencies), n_samples)


def _add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    noise = _pink_noise(len(audio), rng)
    noise_power = np.mean(audio.astype(np.float64) ** 2) / 10 ** (snr_db / 10)
    noise *= np.sqrt(noise_power / max(np.mean(noise**2), np.finfo(np.float64).tiny))
    return (audio + noise).astype(np.float32)


def _to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def _segments(segments: list[tuple[str, float, float]], duration: float) -> list[list]:
    return [[label, round(start, 3), round(min(end, duration), 3)] for label, start, end in segments]


def _speak(plan: _UtterancePlan, chunk: _Chunk, espeak: Espeak) -> dict:
    """Synthesize one planned utterance, write its FLAC and return its manifest record."""
    config = chunk.config
    rng = np.random.default_rng([config.seed, SPLITS.index(plan.split), plan.index])
    voices = config.unseen_voices if plan.split == "test_unseen" else config.voices
    voice = voices[plan.index % len(voices)]
    rate_wpm = int(rng.integers(config.rate_wpm[0], config.rate_wpm[1] + 1))
    pitch = int(rng.integers(config.pitch[0], config.pitch[1] + 1))
    espeak_seed = int(rng.integers(2**31))
    for draw in itertools.count(1):
        if plan.sentence is None:
            words, probabilities = chunk.vocabulary
            n_words = int(rng.integers(config.words_per_utterance[0], config.words_per_utterance[1] + 1))
            text = " ".join(rng.choice(words, size=n_words, p=probabilities))
        else:
            text = plan.sentence
        try:
            utterance = espeak.synthesize(text, voice, rate_wpm, pitch, seed=espeak_seed)
            break
        except AlignmentError as error:
            if plan.sentence is not None:
                raise ValueError(f"{config.text_file}:{plan.line_number}: {error}") from None
            if draw == _MAX_DRAWS:
                raise
    audio = utterance.audio if config.snr_db is None else _add_noise(utterance.audio, config.snr_db, rng)
    utterance_id = f"{config.language}-{plan.split}-{plan.index:06d}"
    audio_path = chunk.folder / "audio" / f"{utterance_id}.flac"
    soundfile.write(audio_path, _to_pcm16(audio), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    duration = round(len(audio) / SAMPLE_RATE, 4)
    record = {
        "id": utterance_id,
        "audio": str(audio_path),
        "duration": duration,
        "sample_rate": SAMPLE_RATE,
        "text": text,
        "language": config.language,
        "speaker": voice,
        "words": _segments(utterance.words, duration),
        "phonemes": _segments(utterance.phonemes, duration),
        "gender": voice_gender(voice),
        "rate": rate_wpm,
        "pitch": pitch,
    }
    if config.snr_db is not None:
        record["snr_db"] = config.snr_db
    return record


def _speak_chunk(chunk: _Chunk, sender: Connection, parent_pid: int) -> None:
    """Process target: send ``(None, records)`` of the chunk, or ``(exception, None)``.

    Dies with the parent (a killed build) on Linux, and elsewhere stops at the next
    utterance, so that nothing writes into the parent's folder after it.
    """
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        espeak = Espeak()
        records = []
        for plan in chunk.plans:
            if os.getppid() != parent_pid:
                return
            records.append(_speak(plan, chunk, espeak))
        sender.send((None, records))
    except Exception as error:
        sender.send((error, None))
    finally:
        sender.close()


def _speak_chunks(chunks: list[_Chunk], num_workers: int) -> list[list[dict]]:
    """Records of every chunk, each chunk spoken by a new child process, ``num_workers`` at a time."""
    # A forked child starts at once, with everything imported; spawn is the fallback (Windows).
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    results: list[list[dict]] = [[] for _ in chunks]
    waiting = list(enumerate(chunks))[::-1]
    running: dict[Connection, tuple[int, multiprocessing.process.BaseProcess]] = {}
    bar = progress_bar(description="synthesizing", total=sum(len(chunk.plans) for chunk in chunks))
    try:
        while waiting or running:
            while waiting and len(running) < num_workers:
                index, chunk = waiting.pop()
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_speak_chunk, args=(chunk, sender, os.getpid()), daemon=True)
                process.start()
                sender.close()
                running[receiver] = (index, process)
            for receiver in wait(list(running)):
                index, process = running.pop(receiver)
                try:
                    error, records = receiver.recv()
                except EOFError:
                    process.join()
                    message = f"the process speaking chunk {index} died (exit code {process.exitcode})"
                    raise RuntimeError(message) from None
                process.join()
                if error is not None:
                    raise error
                results[index] = records
                bar.update(len(records))
    finally:
        bar.close()
        for _, process in running.values():
            process.terminate()
            process.join()
    return results


def describe(config: SynthConfig) -> dict:
    """Everything the corpus depends on: config, generator and library versions, text file digest."""
    settings = asdict(config)
    if config.text_file is not None:
        settings["text_file"] = hashlib.sha256(Path(config.text_file).read_bytes()).hexdigest()
    return {
        "generator_version": GENERATOR_VERSION,
        "chunk_size": CHUNK_SIZE,
        "espeak_ng": Espeak().version,
        "wordfreq": version("wordfreq"),
        "pyspellchecker": version("pyspellchecker"),
        "config": settings,
    }


def corpus_dir(config: SynthConfig, root: str | os.PathLike) -> Path:
    """The folder of ``config``'s corpus under ``root`` (whether or not it exists yet)."""
    canonical = json.dumps(describe(config), sort_keys=True)
    key = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return Path(root) / f"synth-{config.language}-{key}"


def _is_complete(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in (CONFIG_FILE, *(f"{s}.jsonl" for s in SPLITS)))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(target: Path) -> None:
    """Remove build folders of ``target`` left by killed processes of this host."""
    prefix = f".{target.name}.partial-{socket.gethostname()}-"
    for partial in target.parent.glob(prefix + "*"):
        pid = partial.name[len(prefix) :]
        if pid.isdigit() and not _process_exists(int(pid)):
            logger.info("removing %s, left by a killed build", partial)
            shutil.rmtree(partial, ignore_errors=True)


def _build(config: SynthConfig, folder: Path, num_workers: int) -> None:
    for voice in (*config.voices, *config.unseen_voices):
        check_voice(voice, config.language)
    plans = _plans(config)
    words = vocabulary(config.language, config.vocabulary_size) if config.text_file is None else None
    (folder / "audio").mkdir(parents=True)
    chunks = [
        _Chunk(config, folder, plans[start : start + CHUNK_SIZE], words) for start in range(0, len(plans), CHUNK_SIZE)
    ]
    records: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for chunk, chunk_records in zip(chunks, _speak_chunks(chunks, num_workers)):
        for plan, record in zip(chunk.plans, chunk_records):
            records[plan.split].append(record)
    for split in SPLITS:
        write_manifest(records[split], folder / f"{split}.jsonl")
    (folder / CONFIG_FILE).write_text(json.dumps(describe(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def synthesize_corpus(config: SynthConfig | Mapping, root: str | os.PathLike, num_workers: int = 1) -> Path:
    """Build the corpus of ``config`` under ``root`` unless it is there already; return its folder.

    Args:
        config: a :class:`SynthConfig` or a plain mapping for :meth:`SynthConfig.from_mapping`.
        root: folder holding synthetic corpora (``paths.data_dir``).
        num_workers: processes speaking chunks at once; the output does not depend on it.

    Raises:
        ValueError: a bad config (unknown key, voice or value), or a ``text_file`` line
            outside the alphabet.
    """
    if not isinstance(config, SynthConfig):
        config = SynthConfig.from_mapping(config)
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    target = corpus_dir(config, root)
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    partial = target.with_name(f".{target.name}.partial-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    logger.info("synthesizing %d utterances into %s", sum(config.n_utterances.values()), target)
    try:
        _build(config, partial, num_workers)
        try:
            os.replace(partial, target)
        except OSError:
            if not _is_complete(target):
                raise
            # Another process finished the same corpus first.
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target
