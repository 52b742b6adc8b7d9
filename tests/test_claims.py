"""The claims file: its fixed fields and ids, judging that never lets noise hold, merging studies, reproducible bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tmaps.studies.claims import (
    CLAIMS,
    FIELDS,
    README,
    RESULTS_DIR,
    SPECS,
    Measurement,
    claims_table,
    judge,
    read_claims,
    replace_marked_section,
    update_claims,
)
from tmaps.studies.runs import REPO_ROOT

IDS = [
    "topo_groups_phonemes",
    "gradnap_clusters_groups",
    "transfer_fewer_steps",
    "transfer_less_data",
    "transfer_inner_layers_least",
    "maps_expose_errors",
    "maps_expose_bias",
]
TOPO_RECORDS = [f"docs/results/topography/runs/topo-s{seed}.json" for seed in range(3)]


def topo(estimate: float, low: float, high: float, p: float = 0.001, n_seeds: int = 3, conditions_met: bool = True) -> dict:
    return judge(SPECS["topo_groups_phonemes"], Measurement(estimate, (low, high), n_seeds, TOPO_RECORDS, p, conditions_met))


def test_claims_file_has_exactly_the_fields_and_ids_in_fixed_order(tmp_path):
    update_claims({}, tmp_path)
    claims = json.loads((tmp_path / "claims.json").read_text())["claims"]
    assert [claim["id"] for claim in claims] == IDS == [spec.id for spec in CLAIMS]
    for claim in claims:
        assert tuple(claim) == FIELDS == ("id", "paper", "criterion", "status", "estimate", "ci95", "n_seeds", "p", "records")
        assert claim["status"] == "not measured" and claim["estimate"] is None and claim["ci95"] is None
        assert claim["paper"] and claim["criterion"]


def test_a_claim_holds_only_beyond_noise():
    assert topo(0.7, 0.6, 0.8)["status"] == "holds"
    assert topo(0.7, 0.45, 0.9)["status"] == "fails"  # the CI reaches below the 0.5 threshold
    assert topo(0.7, 0.5, 0.8)["status"] == "fails"  # touching the threshold is not beyond it
    assert topo(0.7, 0.5000000001, 0.8)["status"] == "fails"  # nor is touching it at the precision the file shows
    assert topo(0.7, 0.6, 0.8, p=0.02)["status"] == "fails"  # test not significant at the criterion's 0.01
    assert topo(0.7, 0.6, 0.8, conditions_met=False)["status"] == "fails"  # e.g. not in every seed
    assert topo(0.7, 0.6, 0.8, n_seeds=2)["status"] == "not measured"  # too few seeds to judge noise
    assert topo(0.7, float("-inf"), 0.8)["status"] == "not measured"
    bias = SPECS["maps_expose_bias"]  # asks for 5 seeds per arm, and p < 0.01
    assert judge(bias, Measurement(0.3, (0.2, 0.4), 5, [], p=1 / 252))["status"] == "holds"
    assert judge(bias, Measurement(0.3, (0.2, 0.4), 4, [], p=1 / 70))["status"] == "not measured"
    steps = SPECS["transfer_fewer_steps"]  # a claim that holds below its threshold
    assert judge(steps, Measurement(0.15, (0.1, 0.19), 3, []))["status"] == "holds"
    assert judge(steps, Measurement(0.15, (0.1, 0.4), 3, []))["status"] == "fails"


def test_judging_refuses_inconsistent_measurements():
    with pytest.raises(ValueError, match="does not contain the estimate"):
        topo(0.9, 0.6, 0.8)
    with pytest.raises(ValueError, match="topo_groups_phonemes.*no p"):
        judge(SPECS["topo_groups_phonemes"], Measurement(0.7, (0.6, 0.8), 3, TOPO_RECORDS))
    with pytest.raises(ValueError, match="unknown claim ids \\['transfer_faster'\\]"):
        update_claims({"transfer_faster": None}, RESULTS_DIR)


def test_record_paths_are_stored_relative_to_the_repository():
    absolute = REPO_ROOT / TOPO_RECORDS[0]
    entry = judge(SPECS["topo_groups_phonemes"], Measurement(0.7, (0.6, 0.8), 3, [absolute, *TOPO_RECORDS[1:]], 0.001))
    assert entry["records"] == TOPO_RECORDS
    with pytest.raises(ValueError, match="record x.json lies outside the repository"):
        judge(SPECS["topo_groups_phonemes"], Measurement(0.7, (0.6, 0.8), 3, [REPO_ROOT.parent / "x.json"], 0.001))


def test_each_study_updates_its_own_claims_and_keeps_the_others(tmp_path):
    steps = Measurement(0.3, (0.2, 0.4), 3, ["docs/results/transfer/runs/a.json"])
    update_claims({"transfer_fewer_steps": steps}, tmp_path)
    claims = update_claims({"topo_groups_phonemes": Measurement(0.7, (0.6, 0.8), 3, TOPO_RECORDS, 0.001)}, tmp_path)
    by_id = {claim["id"]: claim for claim in claims}
    assert by_id["transfer_fewer_steps"]["status"] == "fails" and by_id["transfer_fewer_steps"]["estimate"] == 0.3
    assert by_id["topo_groups_phonemes"]["status"] == "holds"
    assert update_claims({"topo_groups_phonemes": None}, tmp_path)[0]["status"] == "not measured"  # a study can withdraw its claim


def test_a_hand_edited_holds_is_judged_again(tmp_path):
    update_claims({"transfer_fewer_steps": Measurement(0.3, (0.2, 0.4), 3, [])}, tmp_path)
    path = tmp_path / "claims.json"
    edited = json.loads(path.read_text())
    edited["claims"][2]["status"] = "holds"
    edited["claims"][0] |= {"criterion": "an older wording", "estimate": 0.7, "ci95": [0.6, 0.8], "n_seeds": 3, "p": 0.001}
    path.write_text(json.dumps(edited))
    claims = update_claims({}, tmp_path)
    assert claims[2]["status"] == "fails"
    assert claims[0]["status"] == "not measured" and claims[0]["estimate"] is None  # judged by another criterion: dropped


def test_regenerating_from_the_same_inputs_gives_identical_bytes(tmp_path):
    measurements = {
        "topo_groups_phonemes": Measurement(0.712345678, (0.61, 0.8), 3, TOPO_RECORDS, 0.000999),
        "maps_expose_bias": Measurement(0.2, (0.1, 0.3), 4, ["docs/results/gender_bias/runs/b.json"], 1 / 70),
    }
    first, second = tmp_path / "first", tmp_path / "second"
    update_claims(measurements, first)
    update_claims(measurements, second)
    for name in ("claims.json", "claims.md"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    before = (first / "claims.json").read_bytes()
    update_claims({}, first)  # judging the kept entries again changes nothing
    assert (first / "claims.json").read_bytes() == before


def test_committed_claims_files_are_as_generated(tmp_path):
    """The committed table is the committed JSON's, and judging the committed JSON again gives it back."""
    committed = RESULTS_DIR / "claims.json"
    (tmp_path / "claims.json").write_bytes(committed.read_bytes())
    update_claims({}, tmp_path)
    assert (tmp_path / "claims.json").read_bytes() == committed.read_bytes()
    assert (tmp_path / "claims.md").read_bytes() == (RESULTS_DIR / "claims.md").read_bytes()


