"""Real corpora (LibriSpeech, Common Voice, generic manifests, local Hugging Face datasets) as split manifests.

Each reader turns a corpus layout into records ``{"id", "audio", "text", "speaker", ...}`` per
split, with the transcript as the corpus spells it. :func:`build_corpus` then normalizes the
transcripts, applies the ``oov`` policy, reads durations from the audio headers and writes
``train.jsonl``, ``dev.jsonl``, ... (the records of docs/design.md) into a cache folder.

A source config names the corpus folder (``path``) and maps split names to the corpus's own
parts (``splits``): LibriSpeech subsets (``train-clean-100``), Common Voice tables
(``train.tsv``) or manifest files. Several parts can feed one split.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import soundfile

from tmaps.data.manifest import SPLITS, json_type, write_manifest
from tmaps.extras import require
from tmaps.text import Alphabet, normalize

log = logging.getLogger(__name__)

OOV_POLICIES = ("error", "drop")
SplitMapping = Mapping[str, "str | Sequence[str]"]

# Speaker attributes of Common Voice that are kept as record keys (utterance-level NAP groups).
COMMON_VOICE_ATTRIBUTES = ("age", "gender", "accents", "accent")
MANIFEST_AUDIO_COLUMNS = ("audio", "path")
# Transcript and speaker columns of Hugging Face speech datasets, in order of preference.
HF_TEXT_COLUMNS = ("transcription", "sentence", "text")
HF_SPEAKER_COLUMNS = ("speaker_id", "client_id", "speaker")


def read_librispeech(path: str | os.PathLike, splits: SplitMapping) -> dict[str, list[dict]]:
    """Records of a LibriSpeech root, by split.

    ``path`` holds subsets (``train-clean-100/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt`` with
    ``ID TEXT`` lines next to ``ID.flac``); ``splits`` maps split names to subset names. When
    ``path/SPEAKERS.TXT`` exists, each record gets the speaker's ``gender``.
    """
    root = Path(path)
    genders = _librispeech_genders(root / "SPEAKERS.TXT")
    records: dict[str, list[dict]] = {}
    for split, subsets in _split_parts(splits).items():
        records[split] = []
        for subset in subsets:
            folder = root / subset
            if not folder.is_dir():
                raise FileNotFoundError(f"LibriSpeech subset {subset!r} (split {split!r}) not found: {folder} is no folder")
            transcripts = sorted(folder.glob("*/*/*.trans.txt"))
            if not transcripts:
                raise FileNotFoundError(f"LibriSpeech subset {folder} holds no SPEAKER/CHAPTER/*.trans.txt files")
            for transcript in transcripts:
                for line_number, line in enumerate(transcript.read_text(encoding="utf-8").splitlines(), start=1):
                    if not line.strip():
                        continue
                    utterance, _, text = line.strip().partition(" ")
                    if utterance.count("-") != 2:
                        raise ValueError(f"{transcript}:{line_number}: expected 'SPEAKER-CHAPTER-NUMBER TEXT', got {line!r}")
                    speaker, chapter, _ = utterance.split("-")
                    record = {"id": utterance, "audio": str(transcript.parent / f"{utterance}.flac"), "text": text}
                    record |= {"speaker": speaker, "chapter": chapter}
                    if speaker in genders:
                        record["gender"] = genders[speaker]
                    records[split].append(record)
    return records


def _librispeech_genders(speakers_file: Path) -> dict[str, str]:
    """``speaker -> "f" | "m"`` from LibriSpeech's ``ID | SEX | SUBSET | MINUTES | NAME`` table."""
    if not speakers_file.is_file():
        return {}
    genders = {}
    for line in speakers_file.read_text(encoding="utf-8").splitlines():
        fields = [field.strip() for field in line.split("|")]
        if line.startswith(";") or len(fields) < 2:
            continue
        genders[fields[0]] = fields[1].lower()
    return genders


def read_common_voice(path: str | os.PathLike, splits: SplitMapping) -> dict[str, list[dict]]:
    """Records of a Common Voice language folder, by split.

    ``path`` holds ``clips/*.mp3`` and tables such as ``train.tsv`` with the columns ``path``,
    ``sentence`` and ``client_id`` (the speaker); ``splits`` maps split names to table names.
    The speaker attributes ``age``, ``gender`` and ``accents`` are kept where given.
    """
    root = Path(path)
    records: dict[str, list[dict]] = {}
    for split, tables in _split_parts(splits).items():
        records[split] = []
        for table in tables:
            for row in _read_table(root / table, required=("path", "sentence", "client_id"), quoting=csv.QUOTE_NONE):
                record = {
                    "id": Path(row["path"]).stem,
                    "audio": str(root / "clips" / row["path"]),
                    "text": row["sentence"],
                    "speaker": row["client_id"],
                }
                record |= {key: row[key] for key in COMMON_VOICE_ATTRIBUTES if row.get(key)}
                records[split].append(record)
    return records


