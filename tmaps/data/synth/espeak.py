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
identical samples. :mod:`tmaps.data.synth.speaking` speaks each chunk of a corpus in a
forked child.
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import espeakng_loader
import numpy as np
from scipy.signal import resample_poly

from tmaps.data.synth.acoustics import resampling_filter

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
_PHONEME_SEPARATOR = ord("|")
_PHONEMES_IPA = 2  # espeak_TextToPhonemes: IPA (UTF-8) instead of the ASCII mnemonics
# Pauses ("_", "_:"), language switches ("_^_", "(en)") and word ends ("||") end the phoneme
# before them but are not phonemes themselves.
_NON_PHONEME_PREFIXES = ("_", "(", "||")
# A phoneme without audio of its own shares the phoneme before if that lasts this long (s).
_SPLIT_MIN_S = 0.002
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


class _Mark(NamedTuple):
    """A WORD event (``text_position``: 1-based character of the text it speaks) or a PHONEME event."""

    time: float
    text_position: int | None = None
    phoneme: str = ""


class _Phoneme(NamedTuple):
    label: str
    start: float
    end: float
    word_mark: int  # index of the WORD mark it follows, among the WORD marks


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
        self.native.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        self.native.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.native.espeak_Info.restype = ctypes.c_char_p
        self.native.espeak_Info.argtypes = [ctypes.c_void_p]
        self.transcribed_since_synthesis = False
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
                self.marks.append(_Mark(time, text_position=event.text_position))
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
        if self.transcribed_since_synthesis:
            # Many TextToPhonemes calls leave espeak's text positions off for the next synthesis, whose
            # word marks then miss their words; a blank synthesis puts them back.
            self.transcribed_since_synthesis = False
            self.speak(" ", voice, rate_wpm, pitch, seed)
        self.chunks, self.marks = [], []
        encoded = text.encode("utf-8")
        status = self.native.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} on {text!r}")
        samples = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)
        return samples, self.marks

    def transcription(self, word: str, ipa: bool = False) -> list[str]:
        """The phoneme labels of ``word`` spoken alone by the current voice: mnemonics, or IPA, with their stress marks."""
        self.transcribed_since_synthesis = True
        text = ctypes.c_char_p(word.encode("utf-8"))
        labels = []
        while text.value:
            phonemes = self.native.espeak_TextToPhonemes(ctypes.byref(text), _CHARS_UTF8, _PHONEME_SEPARATOR << 8 | (_PHONEMES_IPA if ipa else 0))
            labels += phonemes.decode("utf-8", "replace").split(chr(_PHONEME_SEPARATOR))
        return labels

    def phoneme_count(self, word: str) -> int:
        """Number of phonemes of ``word`` spoken alone by the current voice."""
        return sum(_phoneme_label(label) is not None for label in self.transcription(word))


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
    if not _has_language(voice_language):
        raise ValueError(f"espeak-ng has no language {voice_language!r} (in voice {voice!r})")


@functools.cache
def _has_language(language: str) -> bool:
    """Whether espeak-ng can speak ``language``; asked once per language and process, because
    dozens of ``espeak_SetVoiceByName`` calls in a row (a corpus with every voice variant)
    leave the library marking no word at the start of the next utterance it speaks."""
    with _LOCK:
        return _shared_library().native.espeak_SetVoiceByName(language.encode()) == 0


