"""Speaking the planned utterances: the chunks of a corpus, each in a new child process, a few at a time.

libespeak-ng keeps state across utterances (see :mod:`tmaps.data.synth.espeak`), so utterances
are spoken in fixed chunks of ``CHUNK_SIZE``, each by a new child process with a fresh copy of
the library; the number of workers only changes how many chunks run at once. Each utterance
draws its text, rate and pitch from a random generator seeded by ``(seed, split, index)``;
speakers take turns, so every voice of a split gets an equal share.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np
import soundfile

from tmaps.data.manifest import SPLITS
from tmaps.data.synth.acoustics import scale_segments, speed_perturb
from tmaps.data.synth.config import SynthConfig
from tmaps.data.synth.espeak import SAMPLE_RATE, AlignmentError, Espeak, SynthesizedUtterance, voice_gender
from tmaps.data.synth.mixing import Backgrounds, mix, room_bank
from tmaps.data.synth.texts import UtterancePlan, draw_text
from tmaps.progress import progress_bar

CHUNK_SIZE = 64
# espeak rarely reads a drawn word as several (roman numerals: "iii" as "the third"); such a
# draw is replaced by the next draw of the same generator.
_MAX_DRAWS = 20
# prctl option of Linux: a signal for this process when its parent dies.
_PR_SET_PDEATHSIG = 1
# Third seed word of the babble pools' generators (utterances use their index, room banks their own word).
_BABBLE_STREAM = 0xBAB1E


@dataclass(frozen=True)
class Chunk:
    """The utterances one child process speaks: ``plans`` of ``config``, written into ``folder``."""

    index: int
    config: SynthConfig
    folder: Path
    plans: list[UtterancePlan]
    vocabulary: tuple[tuple[str, ...], np.ndarray] | None


def _to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def _segments(segments: list[tuple[str, float, float]], duration: float) -> list[list]:
    return [[label, round(start, 3), round(min(end, duration), 3)] for label, start, end in segments]


def _spoken(
    plan: UtterancePlan, chunk: Chunk, espeak: Espeak, voice: str, rng: np.random.Generator
) -> tuple[str, SynthesizedUtterance, int, int]:
    """Text, utterance, rate and pitch of one draw; a text espeak misreads is drawn again."""
    config = chunk.config
    rate_wpm = int(rng.integers(config.rate_wpm[0], config.rate_wpm[1] + 1))
    pitch = int(rng.integers(config.pitch[0], config.pitch[1] + 1))
    espeak_seed = int(rng.integers(2**31))
    for draw in itertools.count(1):
        text = draw_text(plan, config, chunk.vocabulary, rng)
        try:
            return text, espeak.synthesize(text, voice, rate_wpm, pitch, seed=espeak_seed), rate_wpm, pitch
        except AlignmentError as error:
            if plan.sentence is not None:
                raise ValueError(f"{config.text_file}:{plan.line_number}: {error}") from None
            if draw == _MAX_DRAWS:
                raise


def _split_voices(config: SynthConfig, split: str) -> tuple[str, ...]:
    return config.unseen_voices if split == "test_unseen" else config.voices


def _babble_pool(chunk: Chunk, split: str, espeak: Espeak) -> list[np.ndarray]:
    """``babble.pool_size`` utterances of vocabulary words spoken by ``split``'s voices, for ``chunk``."""
    config = chunk.config
    rng = np.random.default_rng([config.seed, SPLITS.index(split), _BABBLE_STREAM, chunk.index])
    voices = _split_voices(config, split)
    pool = []
    for index in range(config.babble.pool_size):
        plan = UtterancePlan(split, index)
        _, utterance, _, _ = _spoken(plan, chunk, espeak, voices[(chunk.index + index) % len(voices)], rng)
        pool.append(utterance.audio)
    return pool


def _speak(plan: UtterancePlan, chunk: Chunk, espeak: Espeak, backgrounds: Backgrounds) -> dict:
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
        backgrounds.rooms = room_bank(config, chunk.index)
    audio, drawn = mix(audio, config, rng, backgrounds.babble.get(plan.split), backgrounds.rooms)
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


def _speak_chunk(chunk: Chunk, sender: Connection, parent_pid: int) -> None:
    """Process target: send ``(None, records)`` of the chunk, or ``(exception, None)``.

    Dies with the parent (a killed build) on Linux, and elsewhere stops at the next
    utterance, so that nothing writes into the parent's folder after it.
    """
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        espeak = Espeak()
        records = []
        backgrounds = Backgrounds()
        for plan in chunk.plans:
            if os.getppid() != parent_pid:
                return
            records.append(_speak(plan, chunk, espeak, backgrounds))
        sender.send((None, records))
    except Exception as error:
        sender.send((error, None))
    finally:
        sender.close()


def speak_chunks(chunks: list[Chunk], num_workers: int) -> list[list[dict]]:
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
