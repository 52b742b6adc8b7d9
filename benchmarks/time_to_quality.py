"""Time to quality: seconds from the start of a training run to a dev CER of 0.12 on the quickstart corpus, today's recipe against a new one.

MLPerf's time-to-train, on the quickstart. Each arm is a ``tmaps-train`` child process, one after another, that
validates every ``--val-every`` optimizer steps and stops at the target (EarlyStopping's ``stopping_threshold``).
The ``TrainTime`` callback logs at every validation the wall seconds since this script launched the child, with the
validations left out (``time/elapsed_s``): the figure holds start-up (imports, Hydra, the model, the loader's
workers), data loading and training, but neither the validations that resolve the crossing nor synthesis, since
the corpus is spoken once beforehand (its seconds are printed apart). The crossing is interpolated linearly between
the last validation above the target and the first at or below it. An arm with a feature cache starts it empty.

Arms: ``--baseline`` (``experiment=quickstart``) and each ``--candidate`` (``experiment=quickstart_fast``), in fp32
always and in bf16 where the CPU computes bf16 natively (``tmaps.training.precision.cpu_has_native_bf16``;
``--precisions`` chooses), for each of ``--seeds``, the arms taking turns. Checkpoints, map callbacks, the test and
the report are off: they cost the same in every recipe and come after the crossing. The quickstart's dev CER
crosses 0.12 at a different step in each run; more seeds give medians.

    python benchmarks/time_to_quality.py                                   # quickstart against quickstart_fast
    python benchmarks/time_to_quality.py --candidate "experiment=quickstart model=small_s4"   # one option alone
    python benchmarks/time_to_quality.py --quick                           # seconds: is the machinery whole?

``--quick`` trains a tiny model on a corpus of a few dozen utterances, in fp32 only, to a target that every model
reaches at its first validation (a CER of at most infinity): it checks that the benchmark runs end to end, not the recipes.
``--json PATH`` also writes every measured value; ``--record`` writes them with the run's provenance to
``docs/results/benchmarks/time_to_quality.json`` (``records.py``; not for ``--quick``). The last line gives each ratio: the baseline's seconds to the
target over the candidate's, per precision (medians over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from records import add_record_option, write_record

from tmaps.data import SpeechDataModule
from tmaps.studies.runs import composed_train_config, csv_log, run_child
from tmaps.training.precision import FALLBACK_CPU_PRECISION, FAST_CPU_PRECISION, cpu_has_native_bf16

QUICK_OVERRIDES = [
    "data.source.n_utterances={train:24,dev:6,test:2,test_unseen:2}",
    "data.source.words_per_utterance=[2,4]",
    "data.batching.max_batch_seconds=8",
    "data.batching.num_workers=0",
    "model.channels=[32,32,32,32,32,32,32,32,64,64]",
]
# What every arm shares: no output but the CSV log, and no step that the time to the target does not need.
MEASURING_OVERRIDES = [
    "logger=csv",
    "callbacks=none",
    "checkpoints=none",
    "test=false",
    "report=false",
    "trainer.enable_progress_bar=false",
    "++trainer.check_val_every_n_epoch=null",
    "+callbacks.train_time._target_=tmaps.callbacks.TrainTime",
    "+callbacks.stop_at_target._target_=pytorch_lightning.callbacks.EarlyStopping",
    "+callbacks.stop_at_target.monitor=val/cer",
    "+callbacks.stop_at_target.mode=min",
    "+callbacks.stop_at_target.patience=1000000",
]
COLUMNS = {"step": "step", "val/cer": "cer", "time/elapsed_s": "seconds", "time/train_s": "train_seconds"}


def validations(run_dir: Path) -> pd.DataFrame:
    """Every validation of a run's CSV log: ``step`` (optimizer steps taken), ``cer``, ``seconds`` and ``train_seconds``."""
    table = pd.read_csv(csv_log(run_dir) / "metrics.csv")
    rows = table.dropna(subset=["val/cer"]).groupby("step", as_index=False).last()
    curve = rows[list(COLUMNS)].rename(columns=COLUMNS).astype(float)
    curve["step"] += 1  # Lightning logs a validation that follows step n at step n - 1
    return curve


