"""The synthetic corpus: espeak-ng binding, records, audio, segments, determinism, caching, interruption."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hydra import compose, initialize_config_module

from tmaps.commands.synth import synthesize
from tmaps.data.manifest import SPLITS, read_manifest
from tmaps.data.synth import (
    AlignmentError,
    Espeak,
    SynthConfig,
    SynthesizedUtterance,
    check_voice,
    corpus_dir,
    synthesize_corpus,
    vocabulary,
)
from tmaps.text import Alphabet, normalize

DESIGN_FIELDS = ("id", "audio", "duration", "sample_rate", "text", "language", "speaker", "words", "phonemes")


def _records(folder: Path, splits: tuple[str, ...] = SPLITS) -> list[dict]:
    return [record for split in splits for record in read_manifest(folder / f"{split}.jsonl")]


def _few(config: dict, per_split: int = 2, **changes) -> dict:
    """``config`` with ``per_split`` utterances per split and ``changes``."""
    return {**config, "n_utterances": dict.fromkeys(SPLITS, per_split), **changes}


def _phonemes_of_words(utterance: SynthesizedUtterance) -> list[list[str]]:
    """Labels of the phonemes that start within each word."""
    return [
        [label for label, start, _ in utterance.phonemes if word_start <= start < word_end]
        for _, word_start, word_end in utterance.words
    ]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_espeak_speaks_words_and_phonemes_in_order():
    utterance = Espeak().synthesize("the house is big", voice="en+m3", rate_wpm=170, pitch=50)
    assert [word for word, _, _ in utterance.words] == ["the", "house", "is", "big"]
    assert _phonemes_of_words(utterance)[1] == ["h", "aU", "s"]
    boundaries = [time for _, start, end in utterance.phonemes for time in (start, end)]
    assert boundaries == sorted(boundaries)
    assert 0.5 < utterance.duration < 2.0 and utterance.audio.dtype == np.float32
    assert utterance.phonemes[-1][2] <= utterance.duration


def test_phrases_espeak_speaks_as_one_word_are_dealt_to_their_words():
    # espeak's dictionary speaks "of the" as one word; "it is" keeps two word events.
    merged = Espeak().synthesize("the state of the library", voice="en+f3")
    assert [word for word, _, _ in merged.words] == ["the", "state", "of", "the", "library"]
    assert _phonemes_of_words(merged)[2:4] == [["0", "v"], ["D", "@"]]
    paired = Espeak().synthesize("it is to be", voice="en+m1")
    assert [word for word, _, _ in paired.words] == ["it", "is", "to", "be"]
    assert all(_phonemes_of_words(paired))
    with pytest.raises(AlignmentError, match="viii"):
        Espeak().synthesize("henry viii was king", voice="en+m1")


def test_espeak_rejects_unknown_voices_and_foreign_languages():
    with pytest.raises(ValueError, match="'zz'"):
        check_voice("en+zz", "en")
    with pytest.raises(ValueError, match="xx"):
        check_voice("xx+m1")
    with pytest.raises(ValueError, match="de\\+f1"):
        check_voice("de+f1", "en")
    check_voice("en-us+f2", "en")


def test_records_have_the_design_fields_and_normalized_text(synth_corpus_en):
    alphabet = Alphabet.for_language("en")
    records = _records(synth_corpus_en)
    assert len(records) == 32 + 8 + 8 + 8
    assert len({record["id"] for record in records}) == len(records)
    for record in records:
        assert set(DESIGN_FIELDS) <= set(record)
        assert record["language"] == "en" and record["sample_rate"] == 16000
        assert record["gender"] in ("male", "female")
        assert 140 <= record["rate"] <= 200 and 35 <= record["pitch"] <= 65
        assert normalize(record["text"]) == record["text"] and not alphabet.unknown_chars(record["text"])
        assert 3 <= len(record["text"].split()) <= 6


def test_audio_is_16_khz_flac_of_the_stated_duration(synth_corpus_en):
    for record in _records(synth_corpus_en, ("dev", "test_unseen")):
        info = soundfile.info(record["audio"])
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16000, 1)
        assert info.frames / 16000 == pytest.approx(record["duration"], abs=1e-4)
        audio, _ = soundfile.read(record["audio"])
        assert np.abs(audio).max() > 0.05


def test_test_unseen_speakers_are_disjoint_from_train_and_every_voice_speaks(synth_corpus_en):
    speakers = {split: {record["speaker"] for record in _records(synth_corpus_en, (split,))} for split in SPLITS}
    assert speakers["train"] == set(SynthConfig().voices)
    assert speakers["test_unseen"] == {"en+m7", "en+f5"}
    assert not speakers["train"] & speakers["test_unseen"]


def _sounding_frames(audio: np.ndarray) -> np.ndarray:
    """Centres (s) of the 10 ms frames within 35 dB of the loudest frame."""
    n_frames = len(audio) // 160
    energy_db = 10 * np.log10(np.mean(audio[: n_frames * 160].reshape(n_frames, 160) ** 2, axis=1) + 1e-12)
    return (np.flatnonzero(energy_db > energy_db.max() - 35) + 0.5) / 100


@pytest.mark.parametrize("corpus", ["synth_corpus_en", "synth_corpus_de"])
def test_phoneme_segments_are_ordered_inside_and_cover_the_sound(corpus, request):
    coverages = []
    for record in _records(request.getfixturevalue(corpus), ("train", "test_unseen")):
        phonemes = record["phonemes"]
        assert phonemes and all(label for label, _, _ in phonemes)
        times = [time for _, start, end in phonemes for time in (start, end)]
        assert times == sorted(times) and 0 <= times[0] and times[-1] <= record["duration"]
        assert all(end > start for _, start, end in phonemes)
        audio, _ = soundfile.read(record["audio"])
        sounding = _sounding_frames(audio)
        covered = np.zeros(len(sounding), dtype=bool)
        for _, start, end in phonemes:
            covered |= (sounding >= start) & (sounding < end)
        coverages.append(covered.mean())
    assert min(coverages) >= 0.8 and np.mean(coverages) >= 0.9


def test_word_segments_are_the_words_of_the_text_each_with_its_phonemes(synth_corpus_en):
    for record in _records(synth_corpus_en):
        words = record["words"]
        assert [word for word, _, _ in words] == record["text"].split(" ")
        times = [time for _, start, end in words for time in (start, end)]
        assert times == sorted(times) and times[-1] <= record["duration"]
        for _, start, end in words:
            assert any(start <= phoneme_start < end for _, phoneme_start, _ in record["phonemes"])


def test_german_vocabulary_and_corpus_have_umlauts_and_eszett(synth_corpus_de):
    words, probabilities = vocabulary("de", 3000)
    assert len(words) == 3000 and probabilities.sum() == pytest.approx(1.0)
    letters = set("".join(words))
    assert {"ä", "ö", "ü", "ß"} <= letters <= set(Alphabet.for_language("de").chars)
    texts = " ".join(record["text"] for record in _records(synth_corpus_de))
    assert set(texts) & {"ä", "ö", "ü", "ß"}
    train_speakers = {record["speaker"] for record in _records(synth_corpus_de, ("train",))}
    assert train_speakers == {f"de+{variant}" for variant in ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4")}


def test_english_vocabulary_has_no_digits_fragments_or_stray_letters():
    words, _ = vocabulary("en", 3000)
    assert words[:3] == ("the", "to", "and")
    assert "don't" in words
    assert not [word for word in words if len(word) == 1 and word not in ("a", "i")]
    assert all(word.replace("'", "").isalpha() for word in words)


def test_same_config_gives_byte_identical_corpus_for_any_number_of_workers(synth_corpus_en, synth_config_en, tmp_path):
    # espeak state left by speaking in this process must not reach the corpus.
    Espeak().synthesize("this changes the state of the library", voice="en+f3", rate_wpm=300, pitch=90)
    again = synthesize_corpus(synth_config_en, tmp_path, num_workers=2)
    assert again.name == synth_corpus_en.name
    assert _files(again) == _files(synth_corpus_en)


def test_complete_corpus_is_reused_and_a_changed_config_makes_a_new_one(synth_config_en, tmp_path):
    first = synthesize_corpus(_few(synth_config_en), tmp_path)
    stamps = {path: path.stat().st_mtime_ns for path in first.rglob("*")}
    assert synthesize_corpus(_few(synth_config_en), tmp_path) == first
    assert {path: path.stat().st_mtime_ns for path in first.rglob("*")} == stamps
    changed = _few(synth_config_en, seed=1)
    other = synthesize_corpus(changed, tmp_path)
    assert other != first and other == corpus_dir(SynthConfig.from_mapping(changed), tmp_path)
    assert [r["text"] for r in _records(other)] != [r["text"] for r in _records(first)]


def test_a_killed_build_leaves_no_complete_looking_folder_and_the_next_build_works(synth_config_en, tmp_path):
    config = _few(synth_config_en, per_split=24)
    target = corpus_dir(SynthConfig.from_mapping(config), tmp_path)
    builder = multiprocessing.get_context("fork").Process(target=synthesize_corpus, args=(config, tmp_path))
    builder.start()
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob(".synth-*/audio/*.flac"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(builder.pid, signal.SIGKILL)
    builder.join()
    assert not target.exists()
    assert [path.name.startswith(f".{target.name}.partial-") for path in tmp_path.iterdir()] == [True]
    assert synthesize_corpus(config, tmp_path) == target
    assert sorted(path.name for path in tmp_path.iterdir()) == [target.name]
    assert len(_records(target)) == 4 * 24


def test_a_build_that_fails_partway_names_the_line_and_leaves_nothing(synth_config_en, tmp_path):
    text_file = tmp_path / "sentences.txt"
    text_file.write_text("The house is big.\n\nHenry VIII was king.\n" + "We go home now.\n" * 6, encoding="utf-8")
    root = tmp_path / "data"
    with pytest.raises(ValueError, match="sentences.txt:3"):
        synthesize_corpus(_few(synth_config_en, text_file=str(text_file)), root)
    assert list(root.iterdir()) == []


def test_text_file_sentences_are_normalized_and_dealt_to_disjoint_splits(synth_config_en, tmp_path):
    nouns = ("house", "dog", "tree", "car", "bird", "cat", "fish", "book")
    sentences = [f"The {noun} is here, isn't it?" for noun in nouns]
    text_file = tmp_path / "sentences.txt"
    text_file.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    folder = synthesize_corpus(_few(synth_config_en, text_file=str(text_file)), tmp_path / "data")
    texts = {split: [record["text"] for record in _records(folder, (split,))] for split in SPLITS}
    assert sorted(text for split in SPLITS for text in texts[split]) == sorted(normalize(s) for s in sentences)
    assert texts["train"][0] == normalize(texts["train"][0]) and "isn't" in texts["train"][0]


def test_text_file_with_characters_outside_the_alphabet_names_the_line(synth_config_en, tmp_path):
    text_file = tmp_path / "sentences.txt"
    text_file.write_text("Hello there.\nI have 3 cats.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"sentences.txt:2: characters \['3'\]"):
        synthesize_corpus(_few(synth_config_en, text_file=str(text_file)), tmp_path / "data")


def test_noise_is_added_at_the_configured_snr(synth_config_en, tmp_path):
    clean = _records(synthesize_corpus(_few(synth_config_en, per_split=1), tmp_path))
    noisy = _records(synthesize_corpus(_few(synth_config_en, per_split=1, snr_db=10), tmp_path))
    for clean_record, noisy_record in zip(clean, noisy):
        assert noisy_record["text"] == clean_record["text"] and noisy_record["snr_db"] == 10
        speech, _ = soundfile.read(clean_record["audio"])
        mixture, _ = soundfile.read(noisy_record["audio"])
        snr_db = 10 * np.log10(np.mean(speech**2) / np.mean((mixture - speech) ** 2))
        assert snr_db == pytest.approx(10, abs=0.5)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"langauge": "en"}, "langauge"),
        ({"kind": "librispeech"}, "librispeech"),
        ({"language": "fr"}, "'fr'"),
        ({"n_utterances": {"training": 5}}, "training"),
        ({"n_utterances": {"train": -1}}, "n_utterances.train"),
        ({"rate_wpm": [40, 100]}, "rate_wpm"),
        ({"pitch": [60, 50]}, "pitch"),
        ({"words_per_utterance": [0, 4]}, "words_per_utterance"),
        ({"unseen_voices": ["en+m1"]}, "en\\+m1"),
        ({"text_file": "no/such/file.txt"}, "no/such/file.txt"),
        ({"seed": -3}, "seed"),
    ],
)
def test_bad_config_is_an_error_naming_the_key_or_value(changes, message, synth_config_en):
    with pytest.raises(ValueError, match=message):
        SynthConfig.from_mapping({**synth_config_en, **changes})


def test_unknown_voice_is_an_error_before_anything_is_written(synth_config_en, tmp_path):
    with pytest.raises(ValueError, match="'m99'"):
        synthesize_corpus(_few(synth_config_en, voices=["en+m1", "en+m99"]), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cli_config_synthesizes_under_data_root_and_reports_sizes(tmp_path, capsys):
    overrides = [f"data.root={tmp_path}", *(f"data.source.n_utterances.{split}=1" for split in SPLITS)]
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(config_name="synth", overrides=["data=synth_de", *overrides])
    folder = synthesize(cfg)
    assert folder.parent == tmp_path and folder.name.startswith("synth-de-")
    output = capsys.readouterr().out
    assert str(folder) in output and "train: 1 utterances" in output and "real time" in output
    synthesize(cfg)
    assert "reused" in capsys.readouterr().out
