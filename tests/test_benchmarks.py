"""Benchmarks that run in tests: gpu_check.sh on the CPU (small model), time_to_quality.py --quick, ctc_margin.py's record; each writes its numbers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_check_on_the_cpu_and_prints_one_table(tmp_path):
    # torch.compile is left out: compiling takes minutes on 2 cores; the CUDA run covers it.
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--small", "--no-compile", "--json", str(tmp_path / "gpu_check.json")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("gpu_check:") :].splitlines()
    assert not any("FAILED" in line or "skipped" in line for line in table), "\n".join(table)
    # Numbers as measured, not as printed: under load or on an emulated-bf16 CPU a small MFU prints as 0.00.
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert [row["check"] for row in rows] == ["peak", "train", "data", "profiles", "profiles", "ddp"]
    assert all(row["values"] and all(0 < value < float("inf") for value in row["values"].values()) for row in rows), rows
    assert rows[1]["values"]["mfu"] > 0
    assert rows[2]["setting"].startswith("loader, ") and rows[2]["values"]["audio_s_per_s"] > 0
    assert rows[3]["setting"].startswith("NAP ") and rows[4]["setting"].startswith("GradNAP")
    assert rows[5]["setting"].startswith("trainer=ddp devices=1")


def test_time_to_quality_quick_trains_both_recipes_to_the_target_and_gives_their_ratio(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "time_to_quality.py"), "--quick", "--json", str(tmp_path / "time_to_quality.json")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1].startswith("time_to_quality: today / new")
    measured = json.loads((tmp_path / "time_to_quality.json").read_text())
    assert [(arm["recipe"], arm["precision"]) for arm in measured["arms"]] == [("baseline", "32-true"), ("candidate", "32-true")]
    # Training batches are part of the seconds to the target, which are part of the child's wall time.
    assert all(arm["validations"] >= 1 and 0 < arm["train_seconds"] < arm["seconds"] < arm["wall_s"] for arm in measured["arms"]), measured["arms"]
    ratio = measured["ratios"]["candidate 32-true"]
    assert ratio["ratio"] == pytest.approx(ratio["baseline_s"] / ratio["candidate_s"])


def test_time_to_quality_interpolates_the_crossing_between_the_validations_around_it(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as when run as a script: its sibling modules import
    spec = importlib.util.spec_from_file_location("time_to_quality", ROOT / "benchmarks" / "time_to_quality.py")
    time_to_quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(time_to_quality)
    curve = pd.DataFrame({"step": [15, 30, 45], "cer": [0.30, 0.14, 0.10], "seconds": [20.0, 40.0, 60.0], "train_seconds": [10.0, 20.0, 30.0]})
    crossing = time_to_quality.at_target(curve, 0.12)
    assert crossing == pytest.approx({"step": 37.5, "cer": 0.12, "seconds": 50.0, "train_seconds": 25.0})
    assert time_to_quality.at_target(curve, 0.5) == {"step": 15, "cer": 0.30, "seconds": 20.0, "train_seconds": 10.0}
    assert time_to_quality.at_target(curve, 0.05) is None


def test_ctc_margin_records_its_values_as_strict_json_that_names_no_machine_folder(synth_corpus_en, tmp_path):
    records = tmp_path / "records"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ctc_margin.py"), str(synth_corpus_en), "--models", "small,small_s4", "--record", str(records)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1].startswith("ctc_margin: smallest output frames per needed frame")
    text = (records / f"ctc_margin-{synth_corpus_en.name}.json").read_text()

    def not_a_number(constant: str):
        raise AssertionError(f"the record holds {constant}, which strict JSON has not")

    record = json.loads(text, parse_constant=not_a_number)
    assert str(tmp_path) not in text and str(synth_corpus_en.parent) not in text
    assert record["command"] == ["python", "benchmarks/ctc_margin.py", f"<elsewhere>/{synth_corpus_en.name}", "--models", "small,small_s4", "--record", "<run>"]
    assert {"commit", "dirty", "cpu", "threads", "torch"} <= set(record["provenance"])
    measured = record["measured"]
    assert measured["corpus"] == synth_corpus_en.name and measured["utterances"] == 56
    small, small_s4 = measured["models"]["small"], measured["models"]["small_s4"]
    assert small["output_fps"] == 2 * small_s4["output_fps"]
    assert all(0 < row["speech_min"] <= row["speech_p1"] <= row["speech_median"] for row in (small, small_s4))