def at_target(curve: pd.DataFrame, target: float) -> dict[str, float] | None:
    """The curve's values where the CER first reaches ``target``: linear between the validations on either side; ``None`` if never."""
    reached = np.flatnonzero(curve["cer"].to_numpy() <= target)
    if not len(reached):
        return None
    after = curve.iloc[reached[0]]
    if reached[0] == 0:
        return after.to_dict()
    before = curve.iloc[reached[0] - 1]
    return (before + (before["cer"] - target) / (before["cer"] - after["cer"]) * (after - before)).to_dict()


def native_precisions() -> list[str]:
    return [FALLBACK_CPU_PRECISION, FAST_CPU_PRECISION] if cpu_has_native_bf16() else [FALLBACK_CPU_PRECISION]


def prepare_corpus(recipes: list[list[str]], shared: list[str]) -> tuple[Path, float]:
    """Speak the corpus that every recipe trains on, once; its folder and the seconds it took (next to none when it was there)."""
    sources = [OmegaConf.to_container(composed_train_config([*recipe, *shared]).data, resolve=True) for recipe in recipes]
    if any(source["source"] != sources[0]["source"] for source in sources):
        raise SystemExit("time_to_quality: the recipes train on different corpora (data.source); time to quality compares them on one")
    started = time.perf_counter()
    datamodule = SpeechDataModule(**sources[0])
    datamodule.prepare_data()
    return datamodule.corpus_dir, time.perf_counter() - started


def run_arm(recipe: list[str], shared: list[str], run_dir: Path, corpus_dir: Path) -> tuple[pd.DataFrame, float]:
    """Train one arm from a cold feature cache; its validations and its wall seconds."""
    shutil.rmtree(corpus_dir / "features", ignore_errors=True)
    since = time.time()
    command = [sys.executable, "-m", "tmaps.commands.train", *recipe, *shared, f"+callbacks.train_time.since={since!r}", f"hydra.run.dir={run_dir}"]
    wall = run_child(command, run_dir / "console.log")
    return validations(run_dir), wall


def measure_arm(name: str, recipe: list[str], shared: list[str], run_dir: Path, corpus_dir: Path, target: float) -> dict:
    """One arm's row: its validations, best dev CER, wall seconds and, where it reached the target, the step, seconds and training seconds there."""
    curve, wall = run_arm(recipe, shared, run_dir, corpus_dir)
    reached = at_target(curve, target)
    crossing = {key: reached[key] for key in ("step", "seconds", "train_seconds")} if reached else {"seconds": None}
    return {"recipe": name, "validations": len(curve), "best_cer": float(curve["cer"].min()), "wall_s": wall, **crossing}


