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

from tmaps.checkpoint import describe_differences, load_checkpoint
from tmaps.data import checkpoint_datamodule
from tmaps.models import model_config
from tmaps.studies import claims, stats
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

# What the criteria of tmaps.studies.claims fix: the share of the German data the data claim tests and
# the condition whose weight changes the layer claim reads; steps are counted to scratch's converged test CER (+0%).
LESS_DATA_FRACTION = 0.1
EVERY_LAYER_CONDITION = "finetune_all"
CLAIM_TARGET = 0.0


def run_table(records: Sequence[Mapping], targets: Sequence[float]) -> pd.DataFrame:
    """One row per German run: its best-dev results and, per target, the step and training seconds at which its test CER reaches it.

    The targets at a fraction are scratch's converged test CER there (the mean over seeds of its test CER at the best-dev
    checkpoint, as the criterion of ``transfer_fewer_steps`` defines it) times ``1 + target``; a fraction without a scratch
    record has none. The step is interpolated between the test evaluations of the kept checkpoints
    (:func:`tmaps.studies.stats.steps_to_target`), the training seconds at the same point of the curve; NaN where the run
    never reaches the target.
    """
    german = [record for record in records if record["condition"] != SOURCE]
    scratch_cer: dict[float, list[float]] = {}
    for record in german:
        if record["condition"] == SCRATCH:
            scratch_cer.setdefault(record["fraction"], []).append(record["test"]["test"]["cer"])
    rows = []
    for record in german:
        best = next(point for point in record["curve"] if point["step"] == record["best_step"])
        evaluated = [point for point in record["curve"] if point.get("test_cer") is not None]
        steps = [point["step"] for point in evaluated]
        seconds = [math.nan if point["train_seconds"] is None else point["train_seconds"] for point in evaluated]
        row = {
            "condition": record["condition"],
            "fraction": record["fraction"],
            "seed": record["seed"],
            "run_id": record["run_id"],
            "best_step": record["best_step"],
            "last_evaluated_step": steps[-1],
            "stopped_early": record["stopped_early"],
            "dev_cer": best["dev_cer"],
            "test_cer": record["test"]["test"]["cer"],
            "test_unseen_cer": record["test"].get("test_unseen", {}).get("cer", math.nan),
            "train_seconds": best["train_seconds"],
        }
        converged = np.mean(scratch_cer[record["fraction"]]) if record["fraction"] in scratch_cer else None
        for target in targets:
            reached = None if converged is None else stats.steps_to_target(steps, [point["test_cer"] for point in evaluated], converged * (1 + target))
            row[f"steps_to_{target:g}"] = reached.step if reached else math.nan
            row[f"seconds_to_{target:g}"] = float(np.interp(reached.step, steps, seconds)) if reached else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def best_condition(table: pd.DataFrame, fraction: float) -> str | None:
    """The transfer condition with the lowest mean best-dev CER at ``fraction``: chosen on dev, judged on test."""
    transfer = table[(table["fraction"] == fraction) & (table["condition"] != SCRATCH)]
    return None if transfer.empty else str(transfer.groupby("condition")["dev_cer"].mean().idxmin())


