"""Bad input ends a command with one line naming the file, key or value, and exit status 1, and loses
nothing written before (issue 32). Each command runs as ``python -m tmaps.commands.<command>``, its
entry point; ``TMAPS_TRACEBACK=1`` brings the traceback back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_faults import BRIEF_RUN, checkpoint_files
from test_introspect_cli import train_checkpoint
from test_training import TINY_CORPUS, compose_train

from tmaps.commands.export import export
from tmaps.commands.train import train
from tmaps.introspect import Profiles

REPO = Path(__file__).resolve().parents[1]


def run_command(command: str, *overrides: str, cwd: Path, blocked: str | None = None, traceback: bool = False) -> subprocess.CompletedProcess:
    """``python -m tmaps.commands.<command> <overrides>`` in ``cwd``; ``blocked``: a package made unimportable, as if not installed."""
    environment = {**os.environ, "TMAPS_ROOT": str(cwd), "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(REPO), "TMAPS_TRACEBACK": "1" if traceback else "0"}
    if blocked is None:
        arguments = ["-m", f"tmaps.commands.{command}"]
    else:  # what Python does for a package that is not installed
        arguments = ["-c", f"import runpy, sys; sys.modules[{blocked!r}] = None; runpy.run_module('tmaps.commands.{command}', run_name='__main__')"]
    return subprocess.run([sys.executable, *arguments, *overrides], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


def error_line(result: subprocess.CompletedProcess, command: str) -> str:
    """The error's line, after checking that the command ended with it, exit status 1 and no traceback.

    Lines before it are the run's own (Lightning's ``Seed set to 0``).
    """
    lines = result.stderr.strip().splitlines()
    ended = result.returncode == 1 and "Traceback" not in result.stderr and lines and lines[-1].startswith(f"tmaps-{command}: ")
    assert ended, (result.returncode, result.stderr[-3000:])
    return lines[-1]


def earlier_file(folder: Path) -> Path:
    """A file written before the command runs, into the folder it writes to."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "written_before.txt"
    path.write_text("written before")
    return path


@pytest.fixture(scope="module")
def checkpoint(synth_corpus_en, tmp_path_factory) -> Path:
    return train_checkpoint(synth_corpus_en, tmp_path_factory.mktemp("checkpoint"))


# tmaps-eval


@pytest.mark.parametrize("fault", ["missing", "truncated"])
def test_eval_names_a_missing_or_damaged_checkpoint(fault, tmp_path):
    path = tmp_path / "model.ckpt"
    if fault == "truncated":
        torch.save({"state_dict": {"weight": torch.zeros(1000)}, "hyper_parameters": {}}, path)
        path.write_bytes(path.read_bytes()[:2000])
    damaged = path.read_bytes() if fault == "truncated" else None
    before = earlier_file(tmp_path / "eval")
    line = error_line(run_command("eval", f"ckpt_path={path}", "hydra.run.dir=eval", cwd=tmp_path), "eval")
    expected = "does not exist" if fault == "missing" else "is not a checkpoint"
    assert f"{path} {expected}" in line, line
    assert before.read_text() == "written before"
    assert damaged is None or path.read_bytes() == damaged


def test_the_traceback_comes_back_on_request(tmp_path):
    missing = tmp_path / "model.ckpt"
    result = run_command("eval", f"ckpt_path={missing}", "hydra.run.dir=eval", cwd=tmp_path, traceback=True)
    assert result.returncode == 1 and "Traceback" in result.stderr and f"FileNotFoundError: checkpoint {missing} does not exist" in result.stderr


# tmaps-train


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["transfer=finetune", "transfer.init_from=nowhere/source.ckpt"], "checkpoint nowhere/source.ckpt does not exist"),
        (["optim.lr=-1"], "optim.lr=-1: Input should be greater than or equal to 0"),
    ],
    ids=["init_from", "negative_lr"],
)
def test_train_names_a_bad_source_checkpoint_or_learning_rate_before_training(overrides, message, tmp_path):
    before = earlier_file(tmp_path / "run")
    line = error_line(run_command("train", *overrides, "logger=csv", "hydra.run.dir=run", cwd=tmp_path), "train")
    assert message in line, line
    assert before.read_text() == "written before"
    assert not checkpoint_files(tmp_path / "run") and not (tmp_path / "run" / "csv").exists(), "training started"


