"""What to synthesize: :class:`SynthConfig` (``data.source`` of a synthetic corpus) and its defaults."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tmaps.config_types import check_config
from tmaps.data.manifest import SPLITS
from tmaps.data.synth.acoustics import NOISE_EXPONENTS, BabbleConfig, ReverbConfig, float_range
from tmaps.data.synth.espeak import PITCH_RANGE, RATE_RANGE_WPM
from tmaps.text import ALPHABETS

DEFAULT_N_UTTERANCES = {"train": 2000, "dev": 100, "test": 100, "test_unseen": 100}
DEFAULT_VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4")
DEFAULT_UNSEEN_VARIANTS = ("m7", "f5")


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
