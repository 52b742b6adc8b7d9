"""The acoustic mixing of one utterance: a room, babble and noise as its config asks, drawn per utterance.

The primitives (rooms, babble, noise, SNR) are :mod:`tmaps.data.synth.acoustics`'s; this module
draws them for an utterance in a fixed order: reverberation, then babble, then noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tmaps.data.manifest import SPLITS
from tmaps.data.synth.acoustics import Room, add_at_snr, babble, colored_noise, draw_room, reverberate, room_impulse_responses
from tmaps.data.synth.config import SynthConfig
from tmaps.data.synth.espeak import SAMPLE_RATE

# Third seed word of the room banks' generators (utterances use their index, babble pools their own word).
_ROOM_STREAM = 0x2003
# Peak level of an utterance whose mixture (speech, babble, noise) would clip.
_PEAK = 0.99


@dataclass
class Backgrounds:
    """What the utterances of a chunk share, made when first needed: babble talkers per split, rooms."""

    babble: dict[str, list[np.ndarray]] = field(default_factory=dict)
    rooms: list[tuple[Room, list[tuple[np.ndarray, int]]]] | None = None


def room_bank(config: SynthConfig, chunk_index: int) -> list[tuple[Room, list[tuple[np.ndarray, int]]]]:
    """``reverb.rooms_per_chunk`` rooms for chunk ``chunk_index``, each with a talker's and a babble position's response."""
    rng = np.random.default_rng([config.seed, len(SPLITS), _ROOM_STREAM, chunk_index])
    rooms = [draw_room(config.reverb, 2, rng) for _ in range(config.reverb.rooms_per_chunk)]
    return [(room, room_impulse_responses(room, config.reverb.ism_order, SAMPLE_RATE, rng)) for room in rooms]


def mix(
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
