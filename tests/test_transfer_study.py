"""The transfer study's machinery: real tiny runs, resume by skipping finished runs, table and summary."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from tmaps.commands.transfer_study import Run, RunResult, condition_overrides, first_step_at_or_below, results_table, run_once, run_study, write_results
from tmaps.studies.runs import checkpoint_reference

TINY = [
    "data.source.words_per_utterance=[2,4]",
    "data.batching.num_workers=0",
    "data.batching.max_batch_seconds=12",  # several batches an epoch, so that a seed's batch order shows
    "model.channels=[32,32,32,32,32,32,32,32,64,64]",
]


def study_config(tmp_path: Path, data_dir: Path, **changes) -> dict:
    """A study of 4-step runs on a 24-utterance German hard corpus, from a 3-step English source."""
    corpus = "data.source.n_utterances={train:24,dev:6,test:1,test_unseen:1}"
    overrides = [
        f"out_dir={tmp_path / 'study'}",
        f"results_dir={tmp_path / 'results'}",
        "steps=4",
        "val_every=2",
        "fractions=[1.0,0.1]",
        "seeds=[0,1]",
        "conditions=[scratch,freeze0]",
    ]
    with initialize_config_module("tmaps.conf", version_base="1.3"):
        cfg = compose("transfer_study", overrides=overrides)
    study = OmegaConf.to_container(cfg)
    del study["paths"]  # its output_dir needs a running Hydra app; out_dir is given
    tiny = [corpus, *TINY, f"paths.data_dir={data_dir}"]
    study["train_overrides"] = [*study["train_overrides"], *tiny]
    study["source"]["overrides"] = [
        "data=synth_en", *tiny, "++trainer.max_steps=3", "++trainer.max_epochs=-1", "logger=csv",
        "~callbacks.topographic_maps", "~callbacks.activation_profiles",
    ]  # fmt: skip
    return {**study, **changes}


def result_times(study_dir: Path) -> dict[str, float]:
    return {path.parent.name: path.stat().st_mtime_ns for path in sorted(study_dir.glob("runs/*/result.json"))}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("transfer_study")
    study = study_config(tmp_path, tmp_path_factory.mktemp("data"))
    return study, run_study(study), tmp_path


@pytest.mark.slow
def test_study_trains_every_run_once_and_a_rerun_skips_finished_runs(tiny_study):
    study, results, _ = tiny_study
    names = {f"{r.condition}-f{r.fraction:g}-s{r.seed}" for r in results}
    # The first seed of each condition, then the second seed of scratch and of the best (only) transfer recipe.
    assert names == {f"{c}-f{f}-s{s}" for c in ("scratch", "freeze0") for f in ("1", "0.1") for s in (0, 1)}
    assert all(r.steps == [2, 4] and len(r.dev_cer) == 2 and r.train_seconds[0] < r.train_seconds[1] for r in results)
    assert all(len(r.dev_loss) == 2 and all(loss > 0 for loss in r.dev_loss) for r in results)
    assert all((r.weight_change is None) == (r.condition == "scratch") for r in results)
    # Seeds of a fine-tuning run start from the same weights; their batch order must differ.
    by_name = {f"{r.condition}-f{r.fraction:g}-s{r.seed}": r for r in results}
    assert by_name["freeze0-f1-s0"].weight_change != by_name["freeze0-f1-s1"].weight_change
    for run_dir in Path(study["out_dir"]).glob("runs/*"):
        assert "tmaps: utterances kept and skipped per split" in (run_dir / "console.log").read_text()
        logged = (run_dir / "train.log").read_text().splitlines()
        assert logged and not [line for line, next_line in zip(logged, logged[1:]) if line == next_line]
    finished = result_times(Path(study["out_dir"]))
    run_study(study)
    assert result_times(Path(study["out_dir"])) == finished
    killed = Path(study["out_dir"]) / "runs" / "freeze0-f0.1-s1"
    (killed / "result.json").unlink()
    run_study(study)
    again = result_times(Path(study["out_dir"]))
    assert {name for name in finished if again[name] != finished[name]} == {"freeze0-f0.1-s1"}


@pytest.mark.slow
def test_study_table_and_summary_are_the_means_over_seeds_of_the_runs(tiny_study):
    study, _, tmp_path = tiny_study
    results = [json.loads(path.read_text()) for path in Path(study["out_dir"]).glob("runs/*/result.json")]

    def runs(condition, fraction):
        return [r for r in results if r["condition"] == condition and r["fraction"] == fraction]

    summary = json.loads((tmp_path / "results" / "transfer_summary.json").read_text())
    scratch_100 = [r["dev_cer"][-1] for r in runs("scratch", 1.0)]
    assert summary["dev_cer_scratch_100"] == pytest.approx(np.mean(scratch_100))
    assert summary["dev_cer_transfer_10"] == pytest.approx(np.mean([r["dev_cer"][-1] for r in runs("freeze0", 0.1)]))
    target = np.mean(scratch_100)

    def first_step_reaching_target(condition):
        mean_curve = np.mean([r["dev_cer"] for r in runs(condition, 1.0)], axis=0)
        return next((step for step, value in zip((2, 4), mean_curve) if value <= target + 1e-12), None)

    transfer_steps, scratch_steps = first_step_reaching_target("freeze0"), first_step_reaching_target("scratch")
    ratio = transfer_steps / scratch_steps if transfer_steps else None
    assert summary["steps_ratio_100"] == (pytest.approx(ratio) if ratio is not None else None)
    table = (tmp_path / "results" / "transfer_results.md").read_text()
    assert f"{np.mean(scratch_100):.3f} ± {np.std(scratch_100, ddof=1):.3f}" in table
    csv = (tmp_path / "results" / "transfer_results.csv").read_text()
    assert csv.count("\n") == 5  # header and scratch/freeze0 at two fractions
    assert (tmp_path / "results" / "transfer_dev_cer.png").stat().st_size > 10_000
    assert set(summary["headlines"]) and summary["best_transfer"] == {"100": "freeze0", "10": "freeze0"}


def run_result(condition: str, seed: int, dev_cer: list[float], fraction: float = 1.0) -> RunResult:
    steps = [100 * (index + 1) for index in range(len(dev_cer))]
    return RunResult(condition, fraction, seed, steps, dev_cer, [step / 10 for step in steps])


def test_steps_to_scratch_are_read_off_the_mean_curves():
    results = [
        run_result("scratch", 0, [0.8, 0.4, 0.2, 0.10]),
        run_result("scratch", 1, [0.9, 0.5, 0.3, 0.12]),
        run_result("freeze0", 0, [0.3, 0.15, 0.11, 0.08]),
        run_result("freeze8", 0, [0.5, 0.4, 0.35, 0.3]),
    ]
    table = results_table(results, first_seed=0).set_index("condition")
    assert table.loc["scratch", "final dev CER"] == pytest.approx(0.11)
    assert table.loc["scratch", "sd"] == pytest.approx(np.std([0.10, 0.12], ddof=1))
    assert table.loc["scratch", "steps to scratch's final CER"] == 400
    assert table.loc["freeze0", "steps to scratch's final CER"] == 300  # 0.11 <= 0.11 at step 300
    assert table.loc["freeze0", "steps ratio"] == pytest.approx(0.75)
    assert table.loc["freeze0", "train s to scratch's final CER"] == pytest.approx(30.0)
    assert math.isnan(table.loc["freeze8", "steps ratio"]) and table.loc["freeze0", "best transfer"]
    assert first_step_at_or_below(pd.Series([0.5, 0.2], index=[10, 20]), 0.1) is None


def test_results_of_runs_made_before_dev_loss_was_recorded_still_make_the_table_and_figure(tmp_path):
    old = run_result("scratch", 0, [0.8, 0.4, 0.2])
    new = RunResult(**{**asdict(run_result("freeze0", 0, [0.3, 0.2, 0.1])), "dev_loss": [2.0, 1.5, 1.8]})
    run_dir = tmp_path / "study" / "runs" / "scratch-f1-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps({key: value for key, value in asdict(old).items() if key != "dev_loss"}))
    assert run_once(Run("scratch", 1.0, 0), None, {}, tmp_path / "study") == old  # read back, not trained
    study = {"seeds": [0], "fractions": [1.0], "steps": 300, "val_every": 100}
    source = checkpoint_reference(tmp_path / "source.ckpt", tmp_path)
    summary = write_results([old, new], study, source, tmp_path)
    assert summary["steps_ratio_100"] == pytest.approx(2 / 3)  # 0.2 at step 200 against scratch's 300
    assert summary["source_checkpoint"] == {"path": "source.ckpt", "hash": "unknown: the checkpoint was not found"}
    assert summary["headlines"] == {
        "transfer reaches scratch's final dev CER in <= 1/5 of the steps (100%)": False,
        "transfer on 10% beats scratch on 100%": None,  # no 10% runs: not measured, not missed
    }
    without_scratch = write_results([new], study, source, tmp_path / "without_scratch")
    assert without_scratch["headlines"]["transfer reaches scratch's final dev CER in <= 1/5 of the steps (100%)"] is None
    assert (tmp_path / "transfer_dev_cer.png").stat().st_size > 10_000


def test_conditions_become_recipes_and_unknown_ones_are_refused():
    study = {"steps": 1000, "gradual_unfreeze_every": 0.05, "discriminative_decay": 0.7}
    assert condition_overrides("scratch", "en.ckpt", study) == ["transfer=none"]
    assert "transfer.reinit_unfrozen=true" in condition_overrides("freeze8_reinit", "en.ckpt", study)
    assert "transfer.unfreeze_every_n_steps=50" in condition_overrides("gradual", "en.ckpt", study)
    assert "optim.lr_decay_per_layer=0.7" in condition_overrides("discriminative", "en.ckpt", study)
    with pytest.raises(ValueError, match="unknown condition 'freeze99'"):
        condition_overrides("freeze99", "en.ckpt", study)
