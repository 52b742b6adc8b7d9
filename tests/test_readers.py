"""Real-corpus readers: LibriSpeech, Common Voice and generic manifests built from synthesized audio."""

from __future__ import annotations

import csv
import json
import shutil
import unicodedata
from pathlib import Path

import pytest
import soundfile

from tmaps.data.manifest import read_manifest
from tmaps.data.readers import build_corpus

SPLIT_PARTS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
CHAPTERS = {"train": "1", "dev": "2", "test": "3"}


@pytest.fixture(scope="module")
def synth_en(synth_corpus_en) -> dict[str, list[dict]]:
    return {split: read_manifest(synth_corpus_en / f"{split}.jsonl")[:6] for split in SPLIT_PARTS}


@pytest.fixture(scope="module")
def synth_de(synth_corpus_de) -> dict[str, list[dict]]:
    return {split: read_manifest(synth_corpus_de / f"{split}.jsonl")[:6] for split in SPLIT_PARTS}


def speaker_numbers(corpus: dict[str, list[dict]]) -> dict[str, str]:
    """LibriSpeech speaker ids are numbers; the synthetic voices get one each."""
    voices = sorted({record["speaker"] for records in corpus.values() for record in records})
    return {voice: str(100 + number) for number, voice in enumerate(voices)}


def make_librispeech(root: Path, corpus: dict[str, list[dict]]) -> dict[str, dict]:
    """A LibriSpeech layout of the synthetic utterances; returns ``{librispeech id: synthetic record}``."""
    speakers = speaker_numbers(corpus)
    originals = {}
    for split, records in corpus.items():
        for number, record in enumerate(records):
            speaker = speakers[record["speaker"]]
            chapter = root / SPLIT_PARTS[split] / speaker / CHAPTERS[split]
            chapter.mkdir(parents=True, exist_ok=True)
            utterance = f"{speaker}-{CHAPTERS[split]}-{number:04d}"
            shutil.copy(record["audio"], chapter / f"{utterance}.flac")
            with (chapter / f"{speaker}-{CHAPTERS[split]}.trans.txt").open("a") as transcript:
                transcript.write(f"{utterance} {record['text'].upper()}\n")
            originals[utterance] = record
    genders = {record["speaker"]: record["gender"][0].upper() for records in corpus.values() for record in records}
    table = "\n".join(f"{number} | {genders[voice]} | train | 1.0 | {voice}" for voice, number in speakers.items())
    (root / "SPEAKERS.TXT").write_text(f"; ID | SEX | SUBSET | MINUTES | NAME\n{table}\n")
    return originals


def librispeech_source(root: Path) -> dict:
    return {"kind": "librispeech", "path": str(root), "splits": {split: [part] for split, part in SPLIT_PARTS.items()}}


def test_librispeech_layout_reads_back_as_normalized_records(synth_en, tmp_path):
    originals = make_librispeech(tmp_path / "LibriSpeech", synth_en)
    folder = build_corpus(librispeech_source(tmp_path / "LibriSpeech"), tmp_path / "cache", language="en")
    for split in SPLIT_PARTS:
        records = read_manifest(folder / f"{split}.jsonl")
        assert len(records) == len(synth_en[split])
        for record in records:
            original = originals[record["id"]]
            assert record["text"] == original["text"]
            assert record["speaker"] == record["id"].split("-")[0]
            assert record["gender"] == original["gender"][0]
            assert record["language"] == "en" and record["sample_rate"] == 16000
            assert record["duration"] == pytest.approx(original["duration"], abs=1e-3)
            assert soundfile.info(record["audio"]).frames > 0
    assert not (folder / "test_unseen.jsonl").exists()


def test_librispeech_cache_is_reused_and_keyed_by_the_config(synth_en, tmp_path):
    make_librispeech(tmp_path / "LibriSpeech", synth_en)
    source = librispeech_source(tmp_path / "LibriSpeech")
    folder = build_corpus(source, tmp_path / "cache", language="en")
    shutil.rmtree(tmp_path / "LibriSpeech" / "test-clean")
    assert build_corpus(source, tmp_path / "cache", language="en") == folder
    with pytest.raises(FileNotFoundError, match="test-clean"):
        build_corpus(source, tmp_path / "cache", language="en", oov="drop")


