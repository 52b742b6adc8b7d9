"""JSONL manifests: one utterance record per line (see docs/design.md for the fields)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

SPLITS = ("train", "dev", "test", "test_unseen")
REQUIRED_FIELDS = ("id", "audio", "text")


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Records of a manifest, with ``audio`` made absolute against the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    records = []
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_number}: a record is a JSON object, this line holds {json_type(record)}")
            missing = [field for field in REQUIRED_FIELDS if field not in record]
            if missing:
                raise ValueError(f"{path}:{line_number}: record lacks the fields {missing}")
            not_text = [f"{field} is {json_type(record[field])}" for field in REQUIRED_FIELDS if not isinstance(record[field], str)]
            if not_text:
                raise ValueError(f"{path}:{line_number}: {', '.join(not_text)}; {', '.join(REQUIRED_FIELDS)} must be strings")
            record["audio"] = str((path.parent / record["audio"]).resolve())
            records.append(record)
    return records


def json_type(value: object) -> str:
    """What a parsed JSON value is, in JSON's words (``null``, ``an array``, ...), for error messages."""
    if value is None:
        return "null"
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def write_manifest(records: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write records with ``audio`` relative to the manifest's folder; atomic (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as out:
        for record in records:
            relative = os.path.relpath(Path(record["audio"]).resolve(), path.parent.resolve())
            out.write(json.dumps({**record, "audio": relative}, ensure_ascii=False) + "\n")
    temporary.replace(path)
    return path