def ratios(arms: list[dict], candidates: list[str], precisions: list[str]) -> dict[str, dict]:
    """Per candidate and precision: the median seconds to the target of the baseline and of the candidate, and their ratio."""

    def median_seconds(name: str, precision: str) -> float | None:
        seconds = [arm["seconds"] for arm in arms if arm["recipe"] == name and arm["precision"] == precision]
        return None if None in seconds else statistics.median(seconds)

    table = {}
    for name in candidates:
        for precision in precisions:
            today, new = median_seconds("baseline", precision), median_seconds(name, precision)
            table[f"{name} {precision}"] = {"baseline_s": today, "candidate_s": new, "ratio": today / new if today and new else None}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="experiment=quickstart", help="today's recipe: tmaps-train overrides")
    parser.add_argument("--candidate", action="append", help="a new recipe's overrides (repeatable; default experiment=quickstart_fast)")
    parser.add_argument("--target", type=float, default=0.12, help="the dev CER to reach")
    parser.add_argument("--val-every", type=int, default=15, help="optimizer steps between validations (a quickstart epoch has ~90)")
    parser.add_argument("--seeds", default="0", help="comma separated; each ratio is of medians over them")
    parser.add_argument("--precisions", default=None, help=f"comma separated; default {FALLBACK_CPU_PRECISION}, and {FAST_CPU_PRECISION} where bf16 is native")
    parser.add_argument("--data-dir", type=Path, default=None, help="paths.data_dir (feature caches emptied); default a temporary folder")
    parser.add_argument("--quick", action="store_true", help="a tiny model and corpus, fp32, target CER <= inf: the machinery only")
    parser.add_argument("--json", type=Path, default=None, help="also write the measured values here")
    add_record_option(parser)
    args = parser.parse_args()
    if args.quick and args.record:
        parser.error("--record: a --quick run checks the machinery, not the recipes, so it makes no record")

    target, val_every = (math.inf, 2) if args.quick else (args.target, args.val_every)
    precisions = args.precisions.split(",") if args.precisions else [FALLBACK_CPU_PRECISION] if args.quick else native_precisions()
    candidates = args.candidate or ["experiment=quickstart_fast"]
    recipes = {"baseline": shlex.split(args.baseline)} | {
        f"candidate {index}" if len(candidates) > 1 else "candidate": shlex.split(text) for index, text in enumerate(candidates, start=1)
    }
    arms = []
    with tempfile.TemporaryDirectory(prefix="tmaps-time-to-quality-") as work:
        shared = [
            *(QUICK_OVERRIDES if args.quick else []),
            f"paths.data_dir={args.data_dir or Path(work) / 'data'}",
            *MEASURING_OVERRIDES,
            f"++trainer.val_check_interval={val_every}",
            f"+callbacks.stop_at_target.stopping_threshold={target}",
        ]
        corpus_dir, synthesis_s = prepare_corpus(list(recipes.values()), shared)
        print(f"time_to_quality: corpus {corpus_dir.name} ready in {synthesis_s:.1f} s (not counted); target dev CER <= {target}")
        print(f"validating every {val_every} steps; seconds from launch to the target, validations left out")
        for name, recipe in recipes.items():
            print(f"  {name}: {shlex.join(recipe)}")
        print(f"{'recipe':<13}{'precision':<12}{'seed':>5}{'validations':>12}{'best CER':>9}{'step':>7}{'seconds':>9}{'train s':>9}{'wall s':>8}")
        for seed in args.seeds.split(","):
            for precision in precisions:
                for name, recipe in recipes.items():  # the arms take turns, so that a change of load falls on all of them
                    run_dir = Path(work) / "runs" / f"{name.replace(' ', '')}-{precision}-seed{seed}"
                    arm = measure_arm(name, recipe, [*shared, f"seed={seed}", f"trainer.precision={precision}"], run_dir, corpus_dir, target)
                    arms.append({**arm, "precision": precision, "seed": int(seed)})
                    reached = f"{arm['step']:>7.0f}{arm['seconds']:>9.1f}{arm['train_seconds']:>9.1f}" if arm["seconds"] is not None else f"{'not reached':>25}"
                    print(f"{name:<13}{precision:<12}{seed:>5}{arm['validations']:>12}{arm['best_cer']:>9.4f}{reached}{arm['wall_s']:>8.1f}", flush=True)

    table = ratios(arms, [name for name in recipes if name != "baseline"], precisions)
    measured = {"target": target, "val_every": val_every, "synthesis_s": synthesis_s, "recipes": recipes, "arms": arms, "ratios": table}
    if args.json:
        args.json.write_text(json.dumps(measured, indent=1))
    if args.record:
        write_record(args.record, "time_to_quality", measured, precision=",".join(precisions))
    print(f"time_to_quality: today / new, seconds to dev CER <= {target}: " + ", ".join(
        f"{key} {value['ratio']:.2f}x ({value['baseline_s']:.0f} s / {value['candidate_s']:.0f} s)" if value["ratio"]
        else f"{key}: the {'baseline' if value['baseline_s'] is None else 'candidate'} did not reach it"
        for key, value in table.items()
    ))


if __name__ == "__main__":
    main()