def paired_runs(table: pd.DataFrame, condition: str, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of ``condition`` at ``fraction`` and of scratch on 100%, over the seeds both have, indexed by seed in the same order."""
    own = table[(table["condition"] == condition) & (table["fraction"] == fraction)].set_index("seed")
    scratch = table[(table["condition"] == SCRATCH) & (table["fraction"] == 1.0)].set_index("seed")
    seeds = sorted(set(own.index) & set(scratch.index))
    return own.loc[seeds], scratch.loc[seeds]


def steps_claim(table: pd.DataFrame, paths: Mapping[str, str]) -> tuple[claims.Measurement | None, dict]:
    """``transfer_fewer_steps``: per seed, the best recipe's steps on 100% to scratch's converged test CER over scratch's steps to it.

    A run that never reaches the target counts with its last evaluated step. For scratch that bounds the ratio from
    above, so the claim is judged on a ratio no lower than the true one; for the recipe it bounds it from below, so
    such a seed stops the claim from holding. The details add the ratio at every target and each transfer
    condition's ratio of training seconds.
    """
    condition = best_condition(table, 1.0)
    if condition is None:
        return None, {"condition": None}
    steps, seconds = f"steps_to_{CLAIM_TARGET:g}", f"seconds_to_{CLAIM_TARGET:g}"
    own, scratch = paired_runs(table, condition, 1.0)
    targets = [column.removeprefix("steps_to_") for column in table.columns if column.startswith("steps_to_")]
    seconds_ratios = {}
    for name in table.loc[table["condition"] != SCRATCH, "condition"].unique():
        runs, baseline = paired_runs(table, name, 1.0)
        seconds_ratios[str(name)] = per_seed(runs[seconds] / baseline[seconds])
    details = {
        "condition": condition,
        "seeds": [int(seed) for seed in own.index],
        "never_reached": {"recipe": _seeds_where(own[steps].isna()), "scratch": _seeds_where(scratch[steps].isna())},
        "steps_ratio_by_target": {target: per_seed(own[f"steps_to_{target}"] / scratch[f"steps_to_{target}"]) for target in targets},
        "train_seconds_ratio_by_condition": seconds_ratios,
    }
    if len(own) < 2:
        return None, details
    ratios = own[steps].fillna(own["last_evaluated_step"]) / scratch[steps].fillna(scratch["last_evaluated_step"])
    interval = stats.seed_ci(ratios.to_numpy())
    records = [paths[run_id] for run_id in (*own["run_id"], *scratch["run_id"])]
    reached = bool(own[steps].notna().all())
    return claims.Measurement(interval.estimate, (interval.low, interval.high), len(ratios), records, conditions_met=reached), details


def data_claim(table: pd.DataFrame, utterances: Mapping[str, Sequence[Mapping]], paths: Mapping[str, str]) -> tuple[claims.Measurement | None, dict]:
    """``transfer_less_data``: test CER of the best recipe on :data:`LESS_DATA_FRACTION` of the German data minus scratch's on 100%,
    paired by seed and test utterance (:func:`tmaps.studies.stats.hierarchical_ci`); the details give it at every fraction below 100%."""
    measurement, by_fraction = None, {}
    for fraction in sorted(set(table["fraction"]) - {1.0}, reverse=True):
        condition = best_condition(table, fraction)
        if condition is None:
            continue
        own, scratch = paired_runs(table, condition, fraction)
        if own.empty:
            continue
        difference = stats.hierarchical_ci([utterances[run_id] for run_id in own["run_id"]], [utterances[run_id] for run_id in scratch["run_id"]])
        by_fraction[fraction_label(fraction)] = {
            "condition": condition,
            "seeds": [int(seed) for seed in own.index],
            "per_seed": (own["test_cer"] - scratch["test_cer"]).tolist(),
            "mean": difference.estimate,
            "ci95": difference.as_list(),
        }
        if fraction == LESS_DATA_FRACTION:
            records = [paths[run_id] for run_id in (*own["run_id"], *scratch["run_id"])]
            measurement = claims.Measurement(difference.estimate, (difference.low, difference.high), len(own), records)
    return measurement, {"by_fraction": by_fraction}


def layers_claim(records: Sequence[Mapping], paths: Mapping[str, str]) -> tuple[claims.Measurement | None, dict]:
    """``transfer_inner_layers_least``: per seed of :data:`EVERY_LAYER_CONDITION` on 100%, the mean relative weight change of the
    middle third of the conv layers minus that of the first conv layer, the last conv layer and the head (the last layer).

    Raises:
        ValueError: the runs' weight changes name different layers (the run is named).
    """
    runs = sorted(
        (record for record in records if record["condition"] == EVERY_LAYER_CONDITION and record["fraction"] == 1.0 and record.get("weight_change")),
        key=lambda record: record["seed"],
    )
    if not runs:
        return None, {"condition": EVERY_LAYER_CONDITION}
    layers = list(runs[0]["weight_change"])
    for run in runs:
        if (found := list(run["weight_change"])) != layers:
            raise ValueError(f"transfer study: run {run['run_id']} has the weight changes of layers {found}, run {runs[0]['run_id']} of {layers}")
    matrix = np.array([[run["weight_change"][layer] for layer in layers] for run in runs])
    conv = np.arange(len(layers) - 1)
    middle, edges = np.array_split(conv, 3)[1], [conv[0], conv[-1], len(layers) - 1]
    contrast = matrix[:, middle].mean(axis=1) - matrix[:, edges].mean(axis=1)
    details = {
        "condition": EVERY_LAYER_CONDITION,
        "middle": [layers[index] for index in middle],
        "edges": [layers[index] for index in edges],
        "contrast": per_seed(contrast),
        "layer_change": {layer: per_seed(matrix[:, index]) for index, layer in enumerate(layers)},
        "least_changed_layer_per_seed": [layers[int(index)] for index in matrix.argmin(axis=1)],
    }
    if len(runs) < 2:
        return None, details
    interval = stats.seed_ci(contrast)
    return claims.Measurement(interval.estimate, (interval.low, interval.high), len(runs), [paths[run["run_id"]] for run in runs]), details


def per_seed(values: Sequence[float]) -> dict:
    """Per-seed values (``None`` where a run never reached its target); where every seed has one, their mean and, from two seeds on,
    its 95% CI over seeds (:func:`tmaps.studies.stats.seed_ci`)."""
    values = np.asarray(values, dtype=float)
    complete = len(values) > 0 and not np.isnan(values).any()
    interval = stats.seed_ci(values) if complete and len(values) > 1 else None
    return {
        "per_seed": [None if math.isnan(value) else float(value) for value in values],
        "mean": float(values.mean()) if complete else None,
        "ci95": interval.as_list() if interval else None,
    }


def _seeds_where(flags: pd.Series) -> list[int]:
    return [int(seed) for seed in flags.index[flags.to_numpy()]]


def record_path(record: Mapping, study: Mapping) -> str:
    return relative_path(Path(study["records_dir"]) / f"{record['run_id']}.json")


def results_markdown(table: pd.DataFrame, utterances: Mapping[str, Sequence[Mapping]], targets: Sequence[float]) -> str:
    """Per fraction and condition: seeds, converged test CER (mean over seeds, 95% CI over seeds and utterances), steps and training seconds to each target."""
    target_names = [f"scratch's CER{f' +{target:.0%}' if target else ''}" for target in targets]
    header = ["data", "condition", "seeds", "best dev step", "test CER [95% CI]", "test_unseen CER"]
    header += [f"steps to {name}" for name in target_names] + [f"train s to {name}" for name in target_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (fraction, condition), runs in table.groupby(["fraction", "condition"], sort=False):
        cer = stats.hierarchical_ci([utterances[run_id] for run_id in runs["run_id"]])
        cells = [f"{fraction_label(fraction)}%", condition, str(len(runs)), f"{runs['best_step'].mean():.0f}",
                 f"{cer.estimate:.3f} [{cer.low:.3f}, {cer.high:.3f}]", f"{runs['test_unseen_cer'].mean():.3f}"]  # fmt: skip
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


def report(study: Mapping, claims_dir: str | Path = claims.RESULTS_DIR, readme: str | Path = claims.README) -> dict:
    """Tables, figure and the study's three claims (in ``claims_dir`` and ``readme``) from its committed records alone (no checkpoint, no training).

    Writes into ``results_dir``: ``transfer_runs.csv`` (one row per run), ``transfer_results.md``, ``transfer_test_cer.png`` and
    ``transfer_claim_details.json`` (the source's test CER and, per claim, what its entry in the claims file does not show:
    the recipe chosen on dev, per-seed values, every target, fraction and layer). :func:`tmaps.studies.claims.update_claims`
    judges the claims and rewrites the claims files.

    Returns:
        ``{"source": {...} | None, "claims": {claim id: its entry in the claims file}, "details": {claim id: details}}``.

    Raises:
        ValueError: the study has no German record yet.
    """
    records = RecordStore(study["records_dir"]).records()
    targets = sorted({CLAIM_TARGET, *study["targets"]})
    table = run_table(records, targets)
    if table.empty:
        raise ValueError(f"transfer study: no records of German runs in {study['records_dir']}; train some with tmaps-study transfer first")
    results_dir = Path(study["results_dir"])
    results_dir.mkdir(parents=True, exist_ok=True)
    order = {name: index for index, name in enumerate(study["conditions"])}
    table = table.sort_values(["fraction", "condition", "seed"], key=lambda c: c.map(order) if c.name == "condition" else -c if c.name == "fraction" else c)
    table.to_csv(results_dir / "transfer_runs.csv", index=False)
    utterances = {record["run_id"]: record["test"]["test"]["utterances"] for record in records}
    markdown = results_markdown(table, utterances, targets)
    (results_dir / "transfer_results.md").write_text(markdown, encoding="utf-8")
    plot(records, results_dir / "transfer_test_cer.png")
    source = next((record for record in records if record["condition"] == SOURCE), None)
    paths = {record["run_id"]: record_path(record, study) for record in records}
    measured = {
        "transfer_fewer_steps": steps_claim(table, paths),
        "transfer_less_data": data_claim(table, utterances, paths),
        "transfer_inner_layers_least": layers_claim(records, paths),
    }
    summary = {
        "source": None if source is None else {
            "checkpoint": source["checkpoint"],
            "test_cer": source["test"]["test"]["cer"],
            "test_cer_ci95": stats.utterance_ci(source["test"]["test"]["utterances"]).as_list(),
            "record": paths[source["run_id"]],
        },
        "details": {claim: details for claim, (_, details) in measured.items()},
    }  # fmt: skip
    write_json_atomically(results_dir / "transfer_claim_details.json", summary)
    judged = claims.update_claims({claim: measurement for claim, (measurement, _) in measured.items()}, claims_dir, markdown_files=[readme])
    print(markdown, flush=True)
    return summary | {"claims": {entry["id"]: entry for entry in judged if entry["id"] in measured}}
