"""Realism of the synthetic corpus: speed perturbation, rooms, babble, noise, and the hard presets.

The timing checks compare with the clean espeak signal: after speed perturbation the segments
divided by the factor must still cover the same sound, and reverberation must not move the
onset of speech.
"""

from __future__ import annotations

import sys
from pathlib import Path

import espeakng_loader
import numpy as np
import pyroomacoustics
import pytest
import soundfile
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from tmaps.data.manifest import read_manifest
from tmaps.data.synth import Espeak, SynthConfig, check_voice, corpus_dir, synthesize_corpus
from tmaps.data.synth.acoustics import (
    ReverbConfig,
    draw_room,
    reverberate,
    room_impulse_responses,
    scale_segments,
    speed_perturb,
)
from tmaps.data.synth.corpus import describe
from tmaps.data.synth.espeak import SAMPLE_RATE

FRAME = 80  # 5 ms envelope frames
# The keys of a plain config's corpus key, as before the realism options existed.
PLAIN_KEYS = {
    "language", "n_utterances", "voices", "unseen_voices", "words_per_utterance", "vocabulary_size",
    "text_file", "rate_wpm", "pitch", "snr_db", "seed",
}  # fmt: skip
ALL_ON = {
    "speed": [0.9, 1.1],
    "reverb": {"rt60_s": [0.3, 0.8]},
    "babble": {"talkers": [1, 3], "snr_db": [0, 20], "pool_size": 4},
    "snr_db": [5, 25],
    "noise_colors": ["white", "pink", "brown"],
}


def _envelope(audio: np.ndarray) -> np.ndarray:
    frames = len(audio) // FRAME
    return np.sqrt(np.mean(audio[: frames * FRAME].astype(np.float64).reshape(frames, FRAME) ** 2, axis=1))


