"""The English -> German transfer study (Kunze et al. 2017), measured at convergence on a held-out test split.

Runs (``conf/study/transfer.yaml``), each a record of :mod:`tmaps.studies.runs`:

- ``source``: the English source model (unless ``source.ckpt`` names one), trained like every
  other run, so that it too stops at its plateau;
- ``<condition>-f<percent>-s<seed>``: German from scratch or from the source (fine-tune all,
  freeze 8, gradual unfreezing, ...), on each fraction of the German training set, per seed.

Every run trains the same way, whatever its condition: one learning-rate schedule (linear
warm-up, then constant: nothing is annealed at a budget's end), a validation on dev every
``val_every`` steps, early stopping on dev CER after ``patience`` validations without a better
one, and a checkpoint at each validation. After the run, the checkpoints along the curve are
evaluated on test (:func:`tmaps.studies.runs.utterance_errors`), so that steps to a target are
measured on test while dev only selects; then all but the best-dev one are deleted. The record
holds the curve (dev CER and loss, training seconds, test CER and every utterance's character
edits at each evaluated step), the best-dev checkpoint's test and test_unseen results per utterance,
and for a transfer run each layer's relative weight change from the source.

A run's settings (what decides whether its record is reused) are the study's version, condition,
fraction and seed, the composed ``tmaps-train`` config without what only says where or how fast a
machine runs it, the hash of the corpus config and, for a run that starts from the source, the
source checkpoint's content hash. ``run_ids`` picks runs, so that each can run on its own (a
Hydra multirun over run ids spreads them over a cluster); :func:`report` merges the records.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf, open_dict
from scipy import stats

from tmaps.checkpoint import describe_differences, load_checkpoint
from tmaps.data import checkpoint_datamodule
from tmaps.models import model_config
from tmaps.studies.runs import (
    RecordStore,
    SettingsChanged,
    composed_train_config,
    file_hash,
    locked,
    new_record,
    read_curve,
    relative_path,
    settings_hash,
    train_run,
    utterance_errors,
    write_json_atomically,
)
from tmaps.text import Alphabet
from tmaps.training.module import ASRModule
from tmaps.transfer.compare import compare_checkpoints

log = logging.getLogger(__name__)

# Bump when what a run measures changes: records of another version are then not reused.
STUDY_VERSION = 1
SCRATCH, SOURCE = "scratch", "source"
CHECKPOINT_FILENAME = "step{step:06d}"
BEST_CHECKPOINT = "best.ckpt"
# Keys of the composed tmaps-train config that say where or how fast a machine runs a run, not what it trains.
MACHINE_KEYS = {
    "trainer": ("default_root_dir", "precision", "enable_progress_bar"),
    "transfer": ("init_from",),
    "data": ("root", "train_fraction"),
    "data.batching": ("num_workers", "seed"),
}


def fraction_label(fraction: float) -> str:
    """``1.0`` -> ``"100"``, ``0.1`` -> ``"10"``, ``0.03`` -> ``"3"``."""
    return f"{fraction * 100:g}"


def run_id(condition: str, fraction: float, seed: int) -> str:
    return f"{condition}-f{fraction_label(fraction)}-s{seed}"


@dataclass(frozen=True)
class PlannedRun:
    """One run of the study: its id, what it trains and the ``tmaps-train`` overrides that train it (no run folder, no source path)."""

    run_id: str
    condition: str
    fraction: float
    seed: int
    overrides: tuple[str, ...]

    @property
    def from_source(self) -> bool:
        return self.condition not in (SCRATCH, SOURCE)


def recipe_overrides(study: Mapping) -> list[str]:
    """What every run of the study shares: the schedule, validation, early stopping and a checkpoint at each validation."""
    return [
        "optim.schedule=constant",
        f"optim.warmup_steps={study['warmup_steps']}",
        f"optim.lr={study['lr']}",
        f"++trainer.max_steps={study['max_steps']}",
        "++trainer.max_epochs=-1",
        f"++trainer.val_check_interval={study['val_every']}",
        "++trainer.check_val_every_n_epoch=null",
        "logger=csv",
        "test=false",
        "report=false",
        "callbacks=none",
        "+callbacks.train_time._target_=tmaps.callbacks.TrainTime",
        "+callbacks.early_stopping._target_=pytorch_lightning.callbacks.EarlyStopping",
        "+callbacks.early_stopping.monitor=val/cer",
        "+callbacks.early_stopping.mode=min",
        f"+callbacks.early_stopping.patience={study['patience']}",
        f"+callbacks.early_stopping.min_delta={study['min_delta']}",
        # Every validation's weights, for the test curve; the study deletes all but the best afterwards.
        "checkpoints.best.save_top_k=-1",
        "++checkpoints.best.save_weights_only=true",
        f"checkpoints.best.filename='{CHECKPOINT_FILENAME}'",
        "~checkpoints.last",
        "trainer.enable_progress_bar=false",
        "task_name=transfer_study",
    ]


def planned_runs(study: Mapping) -> list[PlannedRun]:
    """Every run of the study, seed-major so that an interrupted study has every condition at its first seeds."""
    unknown = [name for name in study["conditions"] if name == SOURCE]
    if unknown or SCRATCH not in study["conditions"]:
        raise ValueError(f"transfer study: conditions must hold {SCRATCH!r} (the baseline) and no condition named {SOURCE!r}; got {list(study['conditions'])}")
    shared = [*study["train_overrides"], *recipe_overrides(study)]
    runs = []
    if not study["source"]["ckpt"]:
        seed = study["seeds"][0]
        runs.append(PlannedRun(SOURCE, SOURCE, 1.0, seed, (*shared, *study["source"]["overrides"], f"seed={seed}")))
    shared.extend(study["data_overrides"])
    for seed in study["seeds"]:
        for fraction in study["fractions"]:
            for condition, overrides in study["conditions"].items():
                own = (*overrides, f"seed={seed}", f"data.train_fraction={fraction}")
                runs.append(PlannedRun(run_id(condition, fraction, seed), condition, fraction, seed, (*shared, *own)))
    return runs


def selected_runs(study: Mapping) -> list[PlannedRun]:
    """The runs ``run_ids`` names (all when it is null), in the study's order.

    Raises:
        ValueError: an id that is not a run of the study; the message lists the study's ids.
    """
    runs = planned_runs(study)
    if study.get("run_ids") is None:
        return runs
    known = {run.run_id for run in runs}
    unknown = [name for name in study["run_ids"] if name not in known]
    if unknown:
        raise ValueError(f"transfer study: run_ids {unknown} are not runs of this study; its runs are {sorted(known)}")
    return [run for run in runs if run.run_id in set(study["run_ids"])]


def _drop(config: dict, dotted: str, keys: Sequence[str]) -> None:
    node = config
    for part in dotted.split("."):
        node = node.get(part) or {}
    for key in keys:
        node.pop(key, None)


def run_settings(planned: PlannedRun, source_hash: str | None) -> tuple[dict, dict]:
    """The settings of a run (module docstring) and its resolved ``data`` config."""
    cfg = composed_train_config(planned.overrides)
    with open_dict(cfg):
        if "default_root_dir" in cfg.trainer:  # the run folder, known only inside the run's own Hydra app
            del cfg.trainer["default_root_dir"]
    data = OmegaConf.to_container(cfg.data, resolve=True)
    portable = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "optim", "trainer", "transfer", "topo", "callbacks", "data")}
    for dotted, keys in MACHINE_KEYS.items():
        _drop(portable, dotted, keys)
    corpus = portable.pop("data")
    if corpus["source"].get("path"):  # a local corpus folder: its name, not where this machine keeps it
        corpus["source"] = {**corpus["source"], "path": Path(corpus["source"]["path"]).name}
    settings = {
        "study_version": STUDY_VERSION,
        "condition": planned.condition,
        "fraction": planned.fraction,
        "seed": planned.seed,
        "train": portable,
        "corpus": settings_hash(corpus),
    }
    if planned.from_source:
        settings["source"] = source_hash
    return settings, data


# --- the source --------------------------------------------------------------------------------


def source_path(study: Mapping) -> Path:
    """The source checkpoint: ``source.ckpt``, else the best-dev checkpoint of the study's ``source`` run."""
    return Path(study["source"]["ckpt"]) if study["source"]["ckpt"] else Path(study["out_dir"]) / SOURCE / BEST_CHECKPOINT


