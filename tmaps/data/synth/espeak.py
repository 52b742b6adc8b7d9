"""Speech, word and phoneme timings from libespeak-ng (the library of ``espeakng-loader``), via ctypes.

espeak-ng runs in synchronous mode: ``espeak_Synth`` returns once the utterance is spoken,
and the synthesis callback receives the 22050 Hz int16 samples together with the WORD and
PHONEME events that mark where each word and phoneme starts. The library keeps its voice
and parameters in process-global state, so every :meth:`Espeak.synthesize` call holds a
process-wide lock and sets voice, rate, pitch and random seed afresh.

Reproducibility: libespeak-ng also carries synthesis state from one utterance to the next
(the phase of its pitch flutter, among others) that no API call resets, so an utterance
shifts by a few milliseconds depending on what was spoken before. Each process therefore
loads its own private copy of the library file, and a forked child loads a fresh copy: the
same sequence of calls in a fresh process, or in a process forked from any parent, gives
identical samples. :mod:`tmaps.data.synth.corpus` speaks each chunk of a corpus in a
forked child.
"""

from __future__ import annotations

import bisect
import ctypes
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import espeakng_loader
import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16_000
ESPEAK_SAMPLE_RATE = 22_050
# 16000 / 22050 = 320 / 441
_RESAMPLE_UP, _RESAMPLE_DOWN = 320, 441

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAMETER_RATE = 1
_PARAMETER_PITCH = 3
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
RATE_RANGE_WPM = (80, 450)
PITCH_RANGE = (0, 100)

# Phoneme mnemonics carry the stress of their syllable ("'aU", ",I"); labels keep the phoneme only.
_STRESS_MARKS = str.maketrans("", "", "',")
# Pauses ("_", "_:"), language switches ("_^_", "(en)") and word ends ("||") end the phoneme
# before them but are not phonemes themselves.
_NON_PHONEME_PREFIXES = ("_", "(", "||")
# The final phoneme ends where the audio falls below this level relative to its peak.
_SILENCE_DB = -40.0

Segment = tuple[str, float, float]


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class _Mark:
    """A WORD event (``word_number`` counts the words of the text from 1) or a PHONEME event."""

    time: float
    word_number: int = 0
    phoneme: str = ""


@dataclass(frozen=True)
class SynthesizedUtterance:
    """One spoken utterance.

    Attributes:
        audio: ``(n_samples,)`` float32 waveform in [-1, 1] at :data:`SAMPLE_RATE`.
        words: ``(word, start_s, end_s)`` per word of the text, in order.
        phonemes: ``(espeak phoneme mnemonic without stress, start_s, end_s)``, in order;
            pauses between words are not segments.
    """

    audio: np.ndarray
    words: list[Segment]
    phonemes: list[Segment]

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


class AlignmentError(ValueError):
    """espeak's events cannot be matched to the words of the text (e.g. a word was not spoken)."""


