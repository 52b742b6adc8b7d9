"""The transfer study (tmaps.studies.transfer): planning, settings, the source check, the run lock, real tiny runs and the report."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from tmaps.studies import transfer
from tmaps.studies.runs import RecordStore, RunFolderInUse, SettingsChanged, locked, new_record
from tmaps.text import Alphabet
from tmaps.training.module import ASRModule

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = "model.channels=[16,16,16,16,16,16,16,16,32,32]"
TINY = [
    "data.source.words_per_utterance=[2,4]",
    "data.batching.num_workers=0",
    "data.batching.max_batch_seconds=12",
    TINY_MODEL,
]


def study_config(tmp_path: Path, data_dir: Path, *overrides: str) -> dict:
    """The study's real config, composed as tmaps-study composes it, on a tiny corpus with runs of at most 6 steps."""
    corpus = "data.source.n_utterances={train:24,dev:4,test:4,test_unseen:2}"
    with initialize_config_module("tmaps.conf", version_base="1.3"):
        cfg = compose(
            "study",
            overrides=[
                "study=transfer",
                f"records_dir={tmp_path / 'records'}",
                f"results_dir={tmp_path / 'results'}",
                f"out_dir={tmp_path / 'runs'}",
                "fractions=[1.0]",
                "seeds=[0]",
                "max_steps=6",
                "val_every=2",
                "patience=5",
                "warmup_steps=2",
                *overrides,
            ],
        )
    with open_dict(cfg):
        del cfg["paths"]  # its output_dir needs a running Hydra app; out_dir is given
    study = OmegaConf.to_container(cfg, resolve=True)
    tiny = [*TINY, f"paths.data_dir={data_dir}"]
    study["train_overrides"] = [*study["train_overrides"], *tiny]
    study["data_overrides"] = ["data=synth_de_hard", corpus]
    study["source"]["overrides"] = ["data=synth_en_hard", corpus]
    study["conditions"] = {name: study["conditions"][name] for name in ("scratch", "finetune_all")}
    return study


def tiny_checkpoint(path: Path, language: str = "en", channels: int = 16) -> Path:
    """A tmaps checkpoint of the tiny model (untrained): what tmaps.checkpoint reads, without a training run."""
    model = {"channels": [channels] * 8 + [32, 32], "kernel_sizes": [11] + [7] * 7 + [1, 1], "strides": [2] + [1] * 9, "norm": "batch", "dropout": 0}
    module = ASRModule(model=model, alphabet=Alphabet.for_language(language).chars, features={"n_mels": 40, "log_floor": 1e-6}, optim={"lr": 1e-3})
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


# --- planning and settings ---------------------------------------------------------------------


def test_every_condition_fraction_and_seed_is_a_run_of_its_own_and_run_ids_pick_them(tmp_path):
    study = study_config(tmp_path, tmp_path / "data", "fractions=[1.0,0.1]", "seeds=[0,1]")
    ids = [run.run_id for run in transfer.planned_runs(study)]
    assert ids[0] == "source" and len(ids) == 1 + 2 * 2 * 2 and len(set(ids)) == len(ids)
    assert {"scratch-f100-s0", "finetune_all-f10-s1"} <= set(ids)
    picked = transfer.selected_runs({**study, "run_ids": ["finetune_all-f10-s1", "source"]})
    assert [run.run_id for run in picked] == ["source", "finetune_all-f10-s1"]
    with pytest.raises(ValueError, match=r"run_ids \['freeze9-f100-s0'\] are not runs of this study; its runs are \[.*'scratch-f100-s0'"):
        transfer.selected_runs({**study, "run_ids": ["freeze9-f100-s0"]})


def test_settings_hold_the_recipe_corpus_and_source_but_no_machine_path(tmp_path):
    study = study_config(tmp_path, tmp_path / "data")
    scratch, finetune = (run for run in transfer.planned_runs(study) if run.condition != "source")
    settings, data = transfer.run_settings(finetune, "sha256:feed")
    assert settings["source"] == "sha256:feed" and "source" not in transfer.run_settings(scratch, "sha256:feed")[0]
    assert settings["train"]["optim"]["schedule"] == "constant" and settings["train"]["callbacks"]["early_stopping"]["patience"] == 5
    assert str(tmp_path) not in json.dumps(settings) and str(tmp_path) in json.dumps(data)  # the corpus is found, but hashed without its place
    elsewhere, _ = transfer.run_settings(
        transfer.PlannedRun(**{**finetune.__dict__, "overrides": (*finetune.overrides, "paths.data_dir=/elsewhere")}), "sha256:feed"
    )
    assert elsewhere == settings