def read_generic_manifest(path: str | os.PathLike, splits: SplitMapping | None = None) -> dict[str, list[dict]]:
    """Records of JSONL, CSV or TSV manifests, by split.

    Each row has the audio file in ``audio`` or ``path`` (relative to the manifest's folder or
    absolute) and the transcript in ``text``; ``speaker`` and ``id`` are optional (the id
    defaults to the audio file's name without suffix) and any other column is kept.

    With ``splits``, ``path`` is a folder and ``splits`` maps split names to manifest files in
    it. Without, ``path`` is one manifest whose rows name their split in a ``split`` column.
    """
    root = Path(path)
    if splits:
        return {
            split: [_manifest_record(row, root / name) for name in names for row in _read_table(root / name, required=("text",))]
            for split, names in _split_parts(splits).items()
        }
    records: dict[str, list[dict]] = {}
    for row_number, row in enumerate(_read_table(root, required=("text", "split")), start=1):
        split = row.pop("split")
        if not split:
            raise ValueError(f"{root}: row {row_number} has an empty 'split'")
        records.setdefault(split, []).append(_manifest_record(row, root))
    return records


def _manifest_record(row: dict, manifest: Path) -> dict:
    audio_column = next((column for column in MANIFEST_AUDIO_COLUMNS if row.get(column)), None)
    if audio_column is None:
        raise ValueError(f"{manifest}: a row has no audio file in {MANIFEST_AUDIO_COLUMNS}: {row}")
    audio = manifest.parent / str(row[audio_column])
    extra = {key: value for key, value in row.items() if key not in (*MANIFEST_AUDIO_COLUMNS, "id", "text")}
    return {"id": str(row.get("id") or audio.stem), "audio": str(audio), "text": str(row["text"]), **extra}


