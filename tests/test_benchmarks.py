"""benchmarks/gpu_check.sh runs on the CPU with a small model and prints its one table."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_check_on_the_cpu_and_prints_one_table():
    # torch.compile is left out: compiling takes minutes on 2 cores; the CUDA run covers it.
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--small", "--no-compile"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("gpu_check:") :].splitlines()
    rows = {line.split("|")[0].strip(): line for line in table[3:]}
    assert set(rows) == {"peak", "train", "data", "profiles", "ddp"}, table
    assert not any("FAILED" in line or "skipped" in line for line in table), "\n".join(table)
    mfu = float(re.search(r"MFU ([\d.]+)", rows["train"]).group(1))
    assert mfu > 0
    assert re.search(r"loader, \d+ workers +\| \d+ audio s/s = [\d.]+x", rows["data"])
    assert "GradNAP" in result.stdout
    assert "trainer=ddp devices=1" in rows["ddp"]
