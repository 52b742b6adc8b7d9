"""The quickstart end to end on a fresh data folder: wall time (synthesis included) and test CERs.

    python benchmarks/quickstart.py [extra Hydra overrides]

Targets on 2 CPU cores: at most 600 s wall time and CER <= 0.15 on `test`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="tmaps-quickstart-") as root:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "tmaps.cli.train", "experiment=quickstart", f"paths.root_dir={root}", *overrides],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"quickstart failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        cer = {
            split: float(value)
            for split, value in re.findall(r"^(test\w*)\s+\d+\s+([\d.]+)\s+[\d.]+$", result.stdout, re.MULTILINE)
        }
        print(result.stdout[result.stdout.find("tmaps: test results") :])
        print(f"run folder kept? no ({Path(root).name} removed)")
    print(f"quickstart: wall {wall:.0f} s, test CER {cer['test']:.4f}, test_unseen CER {cer['test_unseen']:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