class _Library:
    """A private copy of libespeak-ng for this process, initialized once; use only holding ``_LOCK``."""

    def __init__(self) -> None:
        # A copy at another path is a separate library to the dynamic loader, with its own state.
        with tempfile.TemporaryDirectory(prefix="tmaps-espeak-") as folder:
            private_copy = Path(shutil.copy(espeakng_loader.get_library_path(), folder))
            self.native = ctypes.CDLL(str(private_copy))
        self.native.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.native.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.native.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.native.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        self.native.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.native.espeak_ng_SetRandSeed.restype = None
        self.native.espeak_Info.restype = ctypes.c_char_p
        self.native.espeak_Info.argtypes = [ctypes.c_void_p]
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        sample_rate = self.native.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, options)
        if sample_rate != ESPEAK_SAMPLE_RATE:
            raise RuntimeError(
                f"libespeak-ng at {espeakng_loader.get_library_path()} failed to initialize "
                f"(returned {sample_rate}, expected sample rate {ESPEAK_SAMPLE_RATE})"
            )
        self.version = self.native.espeak_Info(None).decode()
        self.chunks: list[np.ndarray] = []
        self.marks: list[_Mark] = []
        # ctypes must keep the callback object alive as long as the library may call it.
        self.callback = _SynthCallback(self._receive)
        self.native.espeak_SetSynthCallback(self.callback)

    def _receive(self, samples: ctypes.POINTER(ctypes.c_short), n_samples: int, events: ctypes.POINTER(_Event)) -> int:
        if n_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(samples, (n_samples,)).copy())
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            time = event.audio_position / 1000
            if event.type == _EVENT_WORD:
                self.marks.append(_Mark(time, word_number=event.id.number))
            elif event.type == _EVENT_PHONEME:
                self.marks.append(_Mark(time, phoneme=event.id.string.decode("ascii", "replace")))
            index += 1
        return 0

    def speak(self, text: str, voice: str, rate_wpm: int, pitch: int, seed: int) -> tuple[np.ndarray, list[_Mark]]:
        """Raw 22050 Hz int16 samples and the WORD and PHONEME marks of one utterance, in time order."""
        if self.native.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        self.native.espeak_SetParameter(_PARAMETER_RATE, rate_wpm, 0)
        self.native.espeak_SetParameter(_PARAMETER_PITCH, pitch, 0)
        # Seeds the noise of breathy voices.
        self.native.espeak_ng_SetRandSeed(seed)
        self.chunks, self.marks = [], []
        encoded = text.encode("utf-8")
        status = self.native.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} on {text!r}")
        samples = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)
        return samples, self.marks


_LOCK = threading.Lock()
_library: _Library | None = None


def _shared_library() -> _Library:
    global _library
    if _library is None:
        _library = _Library()
    return _library


def _forget_library_in_forked_child() -> None:
    """A forked child gets a fresh lock and, on first use, a fresh copy of the library."""
    global _LOCK, _library
    _LOCK = threading.Lock()
    _library = None


os.register_at_fork(after_in_child=_forget_library_in_forked_child)


def _variant_file(voice: str) -> Path | None:
    _, _, variant = voice.partition("+")
    return Path(espeakng_loader.get_data_path()) / "voices" / "!v" / variant if variant else None


def check_voice(voice: str, language: str | None = None) -> None:
    """Raise ``ValueError`` unless espeak-ng has ``voice`` (and it speaks ``language``, if given).

    A voice is a language (``"de"``, ``"en-us"``) with an optional ``+variant`` from the
    ``voices/!v`` folder of espeak-ng's data (``"de+f2"``).
    """
    voice_language, _, _ = voice.partition("+")
    if language is not None and voice_language != language and not voice_language.startswith(language + "-"):
        raise ValueError(f"voice {voice!r} does not speak the corpus language {language!r}")
    variant_file = _variant_file(voice)
    if variant_file is not None and not variant_file.is_file():
        variants = sorted(path.name for path in variant_file.parent.iterdir())
        raise ValueError(f"espeak-ng has no voice variant {variant_file.name!r} (in {voice!r}); known: {variants}")
    with _LOCK:
        if _shared_library().native.espeak_SetVoiceByName(voice_language.encode()) != 0:
            raise ValueError(f"espeak-ng has no language {voice_language!r} (in voice {voice!r})")


def voice_gender(voice: str) -> str | None:
    """``"male"``/``"female"`` from the ``gender`` line of the voice's variant file, else None."""
    variant_file = _variant_file(voice)
    if variant_file is None or not variant_file.is_file():
        return None
    for line in variant_file.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "gender":
            return fields[1]
    return None


