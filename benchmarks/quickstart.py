"""The quickstart end to end on a fresh data folder: wall time (synthesis included) and test CERs.

    python benchmarks/quickstart.py [extra Hydra overrides]
    python benchmarks/quickstart.py +trainer.profiler=simple   # and where the time goes
    python benchmarks/quickstart.py experiment=quickstart_fast # another recipe in place of experiment=quickstart

With Lightning's simple profiler on, the wall time is broken down into synthesis (the
datamodule's ``prepare_data``), training steps, waits for training batches, validation,
checkpoints, the map and profile callbacks, the rest of ``fit``, testing, and what lies
outside ``fit`` and ``test`` (imports, Hydra, the W&B run, building the model).

Targets on 2 CPU cores: at most 600 s wall time and CER <= 0.15 on `test`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROW = re.compile(r"^\|\s*(?P<action>.+?)\s*\|\s*(?P<mean>[-\d.e]+)\s*\|\s*(?P<calls>\d+)\s*\|\s*(?P<total>[\d.e+-]+)\s*\|", re.MULTILINE)
MAP_CALLBACKS = ("[Callback]TopographicMaps", "[Callback]ActivationProfiles", "[Callback]WeightChange")


def profiler_reports(text: str) -> list[tuple[str, dict[str, float]]]:
    """``(stage, {action: total seconds})`` of every report of Lightning's simple profiler in ``text``."""
    parts = re.split(r"^(FIT|TEST|VALIDATE|PREDICT) Profiler Report$", text, flags=re.MULTILINE)
    return [(stage, {m["action"]: float(m["total"]) for m in ROW.finditer(body)}) for stage, body in zip(parts[1::2], parts[2::2])]


def breakdown(wall: float, reports: list[tuple[str, dict[str, float]]]) -> list[tuple[str, float]]:
    """The wall time in parts, from the fit and test reports."""
    fit = next(actions for stage, actions in reports if stage == "FIT")
    # The trainer keeps one profiler, so each report's Total counts from the start of fit.
    tests = reports[-1][1]["Total"] - fit["Total"]

    def total(*prefixes: str) -> float:
        return sum(seconds for action, seconds in fit.items() if action.startswith(prefixes))

    parts = [
        ("synthesis (prepare_data)", total("[LightningDataModule]SpeechDataModule.prepare_data")),
        ("training steps", total("run_training_batch")),
        ("waiting for training batches", total("[_TrainingEpochLoop].train_dataloader_next")),
        ("validation", total("[Strategy]SingleDeviceStrategy.validation_step", "[_EvaluationLoop].val_next", "[LightningModule]ASRModule.on_validation")),
        ("checkpoints", total("save_checkpoint")),
        ("map and profile callbacks", total(*MAP_CALLBACKS)),
    ]
    parts.append(("rest of fit (loops, logging, progress bar)", fit["Total"] - sum(seconds for _, seconds in parts)))
    parts.append(("test (2 splits)", tests))
    parts.append(("outside fit and test: imports, Hydra, W&B, model", wall - fit["Total"] - tests))
    return parts


def main(overrides: list[str]) -> None:
    recipe = [] if any(override.startswith("experiment=") for override in overrides) else ["experiment=quickstart"]
    with tempfile.TemporaryDirectory(prefix="tmaps-quickstart-") as root:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "tmaps.commands.train", *recipe, f"paths.root_dir={root}", *overrides],
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
        reports = profiler_reports(result.stderr)
        if reports:
            print(f"{'part':<50}{'seconds':>9}{'share':>8}")
            for part, seconds in breakdown(wall, reports):
                print(f"{part:<50}{seconds:>9.1f}{seconds / wall:>8.1%}")
    print(f"quickstart: wall {wall:.0f} s, test CER {cer['test']:.4f}, test_unseen CER {cer['test_unseen']:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