def read_hugging_face(
    path: str | os.PathLike, splits: SplitMapping, audio_dir: str | os.PathLike, text_column: str | None = None
) -> dict[str, list[dict]]:
    """Records of a local Hugging Face speech dataset, by split.

    ``path`` is either an AudioFolder (``metadata.csv`` with ``file_name`` and a transcript
    column next to the audio; in split subfolders such as ``train/`` and ``test/``, or at the
    top, which is the split ``train``) or a folder written by ``datasets``' ``save_to_disk``
    with an ``audio`` column (a ``DatasetDict``, or one ``Dataset``, the split ``train``). The
    audio of a ``datasets`` folder is written once to ``audio_dir``. ``splits`` maps split
    names to the dataset's own (``{train: train, dev: validation, test: test}``).

    The transcript is ``text_column`` or the first of ``transcription``, ``sentence``,
    ``text``; the speaker the first of ``speaker_id``, ``client_id``, ``speaker``; other
    columns are kept as record keys.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"Hugging Face dataset folder {root} does not exist")
    parts = _split_parts(splits)
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        rows = _datasets_rows(root, {part for names in parts.values() for part in names}, Path(audio_dir))
    else:
        rows = {part: _audiofolder_rows(root, part) for names in parts.values() for part in names}
    return {split: [_hugging_face_record(row, source, text_column) for part in names for source, row in rows[part]] for split, names in parts.items()}


def _audiofolder_rows(root: Path, part: str) -> list[tuple[str, dict]]:
    folder = root if part == "train" and (root / "metadata.csv").is_file() else root / part
    table = folder / "metadata.csv"
    if not table.is_file():
        raise FileNotFoundError(f"AudioFolder {root}: split {part!r} has no {table}")
    rows = _read_table(table, required=("file_name",))
    return [(str(table), {**row, "audio": str(folder / row.pop("file_name"))}) for row in rows]


def _datasets_rows(root: Path, parts: set[str], audio_dir: Path) -> dict[str, list[tuple[str, dict]]]:
    datasets = require("datasets", extra="hf", feature="data=hf with a datasets.save_to_disk folder")
    stored = datasets.load_from_disk(str(root))
    by_split = stored if isinstance(stored, datasets.DatasetDict) else {"train": stored}
    missing = sorted(parts - set(by_split))
    if missing:
        raise ValueError(f"datasets folder {root} has no split {missing}; it has {sorted(by_split)}")
    rows = {}
    for part in parts:
        table = by_split[part]
        if "audio" not in table.column_names:
            raise ValueError(f"datasets folder {root}, split {part!r}: no 'audio' column (columns: {table.column_names})")
        table = table.cast_column("audio", datasets.Audio(decode=False))
        rows[part] = []
        for index, row in enumerate(table):
            audio = row.pop("audio")
            name = f"{part}-{index:06d}{Path(audio.get('path') or '.wav').suffix or '.wav'}"
            target = audio_dir / part / name
            if audio.get("bytes"):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(audio["bytes"])
            else:
                target = Path(audio.get("path") or target)
            rows[part].append((f"{root} [{part}] row {index}", {"id": str(row.pop("id", "") or Path(name).stem), **row, "audio": str(target)}))
    return rows


def _hugging_face_record(row: dict, source: str, text_column: str | None) -> dict:
    columns = (text_column,) if text_column else HF_TEXT_COLUMNS
    text = next((column for column in columns if column in row), None)
    if text is None:
        raise ValueError(f"{source}: no transcript column {list(columns)} in {sorted(row)}")
    speaker = next((column for column in HF_SPEAKER_COLUMNS if row.get(column) not in (None, "")), None)
    extra = {key: value for key, value in row.items() if key not in (text, speaker, "audio", "id")}
    record = {"id": str(row.get("id") or Path(row["audio"]).stem), "audio": row["audio"], "text": str(row[text] or ""), **extra}
    return record | ({"speaker": str(row[speaker])} if speaker else {})


def _read_table(path: Path, required: Sequence[str], quoting: int = csv.QUOTE_MINIMAL) -> list[dict]:
    """Rows of a ``.jsonl``, ``.csv`` or ``.tsv`` file.

    Raises naming the file and line of a row that is not an object, lacks a ``required``
    column or holds something other than text in one (a JSON ``null``, a CSV row cut short):
    a missing transcript must never become the text "none".
    """
    if not path.is_file():
        raise FileNotFoundError(f"corpus table {path} does not exist")
    with path.open(encoding="utf-8", newline="") as lines:
        if path.suffix == ".jsonl":
            numbered = []
            for line_number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    numbered.append((line_number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
        elif path.suffix in (".csv", ".tsv"):
            reader = csv.DictReader(lines, delimiter="\t" if path.suffix == ".tsv" else ",", quoting=quoting)
            numbered = [(reader.line_num, row) for row in reader]
        else:
            raise ValueError(f"{path}: manifests must be .jsonl, .csv or .tsv")
    for line_number, row in numbered:
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{line_number}: a row is a JSON object, this line holds {json_type(row)}")
        missing = [column for column in required if column not in row]
        if missing:
            raise ValueError(f"{path}:{line_number}: the row lacks the columns {missing}")
        for column in required:
            if not isinstance(row[column], str):
                raise ValueError(f"{path}:{line_number}: column {column!r} holds {json_type(row[column])}, not text")
    return [row for _, row in numbered]


def _split_parts(splits: SplitMapping | None) -> dict[str, list[str]]:
    if not splits:
        raise ValueError("source.splits must map split names (train, dev, ...) to parts of the corpus")
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)} in source.splits; splits are {SPLITS}")
    return {split: [parts] if isinstance(parts, str) else list(parts) for split, parts in splits.items() if parts}


READERS: dict[str, Callable[..., dict[str, list[dict]]]] = {
    "librispeech": read_librispeech,
    "commonvoice": read_common_voice,
    "manifest": read_generic_manifest,
    "hf": read_hugging_face,
}


def normalize_transcripts(records: Sequence[dict], alphabet: Alphabet) -> tuple[list[dict], dict[str, list[str]]]:
    """Normalize ``text``; set apart utterances with characters outside ``alphabet``.

    Returns the records whose normalized text fits the alphabet, and the report
    ``{utterance id: [characters outside the alphabet]}`` of the others.
    """
    kept, report = [], {}
    for record in records:
        text = normalize(record["text"])
        unknown = alphabet.unknown_chars(text)
        if unknown:
            report[record["id"]] = sorted(unknown)
        else:
            kept.append({**record, "text": text})
    return kept, report


def _apply_oov_policy(report: Mapping[str, list[str]], oov: str, alphabet: Alphabet, corpus: str) -> None:
    if not report:
        return
    if oov == "error":
        raise ValueError(
            f"{corpus}: {len(report)} utterance(s) have characters outside the alphabet {alphabet.chars!r} "
            f"(data.oov=error; data.oov=drop drops them): {_describe(report)}"
        )
    log.warning("%s: dropped %d utterance(s) with characters outside the alphabet: %s", corpus, len(report), _describe(report))


def _describe(report: Mapping[str, list[str]], limit: int = 20) -> str:
    shown = "; ".join(f"{utterance} {chars}" for utterance, chars in list(report.items())[:limit])
    return shown + (f"; ... and {len(report) - limit} more" if len(report) > limit else "")


def build_corpus(source: Mapping, root: str | os.PathLike, language: str, oov: str = "error") -> Path:
    """Read the real corpus described by ``source`` and write its split manifests; return their folder.

    ``source`` holds ``kind`` (``librispeech``, ``commonvoice``, ``manifest`` or ``hf``), ``path``
    and ``splits`` (see the module doc), and for ``hf`` optionally ``text_column``. The folder ``root/<kind>-<language>-<hash of the config>``
    is reused when it is complete; delete it to re-read a corpus that changed on disk. It also
    holds ``report.json``: the dropped out-of-alphabet utterances and the speaker filtering of
    ``test_unseen``.

    Records get ``language``, the normalized ``text``, and ``duration`` and ``sample_rate`` from
    the audio header; files whose header cannot be read keep no duration and are left to the
    dataset's ``on_error`` policy, which names them.

    ``test_unseen`` (if mapped) keeps only speakers absent from ``train``; mapping it to the
    same part as ``test`` therefore gives the unseen-speaker part of ``test``.
    """
    kind = source.get("kind")
    if oov not in OOV_POLICIES:
        raise ValueError(f"oov must be one of {OOV_POLICIES}, got {oov!r}")
    if kind not in READERS:
        raise ValueError(f"source.kind must be one of {sorted(READERS)} here, got {kind!r}")
    if not source.get("path"):
        raise ValueError(f"source.path must name the {kind} corpus")
    config = {**source, "path": str(Path(source["path"]).resolve()), "language": language, "oov": oov}
    key = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    folder = Path(root) / f"{kind}-{language}-{key}"
    done = folder / "source.json"
    if done.is_file():
        log.info("using the manifests of %s in %s", source["path"], folder)
        return folder

    options = {"audio_dir": folder / "audio", "text_column": source.get("text_column")} if kind == "hf" else {}
    splits = READERS[kind](config["path"], source.get("splits"), **options)
    _check_unique_ids(splits)
    alphabet = Alphabet.for_language(language)
    report: dict[str, dict] = {"oov_dropped": {}}
    for split, records in splits.items():
        splits[split], dropped = normalize_transcripts(records, alphabet)
        report["oov_dropped"] |= dropped
    _apply_oov_policy(report["oov_dropped"], oov, alphabet, config["path"])
    splits = {split: [_with_audio_header({**record, "language": language}) for record in records] for split, records in splits.items()}
    if "test_unseen" in splits:
        splits["test_unseen"], report["test_unseen"] = _unseen_speakers(splits["test_unseen"], splits.get("train", []))
    for split, records in splits.items():
        write_manifest(records, folder / f"{split}.jsonl")
        log.info("%s: %d utterances of %s in %s", split, len(records), source["path"], folder / f"{split}.jsonl")
    (folder / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    done.write_text(json.dumps(config, indent=1, ensure_ascii=False), encoding="utf-8")
    return folder


def _check_unique_ids(splits: Mapping[str, list[dict]]) -> None:
    """Ids are unique across splits; test_unseen may repeat other splits, as it may be a part of test."""
    shared: dict[str, str] = {}
    for split, records in splits.items():
        seen = {} if split == "test_unseen" else shared
        for record in records:
            if record["id"] in seen:
                raise ValueError(f"utterance id {record['id']!r} occurs twice ({seen[record['id']]} and {split}): {record['audio']}")
            seen[record["id"]] = split


def _with_audio_header(record: dict) -> dict:
    try:
        info = soundfile.info(record["audio"])
    except soundfile.SoundFileError:
        return record
    return {**record, "duration": round(info.duration, 4), "sample_rate": info.samplerate}


def _unseen_speakers(records: list[dict], train: list[dict]) -> tuple[list[dict], dict]:
    unlabelled = [record["id"] for record in [*records, *train] if not record.get("speaker")]
    if unlabelled:
        raise ValueError(f"test_unseen needs the speaker of every train and test_unseen utterance; missing for {unlabelled[:10]}")
    train_speakers = {record["speaker"] for record in train}
    kept = [record for record in records if record["speaker"] not in train_speakers]
    removed = len(records) - len(kept)
    if removed:
        log.info("test_unseen: removed %d of %d utterances whose speakers occur in train", removed, len(records))
    return kept, {"kept": len(kept), "removed_train_speakers": removed}
