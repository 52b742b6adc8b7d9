"""benchmarks/gpu_check.sh runs on the CPU with a small model, prints its one table and writes its measured numbers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

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