def check_source(path: Path, study: Mapping, model: Mapping) -> str:
    """Load the source checkpoint and check that it is the German runs' architecture with the source language's alphabet; return its hash.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a tmaps checkpoint, damaged, or another architecture or alphabet (the message names the file and what differs).
    """
    source = load_checkpoint(path)
    expected = {key: value for key, value in model_config(model).items() if key not in ("dropout", "n_features", "n_classes")}
    stored = model_config(source.hyper_parameters["model"])
    differences = describe_differences(expected, {key: stored[key] for key in expected if key in stored})
    language = study["source"]["language"]
    if source.alphabet != Alphabet.for_language(language):
        differences.append(f"alphabet: expected the {language!r} alphabet {Alphabet.for_language(language).chars!r}, checkpoint has {source.alphabet.chars!r}")
    if differences:
        raise ValueError(f"transfer study: source checkpoint {path} does not fit the study's model and source language: " + "; ".join(differences))
    return file_hash(path)


# --- running -----------------------------------------------------------------------------------


def run(study: Mapping) -> list[dict]:
    """Train every selected run that has no record (the source first), after checking every record and the source.

    Nothing trains before both checks pass: a record made with other settings stops the study
    naming what changed (``fresh=true``: it moves to ``superseded/`` and the run trains anew), and
    a source checkpoint that cannot be read or does not fit stops it before the scratch runs.

    Returns:
        The records of the selected runs.
    """
    store, selected = RecordStore(study["records_dir"]), selected_runs(study)
    records: dict[str, dict] = {}
    for planned in [run for run in selected if run.condition == SOURCE]:
        records[planned.run_id] = _record(store, planned, study, None) or train_one(planned, study, None, store)
    source_hash, path = None, source_path(study)
    transfer_runs = [run for run in selected if run.from_source]
    if transfer_runs:
        if path.is_file() or study["source"]["ckpt"]:
            model = OmegaConf.to_container(composed_train_config(transfer_runs[0].overrides).model, resolve=True)
            source_hash = check_source(path, study, model)
        elif store.path(SOURCE).is_file():  # records made elsewhere: the source's hash names it, the file is needed only to train
            source_hash = json.loads(store.path(SOURCE).read_text(encoding="utf-8"))["checkpoint"]
        else:
            raise FileNotFoundError(
                f"transfer study: the source is not trained yet ({path} does not exist); "
                f"train it first with run_ids=[{SOURCE}], or give source.ckpt=<an English checkpoint>"
            )
    pending = []
    for planned in [run for run in selected if run.condition != SOURCE]:
        record = _record(store, planned, study, source_hash)
        if record is None:
            pending.append(planned)
        else:
            records[planned.run_id] = record
    if any(run.from_source for run in pending) and not path.is_file():
        raise FileNotFoundError(f"transfer study: the source checkpoint {path} is not on this machine; its runs without a record need it")
    log.info("transfer study: %d runs have records, %d to train", len(records), len(pending))
    for planned in pending:
        records[planned.run_id] = train_one(planned, study, source_hash, store)
    return [records[planned.run_id] for planned in selected]


