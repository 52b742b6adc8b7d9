"""Acoustic realism for the synthetic corpus: speed perturbation, rooms, babble and stationary noise.

Every random choice comes from the utterance's own generator, so a corpus stays a function of
its config. What each step does to the ground-truth timings:

- :func:`speed_perturb` plays an utterance ``factor`` times faster by resampling (Kaldi and
  ESPnet speed perturbation: duration and pitch change together), so every time is divided by
  ``factor`` (:func:`scale_segments`).
- :func:`reverberate` aligns the direct path of the room impulse response with the dry signal
  (the output is cut by the direct path's delay), so times stay where they were.
- Mixing babble and noise changes no time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import fft
from scipy.signal import fftconvolve, firwin, resample_poly

SPEED_OF_SOUND = 343.0
# Energy absorption coefficients at or above this make a room that Sabine's formula cannot model.
_MAX_ABSORPTION = 0.99
# Positions keep this far from walls and from each other (m).
_MIN_DISTANCE_M = 0.5
# Noise power falls as 1/f**exponent.
NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
# exp(-_DECAY_60DB * t / rt60) falls by 60 dB in amplitude at t = rt60.
_DECAY_60DB = 3 * math.log(10)


def float_range(owner: str, name: str, value, lowest: float, highest: float | None = None) -> tuple[float, float]:
    """``value`` as a ``(low, high)`` float pair with ``lowest <= low <= high (<= highest)``, else ValueError."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"synth config: {owner}{name} must be a [low, high] pair, got {value!r}")
    if not all(isinstance(bound, (int, float)) and not isinstance(bound, bool) for bound in value):
        raise ValueError(f"synth config: {owner}{name} must hold numbers, got {list(value)}")
    low, high = float(value[0]), float(value[1])
    if not lowest <= low <= high or (highest is not None and high > highest):
        limits = f"{lowest} <= low <= high" + (f" <= {highest}" if highest is not None else "")
        raise ValueError(f"synth config: {owner}{name} must satisfy {limits}, got {list(value)}")
    return low, high


@dataclass(frozen=True)
class BabbleConfig:
    """Other talkers in the background (``data.source.babble``).

    Each utterance mixes ``talkers`` (an inclusive range) voices at ``snr_db`` (a range, the
    utterance's speech over the babble). The talkers come from a pool of ``pool_size``
    utterances per chunk and split, spoken by the split's voices, each looped from a random
    offset; a pool is spoken once per chunk, so babble adds ``pool_size / CHUNK_SIZE`` of
    synthesis time rather than ``talkers`` times.
    """

    talkers: tuple[int, int] = (1, 3)
    snr_db: tuple[float, float] = (0.0, 20.0)
    pool_size: int = 8

    def __post_init__(self) -> None:
        talkers = self.talkers
        if (
            isinstance(talkers, str)
            or not isinstance(talkers, Sequence)
            or len(talkers) != 2
            or not all(isinstance(count, int) for count in talkers)
            or not 1 <= talkers[0] <= talkers[1]
        ):
            raise ValueError(f"synth config: babble.talkers must be integers [low, high] with 1 <= low <= high, got {talkers!r}")
        if not isinstance(self.pool_size, int) or self.pool_size < talkers[1]:
            raise ValueError(f"synth config: babble.pool_size must be an integer >= babble.talkers high ({talkers[1]}), got {self.pool_size!r}")
        object.__setattr__(self, "talkers", tuple(talkers))
        object.__setattr__(self, "snr_db", float_range("babble.", "snr_db", self.snr_db, -math.inf))


@dataclass(frozen=True)
class ReverbConfig:
    """Simulated rooms (``data.source.reverb``; needs the ``reverb`` extra, pyroomacoustics).

    A room is a shoebox of ``room_m`` (``[[x, y, z] smallest, [x, y, z] largest]``, drawn per
    side), its walls absorb alike so that Sabine's formula gives a reverberation time drawn
    from ``rt60_s``; talker, babble and microphone stand at random places in it. The impulse
    response is pyroomacoustics' image-source model up to reflections of ``ism_order`` plus a
    late tail of exponentially decaying noise (see :func:`room_impulse_responses`). Each chunk
    of the corpus draws ``rooms_per_chunk`` rooms and every utterance one of them: a room's
    responses cost about what speaking an utterance does, so a bank (as real corpora are
    augmented from) keeps the hard preset above 100x real time.
    """

    rt60_s: tuple[float, float] = (0.2, 0.8)
    room_m: tuple[tuple[float, float, float], tuple[float, float, float]] = ((3.0, 3.0, 2.5), (10.0, 8.0, 4.0))
    ism_order: int = 6
    rooms_per_chunk: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "rt60_s", float_range("reverb.", "rt60_s", self.rt60_s, 0.05))
        room = self.room_m
        if (
            isinstance(room, str)
            or not isinstance(room, Sequence)
            or len(room) != 2
            or any(isinstance(side, str) or not isinstance(side, Sequence) or len(side) != 3 for side in room)
        ):
            raise ValueError(f"synth config: reverb.room_m must be [[x, y, z], [x, y, z]] (smallest, largest room), got {room!r}")
        sides = tuple(
            float_range("reverb.", f"room_m (side {axis})", (room[0][axis], room[1][axis]), 2 * _MIN_DISTANCE_M + 0.1)
            for axis in range(3)
        )
        object.__setattr__(self, "room_m", tuple(tuple(side[end] for side in sides) for end in range(2)))
        if not isinstance(self.ism_order, int) or self.ism_order < 0:
            raise ValueError(f"synth config: reverb.ism_order must be a non-negative integer, got {self.ism_order!r}")
        if not isinstance(self.rooms_per_chunk, int) or self.rooms_per_chunk < 1:
            raise ValueError(f"synth config: reverb.rooms_per_chunk must be a positive integer, got {self.rooms_per_chunk!r}")
        absorption = sabine_absorption(np.array(self.room_m[1]), self.rt60_s[0])
        if absorption >= _MAX_ABSORPTION:
            raise ValueError(
                f"synth config: reverb.rt60_s low {self.rt60_s[0]} s is too short for the largest room {list(self.room_m[1])} m "
                f"(its walls would absorb {absorption:.2f} of the energy); raise rt60_s or shrink room_m"
            )


