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
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib.metadata import version
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np
import soundfile

from tmaps.config_types import check_config
from tmaps.data.manifest import SPLITS, write_manifest
from tmaps.data.synth.acoustics import (
    NOISE_EXPONENTS,
    BabbleConfig,
    ReverbConfig,
    Room,
    add_at_snr,
    babble,
    colored_noise,
    draw_room,
    float_range,
    import_pyroomacoustics,
    reverberate,
    room_impulse_responses,
    scale_segments,
    speed_perturb,
)
from tmaps.data.synth.espeak import (
    PITCH_RANGE,
    RATE_RANGE_WPM,
    SAMPLE_RATE,
    AlignmentError,
    Espeak,
    SynthesizedUtterance,
    check_voice,
    voice_gender,
)
from tmaps.progress import progress_bar
from tmaps.text import ALPHABETS, Alphabet, normalize

logger = logging.getLogger(__name__)

# Bump when a change to the generator changes its output for the same config.
# 2: noise is shaped at a fast FFT length and cut, so noisy corpora (snr_db) sound different.
# 3: noise is drawn and shaped in float32 (other noise samples) and reverberation convolves in float32 (faster).
GENERATOR_VERSION = 3
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
# Fields added after the first corpora were made, with the defaults that leave them out of a
# corpus's key: a plain config's key does not depend on options it does not use.
_LATER_FIELDS = {"speed": None, "babble": None, "reverb": None, "noise_colors": ("pink",)}
# Third seed word of the babble pools' and room banks' generators (utterances use their index).
_BABBLE_STREAM = 0xBAB1E
_ROOM_STREAM = 0x2003
# Peak level of an utterance whose mixture (speech, babble, noise) would clip.
_PEAK = 0.99


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesize; ``data.source`` of the Hydra data config (``kind: synth`` beside it).

    ``voices`` and ``unseen_voices`` default to the variants m1-m4, f1-f4 and m7, f5 of
    ``language``. Ranges (``words_per_utterance``, ``rate_wpm``, ``pitch``) are inclusive
    ``(low, high)`` pairs drawn uniformly per utterance. With ``text_file`` (UTF-8, one
    sentence per line, blank lines skipped), sentences are normalized and a sentence with a
    character outside the alphabet is an error naming its line; the splits get disjoint
    sentences (in proportion to their sizes, reused in turn when the file is short).

    Realism (each off by default, all on in ``data=synth_en_hard`` / ``synth_de_hard``), applied
    in this order:

    - ``speed``: a ``[low, high]`` range of speed-perturbation factors (drawn in steps of
      0.01; see :func:`~tmaps.data.synth.acoustics.speed_perturb`); word and phoneme times
      are divided by the factor.
    - ``reverb``: a :class:`~tmaps.data.synth.acoustics.ReverbConfig` mapping; speech and
      babble sound through a random room, aligned on the direct path so times stay.
    - ``babble``: a :class:`~tmaps.data.synth.acoustics.BabbleConfig` mapping; other talkers.
    - ``snr_db``: stationary noise at this signal-to-noise ratio (over the speech, babble
      left out), or at one drawn from a ``[low, high]`` range, over the whole utterance;
      ``noise_colors`` (``white``, ``pink``, ``brown``) are drawn from per utterance.
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
    snr_db: float | tuple[float, float] | None = None
    seed: int = 0
    speed: tuple[float, float] | None = None
    babble: BabbleConfig | None = None
    reverb: ReverbConfig | None = None
    noise_colors: tuple[str, ...] = ("pink",)

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
            object.__setattr__(self, "snr_db", float_range("", "snr_db", self.snr_db, -math.inf))
        colors = self.noise_colors
        if isinstance(colors, str) or not colors or not set(colors) <= set(NOISE_EXPONENTS):
            raise ValueError(f"synth config: noise_colors must be a non-empty list of {sorted(NOISE_EXPONENTS)}, got {colors!r}")
        object.__setattr__(self, "noise_colors", tuple(colors))
        if self.speed is not None:
            object.__setattr__(self, "speed", float_range("", "speed", self.speed, 0.5, 2.0))
        for name, kind in (("babble", BabbleConfig), ("reverb", ReverbConfig)):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, kind(**check_config(value, kind, f"data.source.{name}")))
            elif value is not None and not isinstance(value, kind):
                raise ValueError(f"synth config: {name} must be a mapping or null, got {value!r}")
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
        """Config from a plain mapping (``kind: synth`` is accepted); a key it does not take, or a value of the wrong type, is a
        ``ConfigTypeError`` naming it."""
        values = dict(mapping)
        kind = values.pop("kind", "synth")
        if kind != "synth":
            raise ValueError(f"synth config: kind must be 'synth', got {kind!r}")
        values = check_config(values, cls, "data.source")
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
    index: int
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