def _record(store: RecordStore, planned: PlannedRun, study: Mapping, source_hash: str | None) -> dict | None:
    """The run's record if one with its settings exists; ``None`` if it must train (with ``fresh``, after moving a record of other settings away)."""
    settings, _ = run_settings(planned, source_hash)
    try:
        return store.load(planned.run_id, settings)
    except SettingsChanged:
        if not study.get("fresh"):
            raise
        moved = store.supersede(planned.run_id)
        log.warning("%s: record made with other settings moved to %s; training it anew", planned.run_id, moved)
        return None


def train_one(planned: PlannedRun, study: Mapping, source_hash: str | None, store: RecordStore) -> dict:
    """Train one run in its locked folder, evaluate its checkpoints on test, save its record, keep only the best-dev checkpoint."""
    settings, data = run_settings(planned, source_hash)
    run_dir = Path(study["out_dir"]) / planned.run_id
    with locked(run_dir):
        for leftover in run_dir.iterdir():  # a killed run's files: its curve must be one run's
            if leftover.name != ".lock":
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        overrides = [*planned.overrides, f"hydra.run.dir={run_dir}"]
        if planned.from_source:
            overrides.append(f"transfer.init_from={source_path(study).resolve()}")
        log.info("training %s", planned.run_id)
        wall = train_run(overrides, run_dir / "console.log")
        precision = OmegaConf.select(composed_train_config(planned.overrides), "trainer.precision")  # as the child resolved it, on this machine
        record = new_record(study["name"], planned.run_id, settings, precision=str(precision))
        record |= {"condition": planned.condition, "fraction": planned.fraction, "seed": planned.seed}
        record |= measure(run_dir, data, study, source_path(study) if planned.from_source else None)
        record["provenance"]["wall_seconds"] = wall
        record["provenance"]["train_seconds"] = record["curve"][-1]["train_seconds"]
        store.save(record)
        for checkpoint in (run_dir / "checkpoints").glob("step*.ckpt"):
            checkpoint.unlink()
    log.info("%s: best dev CER at step %d, test CER %.4f", planned.run_id, record["best_step"], record["test"]["test"]["cer"])
    return record