def test_a_rerun_with_other_settings_stops_naming_what_changed_and_keeps_the_record(tmp_path):
    study = study_config(tmp_path, tmp_path / "data", "max_steps=8")
    scratch = transfer.selected_runs({**study, "run_ids": ["scratch-f100-s0"]})[0]
    settings, _ = transfer.run_settings(scratch, None)
    store = RecordStore(study["records_dir"])
    store.save(new_record("transfer", scratch.run_id, settings) | {"test": {"test": {"cer": 0.5}}})
    before = snapshot(tmp_path / "records")
    with pytest.raises(SettingsChanged, match=r"scratch-f100-s0.json was made with other settings \(train\.trainer\.max_steps: 8 -> 50\)"):
        transfer.run({**study, "max_steps": 50, "run_ids": ["scratch-f100-s0"]})
    assert snapshot(tmp_path / "records") == before and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content", ["text", "truncated", "german", "wider"])
def test_a_source_that_is_not_a_fitting_checkpoint_stops_the_study_before_any_run(tmp_path, content):
    source = tmp_path / "source.ckpt"
    if content == "text":
        source.write_text("not a checkpoint\n")
    elif content == "truncated":
        source.write_bytes(tiny_checkpoint(tmp_path / "whole.ckpt").read_bytes()[:3000])
    else:
        tiny_checkpoint(source, language="de" if content == "german" else "en", channels=24 if content == "wider" else 16)
    study = study_config(tmp_path, tmp_path / "data", f"source.ckpt={source}")
    RecordStore(study["records_dir"]).save({"run_id": "earlier", "kept": True})
    before = snapshot(tmp_path / "records")
    expected = {
        "text": "is not a checkpoint",
        "truncated": "is not a checkpoint|damaged or truncated",
        "german": r"alphabet: expected the 'en' alphabet",
        "wider": r"channels: expected \[16, .*checkpoint has \[24,",
    }[content]
    with pytest.raises(ValueError, match=f"{re.escape(str(source))}.*({expected})"):
        transfer.run(study)
    assert snapshot(tmp_path / "records") == before and not (tmp_path / "runs").exists()


def test_a_run_folder_in_use_is_refused_naming_it_and_its_files_are_kept(tmp_path):
    study = study_config(tmp_path, tmp_path / "data", "run_ids=[scratch-f100-s0]")
    run_dir = tmp_path / "runs" / "scratch-f100-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "console.log").write_text("another study is writing here\n")
    with locked(run_dir), pytest.raises(RunFolderInUse, match=f"run folder {run_dir} is in use by another process"):
        transfer.run(study)
    assert (run_dir / "console.log").read_text() == "another study is writing here\n"


# --- the report's measures -----------------------------------------------------------------------


def curve(steps, test_cer, seconds_per_step=0.5):
    return [{"step": s, "dev_cer": c, "dev_loss": 1.0, "train_seconds": s * seconds_per_step, "test_cer": c} for s, c in zip(steps, test_cer)]


def german_record(condition: str, fraction: float, seed: int, test_cer: list[float], weight_change: dict | None = None) -> dict:
    steps = [50 * (index + 1) for index in range(len(test_cer))]
    best = int(np.argmin(test_cer))
    edits = round(test_cer[best] * 1000)  # four utterances of 1000 characters whose pooled CER is the record's
    utterances = [{"id": f"u{i}", "char_edits": edits + spread, "chars": 1000, "word_edits": 1, "words": 2} for i, spread in enumerate((-20, 20, -10, 10))]
    record = new_record("transfer", transfer.run_id(condition, fraction, seed), {"condition": condition})
    return record | {
        "condition": condition,
        "fraction": fraction,
        "seed": seed,
        "best_step": steps[best],
        "last_step": steps[-1],
        "stopped_early": True,
        "curve": curve(steps, test_cer),
        "test": {"test": {"cer": test_cer[best], "wer": 0.5, "utterances": utterances}, "test_unseen": {"cer": test_cer[best] + 0.05, "wer": 0.6}},
        **({"weight_change": weight_change} if weight_change else {}),
    }


LAYERS = [f"conv{i}" for i in range(10)] + ["head"]


def written_study(tmp_path: Path) -> tuple[dict, list[dict]]:
    """Records of three seeds: scratch at 100% and 10%, fine-tune all at 100% (faster) and 10%, with weight changes lowest in the middle."""
    records = []
    for seed in range(3):
        shift = 0.01 * seed
        records.append(german_record("scratch", 1.0, seed, [0.9, 0.6, 0.4, 0.3 + shift, 0.25 + shift]))
        records.append(german_record("scratch", 0.1, seed, [0.9, 0.7, 0.6 + shift]))
        change = {layer: 0.5 - 0.4 * math.sin(math.pi * i / 10) + 0.01 * seed for i, layer in enumerate(LAYERS)}
        records.append(german_record("finetune_all", 1.0, seed, [0.5, 0.25 + shift, 0.2], change))
        records.append(german_record("finetune_all", 0.1, seed, [0.5, 0.3 + shift / 2, 0.28 + shift / 2], change))
    store = RecordStore(tmp_path / "records")
    for record in records:
        store.save(record)
    return study_config(tmp_path, tmp_path / "data"), records