def test_replace_marked_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# tmaps\n\n<!-- claims:start -->\nold table\n<!-- claims:end -->\n\nMore.\n")
    table = claims_table([topo(0.7, 0.6, 0.8)])
    assert replace_marked_section(readme, table)
    assert readme.read_text() == f"# tmaps\n\n<!-- claims:start -->\n{table}\n<!-- claims:end -->\n\nMore.\n"
    assert "| `topo_groups_phonemes` |" in table and "**holds**" in table and "`docs/results/topography/runs/` (3)" in table
    assert not replace_marked_section(readme, table)
    unmarked = tmp_path / "other.md"
    unmarked.write_text("no markers\n")
    with pytest.raises(ValueError, match=r"other\.md must hold the marker <!-- claims:start --> exactly once"):
        replace_marked_section(unmarked, table)
    assert unmarked.read_text() == "no markers\n"
    swapped = tmp_path / "swapped.md"
    swapped.write_text("<!-- claims:end -->\n<!-- claims:start -->\n")
    with pytest.raises(ValueError, match="comes before"):
        replace_marked_section(swapped, table)


def test_update_claims_puts_the_table_into_the_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# tmaps\n\n<!-- claims:start -->\n<!-- claims:end -->\n")
    claims = update_claims({"transfer_fewer_steps": Measurement(0.3, (0.2, 0.4), 3, [])}, tmp_path, markdown_files=[readme])
    assert claims_table(claims, criteria=False) in readme.read_text()
    assert "criterion" not in readme.read_text()
    assert claims_table(claims) in (tmp_path / "claims.md").read_text()


def test_the_readme_claims_table_is_the_committed_one():
    section = README.read_text(encoding="utf-8").split("<!-- claims:start -->")[1].split("<!-- claims:end -->")[0]
    assert section.strip() == claims_table(read_claims(RESULTS_DIR / "claims.json"), criteria=False)


def test_claims_files_name_no_file_outside_the_repository():
    for claim in read_claims(RESULTS_DIR / "claims.json"):
        assert all(not Path(record).is_absolute() and (REPO_ROOT / record).is_file() for record in claim["records"]), claim["id"]