def test_librispeech_missing_subset_is_named(synth_en, tmp_path):
    make_librispeech(tmp_path / "LibriSpeech", synth_en)
    source = {"kind": "librispeech", "path": str(tmp_path / "LibriSpeech"), "splits": {"train": ["train-clean-360"]}}
    with pytest.raises(FileNotFoundError, match="train-clean-360"):
        build_corpus(source, tmp_path / "cache", language="en")


def decorate(text: str, number: int) -> str:
    """A Common Voice style sentence: capitals, punctuation, quotes, and decomposed umlauts in every other one."""
    words = text.split()
    words[-1] = f"„{words[-1]}“" if number % 2 else f'"{words[-1]}"'
    words[0] = words[0].capitalize()
    sentence = " ".join(words[:1]) + ", " + " ".join(words[1:]) + ("?" if number % 3 else "!")
    return unicodedata.normalize("NFD", sentence) if number % 2 else sentence


def make_common_voice(root: Path, corpus: dict[str, list[dict]], tables: dict[str, str]) -> None:
    """Common Voice layout: mp3 clips and tables; ``tables`` maps table names to splits of ``corpus``."""
    (root / "clips").mkdir(parents=True, exist_ok=True)
    for table, split in tables.items():
        with (root / table).open("w", encoding="utf-8") as out:
            out.write("client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\n")
            for number, record in enumerate(corpus[split]):
                clip = f"common_voice_{record['id']}.mp3"
                samples, sample_rate = soundfile.read(record["audio"])
                soundfile.write(root / "clips" / clip, samples, sample_rate, format="MP3")
                out.write(f"{record['speaker']}\t{clip}\t{decorate(record['text'], number)}\t2\t0\tthirties\t\t\n")


def test_common_voice_mp3_and_punctuated_sentences_read_back(synth_de, tmp_path):
    assert "MP3" in soundfile.available_formats()
    make_common_voice(tmp_path / "cv", synth_de, {"train.tsv": "train", "dev.tsv": "dev", "test.tsv": "test"})
    source = {"kind": "commonvoice", "path": str(tmp_path / "cv"), "splits": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}}
    folder = build_corpus(source, tmp_path / "cache", language="de", oov="error")
    for split in ("train", "dev", "test"):
        records = read_manifest(folder / f"{split}.jsonl")
        assert [record["text"] for record in records] == [record["text"] for record in synth_de[split]]
        assert [record["speaker"] for record in records] == [record["speaker"] for record in synth_de[split]]
        for record, original in zip(records, synth_de[split]):
            assert record["audio"].endswith(".mp3") and record["age"] == "thirties" and "gender" not in record
            # mp3 frames add encoder delay and padding, a few tens of milliseconds.
            assert record["duration"] == pytest.approx(original["duration"], abs=0.1)


def test_common_voice_test_unseen_keeps_only_speakers_absent_from_train(synth_de, tmp_path):
    corpus = {"train": synth_de["train"], "mixed": synth_de["train"][:2] + synth_de["test"]}
    make_common_voice(tmp_path / "cv", corpus, {"train.tsv": "train", "other.tsv": "mixed"})
    source = {"kind": "commonvoice", "path": str(tmp_path / "cv"), "splits": {"train": "train.tsv", "test_unseen": "other.tsv"}}
    folder = build_corpus(source, tmp_path / "cache", language="de")
    train_speakers = {record["speaker"] for record in read_manifest(folder / "train.jsonl")}
    unseen = read_manifest(folder / "test_unseen.jsonl")
    expected = [record["id"] for record in corpus["mixed"] if record["speaker"] not in train_speakers]
    assert [record["id"].removeprefix("common_voice_") for record in unseen] == expected
    report = json.loads((folder / "report.json").read_text())
    assert report["test_unseen"] == {"kept": len(expected), "removed_train_speakers": len(corpus["mixed"]) - len(expected)}


SPOILERS = {"train-clean-100": " 1984", "dev-clean": " Δ", "test-clean": " 3RD"}


@pytest.fixture
def corpus_with_digits(synth_en, tmp_path) -> tuple[dict, set[str]]:
    """A LibriSpeech layout where the first transcript of each subset gets digits or a Greek letter."""
    root = tmp_path / "LibriSpeech"
    make_librispeech(root, synth_en)
    spoiled = set()
    for subset, extra in SPOILERS.items():
        transcript = sorted((root / subset).rglob("*.trans.txt"))[0]
        first, *rest = transcript.read_text().splitlines()
        transcript.write_text("\n".join([first + extra, *rest]) + "\n")
        spoiled.add(first.split(" ")[0])
    return librispeech_source(root), spoiled