def _to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def _segments(segments: list[tuple[str, float, float]], duration: float) -> list[list]:
    return [[label, round(start, 3), round(min(end, duration), 3)] for label, start, end in segments]


def _draw_text(plan: _UtterancePlan, config: SynthConfig, vocabulary: tuple | None, rng: np.random.Generator) -> str:
    if plan.sentence is not None:
        return plan.sentence
    words, probabilities = vocabulary
    n_words = int(rng.integers(config.words_per_utterance[0], config.words_per_utterance[1] + 1))
    return " ".join(rng.choice(words, size=n_words, p=probabilities))


def _spoken(
    plan: _UtterancePlan, chunk: _Chunk, espeak: Espeak, voice: str, rng: np.random.Generator
) -> tuple[str, SynthesizedUtterance, int, int]:
    """Text, utterance, rate and pitch of one draw; a text espeak misreads is drawn again."""
    config = chunk.config
    rate_wpm = int(rng.integers(config.rate_wpm[0], config.rate_wpm[1] + 1))
    pitch = int(rng.integers(config.pitch[0], config.pitch[1] + 1))
    espeak_seed = int(rng.integers(2**31))
    for draw in itertools.count(1):
        text = _draw_text(plan, config, chunk.vocabulary, rng)
        try:
            return text, espeak.synthesize(text, voice, rate_wpm, pitch, seed=espeak_seed), rate_wpm, pitch
        except AlignmentError as error:
            if plan.sentence is not None:
                raise ValueError(f"{config.text_file}:{plan.line_number}: {error}") from None
            if draw == _MAX_DRAWS:
                raise


def _split_voices(config: SynthConfig, split: str) -> tuple[str, ...]:
    return config.unseen_voices if split == "test_unseen" else config.voices


def _babble_pool(chunk: _Chunk, split: str, espeak: Espeak) -> list[np.ndarray]:
    """``babble.pool_size`` utterances of vocabulary words spoken by ``split``'s voices, for ``chunk``."""
    config = chunk.config
    rng = np.random.default_rng([config.seed, SPLITS.index(split), _BABBLE_STREAM, chunk.index])
    voices = _split_voices(config, split)
    pool = []
    for index in range(config.babble.pool_size):
        plan = _UtterancePlan(split, index)
        _, utterance, _, _ = _spoken(plan, chunk, espeak, voices[(chunk.index + index) % len(voices)], rng)
        pool.append(utterance.audio)
    return pool


@dataclass
class _Backgrounds:
    """What the utterances of a chunk share, made when first needed: babble talkers per split, rooms."""

    babble: dict[str, list[np.ndarray]] = field(default_factory=dict)
    rooms: list[tuple[Room, list[tuple[np.ndarray, int]]]] | None = None


def _room_bank(chunk: _Chunk) -> list[tuple[Room, list[tuple[np.ndarray, int]]]]:
    """``reverb.rooms_per_chunk`` rooms for ``chunk``, each with a talker's and a babble position's response."""
    config = chunk.config
    rng = np.random.default_rng([config.seed, len(SPLITS), _ROOM_STREAM, chunk.index])
    rooms = [draw_room(config.reverb, 2, rng) for _ in range(config.reverb.rooms_per_chunk)]
    return [(room, room_impulse_responses(room, config.reverb.ism_order, SAMPLE_RATE, rng)) for room in rooms]