def measure(run_dir: Path, data: Mapping, study: Mapping, source: Path | None) -> dict:
    """Curve, test results of the best-dev checkpoint and of the checkpoints along the curve, weight change from ``source``."""
    curve = read_curve(run_dir)
    checkpoints = {int(path.stem.removeprefix("step")): path for path in (run_dir / "checkpoints").glob("step*.ckpt")}
    best = min(curve, key=lambda point: (point["dev_cer"], point["step"]))
    if best["step"] not in checkpoints:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'} has no checkpoint of step {best['step']}, the best on dev; found steps {sorted(checkpoints)}")
    every = study["curve_checkpoints_every"]
    evaluated = {point["step"] for index, point in enumerate(curve) if index % every == every - 1 or point is best or point is curve[-1]}
    module = ASRModule.from_checkpoint(checkpoints[best["step"]]).eval()
    datamodule = checkpoint_datamodule(data, module.alphabet, module.hparams.features, checkpoints[best["step"]])
    datamodule.output_stride = module.model.stride
    datamodule.prepare_data()
    datamodule.setup("test")
    loaders = datamodule.test_loaders()
    test = {split: utterance_errors(module, module.decode, loader) for split, loader in loaders.items()}
    for point in curve:
        if point["step"] in evaluated and point["step"] in checkpoints:
            errors = test["test"] if point is best else utterance_errors(*_model(checkpoints[point["step"]]), loaders["test"])
            point |= {"test_cer": errors["cer"], "test_wer": errors["wer"], "test_char_edits": [row["char_edits"] for row in errors["utterances"]]}
    kept = run_dir / BEST_CHECKPOINT
    checkpoints[best["step"]].replace(kept)
    measured = {
        "best_step": best["step"],
        "last_step": curve[-1]["step"],
        "stopped_early": curve[-1]["step"] + study["val_every"] <= study["max_steps"],
        "checkpoint": file_hash(kept),
        "curve": curve,
        "test": test,
    }
    if source is not None:
        table = compare_checkpoints(load_checkpoint(source), load_checkpoint(kept))
        measured["weight_change"] = dict(zip(table["layer"], table["relative change"].astype(float)))
    return measured