@functools.cache
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

    def transcribe(self, word: str, voice: str, ipa: bool = False) -> list[str]:
        """The phonemes espeak-ng speaks for ``word`` in ``voice``: its mnemonics, or their IPA (``ipa=True``), pauses included.

        Raises:
            ValueError: unknown voice.
        """
        with _LOCK:
            library = _shared_library()
            if library.native.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            return library.transcription(word, ipa)

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
            AlignmentError: espeak read a word as several (roman numerals: "iii" as "the
                third"), or spoke no phoneme for a word.
        """
        words = text.split(" ")
        if not text or any(not word for word in words):
            raise ValueError(f"text {text!r} is not normalized (empty, or words not separated by single spaces)")
        if not RATE_RANGE_WPM[0] <= rate_wpm <= RATE_RANGE_WPM[1]:
            raise ValueError(f"rate_wpm {rate_wpm} is outside espeak's range {RATE_RANGE_WPM}")
        if not PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]:
            raise ValueError(f"pitch {pitch} is outside espeak's range {PITCH_RANGE}")
        with _LOCK:
            library = _shared_library()
            # The full stop gives the utterance a sentence-final intonation.
            samples, marks = library.speak(text + ".", voice, int(rate_wpm), int(pitch), int(seed))
            phonemes = _phoneme_segments(marks, _sounding_end(samples))
            word_segments = _word_segments(marks, phonemes, words, library.phoneme_count)
        audio = resample_poly(
            samples.astype(np.float32) / 32768.0, _RESAMPLE_UP, _RESAMPLE_DOWN, window=resampling_filter(_RESAMPLE_UP, _RESAMPLE_DOWN)
        ).astype(np.float32)
        return SynthesizedUtterance(audio, word_segments, [phoneme[:3] for phoneme in phonemes])


def _sounding_end(samples: np.ndarray) -> float:
    """Time in seconds just after the last of espeak's samples above ``_SILENCE_DB`` of the peak."""
    magnitudes = np.abs(samples.astype(np.float32))
    loud = np.flatnonzero(magnitudes > magnitudes.max(initial=0) * 10 ** (_SILENCE_DB / 20))
    return (loud[-1] + 1) / ESPEAK_SAMPLE_RATE if len(loud) else 0.0


def _phoneme_label(mnemonic: str) -> str | None:
    """The phoneme of an espeak mnemonic without stress marks; None for pauses and other markers."""
    label = mnemonic.translate(_STRESS_MARKS)
    return label if label and not label.startswith(_NON_PHONEME_PREFIXES) else None


def _phoneme_segments(marks: list[_Mark], sounding_end: float) -> list[_Phoneme]:
    """Phoneme segments from the marks of one utterance, in time order.

    Every later mark (word or phoneme, pauses included) ends the phoneme before it; the last
    phoneme ends where the audio falls silent. A phoneme whose mark coincides with the next
    mark got no audio of its own: espeak rendered it within the phoneme before (a
    post-vocalic "l" in the glide of its vowel), so it takes that phoneme's second half.
    """
    boundaries = [mark.time for mark in marks]
    if boundaries != sorted(boundaries):
        raise AlignmentError("espeak-ng's events are not in time order")
    phonemes: list[_Phoneme] = []
    word_mark = -1
    for index, mark in enumerate(marks):
        if mark.text_position is not None:
            word_mark += 1
            continue
        label = _phoneme_label(mark.phoneme)
        if label is None:
            continue
        if index + 1 < len(marks) and marks[index + 1].time == mark.time:
            previous = phonemes[-1] if phonemes else None
            if previous is not None and previous.end == mark.time and mark.time - previous.start >= _SPLIT_MIN_S:
                middle = round((previous.start + mark.time) / 2, 3)
                phonemes[-1] = previous._replace(end=middle)
                phonemes.append(_Phoneme(label, middle, mark.time, word_mark))
            continue
        next_boundary = bisect.bisect_right(boundaries, mark.time)
        end = boundaries[next_boundary] if next_boundary < len(boundaries) else max(sounding_end, mark.time)
        phonemes.append(_Phoneme(label, mark.time, end, word_mark))
    return phonemes


def _word_groups(word_marks: list[_Mark], words: list[str]) -> list[tuple[list[str], list[int]]]:
    """Words of the text and the WORD marks that speak them, group by group.

    espeak marks each word it speaks with the text position it comes from. A mark that
    points into a later word than the marks before starts a group; marks that point back
    continue it. A group has one mark per word (the usual case; also "it is", whose second
    mark points into "it"), fewer marks than words (dictionary phrases spoken as one word:
    "of the", "in the") or more (a word read as several: "iii" as "the third").
    """
    word_starts = list(itertools.accumulate((len(word) + 1 for word in words[:-1]), initial=0))
    firsts: list[int] = []
    members: list[list[int]] = []
    for mark_index, mark in enumerate(word_marks):
        word_index = bisect.bisect_right(word_starts, mark.text_position - 1) - 1
        if firsts and word_index <= firsts[-1]:
            members[-1].append(mark_index)
        else:
            firsts.append(word_index)
            members.append([mark_index])
    if not firsts or firsts[0] != 0:
        raise AlignmentError(f"espeak-ng marked no word at the start of {' '.join(words)!r}")
    ends = [*firsts[1:], len(words)]
    return [(words[first:end], marks) for first, end, marks in zip(firsts, ends, members)]


def _cut_points(n_phonemes: int, word_lengths: list[int]) -> list[int]:
    """Boundaries that deal ``n_phonemes`` to words in proportion to their lengths, at least one each."""
    total = sum(max(length, 1) for length in word_lengths)
    cumulative = itertools.accumulate(max(length, 1) for length in word_lengths[:-1])
    cuts = [0] + [round(n_phonemes * part / total) for part in cumulative] + [n_phonemes]
    for index in range(1, len(cuts) - 1):
        cuts[index] = min(max(cuts[index], cuts[index - 1] + 1), n_phonemes - (len(cuts) - 1 - index))
    return cuts


def _word_segments(
    marks: list[_Mark], phonemes: list[_Phoneme], words: list[str], phoneme_count: Callable[[str], int]
) -> list[Segment]:
    """A segment per word of the text: from its WORD mark (or first phoneme) to its last phoneme's end.

    A phrase spoken as one word gets its phonemes dealt to its words in proportion to the
    number of phonemes each word has alone ("of the": "0 v" and "D @").
    """
    word_marks = [mark for mark in marks if mark.text_position is not None]
    segments: list[Segment] = []
    for group_words, mark_indices in _word_groups(word_marks, words):
        group_text = " ".join(group_words)
        if len(mark_indices) > len(group_words):
            raise AlignmentError(f"espeak-ng read {group_text!r} as {len(mark_indices)} words")
        spoken = [phoneme for phoneme in phonemes if phoneme.word_mark in mark_indices]
        if len(spoken) < len(group_words):
            raise AlignmentError(f"espeak-ng spoke {len(spoken)} phonemes for the words {group_text!r}")
        if len(mark_indices) == len(group_words):
            spans = [[phoneme for phoneme in spoken if phoneme.word_mark == index] for index in mark_indices]
            starts = [word_marks[index].time for index in mark_indices]
        else:
            cuts = _cut_points(len(spoken), [phoneme_count(word) for word in group_words])
            spans = [spoken[start:end] for start, end in zip(cuts, cuts[1:])]
            starts = [word_marks[mark_indices[0]].time] + [span[0].start for span in spans[1:]]
        for word, start, span in zip(group_words, starts, spans):
            if not span:
                raise AlignmentError(f"espeak-ng spoke no phonemes for {word!r} in {group_text!r}")
            segments.append((word, start, span[-1].end))
    return segments
