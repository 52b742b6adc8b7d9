"""``data=hf``: a local AudioFolder and a ``datasets.save_to_disk`` folder read into the same records,
with the same normalization and bad-input policies as the other corpora."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import soundfile

from tmaps.data import SpeechDataModule
from tmaps.data.manifest import read_manifest
from tmaps.data.readers import build_corpus

TRANSCRIPTS = ["Hello, World!", "It's a well-known FACT.", "the cat sat"]


@pytest.fixture(scope="module")
def utterances(synth_corpus_en) -> list[dict]:
    return read_manifest(synth_corpus_en / "test.jsonl")[:4]


@pytest.fixture
def audiofolder(utterances, tmp_path) -> Path:
    """train/ with three utterances and a row whose file is missing, test/ with a fourth utterance."""
    root = tmp_path / "audiofolder"
    for split, records in (("train", utterances[:3]), ("test", utterances[3:])):
        (root / split).mkdir(parents=True)
        with (root / split / "metadata.csv").open("w", newline="") as table:
            rows = csv.writer(table)
            rows.writerow(["file_name", "transcription", "speaker_id"])
            for record, text in zip(records, TRANSCRIPTS):
                shutil.copy(record["audio"], root / split / Path(record["audio"]).name)
                rows.writerow([Path(record["audio"]).name, text, record["speaker"]])
            if split == "train":
                rows.writerow(["missing.flac", "not here", "x"])
    return root


def test_audiofolder_gives_normalized_records_with_speakers_and_durations(audiofolder, utterances, tmp_path):
    folder = build_corpus({"kind": "hf", "path": str(audiofolder), "splits": {"train": "train", "test": "test"}}, tmp_path / "cache", "en")
    train = read_manifest(folder / "train.jsonl")
    assert [record["text"] for record in train[:3]] == ["hello world", "it's a well known fact", "the cat sat"]
    assert [record["speaker"] for record in train[:3]] == [record["speaker"] for record in utterances[:3]]
    assert all(record["duration"] > 0 for record in train[:3])
    assert "duration" not in train[3]  # the missing file is left to on_error, which names it
    assert [record["id"] for record in read_manifest(folder / "test.jsonl")] == [Path(utterances[3]["audio"]).stem]


def test_missing_audio_is_named_under_on_error_error_and_skipped_under_skip(audiofolder, tmp_path):
    source = {"kind": "hf", "path": str(audiofolder), "splits": {"train": "train"}}
    with pytest.raises(ValueError, match="missing.flac"):
        data = SpeechDataModule(source=source, root=str(tmp_path / "a"), on_error="error", batching={"num_workers": 0})
        data.prepare_data()
        data.dataset("train")
    data = SpeechDataModule(source=source, root=str(tmp_path / "b"), on_error="skip", batching={"num_workers": 0})
    data.prepare_data()
    assert len(data.dataset("train")) == 3


def test_a_datasets_folder_gives_the_same_records_as_the_audiofolder(audiofolder, utterances, tmp_path):
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_dict(
        {"audio": [r["audio"] for r in utterances[:3]], "sentence": TRANSCRIPTS, "client_id": [r["speaker"] for r in utterances[:3]]}
    ).cast_column("audio", datasets.Audio())
    datasets.DatasetDict({"train": table}).save_to_disk(str(tmp_path / "saved"))
    folder = build_corpus({"kind": "hf", "path": str(tmp_path / "saved"), "splits": {"train": "train"}}, tmp_path / "cache", "en")
    records = read_manifest(folder / "train.jsonl")
    assert [record["text"] for record in records] == ["hello world", "it's a well known fact", "the cat sat"]
    assert [record["speaker"] for record in records] == [record["speaker"] for record in utterances[:3]]
    for record, original in zip(records, utterances[:3]):
        assert Path(record["audio"]).is_relative_to(folder)
        assert (soundfile.read(record["audio"])[0] == soundfile.read(original["audio"])[0]).all()


@pytest.mark.parametrize(
    ("splits", "message"),
    [({"train": "validation"}, "split 'validation' has no"), ({"train": "train"}, "no transcript column")],
)
def test_bad_hugging_face_folders_are_named(splits, message, audiofolder, tmp_path):
    if message.startswith("no transcript"):
        table = audiofolder / "train" / "metadata.csv"
        table.write_text(table.read_text().replace("transcription", "words"))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        build_corpus({"kind": "hf", "path": str(audiofolder), "splits": splits}, tmp_path / "cache", "en")