def _model(path: Path) -> tuple:
    module = ASRModule.from_checkpoint(path).eval()
    return module, module.decode


# --- the report --------------------------------------------------------------------------------


def crossing(curve: Sequence[Mapping], target: float) -> dict | None:
    """Where a run's test CER first reaches ``target``: step and training seconds, linearly interpolated between the two evaluations around it.

    ``None`` if it never does. The first evaluation counts as reached at its own step (there is no earlier one to interpolate from).
    """
    points = [point for point in curve if point.get("test_cer") is not None]
    for previous, point in zip([None, *points], points):
        if point["test_cer"] <= target:
            if previous is None:
                return {"step": float(point["step"]), "train_seconds": point["train_seconds"]}
            share = (previous["test_cer"] - target) / (previous["test_cer"] - point["test_cer"])
            seconds = None
            if point["train_seconds"] is not None and previous["train_seconds"] is not None:
                seconds = previous["train_seconds"] + share * (point["train_seconds"] - previous["train_seconds"])
            return {"step": previous["step"] + share * (point["step"] - previous["step"]), "train_seconds": seconds}
    return None


def mean_ci(values: Sequence[float]) -> tuple[float | None, list[float] | None]:
    """Mean and the 95% t interval over seeds (``None`` for the interval below two values)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return None, None
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values)) if values.std() > 0 else (mean, mean)
    return mean, [float(low), float(high)]


def paired_permutation_p(differences: Sequence[float]) -> tuple[float | None, float | None]:
    """Exact two-sided sign-flip p of paired ``differences`` (mean 0 under the null), and the smallest p the design can reach."""
    differences = np.asarray(differences, dtype=float)
    if len(differences) < 2:
        return None, None
    result = stats.permutation_test((differences,), np.mean, permutation_type="samples", alternative="two-sided", n_resamples=np.inf)
    return float(result.pvalue), float(2 / 2 ** len(differences))


def run_table(records: Sequence[Mapping], targets: Sequence[float]) -> pd.DataFrame:
    """One row per German run: its best-dev results and, per target, the step and training seconds at which its test CER reaches it.

    The targets of a run are its seed's scratch run's converged test CER (at the same fraction)
    times ``1 + target``; a run whose scratch seed has no record gets none.
    """
    german = [record for record in records if record["condition"] != SOURCE]
    scratch = {(r["fraction"], r["seed"]): r["test"]["test"]["cer"] for r in german if r["condition"] == SCRATCH}
    rows = []
    for record in german:
        best = next(point for point in record["curve"] if point["step"] == record["best_step"])
        row = {
            "condition": record["condition"],
            "fraction": record["fraction"],
            "seed": record["seed"],
            "run_id": record["run_id"],
            "best_step": record["best_step"],
            "stopped_early": record["stopped_early"],
            "dev_cer": best["dev_cer"],
            "test_cer": record["test"]["test"]["cer"],
            "test_unseen_cer": record["test"].get("test_unseen", {}).get("cer", math.nan),
            "train_seconds": best["train_seconds"],
        }
        reference = scratch.get((record["fraction"], record["seed"]))
        for target in targets:
            reached = crossing(record["curve"], reference * (1 + target)) if reference is not None else None
            row[f"steps_to_{target:g}"] = reached["step"] if reached else math.nan
            row[f"seconds_to_{target:g}"] = reached["train_seconds"] if reached and reached["train_seconds"] is not None else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def best_condition(table: pd.DataFrame, fraction: float) -> str | None:
    """The transfer condition with the lowest mean best-dev CER at ``fraction``: chosen on dev, judged on test."""
    transfer = table[(table["fraction"] == fraction) & (table["condition"] != SCRATCH)]
    return None if transfer.empty else str(transfer.groupby("condition")["dev_cer"].mean().idxmin())


def _claim(settings: Mapping, estimate, ci95, n_seeds: int, holds: bool | None, records: Sequence[str], p=None, **details) -> dict:
    """A claim entry in the fields of docs/results/claims.json; within noise (the interval not wholly on the claimed side) is ``fails``."""
    status = "not measured" if holds is None else "holds" if holds else "fails"
    return {
        "paper": settings["paper"],
        "criterion": settings["criterion"],
        "status": status,
        "estimate": estimate,
        "ci95": ci95,
        "n_seeds": n_seeds,
        "p": p,
        "records": list(records),
        "details": details,
    }


def claim_estimates(table: pd.DataFrame, records: Sequence[Mapping], study: Mapping) -> dict:
    """``{claim id: entry}`` for ``transfer_fewer_steps``, ``transfer_less_data`` and ``transfer_inner_layers_least`` (see ``_claim``)."""
    claims, paths = study["claims"], {record["run_id"]: record_path(record, study) for record in records}
    by_run = table.set_index(["condition", "fraction", "seed"])
    estimates = {}

    # Steps: the best recipe on 100% against scratch on 100%, paired by seed, at scratch's converged test CER.
    fewer = claims["transfer_fewer_steps"]
    condition = best_condition(table, 1.0)
    ratios, seconds_ratios, seeds = {}, {}, []
    if condition is not None:
        for target in study["targets"]:
            column, pairs = f"steps_to_{target:g}", []
            for seed in sorted(set(table["seed"])):
                if (condition, 1.0, seed) in by_run.index and (SCRATCH, 1.0, seed) in by_run.index:
                    pairs.append(by_run.loc[(condition, 1.0, seed), column] / by_run.loc[(SCRATCH, 1.0, seed), column])
            ratios[f"{target:g}"] = pairs
        for freezing in table.loc[table["condition"] != SCRATCH, "condition"].unique():
            column = f"seconds_to_{study['targets'][0]:g}"
            seconds_ratios[str(freezing)] = [
                by_run.loc[(freezing, 1.0, seed), column] / by_run.loc[(SCRATCH, 1.0, seed), column]
                for seed in sorted(set(table["seed"]))
                if (freezing, 1.0, seed) in by_run.index and (SCRATCH, 1.0, seed) in by_run.index
            ]
        seeds = [seed for seed in sorted(set(table["seed"])) if (condition, 1.0, seed) in by_run.index and (SCRATCH, 1.0, seed) in by_run.index]
    main = ratios.get(f"{study['targets'][0]:g}", [])
    never = any(math.isnan(value) for value in main)
    estimate, ci95 = (None, None) if never or not main else mean_ci(main)
    holds = None if len(main) < 2 else False if never or ci95 is None else ci95[1] <= fewer["max_ratio"]
    estimates["transfer_fewer_steps"] = _claim(
        fewer, estimate, ci95, len(main), holds, [paths[run_id(c, 1.0, s)] for c in (condition, SCRATCH) for s in seeds if c],
        condition=condition,
        steps_ratio_by_target={target: _per_seed(values) for target, values in ratios.items()},
        train_seconds_ratio_by_condition={name: _per_seed(values) for name, values in seconds_ratios.items()},
    )  # fmt: skip

    # Data: the best recipe on a fraction against scratch on 100%, paired by seed, test CER difference.
    less = claims["transfer_less_data"]
    by_fraction = {}
    for fraction in sorted(set(table["fraction"]) - {1.0}, reverse=True):
        condition = best_condition(table, fraction)
        seeds = [s for s in sorted(set(table["seed"])) if condition and (condition, fraction, s) in by_run.index and (SCRATCH, 1.0, s) in by_run.index]
        differences = [by_run.loc[(condition, fraction, s), "test_cer"] - by_run.loc[(SCRATCH, 1.0, s), "test_cer"] for s in seeds]
        by_fraction[fraction_label(fraction)] = {"condition": condition, "seeds": seeds, "differences": _plain(differences)}
    main = by_fraction.get(fraction_label(less["fraction"]), {"condition": None, "seeds": [], "differences": []})
    estimate, ci95 = mean_ci(main["differences"])
    p, p_min = paired_permutation_p(main["differences"])
    holds = None if ci95 is None else ci95[1] <= less["margin"]
    estimates["transfer_less_data"] = _claim(
        less, estimate, ci95, len(main["differences"]), holds,
        [paths[run_id(c, f, s)] for c, f in ((main["condition"], less["fraction"]), (SCRATCH, 1.0)) for s in main["seeds"]],
        p=p, smallest_p=p_min, condition=main["condition"],
        by_fraction={label: {**value, **_mean_and_ci(value["differences"])} for label, value in by_fraction.items()},
    )  # fmt: skip

    # Layers: relative weight change from the source per layer, with every layer free to move.
    inner = claims["transfer_inner_layers_least"]
    changes = [r for r in records if r["condition"] == inner["condition"] and r["fraction"] == 1.0 and r.get("weight_change")]
    if changes:
        layers = list(changes[0]["weight_change"])
        matrix = np.array([[record["weight_change"][layer] for layer in layers] for record in changes])
        regions = np.array_split(np.arange(len(layers)), 3)
        region_means = np.stack([matrix[:, region].mean(axis=1) for region in regions], axis=1)  # (seeds, input/middle/output)
        contrast = region_means[:, 1] - region_means[:, [0, 2]].min(axis=1)
        estimate, ci95 = mean_ci(contrast)
        holds = None if ci95 is None else ci95[1] < 0
        estimates["transfer_inner_layers_least"] = _claim(
            inner, estimate, ci95, len(changes), holds, [paths[r["run_id"]] for r in changes],
            condition=inner["condition"],
            regions={name: [layers[i] for i in region] for name, region in zip(("input side", "middle", "output side"), regions)},
            region_change={name: _mean_and_ci(region_means[:, index]) for index, name in enumerate(("input side", "middle", "output side"))},
            layer_change={layer: _mean_and_ci(matrix[:, index]) for index, layer in enumerate(layers)},
            least_changed_layer_per_seed=[layers[int(index)] for index in matrix.argmin(axis=1)],
        )  # fmt: skip
    else:
        estimates["transfer_inner_layers_least"] = _claim(inner, None, None, 0, None, [], condition=inner["condition"])
    return estimates


def _plain(values: Sequence[float]) -> list[float | None]:
    return [None if math.isnan(value) else float(value) for value in values]


def _per_seed(values: Sequence[float]) -> dict:
    """Per-seed values (``None`` where a run never reached its target) and their mean and 95% CI where every seed has one."""
    complete = len(values) > 0 and not any(map(math.isnan, values))
    return {"per_seed": _plain(values), **(_mean_and_ci(values) if complete else {"mean": None, "ci95": None})}


def _mean_and_ci(values: Sequence[float]) -> dict:
    mean, ci95 = mean_ci(values)
    return {"mean": mean, "ci95": ci95}


def record_path(record: Mapping, study: Mapping) -> str:
    return relative_path(Path(study["records_dir"]) / f"{record['run_id']}.json")


def pooled_rate_ci(utterances: Sequence[Mapping], seed: int = 0) -> list[float]:
    """95% bootstrap interval over test utterances of a pooled CER (total edits over total characters)."""
    edits = np.array([row["char_edits"] for row in utterances], dtype=float)
    chars = np.array([row["chars"] for row in utterances], dtype=float)
    result = stats.bootstrap(
        (edits, chars), lambda e, c, axis: e.sum(axis=axis) / c.sum(axis=axis), paired=True, vectorized=True,
        method="percentile", n_resamples=2000, random_state=seed,
    )  # fmt: skip
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def results_markdown(table: pd.DataFrame, targets: Sequence[float]) -> str:
    """Per fraction and condition: seeds, converged test CER (mean and 95% CI over seeds), steps and training seconds to each target."""
    target_names = [f"scratch's CER{f' +{target:.0%}' if target else ''}" for target in targets]
    header = ["data", "condition", "seeds", "best dev step", "test CER [95% CI]", "test_unseen CER"]
    header += [f"steps to {name}" for name in target_names] + [f"train s to {name}" for name in target_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (fraction, condition), runs in table.groupby(["fraction", "condition"], sort=False):
        mean, ci95 = mean_ci(runs["test_cer"])
        cells = [f"{fraction_label(fraction)}%", condition, str(len(runs)), f"{runs['best_step'].mean():.0f}",
                 f"{mean:.3f}" + (f" [{ci95[0]:.3f}, {ci95[1]:.3f}]" if ci95 else ""), f"{runs['test_unseen_cer'].mean():.3f}"]  # fmt: skip
        for kind in ("steps", "seconds"):
            for target in targets:
                values = runs[f"{kind}_to_{target:g}"]
                reached = values.dropna()
                partial = "" if len(reached) == len(values) else f" ({len(reached)}/{len(values)} seeds)"
                cells.append("never" if reached.empty else f"{reached.mean():.0f}{partial}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(records: Sequence[Mapping], path: Path) -> None:
    """Test CER of the checkpoints along each run against optimizer steps, one panel per fraction, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    german = [record for record in records if record["condition"] != SOURCE]
    fractions = sorted({record["fraction"] for record in german}, reverse=True)
    conditions = list(dict.fromkeys(record["condition"] for record in german))
    colors = dict(zip(conditions, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4))
    figure, axes = plt.subplots(1, len(fractions), figsize=(5.5 * len(fractions), 4.5), squeeze=False, sharey=True)
    for ax, fraction in zip(axes[0], fractions):
        for record in german:
            if record["fraction"] != fraction:
                continue
            points = [(point["step"], point["test_cer"]) for point in record["curve"] if point.get("test_cer") is not None]
            label = record["condition"] if record["seed"] == min(r["seed"] for r in german if r["condition"] == record["condition"]) else None
            ax.plot(*zip(*points), color=colors[record["condition"]], linewidth=2.5 if record["condition"] == SCRATCH else 1.2, label=label, alpha=0.85)
        ax.set_title(f"German, {fraction_label(fraction)}% of the training data")
        ax.set_xlabel("optimizer step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test CER (checkpoints along the run)")
    axes[0][-1].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(study: Mapping) -> dict:
    """Tables, figure and claim estimates of the study from its committed records alone (no checkpoint, no training).

    Writes into ``results_dir``: ``transfer_runs.csv`` (one row per run), ``transfer_results.md``,
    ``transfer_test_cer.png`` and ``transfer_claims.json`` (the returned dict).

    Returns:
        ``{"source": {...} | None, "claims": {claim id: entry}}`` (entries as :func:`claim_estimates` makes them).

    Raises:
        ValueError: the study has no German record yet.
    """
    records = RecordStore(study["records_dir"]).records()
    table = run_table(records, study["targets"])
    if table.empty:
        raise ValueError(f"transfer study: no records of German runs in {study['records_dir']}; train some with tmaps-study transfer first")
    results_dir = Path(study["results_dir"])
    results_dir.mkdir(parents=True, exist_ok=True)
    order = {name: index for index, name in enumerate(study["conditions"])}
    table = table.sort_values(["fraction", "condition", "seed"], key=lambda c: c.map(order) if c.name == "condition" else -c if c.name == "fraction" else c)
    table.to_csv(results_dir / "transfer_runs.csv", index=False)
    (results_dir / "transfer_results.md").write_text(results_markdown(table, study["targets"]), encoding="utf-8")
    plot(records, results_dir / "transfer_test_cer.png")
    source = next((record for record in records if record["condition"] == SOURCE), None)
    summary = {
        "source": None if source is None else {
            "checkpoint": source["checkpoint"],
            "test_cer": source["test"]["test"]["cer"],
            "test_cer_ci95": pooled_rate_ci(source["test"]["test"]["utterances"]),
            "record": record_path(source, study),
        },
        "claims": claim_estimates(table, records, study),
    }  # fmt: skip
    write_json_atomically(results_dir / "transfer_claims.json", summary)
    print(results_markdown(table, study["targets"]), flush=True)
    return summary