def test_max_epochs_0_is_refused_naming_the_key_unless_allowed(tmp_path, synth_data_dir):
    refused = tmp_path / "refused"
    with pytest.raises(ValueError, match=r"trainer\.max_epochs=0 trains nothing.*allow_untrained=true"):
        train(compose_train([*BRIEF_RUN, *TINY_CORPUS, "trainer.max_epochs=0"], refused, synth_data_dir))
    assert not refused.exists()
    allowed = tmp_path / "allowed"
    train(compose_train([*BRIEF_RUN, *TINY_CORPUS, "trainer.max_epochs=0", "allow_untrained=true", "report=false"], allowed, synth_data_dir))
    assert (allowed / "test_results.csv").is_file() and not checkpoint_files(allowed)


# tmaps-export


def test_export_refuses_to_replace_an_earlier_export_unless_asked(checkpoint, tmp_path):
    folder = tmp_path / "export"
    export({"ckpt_path": str(checkpoint), "output_dir": str(folder), "formats": ["state_dict"]})
    earlier = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert set(earlier) == {"model_state.pt", "model.json"}
    line = error_line(run_command("export", f"ckpt_path={checkpoint}", f"output_dir={folder}", "formats=[state_dict]", cwd=tmp_path), "export")
    assert line == f"tmaps-export: the folder {folder} holds an earlier export (model_state.pt, model.json); set overwrite=true to replace it"
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == earlier
    export({"ckpt_path": str(checkpoint), "output_dir": str(folder), "formats": ["state_dict"], "overwrite": True})
    assert sorted(path.name for path in folder.iterdir()) == ["model.json", "model_state.pt"]


def test_export_onto_a_file_names_the_folder_and_keeps_the_file(checkpoint, tmp_path):
    in_the_way = tmp_path / "export"
    in_the_way.write_text("not a folder")
    line = error_line(run_command("export", f"ckpt_path={checkpoint}", f"output_dir={in_the_way}", "formats=[state_dict]", cwd=tmp_path), "export")
    assert line == f"tmaps-export: exported models cannot be written into the folder {in_the_way}: a file of that name is in the way"
    assert in_the_way.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_into_a_read_only_folder_names_it(checkpoint, tmp_path):
    folder = tmp_path / "export"
    before = earlier_file(folder)
    folder.chmod(0o555)
    try:
        line = error_line(run_command("export", f"ckpt_path={checkpoint}", f"output_dir={folder}", "formats=[state_dict]", cwd=tmp_path), "export")
    finally:
        folder.chmod(0o755)
    assert re.fullmatch(f"tmaps-export: exported models cannot be written into the folder {re.escape(str(folder))}: .*Permission denied.*", line), line
    assert [path.name for path in folder.iterdir()] == [before.name]


# A missing extra


def test_a_missing_extra_is_named_in_one_line(tmp_path):
    profiles = tmp_path / "profiles.npz"
    values = np.random.default_rng(0).random((6, 16))
    Profiles([f"g{i}" for i in range(6)], {"conv1": values}, {"conv1": values**2}, {"conv1": np.ones(6)}, normalize=None).save(profiles)
    before = earlier_file(tmp_path / "maps")
    result = run_command("maps", f"profiles={profiles}", "layouts=[umap]", "output_dir=maps", "hydra.run.dir=run", cwd=tmp_path, blocked="umap")
    assert error_line(result, "maps") == "tmaps-maps: the UMAP layout needs the package 'umap', which is not installed: pip install 'tmaps[umap]'"
    assert [path.name for path in (tmp_path / "maps").iterdir()] == [before.name]


# tmaps-report


def test_report_draws_the_curves_of_a_metrics_file_cut_mid_line_and_says_so(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    written = "step,epoch,metric,value\n" + "".join(f"{step},0,train/loss,{1 / (step + 1)}\n" for step in range(5)) + "5,0,train/lo"
    (run_dir / "metrics.csv").write_text(written)
    result = run_command("report", str(run_dir), cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    page = (run_dir / "report.html").read_text()
    assert "Metric curves" in page and "train/loss" in page
    assert f"metrics file {run_dir / 'metrics.csv'}: its last line (7) is cut short and is left out" in result.stdout
    assert (run_dir / "metrics.csv").read_text() == written
