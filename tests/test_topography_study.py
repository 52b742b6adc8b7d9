"""The topography study: its statistics on planted maps, a real run end to end, and a report that regenerates the committed results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from tmaps.studies import topography
from tmaps.studies.runs import SettingsChanged
from tmaps.topo import Grid

REPO = Path(__file__).resolve().parents[1]
STUDY = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "study" / "topography.yaml"))


def test_joint_morans_i_finds_smooth_maps_and_not_shuffled_ones():
    grid = Grid(192, shape=(12, 16))
    rows, cols = grid.positions[:, 0].numpy(), grid.positions[:, 1].numpy()
    rng = np.random.default_rng(0)
    smooth = np.stack([np.sin(rows / 3 + phase) + np.cos(cols / 4 - phase) for phase in rng.uniform(0, 6, size=20)])
    smooth += 0.1 * rng.standard_normal(smooth.shape)
    found = topography.joint_morans_i(smooth, grid, permutations=99)
    assert found["morans_i"] > 0.7 and found["morans_i_p"] == pytest.approx(1 / 100) and found["groups"] == 20
    shuffled = topography.joint_morans_i(smooth[:, rng.permutation(192)], grid, permutations=99)
    assert abs(shuffled["morans_i"]) < 0.1 and shuffled["morans_i_p"] > 0.05


def test_report_regenerates_the_committed_results(tmp_path):
    """What the README and docs/ show of the study is what the records give: a regenerated table or page section must not drift."""
    results = REPO / "docs" / "results"
    shutil.copytree(results / "topography", tmp_path / "topography")
    shutil.copy(REPO / "docs" / "topography.md", tmp_path / "topography.md")
    shutil.copy(results / "claims.json", tmp_path / "claims.json")
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    study = STUDY | {"records_dir": str(tmp_path / "topography" / "runs"), "results_page": str(tmp_path / "topography.md")}
    topography.report(study, claims_dir=tmp_path, readme=tmp_path / "README.md")
    for name in ("topography_sweep.md", "topography_sweep.csv"):
        assert (tmp_path / "topography" / name).read_text() == (results / "topography" / name).read_text(), name
    assert (tmp_path / "topography.md").read_text() == (REPO / "docs" / "topography.md").read_text()
    # The copies lie outside the repository, so their claims name records by file name only.
    assert claims_by_file_name(tmp_path / "claims.json") == claims_by_file_name(results / "claims.json")
    assert (tmp_path / "README.md").read_text() == (REPO / "README.md").read_text()


def claims_by_file_name(path: Path) -> list[dict]:
    return [claim | {"records": sorted(Path(record).name for record in claim["records"])} for claim in json.loads(path.read_text())["claims"]]


def tiny_study(folder: Path, weights: list[float], seeds: list[int]) -> dict:
    """The study's config on a corpus and model that train in seconds."""
    return STUDY | {
        "records_dir": str(folder / "runs"),
        "out_dir": str(folder / "out"),
        "seeds": seeds,
        "arms": [{"loss": "weight_similarity", "layers": ["conv1"], "weights": weights}],
        "train_overrides": [
            *STUDY["train_overrides"],
            "data.source.n_utterances={train:24,dev:8,test:8,test_unseen:4}",
            "trainer.max_epochs=1",
            "model.channels=[32,32,32]",
            "model.kernel_sizes=[11,5,1]",
            "model.strides=[2,1,1]",
        ],
        "analysis": STUDY["analysis"] | {"permutations": 9, "shuffles": 9},
    }


def test_a_tiny_study_trains_measures_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("TMAPS_DATA_DIR", str(tmp_path / "data"))
    study = tiny_study(tmp_path, weights=[0.5], seeds=[3])
    (record,) = topography.run(study)
    assert record["run_id"] == "weight_similarity-conv1-w0.5-s3" and record["settings"]["seed"] == 3
    assert record["topographic_layers"] == ["conv1"] and set(record["layers"]) == {"conv0", "conv1", "conv2"}
    assert {"participation_ratio", "centred_cosine", "morans_i", "dev_morans_i", "ari_gradnap"} <= set(record["layers"]["conv1"])
    assert len(record["test"]["test"]["utterances"]) == 8 and record["curve"] and record["checkpoint"]["hash"].startswith("sha256:")
    assert "/" + "tmp" not in json.dumps(record["config"])
    recorded = Path(study["records_dir"], f"{record['run_id']}.json").read_bytes()
    assert topography.run(study) == [record]  # resumed: nothing trains again, nothing is rewritten
    assert Path(study["records_dir"], f"{record['run_id']}.json").read_bytes() == recorded
    with pytest.raises(SettingsChanged, match=r"analysis\.shuffles: 9 -> 8"):
        topography.run(study | {"analysis": study["analysis"] | {"shuffles": 8}})
    assert Path(study["records_dir"], f"{record['run_id']}.json").read_bytes() == recorded


