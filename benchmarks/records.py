"""A benchmark's committed record: what one run measured, as JSON in ``docs/results/benchmarks/<name>.json``.

A benchmark that takes ``--record`` (:func:`add_record_option`) writes its measured values there with
:func:`write_record`, so that every figure the docs quote from it names a file that one command regenerates.
The record holds the command that made it, the values, and the run's provenance (commit, CPU and its bf16
flags, threads, precision, torch; ``tmaps.studies.runs.provenance``). Absolute paths, in the command or the
values, become relative to the repository (``<repo>/...``) or the record's folder (``<run>/...``), else ``<elsewhere>/<name>``:
a record names no folder of the machine.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from tmaps.studies.runs import REPO_ROOT, provenance, without_machine_paths, write_json_atomically

RECORDS = REPO_ROOT / "docs" / "results" / "benchmarks"


def add_record_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--record", type=Path, nargs="?", const=RECORDS, default=None, metavar="FOLDER",
        help="also write the measured values as JSON to FOLDER/<name>.json (default folder docs/results/benchmarks)",
    )


def write_record(folder: Path, name: str, measured: dict, precision: str | None = None) -> Path:
    """Write ``measured`` with this run's command and provenance to ``folder/<name>.json``; the path written."""
    command = ["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]
    record = {
        "benchmark": name,
        "command": command,
        "recorded_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance(precision),
        "measured": measured,
    }
    path = Path(folder) / f"{name}.json"
    write_json_atomically(path, without_machine_paths(record, Path(folder)))
    print(f"{name}: record written to {path.name}")
    return path