def claims_place(tmp_path: Path) -> Path:
    """A folder for the claims files with a README that has the claims markers, so that a report leaves the repository's alone."""
    folder = tmp_path / "claims"
    folder.mkdir()
    (folder / "README.md").write_text("# tmaps\n\n<!-- claims:start -->\n<!-- claims:end -->\n")
    return folder


def test_the_report_pairs_seeds_and_hands_each_claim_to_the_claims_file(tmp_path):
    study, records = written_study(tmp_path)
    place = claims_place(tmp_path)
    summary = transfer.report(study, claims_dir=place, readme=place / "README.md")
    claims, details = summary["claims"], summary["details"]
    # Scratch's converged test CER on 100% is the mean of 0.25, 0.26 and 0.27; scratch seed 2 never gets below 0.27,
    # so it counts with its last evaluated step (250), and fine-tune all crosses 0.26 between its first evaluations.
    target = 0.26
    scratch_steps = [200 + 50 * (0.30 - target) / 0.05, 200 + 50 * (0.31 - target) / 0.05, 250]
    recipe_steps = [50 + 50 * (0.5 - target) / 0.25, 50 + 50 * (0.5 - target) / 0.24, 100 + 50 * (0.27 - target) / 0.07]
    ratios = np.divide(recipe_steps, scratch_steps)
    fewer = claims["transfer_fewer_steps"]
    assert details["transfer_fewer_steps"]["condition"] == "finetune_all"
    assert details["transfer_fewer_steps"]["never_reached"] == {"recipe": [], "scratch": [2]}
    assert fewer["estimate"] == pytest.approx(ratios.mean(), rel=1e-5) and fewer["n_seeds"] == 3
    assert fewer["ci95"] == pytest.approx([ratios.min(), ratios.max()], rel=1e-5) and fewer["status"] == "fails"  # three seeds: their range
    assert set(fewer["records"]) == {f"{c}-f100-s{s}.json" for c in ("scratch", "finetune_all") for s in range(3)}
    less = claims["transfer_less_data"]
    differences = [(0.28 + 0.005 * s) - (0.25 + 0.01 * s) for s in range(3)]
    # Every utterance pair differs by the same amount, so only the seeds spread the interval.
    assert less["estimate"] == pytest.approx(np.mean(differences), rel=1e-5) and less["ci95"] == pytest.approx([0.02, 0.03], rel=1e-5)
    assert less["status"] == "fails" and less["p"] is None  # worse than scratch on 100% by more than the margin
    inner = claims["transfer_inner_layers_least"]
    assert inner["estimate"] < 0 and inner["status"] == "holds"
    layer_details = details["transfer_inner_layers_least"]
    assert layer_details["middle"] == ["conv4", "conv5", "conv6"] and layer_details["edges"] == ["conv0", "conv9", "head"]
    assert layer_details["least_changed_layer_per_seed"] == ["conv5"] * 3
    written = json.loads((place / "claims.json").read_text())["claims"]
    assert [entry for entry in written if entry["id"] in claims] == list(claims.values())
    assert "| `transfer_inner_layers_least` |" in (place / "README.md").read_text()
    results = tmp_path / "results"
    assert json.loads((results / "transfer_claim_details.json").read_text()) == json.loads(json.dumps({key: summary[key] for key in ("source", "details")}))
    runs = pd.read_csv(results / "transfer_runs.csv").set_index("run_id")
    reached = runs["steps_to_0"].notna()
    assert runs.loc[reached, "seconds_to_0"].to_numpy() == pytest.approx(0.5 * runs.loc[reached, "steps_to_0"].to_numpy())  # 0.5 s per step
    table = (results / "transfer_results.md").read_text()
    assert "| 100% | scratch | 3 |" in table and "| 10% | finetune_all | 3 |" in table
    assert (results / "transfer_test_cer.png").stat().st_size > 10_000 and str(tmp_path) not in json.dumps(summary)


def test_a_claim_the_records_cannot_answer_is_not_measured(tmp_path):
    study, records = written_study(tmp_path)
    for path in (tmp_path / "records").glob("finetune_all-f10-*.json"):
        path.unlink()
    place = claims_place(tmp_path)
    claims = transfer.report(study, claims_dir=place, readme=place / "README.md")["claims"]
    assert claims["transfer_less_data"]["status"] == "not measured" and claims["transfer_less_data"]["estimate"] is None
    assert claims["transfer_fewer_steps"]["status"] != "not measured"


# --- the command -------------------------------------------------------------------------------