def test_the_collapse_control_is_measured_on_the_chosen_settings_baseline(tmp_path, monkeypatch):
    monkeypatch.setenv("TMAPS_DATA_DIR", str(tmp_path / "data"))
    # Criteria every setting meets, so that the tiny study chooses its one topographic weight.
    study = tiny_study(tmp_path, weights=[0, 0.5], seeds=[0]) | {"default_criteria": {"morans_i": -1, "participation_fraction": 0, "dev_cer_margin": 1}}
    records = topography.run(study)
    (control,) = (json.loads(path.read_text()) for path in topography.control_folder(study).glob("*.json"))
    assert control["run_id"] == "collapse-to-weight_similarity-conv1-w0.5-s0"
    assert control["settings"]["baseline"] == "weight_similarity-conv1-w0-s0"
    baseline = next(record for record in records if record["arm"]["weight"] == 0)
    assert control["checkpoint"] == baseline["checkpoint"]
    layer = control["layers"]["conv1"]
    target = next(record for record in records if record["arm"]["weight"] == 0.5)["layers"]["conv1"]["participation_ratio"]
    assert layer["target_participation_ratio"] == pytest.approx(target)
    assert layer["participation_ratio"] <= layer["rank"] + 1e-6
    for placement in ("by_similarity", "channel_order"):
        assert -1 <= layer[placement]["morans_i"] <= 1 and 0 < layer[placement]["morans_i_p"] <= 1
    assert "/" + "tmp" not in json.dumps(control)
    # One seed gives no interval over seeds: the claim stays not measured, and the report says what the control found.
    (tmp_path / "page.md").write_text("<!-- topography-sweep:start -->\n<!-- topography-sweep:end -->\n")
    (tmp_path / "README.md").write_text("<!-- claims:start -->\n<!-- claims:end -->\n<!-- topography-status:start -->\n<!-- topography-status:end -->\n")
    summary = topography.report(study | {"results_page": str(tmp_path / "page.md")}, claims_dir=tmp_path, readme=tmp_path / "README.md")
    assert summary["chosen"]["weight"] == 0.5
    assert next(claim for claim in summary["claims"] if claim["id"] == "topo_groups_phonemes")["status"] == "not measured"
    assert "Collapse control of weight_similarity on conv1 at weight 0.5" in (tmp_path / "runs").parent.joinpath("topography_sweep.md").read_text()


def committed_choice():
    records = topography.RecordStore(REPO / STUDY["records_dir"]).records()
    table = topography.sweep_table(records)
    return records, table, topography.choose_default(table, STUDY["default_criteria"])


@pytest.mark.parametrize(
    ("control_i", "participation_drop", "holds"),
    [(0.2, 0.0, True), (0.9, 0.0, False), (0.2, 0.5, False)],
    ids=["control-below", "control-above", "diversity-lost"],
)
def test_topo_groups_phonemes_fails_when_the_control_reaches_it_or_the_layer_collapses(control_i, participation_drop, holds):
    records, _, chosen = committed_choice()
    assert chosen is not None
    chosen = chosen.copy()
    chosen["participation_fraction_min"] -= participation_drop
    controls = pd.DataFrame({"run_id": ["a", "b", "c"], "morans_i_largest": [control_i - 0.01, control_i, control_i + 0.01]})
    paths = {record["run_id"]: f"{record['run_id']}.json" for record in records}
    measured = topography.claim_measurements(records, chosen, paths, controls, ["a.json", "b.json", "c.json"])["topo_groups_phonemes"]
    assert measured.n_seeds == 3 and measured.conditions_met is holds
    # Two control seeds give no interval worth judging: the claim is not measured.
    assert topography.claim_measurements(records, chosen, paths, controls.iloc[:2], ["a.json", "b.json"])["topo_groups_phonemes"] is None