def _lag_frames(reference: np.ndarray, other: np.ndarray, max_lag: int = 40) -> int:
    """The shift of ``other`` against ``reference`` (in frames) at which their envelopes agree best."""
    length = min(len(reference), len(other)) - 2 * max_lag
    scores = [np.dot(reference[max_lag : max_lag + length], other[max_lag + lag : max_lag + lag + length]) for lag in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag


def _onset(audio: np.ndarray, level_db: float = -30.0) -> float:
    envelope = _envelope(audio)
    return np.flatnonzero(envelope > envelope.max() * 10 ** (level_db / 20))[0] * FRAME / SAMPLE_RATE


def _energy_shares(audio: np.ndarray, segments) -> np.ndarray:
    total = np.sum(audio.astype(np.float64) ** 2)
    return np.array([np.sum(audio[round(s * SAMPLE_RATE) : round(e * SAMPLE_RATE)].astype(np.float64) ** 2) / total for _, s, e in segments])


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_keeps_segments_valid_when_divided_by_the_factor(factor):
    clean = Espeak().synthesize("the weather in the mountains was cold and clear", voice="en+m3", rate_wpm=170, pitch=50)
    fast = speed_perturb(clean.audio, factor)
    assert abs(len(fast) - len(clean.audio) / factor) <= 1
    words = scale_segments(clean.words, factor)
    # Each word holds the same share of the energy as in the clean signal ...
    np.testing.assert_allclose(_energy_shares(fast, words), _energy_shares(clean.audio, clean.words), atol=0.02)
    # ... and the whole envelope, read at times divided by the factor, lines up with the clean one.
    warped = np.interp(np.arange(len(clean.audio)) / factor, np.arange(len(fast)), fast)
    assert abs(_lag_frames(_envelope(clean.audio), _envelope(warped))) <= 1


def test_reverberation_keeps_the_onset_of_speech_and_has_the_drawn_reverberation_time():
    clean = Espeak().synthesize("a short sentence in a large hall", voice="en+f2", rate_wpm=160, pitch=50)
    dry = np.concatenate([np.zeros(SAMPLE_RATE // 4, np.float32), clean.audio])
    rng = np.random.default_rng(3)
    for _ in range(3):
        room = draw_room(ReverbConfig(rt60_s=(0.6, 0.8)), 1, rng)
        ((response, direct_index),) = room_impulse_responses(room, ism_order=6, sample_rate=SAMPLE_RATE, rng=rng)
        wet = reverberate(dry, response, direct_index)
        distance_delay = np.linalg.norm(room.sources[0] - room.microphone) / 343.0
        assert abs(_onset(wet) - _onset(dry)) <= 0.005 < distance_delay + 0.0025
        measured = pyroomacoustics.experimental.measure_rt60(response[direct_index:], fs=SAMPLE_RATE, decay_db=30)
        assert measured == pytest.approx(room.rt60, rel=0.2)
        assert len(wet) == len(dry)


def test_hard_corpus_timings_follow_the_clean_speech_divided_by_the_speed(tmp_path):
    config = {"language": "en", "n_utterances": {"train": 6, "dev": 0, "test": 0, "test_unseen": 2}, "seed": 1, **ALL_ON}
    records = [
        *read_manifest(synthesize_corpus(config, tmp_path) / "train.jsonl"),
        *read_manifest(synthesize_corpus(config, tmp_path) / "test_unseen.jsonl"),
    ]
    espeak = Espeak()
    assert len({record["speed"] for record in records}) > 1
    for record in records:
        assert {"speed", "rt60_s", "room_m", "babble_talkers", "babble_snr_db", "snr_db", "noise_color"} <= set(record)
        audio, sample_rate = soundfile.read(record["audio"])
        assert sample_rate == SAMPLE_RATE and len(audio) / SAMPLE_RATE == pytest.approx(record["duration"], abs=1e-3)
        clean = espeak.synthesize(record["text"], record["speaker"], record["rate"], record["pitch"])
        assert record["duration"] == pytest.approx(clean.duration / record["speed"], abs=0.015)
        expected = scale_segments(clean.words, record["speed"])
        assert [word for word, _, _ in record["words"]] == [word for word, _, _ in expected]
        # espeak shifts by a few ms depending on what it spoke before (see tmaps.data.synth.espeak).
        np.testing.assert_allclose([t for _, s, e in record["words"] for t in (s, e)], [t for _, s, e in expected for t in (s, e)], atol=0.015)


def test_hard_corpus_is_deterministic_for_any_number_of_workers(tmp_path):
    config = {"language": "de", "n_utterances": {"train": 70, "dev": 2, "test": 0, "test_unseen": 0}, **ALL_ON}
    one = synthesize_corpus(config, tmp_path / "one", num_workers=1)
    two = synthesize_corpus(config, tmp_path / "two", num_workers=2)
    for name in ("train.jsonl", "audio/de-train-000000.flac", "audio/de-train-000069.flac", "audio/de-dev-000001.flac"):
        assert (one / name).read_bytes().replace(b"/one/", b"/two/") == (two / name).read_bytes()


def test_each_realism_option_makes_its_own_corpus_folder_and_plain_configs_keep_their_key(tmp_path):
    changes = ({}, {"speed": (0.9, 1.1)}, {"babble": {}}, {"reverb": {}}, {"noise_colors": ("white",)})
    assert len({corpus_dir(SynthConfig(**change), tmp_path).name for change in changes}) == len(changes)
    assert set(describe(SynthConfig())["config"]) == PLAIN_KEYS


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"speed": [1.1, 0.9]}, "speed"),
        ({"babble": {"talkers": [0, 2]}}, "babble.talkers"),
        ({"babble": {"voices": 3}}, "data.source.babble.voices: BabbleConfig has no such argument"),
        ({"babble": {"talkers": [1, 5], "pool_size": 4}}, "babble.pool_size"),
        ({"reverb": {"rt60_s": [0.1, 0.5]}}, "reverb.rt60_s low 0.1 s is too short"),
        ({"reverb": {"room_m": [3, 4, 5]}}, "reverb.room_m"),
        ({"snr_db": [20, 5]}, "snr_db"),
        ({"noise_colors": ["purple"]}, "noise_colors"),
    ],
)
def test_bad_realism_option_is_an_error_naming_it(changes, message):
    with pytest.raises(ValueError, match=message):
        SynthConfig.from_mapping({"language": "en", **changes})


def test_reverberation_without_pyroomacoustics_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyroomacoustics", None)  # what an environment without it raises on import
    config = {"language": "en", "n_utterances": {"train": 1, "dev": 0, "test": 0, "test_unseen": 0}, "reverb": {}}
    with pytest.raises(ImportError, match=r"'reverb' extra.*pip install -e '\.\[reverb\]'"):
        synthesize_corpus(config, tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("language", ["en", "de"])
def test_hard_presets_use_every_voice_variant_with_disjoint_unseen_voices(language):
    with initialize_config_module("tmaps.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"data=synth_{language}_hard"])
    config = SynthConfig.from_mapping(OmegaConf.to_container(cfg.data.source, resolve=True))
    variants = {voice.partition("+")[2] for voice in (*config.voices, *config.unseen_voices)}
    data_variants = {path.name for path in Path(espeakng_loader.get_data_path(), "voices", "!v").iterdir()}
    assert variants == data_variants and not set(config.voices) & set(config.unseen_voices)
    for voice in (*config.voices, *config.unseen_voices):
        check_voice(voice, language)
    assert config.speed and config.reverb and config.babble and config.snr_db and len(config.noise_colors) == 3
    assert config.pitch[1] - config.pitch[0] > 30 and config.rate_wpm[1] - config.rate_wpm[0] > 60
