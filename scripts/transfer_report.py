"""Results of scripts/transfer_study.sh: a table (CSV and Markdown) and dev CER against steps.

    python scripts/transfer_report.py logs/transfer_study/<date>

Reads every run under ``<study>/scratch/*`` and ``<study>/transfer/*`` (its ``.hydra/config.yaml``
for the condition, its ``csv/*/metrics.csv`` for dev CER against steps) and writes
``results.csv``, ``results.md`` and ``dev_cer.png`` into the study folder. For each train
fraction, "steps to scratch" is the first validation step at which a run's dev CER is at or
below the final dev CER of the scratch run on the same data.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

COLUMNS = [
    "condition",
    "train fraction",
    "final dev CER",
    "best dev CER",
    "steps to scratch",
    "speed-up",
    "head change",
    "mean change of trained layers",
]


def condition(config) -> str:
    """``scratch`` or ``freeze <k>`` (with ``+reinit`` / ``+gradual`` where they apply)."""
    transfer = config.get("transfer") or {}
    if not transfer.get("init_from"):
        return "scratch"
    label = f"freeze {transfer.get('freeze_first')}"
    if transfer.get("reinit_unfrozen"):
        label += " +reinit"
    if transfer.get("unfreeze_every_n_epochs"):
        label += " +gradual"
    return label


def read_run(run_dir: Path) -> dict | None:
    """The condition, train fraction and logged metrics of one run; ``None`` if it logged nothing."""
    config_path = run_dir / ".hydra" / "config.yaml"
    metrics_paths = sorted(run_dir.glob("csv/*/metrics.csv"))
    if not config_path.is_file() or not metrics_paths:
        return None
    config = OmegaConf.load(config_path)
    metrics = pd.read_csv(metrics_paths[-1])
    if "val/cer" not in metrics:
        raise ValueError(f"{metrics_paths[-1]} has no val/cer column: did the run validate (trainer.val_check_interval)?")
    dev_cer = metrics.dropna(subset=["val/cer"]).groupby("step")["val/cer"].last()
    # Lightning logs a validation that runs after optimizer step n (val_check_interval) at step n - 1.
    dev_cer.index = dev_cer.index + 1
    return {
        "condition": condition(config),
        "train fraction": float(config.data.get("train_fraction", 1.0)),
        "dev_cer": dev_cer,
        "changes": metrics.filter(like="weights/relative_change/").dropna(how="all"),
        "run_dir": run_dir,
    }


def summarize(runs: list[dict]) -> pd.DataFrame:
    rows = []
    for run in runs:
        scratch = [other for other in runs if other["condition"] == "scratch" and other["train fraction"] == run["train fraction"]]
        dev_cer = run["dev_cer"]
        steps_to_scratch = speed_up = math.nan
        if scratch and len(scratch[0]["dev_cer"]):
            target = scratch[0]["dev_cer"].iloc[-1]
            reached = dev_cer[dev_cer <= target]
            if len(reached):
                steps_to_scratch = int(reached.index[0])
                speed_up = scratch[0]["dev_cer"].index[-1] / max(steps_to_scratch, 1)
        changes = run["changes"].iloc[-1] if len(run["changes"]) else pd.Series(dtype=float)
        moved = changes[changes > 0]
        rows.append(
            [
                run["condition"],
                run["train fraction"],
                dev_cer.iloc[-1] if len(dev_cer) else math.nan,
                dev_cer.min() if len(dev_cer) else math.nan,
                steps_to_scratch,
                speed_up,
                changes.get("weights/relative_change/head", math.nan),
                moved.mean() if len(moved) else math.nan,
            ]
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = table.assign(is_transfer=table["condition"] != "scratch")
    table = table.sort_values(["train fraction", "is_transfer", "condition"], ascending=[False, True, True])
    return table.drop(columns="is_transfer").reset_index(drop=True)


def markdown(table: pd.DataFrame) -> str:
    cells = table.astype(object).where(table.notna(), "-")
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for row in cells.itertuples(index=False):
        lines.append("| " + " | ".join(f"{cell:.4g}" if isinstance(cell, float) else str(cell) for cell in row) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path) -> None:
    fractions = sorted({run["train fraction"] for run in runs}, reverse=True)
    figure, axes = plt.subplots(1, len(fractions), figsize=(6 * len(fractions), 4.5), squeeze=False, sharey=True)
    for ax, fraction in zip(axes[0], fractions):
        for run in sorted((run for run in runs if run["train fraction"] == fraction), key=lambda run: run["condition"]):
            style = {"color": "black", "linewidth": 2.5} if run["condition"] == "scratch" else {}
            ax.plot(run["dev_cer"].index, run["dev_cer"].values, marker="o", markersize=3, label=run["condition"], **style)
        ax.set_title(f"German, {fraction:.0%} of the training data")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[0][0].set_ylabel("dev CER")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="the OUT folder of scripts/transfer_study.sh")
    study = parser.parse_args().study
    run_dirs = sorted(path for group in ("scratch", "transfer") for path in (study / group).glob("*") if path.is_dir())
    runs = [run for run in map(read_run, run_dirs) if run is not None]
    if not runs:
        raise SystemExit(f"no runs with a CSV log under {study}/scratch or {study}/transfer")
    table = summarize(runs)
    table.to_csv(study / "results.csv", index=False)
    (study / "results.md").write_text(markdown(table))
    plot(runs, study / "dev_cer.png")
    print(markdown(table))
    print(f"wrote {study / 'results.csv'}, {study / 'results.md'} and {study / 'dev_cer.png'} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