def study_command(*arguments: str, claims_dir: Path, alias: bool = False) -> subprocess.CompletedProcess:
    """``tmaps-study`` in a fresh interpreter, with the claims files and the README table that a report rewrites in ``claims_dir``."""
    entry = "transfer_study_alias" if alias else "run"
    code = (
        "import sys; from pathlib import Path; from tmaps.studies import claims; "
        "claims.RESULTS_DIR = Path(sys.argv.pop(1)); claims.README = claims.RESULTS_DIR / 'README.md'; "
        f"sys.argv[0] = 'tmaps-study'; from tmaps.commands.study import {entry}; {entry}()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(claims_dir), *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_bare_words_become_the_study_and_its_action():
    from tmaps.commands.study import study_arguments

    assert study_arguments(["transfer", "report", "seeds=[0]"]) == ["seeds=[0]", "study=transfer", "action=report"]
    assert study_arguments(["transfer", "-m", "run_ids=[a],[b]"]) == ["-m", "run_ids=[a],[b]", "study=transfer"]
    assert study_arguments(["seeds=[0]"]) == ["seeds=[0]"]


def test_tmaps_study_report_rebuilds_the_results_from_records(tmp_path):
    written_study(tmp_path)
    places = [f"records_dir={tmp_path / 'records'}", f"results_dir={tmp_path / 'results'}"]
    done = study_command("transfer", "report", *places, claims_dir=claims_place(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "| 100% | finetune_all | 3 |" in done.stdout and (tmp_path / "results" / "transfer_claim_details.json").is_file()
    assert "transfer_fewer_steps" in (tmp_path / "claims" / "claims.json").read_text()


@pytest.mark.slow
def test_the_old_command_says_it_is_deprecated_and_does_what_tmaps_study_transfer_does(tmp_path):
    written_study(tmp_path)
    places = [f"records_dir={tmp_path / 'records'}", f"results_dir={tmp_path / 'results'}"]
    old = study_command("report", *places, claims_dir=claims_place(tmp_path), alias=True)
    assert old.returncode == 0, old.stderr
    assert "tmaps-transfer-study is deprecated" in old.stderr and "| 100% | finetune_all | 3 |" in old.stdout


def test_an_action_the_study_lacks_is_named():
    from tmaps.commands.study import run_study

    with pytest.raises(ValueError, match=r"study 'runs' has no 'report'"):
        run_study("runs", "report", {})
    with pytest.raises(ValueError, match=r"unknown action 'plot'; use one of \['run', 'report'\]"):
        run_study("transfer", "plot", {})


# --- real runs -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_study_trains_the_source_and_each_run_once_and_a_fresh_rerun_keeps_the_old_record(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("study")
    study = study_config(tmp_path, tmp_path_factory.mktemp("data"))
    records = {record["run_id"]: record for record in transfer.run(study)}
    assert list(records) == ["source", "scratch-f100-s0", "finetune_all-f100-s0"]
    for record in records.values():
        steps = [point["step"] for point in record["curve"]]
        assert steps == list(range(2, record["last_step"] + 1, 2)) and record["best_step"] in steps
        evaluated = [point for point in record["curve"] if "test_cer" in point]
        assert len(evaluated) == len(steps) and all(len(point["test_char_edits"]) == 4 for point in evaluated)
        assert {"test", "test_unseen"} <= set(record["test"]) and record["checkpoint"].startswith("sha256:")
        assert not record["stopped_early"] and record["provenance"]["precision"] in ("32-true", "bf16-mixed")  # 3 validations < patience 5
        run_dir = tmp_path / "runs" / record["run_id"]
        assert not list(run_dir.glob("checkpoints/step*.ckpt")) and (run_dir / "best.ckpt").is_file()
    assert records["finetune_all-f100-s0"]["settings"]["source"] == records["source"]["checkpoint"]
    assert set(records["finetune_all-f100-s0"]["weight_change"]) == set(LAYERS)
    assert "source" not in records["scratch-f100-s0"]["settings"]
    finished = snapshot(tmp_path / "records")
    assert transfer.run(study) == list(records.values()) and snapshot(tmp_path / "records") == finished  # a rerun trains nothing

    place = claims_place(tmp_path)
    summary = transfer.report(study, claims_dir=place, readme=place / "README.md")
    assert summary["source"]["test_cer_ci95"][0] <= summary["source"]["test_cer"] <= summary["source"]["test_cer_ci95"][1]

    changed = {**study, "patience": 1, "run_ids": ["scratch-f100-s0"]}
    with pytest.raises(SettingsChanged, match="patience: 5 -> 1"):
        transfer.run(changed)
    (record,) = transfer.run({**changed, "fresh": True})
    assert record["settings"]["train"]["callbacks"]["early_stopping"]["patience"] == 1
    (superseded,) = (tmp_path / "records" / "superseded").glob("scratch-f100-s0-*.json")
    assert superseded.read_bytes() == finished["scratch-f100-s0.json"]
