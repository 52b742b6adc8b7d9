"""The English -> German transfer study (Kunze et al. 2017): every recipe against scratch, on one step budget.

:func:`run_study` does, in order:

1. the English source: ``source.ckpt`` if given, else ``experiment=source_en`` trained once
   into ``<out_dir>/source``;
2. one seed (the first of ``seeds``) of every condition at every train fraction;
3. the other seeds of scratch and of the best transfer recipe per fraction (the lowest final
   dev CER of the first seed);
4. the results: ``transfer_results.md`` / ``.csv`` (mean ± sd over seeds), ``transfer_dev_cer.png``
   (dev CER against steps and against training seconds), ``transfer_weight_change.csv`` (how far
   each layer of the best 100% recipe moved from the source) and ``transfer_summary.json`` in
   ``results_dir``.

Every run is a ``tmaps-train`` process with its own folder ``<out_dir>/runs/<condition>-f<fraction>-s<seed>``.
A finished run leaves ``result.json`` (dev CER and training seconds at every validation); a
rerun of the study skips it, and a folder without it (a killed run) is trained again from the
start, so that its learning curve is one run's. A killed source run goes on from its last checkpoint.

Every run has the same budget, ``steps`` optimizer steps with a validation every ``val_every``;
gradual unfreezing is scheduled in steps (a fraction of the budget), so that it means the same
at every data size.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tmaps.checkpoint import load_checkpoint
from tmaps.studies.runs import checkpoint_reference
from tmaps.transfer.compare import compare_checkpoints

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
# What a run prints; not train.log, which Hydra's file handler writes in the same folder.
CONSOLE_LOG = "console.log"
SCRATCH = "scratch"
# The condition names a study config may list, and what each one trains.
CONDITIONS = {
    SCRATCH: "German from random weights",
    "freeze0": "fine-tune every layer from English",
    "freeze4": "freeze the first 4 layers",
    "freeze6": "freeze the first 6 layers",
    "freeze8": "freeze the first 8 layers",
    "freeze8_reinit": "freeze the first 8 layers, re-initialize the rest",
    "gradual": "all but the head frozen, one layer unfrozen (top down) every `gradual_unfreeze_every` of the budget",
    "discriminative": "fine-tune every layer, learning rate times `discriminative_decay` per layer towards the input",
}
# Which layers count as input side, middle and output side of the 11-layer model (conv0..conv9, head).
LAYER_REGIONS = {"input side (conv0-conv2)": range(0, 3), "middle (conv3-conv6)": range(3, 7), "output side (conv7-head)": range(7, 11)}


@dataclass(frozen=True)
class Run:
    """One training run of the study."""

    condition: str
    fraction: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.condition}-f{self.fraction:g}-s{self.seed}"


@dataclass(frozen=True)
class RunResult:
    """What a finished run leaves in its ``result.json``: dev CER, training seconds and dev loss at each validation step.

    ``dev_loss`` rises while the dev CER stalls when a run overfits its training data; it is
    ``None`` in the results of runs made before the study recorded it.
    """

    condition: str
    fraction: float
    seed: int
    steps: list[int]
    dev_cer: list[float]
    train_seconds: list[float]
    weight_change: dict[str, float] | None = None
    dev_loss: list[float] | None = None

    @property
    def final_dev_cer(self) -> float:
        return self.dev_cer[-1]


def fraction_label(fraction: float) -> str:
    """``1.0`` -> ``"100"``, ``0.1`` -> ``"10"``, ``0.03`` -> ``"3"``: the suffix of the summary keys."""
    return f"{fraction * 100:g}"


def condition_overrides(condition: str, source_ckpt: str | None, study: Mapping) -> list[str]:
    """The ``tmaps-train`` overrides of one condition (on top of the study's ``train_overrides``)."""
    if condition not in CONDITIONS:
        raise ValueError(f"transfer study: unknown condition {condition!r}; known: {list(CONDITIONS)}")
    if condition == SCRATCH:
        return ["transfer=none"]
    transfer = ["transfer=finetune", f"transfer.init_from={source_ckpt}"]
    if condition.startswith("freeze"):
        layers = condition.removeprefix("freeze").removesuffix("_reinit")
        transfer.append(f"transfer.freeze_first={int(layers)}")
        if condition.endswith("_reinit"):
            transfer.append("transfer.reinit_unfrozen=true")
    elif condition == "gradual":
        every = max(1, round(study["gradual_unfreeze_every"] * study["steps"]))
        transfer += ["transfer.freeze_first=all_but_head", f"transfer.unfreeze_every_n_steps={every}"]
    elif condition == "discriminative":
        transfer += ["transfer.freeze_first=0", f"optim.lr_decay_per_layer={study['discriminative_decay']}"]
    return transfer


def run_overrides(run: Run, source_ckpt: str | None, study: Mapping, run_dir: Path) -> list[str]:
    """Every override of one German run: budget, validation schedule, data fraction, seed, logging."""
    return [
        *study["train_overrides"],
        *condition_overrides(run.condition, source_ckpt, study),
        f"seed={run.seed}",
        f"data.train_fraction={run.fraction}",
        f"++trainer.max_steps={study['steps']}",
        "++trainer.max_epochs=-1",
        f"++trainer.val_check_interval={study['val_every']}",
        "++trainer.check_val_every_n_epoch=null",
        "logger=csv",
        "test=false",
        # Only the training time and one checkpoint at the end (for the weight change): no maps,
        # no per-epoch saving, which small fractions (epochs of a few steps) would pay often.
        "callbacks=none",
        "+callbacks.train_time._target_=tmaps.callbacks.TrainTime",
        "~checkpoints.best",
        f"+checkpoints.last.every_n_train_steps={study['steps']}",
        f"hydra.run.dir={run_dir}",
        "task_name=transfer_study",
    ]


def train(overrides: Sequence[str], log_path: Path) -> None:
    """One ``tmaps-train`` process; its output goes to ``log_path``.

    Raises:
        RuntimeError: the run failed; the message names its log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as output:
        status = subprocess.run([sys.executable, "-m", "tmaps.commands.train", *overrides], stdout=output, stderr=subprocess.STDOUT)
    if status.returncode:
        raise RuntimeError(f"tmaps-train failed (exit code {status.returncode}); see {log_path}")


def read_curves(run_dir: Path) -> pd.DataFrame:
    """``val/cer``, ``val/loss`` and ``time/train_s`` by optimizer step from a run's CSV log.

    Lightning logs a validation that follows optimizer step ``n`` at step ``n - 1``; the index
    here is ``n``, the number of steps taken.
    """
    paths = sorted(run_dir.glob("csv/*/metrics.csv"))
    if not paths:
        raise FileNotFoundError(f"{run_dir} has no csv/*/metrics.csv: did the run use logger=csv?")
    metrics = pd.read_csv(paths[-1])
    missing = {"val/cer", "val/loss", "time/train_s"} - set(metrics)
    if missing:
        raise ValueError(f"{paths[-1]} has no {sorted(missing)} column: did the run validate (val/*) with the TrainTime callback (time/train_s)?")
    curves = metrics.dropna(subset=["val/cer"]).groupby("step")[["val/cer", "val/loss", "time/train_s"]].last()
    curves.index = curves.index + 1
    return curves


def source_weight_change(source_ckpt: str, run_dir: Path) -> dict[str, float]:
    """Relative weight change ``||W - W_source|| / ||W_source||`` of every layer of a run's last checkpoint."""
    table = compare_checkpoints(load_checkpoint(source_ckpt), load_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    return dict(zip(table["layer"], table["relative change"].astype(float)))


def run_once(run: Run, source_ckpt: str | None, study: Mapping, out_dir: Path) -> RunResult:
    """The result of ``run``: read from its folder if it finished before, else trained now."""
    run_dir = out_dir / "runs" / run.name
    result_path = run_dir / RESULT_FILE
    if result_path.is_file():
        return RunResult(**json.loads(result_path.read_text()))
    if run_dir.exists():
        log.info("%s: no %s, a run that did not finish; training it again", run_dir, RESULT_FILE)
        shutil.rmtree(run_dir)
    log.info("training %s", run.name)
    train(run_overrides(run, source_ckpt, study, run_dir), run_dir / CONSOLE_LOG)
    curves = read_curves(run_dir)
    change = source_weight_change(source_ckpt, run_dir) if run.condition != SCRATCH else None
    result = RunResult(
        run.condition, run.fraction, run.seed, [int(step) for step in curves.index],
        curves["val/cer"].tolist(), curves["time/train_s"].tolist(), weight_change=change, dev_loss=curves["val/loss"].tolist(),
    )  # fmt: skip
    write_atomically(result_path, json.dumps(asdict(result), indent=1) + "\n")
    return result


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` so that ``path`` is either absent or complete, even if the study is killed meanwhile."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def source_checkpoint(study: Mapping, out_dir: Path) -> str:
    """``source.ckpt``, or the last checkpoint of ``source.overrides`` trained once into ``<out_dir>/source``."""
    if study["source"]["ckpt"]:
        path = Path(study["source"]["ckpt"])
        if not path.is_file():
            raise FileNotFoundError(f"transfer study: source.ckpt {path} does not exist")
        return str(path.resolve())
    source_dir = out_dir / "source"
    checkpoint = source_dir / "checkpoints" / "last.ckpt"
    if not (source_dir / RESULT_FILE).is_file():
        # A source run that was killed goes on from its last epoch's checkpoint.
        resume = [f"ckpt_path={checkpoint}"] if checkpoint.is_file() else []
        log.info("training the English source (%s)", " ".join([*study["source"]["overrides"], *resume]))
        overrides = [*study["source"]["overrides"], *resume, "test=false", f"hydra.run.dir={source_dir}", "task_name=transfer_study_source"]
        train(overrides, source_dir / CONSOLE_LOG)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"the source run wrote no {checkpoint}; its callbacks must keep last.ckpt")
        write_atomically(source_dir / RESULT_FILE, json.dumps({"checkpoint": str(checkpoint.resolve())}) + "\n")
    return str(checkpoint.resolve())


def best_transfer(results: Sequence[RunResult], fraction: float, seed: int) -> str | None:
    """The transfer condition with the lowest final dev CER at ``fraction`` among runs of ``seed``."""
    candidates = [r for r in results if r.fraction == fraction and r.seed == seed and r.condition != SCRATCH]
    return min(candidates, key=lambda r: r.final_dev_cer).condition if candidates else None


def run_study(study: Mapping) -> list[RunResult]:
    """Train what is missing of the study, then write its results; return every run's result."""
    unknown = [condition for condition in study["conditions"] if condition not in CONDITIONS]
    if unknown:
        raise ValueError(f"transfer study: unknown conditions {unknown}; known: {list(CONDITIONS)}")
    out_dir = Path(study["out_dir"])
    source_ckpt = source_checkpoint(study, out_dir) if set(study["conditions"]) - {SCRATCH} else None
    first_seed, *other_seeds = study["seeds"]
    results = [
        run_once(Run(condition, fraction, first_seed), source_ckpt, study, out_dir)
        for fraction in study["fractions"]
        for condition in study["conditions"]
    ]
    for fraction in study["fractions"]:
        repeated = {SCRATCH, best_transfer(results, fraction, first_seed)} & set(study["conditions"])
        results += [run_once(Run(condition, fraction, seed), source_ckpt, study, out_dir) for condition in sorted(repeated) for seed in other_seeds]
    source = None if source_ckpt is None else checkpoint_reference(source_ckpt, out_dir)
    write_results(results, study, source, Path(study["results_dir"]))
    return results


# --- results ---------------------------------------------------------------------------------


def run_curves(results: Sequence[RunResult], column: str = "dev_cer") -> pd.DataFrame:
    """``column`` of every run (one column each) at the validation steps that every run has."""
    return pd.concat([pd.Series(getattr(result, column), index=result.steps) for result in results], axis=1).dropna()


def mean_curve(results: Sequence[RunResult], column: str = "dev_cer") -> pd.Series:
    """The mean over runs of ``column`` at each validation step that every run has."""
    return run_curves(results, column).mean(axis=1)


def first_step_at_or_below(curve: pd.Series, target: float) -> int | None:
    """The first validation step at which ``curve`` reaches ``target``, or None if it never does."""
    reached = curve[curve <= target + 1e-12]
    return int(reached.index[0]) if len(reached) else None


def results_table(results: Sequence[RunResult], first_seed: int) -> pd.DataFrame:
    """One row per fraction and condition: final dev CER mean ± sd over seeds, and how soon each
    reaches scratch's final dev CER (mean curves) in steps and in training seconds."""
    rows = []
    for fraction in sorted({r.fraction for r in results}, reverse=True):
        scratch = [r for r in results if r.fraction == fraction and r.condition == SCRATCH]
        scratch_curve = mean_curve(scratch) if scratch else None
        target = float(scratch_curve.iloc[-1]) if scratch_curve is not None else math.nan
        scratch_steps = first_step_at_or_below(scratch_curve, target) if scratch_curve is not None else None
        best = best_transfer(results, fraction, first_seed)
        conditions = [c for c in CONDITIONS if any(r.fraction == fraction and r.condition == c for r in results)]
        for condition in conditions:
            runs = [r for r in results if r.fraction == fraction and r.condition == condition]
            finals = np.array([r.final_dev_cer for r in runs])
            curve, seconds = mean_curve(runs), mean_curve(runs, "train_seconds")
            steps = first_step_at_or_below(curve, target) if scratch_curve is not None else None
            rows.append(
                {
                    "train fraction": fraction,
                    "condition": condition,
                    "best transfer": condition == best,
                    "seeds": len(runs),
                    "final dev CER": finals.mean(),
                    "sd": finals.std(ddof=1) if len(runs) > 1 else math.nan,
                    "best dev CER": float(np.mean([min(r.dev_cer) for r in runs])),
                    "steps to scratch's final CER": steps,
                    "steps ratio": steps / scratch_steps if steps and scratch_steps else math.nan,
                    "train s to scratch's final CER": float(seconds.loc[steps]) if steps else math.nan,
                    "train s of the budget": float(seconds.iloc[-1]),
                }
            )
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The table as Markdown, final dev CER as ``mean ± sd``, the best transfer recipe in bold."""
    lines = [
        "| data | condition | seeds | final dev CER | best dev CER | steps to scratch's final CER | steps ratio | train s to it | train s (budget) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.to_dict("records"):
        cer = f"{row['final dev CER']:.3f}" + ("" if math.isnan(row["sd"]) else f" ± {row['sd']:.3f}")
        name = f"**{row['condition']}**" if row["best transfer"] else row["condition"]
        steps = row["steps to scratch's final CER"]
        cells = [
            f"{fraction_label(row['train fraction'])}%", name, str(row["seeds"]), cer, f"{row['best dev CER']:.3f}",
            "never" if steps is None or math.isnan(steps) else str(int(steps)),
            _number(row["steps ratio"], ".2f"), _number(row["train s to scratch's final CER"], ".0f"), f"{row['train s of the budget']:.0f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: float, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def summary(results: Sequence[RunResult], table: pd.DataFrame, study: Mapping, source: Mapping | None) -> dict:
    """The headline numbers (means over seeds) and whether each meets the paper's claim; ``source`` names the source checkpoint
    (:func:`~tmaps.studies.runs.checkpoint_reference`)."""
    first_seed = study["seeds"][0]
    rows = {(row["train fraction"], row["condition"]): row for row in table.to_dict("records")}
    best = {fraction_label(f): best_transfer(results, f, first_seed) for f in study["fractions"]}
    values: dict = {
        "steps": study["steps"],
        "val_every": study["val_every"],
        "fractions": list(study["fractions"]),
        "seeds": list(study["seeds"]),
        "source_checkpoint": source,
        "best_transfer": best,
    }
    for fraction in study["fractions"]:
        label = fraction_label(fraction)
        if (fraction, SCRATCH) in rows:
            values[f"dev_cer_scratch_{label}"] = rows[(fraction, SCRATCH)]["final dev CER"]
        if best[label] is not None:
            row = rows[(fraction, best[label])]
            values[f"dev_cer_transfer_{label}"] = row["final dev CER"]
            values[f"steps_ratio_{label}"] = None if math.isnan(row["steps ratio"]) else row["steps ratio"]
            scratch_seconds = rows.get((fraction, SCRATCH), {}).get("train s to scratch's final CER", math.nan)
            seconds = row["train s to scratch's final CER"]
            values[f"train_seconds_ratio_{label}"] = None if math.isnan(seconds) or math.isnan(scratch_seconds) else seconds / scratch_seconds
    # null: the study did not train what the claim needs; false: trained and missed (with scratch
    # trained, a ratio of None means transfer never reached scratch's final CER).
    ratio = values.get("steps_ratio_100")
    transfer_10, scratch_100 = values.get("dev_cer_transfer_10"), values.get("dev_cer_scratch_100")
    values["headlines"] = {
        "transfer reaches scratch's final dev CER in <= 1/5 of the steps (100%)": (
            None if "steps_ratio_100" not in values or scratch_100 is None else ratio is not None and ratio <= 0.2
        ),
        "transfer on 10% beats scratch on 100%": None if transfer_10 is None or scratch_100 is None else transfer_10 < scratch_100,
    }
    changes = [r.weight_change for r in results if r.fraction == max(study["fractions"]) and r.condition == best.get("100") and r.weight_change]
    if changes:
        mean_change = pd.DataFrame(changes).mean()
        values["weight_change_100"] = {
            region: float(mean_change.iloc[list(layers)].mean()) for region, layers in LAYER_REGIONS.items() if len(mean_change) >= 11
        }
    return values


def plot(results: Sequence[RunResult], path: Path) -> None:
    """Dev CER against optimizer steps (top) and against training seconds (middle), and dev loss
    against steps (bottom: it turns up where a run overfits), one column per fraction; mean over
    seeds, the band one standard deviation where there are several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted({r.fraction for r in results}, reverse=True)
    figure, axes = plt.subplots(3, len(fractions), figsize=(5.5 * len(fractions), 11), squeeze=False, sharey="row")
    for column, fraction in enumerate(fractions):
        for condition in CONDITIONS:
            runs = [r for r in results if r.fraction == fraction and r.condition == condition]
            if not runs:
                continue
            style = {"color": "black", "linewidth": 2.5} if condition == SCRATCH else {"linewidth": 1.5}
            label = f"{condition} ({len(runs)} seeds)" if len(runs) > 1 else condition
            seconds = mean_curve(runs, "train_seconds")
            color = _plot_mean(axes[0][column], runs, "dev_cer", None, label=label, **style)
            _plot_mean(axes[1][column], runs, "dev_cer", seconds, **{**style, "color": color})
            if all(r.dev_loss for r in runs):
                _plot_mean(axes[2][column], runs, "dev_loss", None, **{**style, "color": color})
        axes[0][column].set_title(f"German, {fraction_label(fraction)}% of the training data")
        for row, xlabel in enumerate(("optimizer step", "training seconds (batches only)", "optimizer step")):
            axes[row][column].set_xlabel(xlabel)
            axes[row][column].grid(alpha=0.3)
        for row in range(2):
            axes[row][column].set_yscale("log")
    for row, ylabel in enumerate(("dev CER", "dev CER", "dev CTC loss")):
        axes[row][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_mean(ax, runs: Sequence[RunResult], column: str, seconds: pd.Series | None, **style) -> str:
    """The mean over ``runs`` of ``column`` against steps (or ``seconds`` at those steps), ± one sd; returns the line's colour."""
    curves = run_curves(runs, column)
    mean = curves.mean(axis=1)
    x = mean.index if seconds is None else seconds.loc[mean.index].to_numpy()
    line = ax.plot(x, mean.to_numpy(), marker="o", markersize=2.5, **style)[0]
    if len(runs) > 1:
        sd = curves.std(axis=1, ddof=1)
        ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)
    return line.get_color()


def write_results(results: Sequence[RunResult], study: Mapping, source: Mapping | None, results_dir: Path) -> dict:
    """Table (CSV, Markdown), figure, weight changes and summary of ``results`` into ``results_dir``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    table = results_table(results, study["seeds"][0])
    table.to_csv(results_dir / "transfer_results.csv", index=False)
    (results_dir / "transfer_results.md").write_text(markdown(table))
    plot(results, results_dir / "transfer_dev_cer.png")
    changes = pd.DataFrame(
        [{"condition": r.condition, "train fraction": r.fraction, "seed": r.seed, **r.weight_change} for r in results if r.weight_change]
    )
    if len(changes):
        changes.to_csv(results_dir / "transfer_weight_change.csv", index=False)
    values = summary(results, table, study, source)
    (results_dir / "transfer_summary.json").write_text(json.dumps(values, indent=2) + "\n")
    log.info("wrote the study's results to %s", results_dir)
    print(markdown(table), flush=True)
    return values
