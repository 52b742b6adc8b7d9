"""No committed file names a folder of the machine it was made on (issue 25, section 4).

A working, temporary or home folder in results, docs, scripts, configs, code or test data
tells a reader nothing and ties the file to one machine: results name files relative to the
repository or a run folder (a checkpoint by its content hash), and documentation uses
illustrative paths such as ``<corpora>/LibriSpeech``. Code that needs a temporary folder asks
``tempfile`` or pytest's ``tmp_path`` and never spells one out.

Every tracked text file but this test's own examples is read; binary files (checkpoints,
images) are skipped, so a screenshot that shows a machine path is not caught here.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from tmaps.studies.runs import checkpoint_reference

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["work", "tmp", "root", "home", "Users", "mnt", "scratch", "private/var", "var/folders", "var/tmp"]
# A folder at the start of a path (not inside a relative one such as docs/tmp), and a Windows home.
MACHINE_PATH = re.compile(r"(?<![\w.~/-])/(?:" + "|".join(FOLDERS) + r")(?![\w.-])|\b[A-Za-z]:(?:\\\\?|/)Users\b")


def tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of committed files")
    paths = [ROOT / name for name in listed.decode().split("\0") if name]
    own = Path(__file__).resolve()
    return [path for path in paths if path.is_file() and not path.is_symlink() and path != own and b"\0" not in path.read_bytes()[:8192]]


def machine_paths(text: str) -> list[str]:
    return [match.group() for match in MACHINE_PATH.finditer(text)]


def test_the_pattern_finds_machine_paths_and_spares_relative_ones():
    found = machine_paths(
        'ckpt "/work/runs/last.ckpt", PYTHONPATH=/tmp/old, ~ is /home/me, /Users/me/data, /root/.cache, '
        "/private/var/folders/x, C:\\Users\\me, C:/Users/me, --out /tmp"
    )
    assert len(found) == 9, found
    assert not machine_paths("docs/tmp/x, <corpora>/LibriSpeech, logs/work/run, runs/home.json, https://example.org/home/page, /workspace")


def test_no_committed_text_file_holds_a_machine_path():
    offenders = []
    for path in tracked_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if found := machine_paths(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {', '.join(found)}")
    assert not offenders, "machine paths in committed files (use a path relative to the repository or run folder, or <placeholder>):\n" + "\n".join(
        offenders
    )


def test_results_name_a_checkpoint_by_its_place_in_the_run_folder_and_its_content(tmp_path):
    checkpoint = tmp_path / "source" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    assert checkpoint_reference(checkpoint, tmp_path) == {"path": "source/checkpoints/last.ckpt", "hash": f"sha256:{hashlib.sha256(b'weights').hexdigest()}"}
    assert checkpoint_reference(checkpoint, tmp_path / "elsewhere")["path"] == "last.ckpt"  # outside the folder: its name only
    assert checkpoint_reference(tmp_path / "gone.ckpt", tmp_path) == {"path": "gone.ckpt", "hash": "unknown: the checkpoint was not found"}
