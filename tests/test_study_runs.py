"""A study's runs and records (tmaps.studies.runs): round trip, atomic writes, settings matching, paths, curves, children and locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pytorch_lightning.loggers import CSVLogger

from tmaps.studies.runs import REPO_ROOT, RecordStore, RunFolderInUse, SettingsChanged, locked, new_record, read_curve, relative_path

SETTINGS = {"condition": "scratch", "seed": 0, "train": {"trainer": {"max_steps": 8}, "optim": {"lr": 0.003}}}


def test_a_record_reads_back_as_written_and_only_with_its_settings(tmp_path):
    store = RecordStore(tmp_path / "runs")
    record = new_record("transfer", "scratch-f100-s0", SETTINGS) | {"curve": [{"step": 2, "dev_cer": 0.9}]}
    path = store.save(record)
    assert path == tmp_path / "runs" / "scratch-f100-s0.json" and not list(path.parent.glob(".*partial"))
    assert store.load("scratch-f100-s0", json.loads(json.dumps(SETTINGS))) == json.loads(json.dumps(record))
    assert store.load("scratch-f100-s1", SETTINGS) is None and store.records() == [json.loads(json.dumps(record))]
    assert record["provenance"]["cpu"]["model"] and "torch" in record["provenance"]


def test_other_settings_are_refused_naming_each_key_that_changed(tmp_path):
    store = RecordStore(tmp_path)
    store.save(new_record("transfer", "run", SETTINGS))
    changed = {**SETTINGS, "train": {"trainer": {"max_steps": 50}, "optim": {"lr": 0.003}}, "source": "sha256:ab"}
    with pytest.raises(
        SettingsChanged, match=r"run\.json was made with other settings \(source: '<absent>' -> 'sha256:ab'; " r"train\.trainer\.max_steps: 8 -> 50\)"
    ):
        store.load("run", changed)


def test_a_failed_write_keeps_the_earlier_record_whole(tmp_path):
    store = RecordStore(tmp_path)
    path = store.save(new_record("transfer", "run", SETTINGS))
    before = path.read_bytes()

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot be written")

    with pytest.raises(RuntimeError, match="cannot be written"):
        store.save(new_record("transfer", "run", SETTINGS) | {"curve": Unprintable()})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_superseded_record_moves_out_of_the_study_and_is_kept(tmp_path):
    store = RecordStore(tmp_path)
    path = store.save(new_record("transfer", "run", SETTINGS))
    before = path.read_bytes()
    moved = store.supersede("run")
    assert moved.parent == tmp_path / "superseded" and moved.read_bytes() == before
    assert not path.exists() and store.records() == []


def test_a_broken_record_is_named(tmp_path):
    (tmp_path / "run.json").write_text('{"run_id": "run", ')
    with pytest.raises(ValueError, match=f"record {tmp_path / 'run.json'} is not valid JSON"):
        RecordStore(tmp_path).records()
    with pytest.raises(ValueError, match="move it away to train the run again"):
        RecordStore(tmp_path).load("run", SETTINGS)


@pytest.mark.parametrize("where", ["inside", "outside", "relative", "dotted"])
def test_relative_path_never_yields_an_absolute_path(tmp_path, where, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = {
        "inside": REPO_ROOT / "docs" / "results" / "transfer" / "runs" / "scratch-f100-s0.json",
        "outside": tmp_path / "logs" / "best.ckpt",
        "relative": Path("logs") / "best.ckpt",
        "dotted": REPO_ROOT / ".." / "elsewhere" / "best.ckpt",
    }[where]
    result = relative_path(path)
    assert not Path(result).is_absolute() and ".." not in Path(result).parts and str(tmp_path) not in result
    assert result == ("docs/results/transfer/runs/scratch-f100-s0.json" if where == "inside" else "best.ckpt")


def test_the_curve_is_read_from_a_real_csv_log_at_the_steps_checkpoints_count(tmp_path):
    logger = CSVLogger(tmp_path, name="csv")
    for step in range(10):  # Lightning logs training metrics every few steps and a validation after step n at step n - 1
        logger.log_metrics({"train/loss": 3.0 - step / 10}, step=step)
        if step % 4 == 3:
            logger.log_metrics({"val/cer": 0.9 - step / 20, "val/loss": 2.5 - step / 10, "time/train_s": 1.5 * (step + 1)}, step=step)
    logger.save()
    curve = read_curve(tmp_path)
    assert [point["step"] for point in curve] == [4, 8]
    assert curve[0] == {"step": 4, "dev_cer": pytest.approx(0.75), "dev_loss": pytest.approx(2.2), "train_seconds": pytest.approx(6.0)}


PARENT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tmaps.studies.runs import run_child
    child = [sys.executable, "-c", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)", sys.argv[1]]
    run_child(child, Path(sys.argv[2]))
    """
)


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie waiting for its new parent to reap it counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_kill_9_of_the_study_kills_its_training_child(tmp_path):
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(pid_file), str(tmp_path / "console.log")], env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    deadline = time.monotonic() + 120
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    assert not process_gone(child)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while not process_gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not process_gone(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail(f"the child {child} outlived its parent's kill -9")
    assert (tmp_path / "console.log").is_file()


def test_a_locked_run_folder_is_refused_by_a_second_study_and_free_again_after(tmp_path):
    run_dir = tmp_path / "scratch-f100-s0"
    run_dir.mkdir()
    with locked(run_dir):
        (run_dir / "console.log").write_text("training\n")
        with pytest.raises(RunFolderInUse, match=f"run folder {run_dir} is in use by another process"), locked(run_dir):
            pass
        assert (run_dir / "console.log").read_text() == "training\n"
    with locked(run_dir):
        pass