class Espeak:
    """Synthesizes normalized text with word and phoneme segments.

    All instances in a process share one libespeak-ng; calls are serialized by a lock.
    See the module docstring on reproducibility.

    Example:
        >>> utterance = Espeak().synthesize("the house is big", voice="en+m3", rate_wpm=170, pitch=50)
        >>> utterance.words[0][0]
        'the'
    """

    def __init__(self) -> None:
        with _LOCK:
            self.version = _shared_library().version

    def synthesize(
        self, text: str, voice: str, rate_wpm: int = 175, pitch: int = 50, seed: int = 0
    ) -> SynthesizedUtterance:
        """Speak ``text`` (words separated by single spaces, as :func:`tmaps.text.normalize` gives).

        Args:
            text: normalized text; its space-separated words become the word segments.
            voice: espeak-ng voice, a language with an optional variant (``"de+f2"``).
            rate_wpm: speaking rate in words per minute (80..450).
            pitch: base pitch on espeak's 0..100 scale.
            seed: seed of espeak's random noise (breathy voices).

        Raises:
            ValueError: unknown voice, text not normalized, or rate/pitch out of range.
            AlignmentError: espeak read the text as a different number of words (it reads
                roman numerals like "iii" as several), or spoke no phoneme for a word.
        """
        words = text.split(" ")
        if not text or any(not word for word in words):
            raise ValueError(f"text {text!r} is not normalized (empty, or words not separated by single spaces)")
        if not RATE_RANGE_WPM[0] <= rate_wpm <= RATE_RANGE_WPM[1]:
            raise ValueError(f"rate_wpm {rate_wpm} is outside espeak's range {RATE_RANGE_WPM}")
        if not PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]:
            raise ValueError(f"pitch {pitch} is outside espeak's range {PITCH_RANGE}")
        with _LOCK:
            # The full stop gives the utterance a sentence-final intonation.
            samples, marks = _shared_library().speak(text + ".", voice, int(rate_wpm), int(pitch), int(seed))
        audio = resample_poly(samples.astype(np.float32) / 32768.0, _RESAMPLE_UP, _RESAMPLE_DOWN).astype(np.float32)
        word_segments, phonemes = _align(marks, words, _sounding_end(audio), text)
        return SynthesizedUtterance(audio, word_segments, phonemes)


def _sounding_end(audio: np.ndarray) -> float:
    """Time in seconds just after the last sample above ``_SILENCE_DB`` of the peak."""
    if not len(audio):
        return 0.0
    threshold = np.abs(audio).max() * 10 ** (_SILENCE_DB / 20)
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return (loud[-1] + 1) / SAMPLE_RATE if len(loud) else 0.0


def _align(marks: list[_Mark], words: list[str], sounding_end: float, text: str) -> tuple[list[Segment], list[Segment]]:
    """Word and phoneme segments from the marks of one utterance.

    Every later mark (word or phoneme, pauses included) ends the phoneme before it; the last
    phoneme ends where the audio falls silent. A word starts at its WORD event and ends with
    the last phoneme before the next WORD event. espeak sometimes starts a word at the same
    time as the last phoneme of the word before; the word then starts where that phoneme ends.
    """
    word_numbers = [mark.word_number for mark in marks if mark.word_number]
    if word_numbers != list(range(1, len(words) + 1)):
        raise AlignmentError(f"espeak-ng read {text!r} as {len(word_numbers)} words, not {len(words)}")
    boundaries = [mark.time for mark in marks]
    if boundaries != sorted(boundaries):
        raise AlignmentError(f"espeak-ng's events for {text!r} are not in time order")
    phonemes: list[Segment] = []
    word_spans: list[list[float]] = []
    for mark in marks:
        if mark.word_number:
            start = max(mark.time, word_spans[-1][1]) if word_spans else mark.time
            word_spans.append([start, start])
            continue
        label = mark.phoneme.translate(_STRESS_MARKS)
        if not label or label.startswith(_NON_PHONEME_PREFIXES):
            continue
        next_boundary = bisect.bisect_right(boundaries, mark.time)
        end = boundaries[next_boundary] if next_boundary < len(boundaries) else max(sounding_end, mark.time)
        phonemes.append((label, mark.time, end))
        if word_spans:
            word_spans[-1][1] = end
    unspoken = [word for word, (start, end) in zip(words, word_spans) if end <= start]
    if unspoken:
        raise AlignmentError(f"espeak-ng spoke no phonemes for the words {unspoken} of {text!r}")
    return [(word, start, end) for word, (start, end) in zip(words, word_spans)], phonemes