def test_oov_error_names_every_utterance_and_character(corpus_with_digits, tmp_path):
    source, spoiled = corpus_with_digits
    with pytest.raises(ValueError, match="data.oov=error") as error:
        build_corpus(source, tmp_path / "cache", language="en", oov="error")
    for utterance in spoiled:
        assert utterance in str(error.value)
    assert "['1', '4', '8', '9']" in str(error.value) and "['δ']" in str(error.value) and "['3']" in str(error.value)
    assert not list((tmp_path / "cache").glob("*/train.jsonl"))


def test_oov_drop_drops_and_reports_the_utterances(corpus_with_digits, tmp_path, caplog):
    source, spoiled = corpus_with_digits
    folder = build_corpus(source, tmp_path / "cache", language="en", oov="drop")
    kept = {record["id"] for split in SPLIT_PARTS for record in read_manifest(folder / f"{split}.jsonl")}
    assert kept and not kept & spoiled
    report = json.loads((folder / "report.json").read_text())["oov_dropped"]
    assert set(report) == spoiled and ["δ"] in report.values()
    assert all(utterance in caplog.text for utterance in spoiled)


def write_rows(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writeheader()
        writer.writerows(rows)


def test_generic_jsonl_with_a_split_column(synth_en, tmp_path):
    folder = tmp_path / "mine"
    (folder / "wav").mkdir(parents=True)
    rows = []
    for split, records in synth_en.items():
        for record in records:
            shutil.copy(record["audio"], folder / "wav" / Path(record["audio"]).name)
            rows.append({"audio": f"wav/{Path(record['audio']).name}", "text": record["text"].title() + ".", "split": split, "rate": 170})
    write_rows(folder / "all.jsonl", rows)
    corpus = build_corpus({"kind": "manifest", "path": str(folder / "all.jsonl")}, tmp_path / "cache", language="en")
    for split, originals in synth_en.items():
        records = read_manifest(corpus / f"{split}.jsonl")
        assert [record["text"] for record in records] == [original["text"] for original in originals]
        assert [record["id"] for record in records] == [Path(original["audio"]).stem for original in originals]
        assert all(record["rate"] == 170 and "speaker" not in record for record in records)
        assert [Path(record["audio"]).read_bytes() for record in records] == [Path(o["audio"]).read_bytes() for o in originals]


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_generic_tables_with_a_split_mapping(synth_en, tmp_path, suffix):
    names = {}
    for split, records in synth_en.items():
        names[split] = f"{split}{suffix}"
        rows = [{"path": record["audio"], "text": record["text"], "speaker": record["speaker"], "id": f"x{i}-{split}"} for i, record in enumerate(records)]
        write_rows(tmp_path / names[split], rows)
    corpus = build_corpus({"kind": "manifest", "path": str(tmp_path), "splits": names}, tmp_path / "cache", language="en")
    for split, originals in synth_en.items():
        records = read_manifest(corpus / f"{split}.jsonl")
        assert [(record["id"], record["speaker"], record["audio"]) for record in records] == [
            (f"x{i}-{split}", original["speaker"], original["audio"]) for i, original in enumerate(originals)
        ]


def test_generic_manifest_errors_name_the_file_and_the_fault(synth_en, tmp_path):
    record = synth_en["train"][0]
    write_rows(tmp_path / "nosplit.csv", [{"path": record["audio"], "text": record["text"]}])
    with pytest.raises(ValueError, match=r"nosplit\.csv.*\['split'\]"):
        build_corpus({"kind": "manifest", "path": str(tmp_path / "nosplit.csv")}, tmp_path / "cache", language="en")
    write_rows(tmp_path / "twice.csv", [{"path": record["audio"], "text": record["text"], "split": split} for split in ("train", "dev")])
    with pytest.raises(ValueError, match="occurs twice"):
        build_corpus({"kind": "manifest", "path": str(tmp_path / "twice.csv")}, tmp_path / "cache", language="en")
    with pytest.raises(ValueError, match="unknown split names \\['valid'\\]"):
        build_corpus({"kind": "manifest", "path": str(tmp_path), "splits": {"valid": "x.csv"}}, tmp_path / "cache", language="en")