def scale_segments(segments: Sequence[tuple[str, float, float]], factor: float) -> list[tuple[str, float, float]]:
    """Segments of an utterance played ``factor`` times faster: every time divided by ``factor``."""
    return [(label, start / factor, end / factor) for label, start, end in segments]


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """``audio`` played ``factor`` times faster: ``(n,)`` in, ``(ceil(n / factor),)`` out.

    Resampled by the rational ``1 / factor`` (factors with up to three decimals are exact), so
    that, as in Kaldi's and ESPnet's speed perturbation, tempo and pitch both rise by ``factor``.
    """
    ratio = Fraction(factor).limit_denominator(1000)
    up, down = ratio.denominator, ratio.numerator
    if up == down:
        return audio.astype(np.float32)
    return resample_poly(audio, up, down, window=resampling_filter(up, down)).astype(np.float32)


@functools.cache
def resampling_filter(up: int, down: int) -> np.ndarray:
    """The low-pass FIR filter that ``resample_poly`` designs by default for ``up / down`` (in
    lowest terms), designed once per ratio instead of per call."""
    max_rate = max(up, down)
    return firwin(2 * 10 * max_rate + 1, 1 / max_rate, window=("kaiser", 5.0))


def colored_noise(n_samples: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """``(n_samples,)`` stationary noise whose power falls as 1/f**exponent of ``color``
    (white 0, pink 1, brown 2): white noise shaped in the frequency domain."""
    # Shaped at a length with small prime factors and cut: an FFT of a prime length is ~15x slower.
    # In float32 (scipy.fft keeps it; numpy.fft computes in float64): half the time, and 16-bit audio needs no more.
    length = fft.next_fast_len(n_samples, real=True)
    spectrum = fft.rfft(rng.standard_normal(length, dtype=np.float32))
    frequencies = fft.rfftfreq(length).astype(np.float32)
    frequencies[0] = frequencies[1] if length > 1 else 1.0
    return fft.irfft(spectrum / frequencies ** np.float32(NOISE_EXPONENTS[color] / 2), length)[:n_samples]


def add_at_snr(audio: np.ndarray, interference: np.ndarray, snr_db: float, reference: np.ndarray | None = None) -> np.ndarray:
    """``audio`` plus ``interference`` (same length) scaled to ``snr_db`` below the mean power of
    ``reference`` (``audio`` itself by default; the speech alone when ``audio`` is already a mixture)."""
    reference = audio if reference is None else reference
    target_power = np.mean(reference.astype(np.float64) ** 2) / 10 ** (snr_db / 10)
    interference = interference * np.sqrt(target_power / max(np.mean(interference**2), np.finfo(np.float64).tiny))
    return (audio + interference).astype(np.float32)


def babble(pool: Sequence[np.ndarray], n_talkers: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_samples,)`` sum of ``n_talkers`` distinct utterances of ``pool``, each looped from a
    random offset and scaled to unit power, so that no talker dominates."""
    mixture = np.zeros(n_samples, dtype=np.float64)
    for index in rng.choice(len(pool), size=n_talkers, replace=False):
        talker = pool[index].astype(np.float64)
        looped = np.resize(np.roll(talker, -int(rng.integers(len(talker)))), n_samples)
        mixture += looped / max(np.sqrt(np.mean(looped**2)), np.finfo(np.float64).tiny)
    return mixture


@dataclass(frozen=True)
class Room:
    """A drawn room: ``size`` ``(3,)`` m, reverberation time ``rt60`` s, ``sources`` ``(n, 3)`` and ``microphone`` ``(3,)`` m."""

    size: np.ndarray
    rt60: float
    sources: np.ndarray
    microphone: np.ndarray


def sabine_absorption(size: np.ndarray, rt60: float) -> float:
    """Energy absorption coefficient of every wall that gives a shoebox of ``size`` (m) the
    reverberation time ``rt60`` (s) by Sabine's formula ``rt60 = 24 ln(10) V / (c S a)``."""
    volume = float(np.prod(size))
    surface = 2 * float(size[0] * size[1] + size[0] * size[2] + size[1] * size[2])
    return 24 * math.log(10) * volume / (SPEED_OF_SOUND * surface * rt60)


def draw_room(config: ReverbConfig, n_sources: int, rng: np.random.Generator) -> Room:
    """A room of ``config``'s ranges with ``n_sources`` talkers and a microphone at least
    ``_MIN_DISTANCE_M`` from the walls and from each other (drawn again until they are)."""
    low, high = np.array(config.room_m[0]), np.array(config.room_m[1])
    size = rng.uniform(low, high)
    rt60 = float(rng.uniform(*config.rt60_s))
    while True:
        points = rng.uniform(_MIN_DISTANCE_M, size - _MIN_DISTANCE_M, size=(n_sources + 1, 3))
        distances = np.linalg.norm(points[:, None] - points[None], axis=-1)[np.triu_indices(n_sources + 1, k=1)]
        if distances.min(initial=np.inf) >= _MIN_DISTANCE_M:
            return Room(size=size, rt60=rt60, sources=points[1:], microphone=points[0])


def import_pyroomacoustics():
    try:
        import pyroomacoustics
    except ImportError:
        raise ImportError(
            "data.source.reverb needs pyroomacoustics, which the 'reverb' extra installs: "
            "pip install -e '.[reverb]' (or set data.source.reverb=null)"
        ) from None
    return pyroomacoustics


def room_impulse_responses(room: Room, ism_order: int, sample_rate: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One impulse response per source of ``room``, with the index of its direct path.

    The early part is pyroomacoustics' image-source model up to ``ism_order`` reflections
    (its full order at rt60 0.8 s takes seconds per room). From ``ism_order`` mean free paths
    after the direct sound on, a diffuse tail is added: Gaussian noise decaying by 60 dB over
    ``rt60``, scaled so that the reverberant energy it continues is what Sabine's theory gives
    for the source's distance ``d`` (direct energy times ``16 pi d^2 / A``, ``A`` the absorption area).

    Returns:
        ``(response, direct_index)`` per source: the response and the sample of its direct
        path's peak (the delay ``d / c`` plus half of pyroomacoustics' fractional-delay filter).
    """
    pra = import_pyroomacoustics()
    absorption = sabine_absorption(room.size, room.rt60)
    shoebox = pra.ShoeBox(room.size, fs=sample_rate, materials=pra.Material(absorption), max_order=ism_order, air_absorption=False)
    for source in room.sources:
        shoebox.add_source(source)
    shoebox.add_microphone(room.microphone)
    shoebox.compute_rir()
    half_filter = pra.constants.get("frac_delay_length") // 2
    volume = float(np.prod(room.size))
    surface = 2 * float(room.size[0] * room.size[1] + room.size[0] * room.size[2] + room.size[1] * room.size[2])
    absorption_area = surface * absorption
    tail_start_s = ism_order * 4 * volume / surface / SPEED_OF_SOUND
    responses = []
    for source_index, source in enumerate(room.sources):
        early = np.asarray(shoebox.rir[0][source_index], dtype=np.float64)
        distance = float(np.linalg.norm(source - room.microphone))
        direct_index = round(distance / SPEED_OF_SOUND * sample_rate) + half_filter
        direct_energy = float(np.sum(early[max(direct_index - half_filter, 0) : direct_index + half_filter + 1] ** 2))
        reverberant_energy = direct_energy * 16 * math.pi * distance**2 / absorption_area
        times = np.arange(round(tail_start_s * sample_rate), round(room.rt60 * sample_rate)) / sample_rate
        amplitude = math.sqrt(reverberant_energy * 2 * _DECAY_60DB / (room.rt60 * sample_rate))
        tail = amplitude * np.exp(-_DECAY_60DB * times / room.rt60) * rng.standard_normal(len(times))
        response = np.zeros(max(len(early), direct_index + round(room.rt60 * sample_rate)))
        response[: len(early)] = early
        response[direct_index + round(tail_start_s * sample_rate) : direct_index + round(tail_start_s * sample_rate) + len(tail)] += tail
        responses.append((response, direct_index))
    return responses


def reverberate(audio: np.ndarray, response: np.ndarray, direct_index: int) -> np.ndarray:
    """``audio`` ``(n,)`` heard through ``response``, its direct path at the dry signal's time,
    cut to ``n`` samples and scaled to the dry signal's power."""
    # The convolution in float32 takes 55% of float64's time, at a relative error of ~2e-7.
    wet = fftconvolve(audio.astype(np.float32), response.astype(np.float32))[direct_index : direct_index + len(audio)]
    dry_power = np.mean(audio.astype(np.float64) ** 2)
    return wet * np.sqrt(dry_power / max(np.mean(wet.astype(np.float64) ** 2), np.finfo(np.float64).tiny))