def _acoustics(
    audio: np.ndarray, config: SynthConfig, rng: np.random.Generator, babble_pool: list[np.ndarray] | None, rooms: list | None
) -> tuple[np.ndarray, dict]:
    """``audio`` in a room, with babble and noise as ``config`` asks; what was drawn, for the record."""
    drawn = {}
    babble_audio = None
    if config.babble is not None:
        n_talkers = int(rng.integers(config.babble.talkers[0], config.babble.talkers[1] + 1))
        babble_snr_db = round(float(rng.uniform(*config.babble.snr_db)), 1)
        babble_audio = babble(babble_pool, n_talkers, len(audio), rng)
        drawn.update(babble_talkers=n_talkers, babble_snr_db=babble_snr_db)
    if config.reverb is not None:
        room, responses = rooms[int(rng.integers(len(rooms)))]
        audio = reverberate(audio, *responses[0])
        if babble_audio is not None:
            babble_audio = reverberate(babble_audio, *responses[1])
        drawn.update(rt60_s=round(room.rt60, 3), room_m=[round(float(side), 2) for side in room.size])
    speech = audio
    if babble_audio is not None:
        audio = add_at_snr(speech, babble_audio, drawn["babble_snr_db"])
    if config.snr_db is not None:
        snr_db = config.snr_db if isinstance(config.snr_db, (int, float)) else round(float(rng.uniform(*config.snr_db)), 1)
        color = config.noise_colors[int(rng.integers(len(config.noise_colors)))] if len(config.noise_colors) > 1 else config.noise_colors[0]
        audio = add_at_snr(audio, colored_noise(len(audio), color, rng), snr_db, reference=speech)
        drawn["snr_db"] = snr_db
        if config.noise_colors != ("pink",):
            drawn["noise_color"] = color
    peak = float(np.max(np.abs(audio), initial=0.0))
    if peak > 1:
        audio = audio * (_PEAK / peak)
    return audio.astype(np.float32), drawn


def _speak(plan: _UtterancePlan, chunk: _Chunk, espeak: Espeak, backgrounds: _Backgrounds) -> dict:
    """Synthesize one planned utterance, write its FLAC and return its manifest record."""
    config = chunk.config
    rng = np.random.default_rng([config.seed, SPLITS.index(plan.split), plan.index])
    voices = _split_voices(config, plan.split)
    voice = voices[plan.index % len(voices)]
    text, utterance, rate_wpm, pitch = _spoken(plan, chunk, espeak, voice, rng)
    audio, words, phonemes = utterance.audio, utterance.words, utterance.phonemes
    speed = None
    if config.speed is not None:
        speed = round(float(rng.uniform(*config.speed)), 2)
        audio, words, phonemes = speed_perturb(audio, speed), scale_segments(words, speed), scale_segments(phonemes, speed)
    if config.babble is not None and plan.split not in backgrounds.babble:
        backgrounds.babble[plan.split] = _babble_pool(chunk, plan.split, espeak)
    if config.reverb is not None and backgrounds.rooms is None:
        backgrounds.rooms = _room_bank(chunk)
    audio, drawn = _acoustics(audio, config, rng, backgrounds.babble.get(plan.split), backgrounds.rooms)
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
        "words": _segments(words, duration),
        "phonemes": _segments(phonemes, duration),
        "gender": voice_gender(voice),
        "rate": rate_wpm,
        "pitch": pitch,
    }
    if speed is not None:
        record["speed"] = speed
    return {**record, **drawn}


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
        backgrounds = _Backgrounds()
        for plan in chunk.plans:
            if os.getppid() != parent_pid:
                return
            records.append(_speak(plan, chunk, espeak, backgrounds))
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
    settings = {name: value for name, value in asdict(config).items() if _LATER_FIELDS.get(name, ...) != value}
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
    if config.reverb is not None:
        import_pyroomacoustics()
    plans = _plans(config)
    needs_words = config.text_file is None or config.babble is not None
    words = vocabulary(config.language, config.vocabulary_size) if needs_words else None
    (folder / "audio").mkdir(parents=True)
    chunks = [
        _Chunk(index, config, folder, plans[start : start + CHUNK_SIZE], words)
        for index, start in enumerate(range(0, len(plans), CHUNK_SIZE))
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
