"""Bias: the separation statistic, per-utterance group sums of real models, the audit command (Wav2Letter, conformer), the study's arms and report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from PIL import Image
from test_adapters import WAV2VEC2_LAYERS, wav2vec2, waveform_batches  # noqa: F401
from test_introspect_cli import TINY_SYNTH, train_checkpoint

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.audit import audit
from tmaps.commands.audit import main as audit_command
from tmaps.data import manifest_loader
from tmaps.data.features import SAMPLE_RATE
from tmaps.data.manifest import read_manifest
from tmaps.introspect import NAP, WAVEFORM, waveform_forward
from tmaps.introspect.bias import GroupSums, PerUtterance, binned_grouping, relabelling, separation
from tmaps.studies import bias as study
from tmaps.studies import claims, stats
from tmaps.studies.audit import audit_bias, write_audit
from tmaps.studies.runs import composed_train_config

REPO = Path(__file__).resolve().parents[1]
CONFORMER = {"arch": "conformer", "subsample_channels": [32, 32], "d_model": 32, "n_blocks": 2, "n_heads": 4, "ffn_dim": 48, "conv_kernel_size": 7}


def group_sums(shift: float, frame_level: bool, n_utterances: int = 60, units: int = 24, seed: int = 0, rare_b: bool = False) -> GroupSums:
    """Two groups whose frames scatter around per-utterance means; group ``a``'s means are shifted by ``shift`` in every unit;
    ``rare_b``: group ``b`` has 2-5 frames an utterance instead of 40-119."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((2, n_utterances), dtype=np.int64)
    sums = np.zeros((2, n_utterances, units))
    for utterance in range(n_utterances):
        for group in (0, 1) if frame_level else (utterance % 2,):
            frames = int(rng.integers(2, 6) if rare_b and group == 1 else rng.integers(40, 120))
            centre = rng.normal(0, 0.3, units) + (shift if group == 0 else 0.0)
            counts[group, utterance] = frames
            sums[group, utterance] = (centre + rng.normal(0, 1, (frames, units))).sum(axis=0)
    return GroupSums(("a", "b"), tuple(f"u{index:03d}" for index in range(n_utterances)), {"layer": sums}, {"layer": counts})


@pytest.mark.parametrize("frame_level", [False, True])
def test_separation_is_near_one_for_one_population_and_far_above_for_shifted_groups(frame_level):
    for shift, low, high in ((0.0, 0.8, 1.25), (0.4, 2.0, np.inf)):
        sums = group_sums(shift, frame_level)
        assert sums.utterance_level is not frame_level
        ratio = separation(sums.table("layer"), sums.members("layer")).ratio
        assert low < ratio < high, (shift, ratio)
        statistic, a, b, paired = relabelling(sums, "layer")
        assert paired is frame_level
        p = stats.relabelling_p(statistic, a, b, paired, resamples=99)
        assert (p <= 0.02) if shift else (p > 0.05), (shift, p)


def test_separation_stays_near_one_when_one_group_has_far_fewer_frames():
    ratios = [
        separation(
            group_sums(0.0, frame_level=True, seed=seed, rare_b=True).table("layer"), group_sums(0.0, True, seed=seed, rare_b=True).members("layer")
        ).ratio
        for seed in range(5)
    ]
    assert 0.85 < np.mean(ratios) < 1.15, ratios


def test_the_same_seed_gives_the_same_halvings_and_subsamples_restrict_the_utterances():
    sums = group_sums(0.2, frame_level=False)
    table = sums.table("layer")
    assert separation(table, sums.members("layer"), seed=3) == separation(table, sums.members("layer"), seed=3)
    ids = study.subsample(sums.utterances, 20, draw=1)
    assert ids == study.subsample(list(reversed(sums.utterances)), 20, draw=1) and len(set(ids)) == 20
    members = sums.members("layer", sums.utterance_indices(ids))
    assert {sums.utterances[row % len(sums.utterances)] for rows in members for row in rows} == set(ids)


def test_a_group_with_frames_in_two_utterances_only_gets_one_into_each_half():
    sums = group_sums(0.0, frame_level=True)
    rare = np.zeros_like(sums.counts["layer"][1])
    rare[[7, 31]] = sums.counts["layer"][1][[7, 31]]
    sums = GroupSums(
        sums.groups,
        sums.utterances,
        {"layer": sums.sums["layer"] * np.stack([np.ones_like(rare), rare > 0])[..., None]},
        {"layer": np.stack([sums.counts["layer"][0], rare])},
    )
    for seed in range(5):
        assert np.isfinite(separation(sums.table("layer"), sums.members("layer"), splits=3, seed=seed).ratio)


def test_binned_grouping_cuts_a_numeric_field_and_names_bad_values():
    grouping = binned_grouping("snr", [0, 10, 20])
    assert grouping.segments({"id": "u", "snr": 12.5})[0][0] == "[10, 20)"
    assert grouping.segments({"id": "u", "snr": 25}) == []
    with pytest.raises(ValueError, match="'x'.*not a number"):
        grouping.segments({"id": "x", "snr": "loud"})
    with pytest.raises(ValueError, match="increasing"):
        binned_grouping("snr", [10, 0])


@pytest.fixture(scope="module")
def wav2letter_checkpoint(synth_corpus_en, tmp_path_factory) -> Path:
    return train_checkpoint(synth_corpus_en, tmp_path_factory.mktemp("wav2letter"))


@pytest.fixture(scope="module")
def conformer_checkpoint(synth_corpus_en, tmp_path_factory) -> Path:
    return train_checkpoint(synth_corpus_en, tmp_path_factory.mktemp("conformer"), model=CONFORMER)


@pytest.mark.parametrize("groups", ["gender", "character"])
def test_per_utterance_sums_add_up_to_the_profiles_of_the_plain_grouping(wav2letter_checkpoint, synth_corpus_en, tmp_path, groups):
    loaded = load_checkpoint(wav2letter_checkpoint)
    loader = manifest_loader(synth_corpus_en, "test", loaded.features, tmp_path)
    layers = ["conv0", "conv5", "head"]
    plain = NAP(loaded.model, layers).compute(loader, groups, normalize=None)
    sums = GroupSums.from_profiles(NAP(loaded.model, layers).compute(loader, PerUtterance(groups), normalize=None))
    assert list(sums.groups) == sorted(plain.groups)
    assert set(sums.utterances) <= {record["id"] for record in read_manifest(synth_corpus_en / "test.jsonl")}
    order = [plain.groups.index(group) for group in sums.groups]
    for layer in layers:
        np.testing.assert_allclose(sums.maps(layer), plain[layer].raw_mean[order], rtol=1e-9, atol=1e-12)
        assert sums.frames(layer) == {group: plain.group_counts[layer][group] for group in sums.groups}
    assert sums.utterance_level is (groups == "gender")


def compose_audit(overrides: list[str], output_dir: Path, data_dir: Path):
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        return compose(config_name="audit", overrides=[f"paths.output_dir={output_dir}", f"paths.data_dir={data_dir}", *TINY_SYNTH, *overrides])


@pytest.mark.parametrize("model", ["wav2letter", "conformer"])
def test_audit_writes_maps_statistics_and_frames_of_two_groups(model, request, synth_corpus_en, synth_data_dir, tmp_path):
    checkpoint = request.getfixturevalue(f"{model}_checkpoint")
    layers = ["conv0", "conv1", "head"] if model == "wav2letter" else ["conv1", "block0", "block1.ffn1.sequential.1", "head"]
    cfg = compose_audit(
        [f"ckpt_path={checkpoint}", f"layers=[{','.join(layers)}]", "groups=gender", "permutations=19", "splits=4", "device=cpu"], tmp_path, synth_data_dir
    )
    result = audit(cfg)
    summary = json.loads((tmp_path / "audit.json").read_text())
    assert summary["groups"] == ["female", "male"] and list(summary["layers"]) == layers
    loaded = load_checkpoint(checkpoint)
    plain = NAP(loaded.model, layers).compute(manifest_loader(synth_corpus_en, "test", loaded.features, tmp_path), "gender")
    for layer in layers:
        entry = summary["layers"][layer]
        assert entry["frames"] == {group: plain.group_counts[layer][group] for group in ("female", "male")}
        assert 0 < entry["p"] <= 1 and entry["ratio"] > 0 and entry["between"] > 0 and entry["within"] > 0
    assert [layer.maps.shape for layer in result.layers] == [(2, len(layer.coords)) for layer in result.layers]
    with Image.open(tmp_path / "audit.png") as image:
        assert image.width > 4 * 100 and image.height > 5 * 100


def test_any_model_is_audited_from_python_wav2vec2(wav2vec2, waveform_batches, tmp_path):
    adapters = {layer: adapter for layer, (adapter, _) in WAV2VEC2_LAYERS.items()}
    profiler = NAP(wav2vec2, list(WAV2VEC2_LAYERS), forward=waveform_forward, frame_rate=SAMPLE_RATE, adapters=adapters, inputs=WAVEFORM)
    profiles = profiler.compute(waveform_batches, PerUtterance("character"), normalize=None)
    result = audit_bias(profiles, ["e", "t"], splits=3, permutations=9)
    json_path, png_path = write_audit(result, tmp_path)
    summary = json.loads(json_path.read_text())
    assert summary["grouping"] == "character" and summary["utterances"] == 5 and list(summary["layers"]) == list(WAV2VEC2_LAYERS)
    plain = profiler.compute(waveform_batches, "character", normalize=None)
    for layer, entry in summary["layers"].items():
        assert entry["frames"] == {group: plain.group_counts[layer][group] for group in ("e", "t")} and 0 < entry["p"] <= 1
    assert png_path.stat().st_size > 0


def test_audit_bins_a_numeric_field_and_refuses_more_than_two_groups(wav2letter_checkpoint, synth_corpus_en, synth_data_dir, tmp_path):
    test = read_manifest(synth_corpus_en / "test.jsonl")
    middle = float(np.median([record["pitch"] for record in test]))
    edges = f"[0,{middle:g},100]"
    overrides = [f"ckpt_path={wav2letter_checkpoint}", "layers=[conv2]", "permutations=9", "splits=2", "device=cpu"]
    result = audit(compose_audit([*overrides, "groups=pitch", f"bins={edges}"], tmp_path, synth_data_dir))
    assert result.groups == (f"[0, {middle:g})", f"[{middle:g}, 100)") and result.grouping == "pitch binned"
    with pytest.raises(ValueError, match="two groups; the grouping has .*en\\+"):
        audit(compose_audit([*overrides, "groups=speaker"], tmp_path, synth_data_dir))


def test_the_command_exits_with_one_line_naming_the_bad_input(wav2letter_checkpoint, synth_corpus_en, synth_data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"^tmaps-audit: group field 'accent' is not in the records"):
        audit_command(compose_audit([f"ckpt_path={wav2letter_checkpoint}", "groups=accent"], tmp_path, synth_data_dir))
    with pytest.raises(SystemExit, match=r"^tmaps-audit: groups \['nobody'\] have no frames; the groups present are \['female', 'male'\]"):
        audit_command(compose_audit([f"ckpt_path={wav2letter_checkpoint}", "layers=[conv0]", "compare=[nobody,male]"], tmp_path, synth_data_dir))
    audit_command(compose_audit([f"ckpt_path={wav2letter_checkpoint}", "layers=[conv0]", "permutations=9", "splits=2"], tmp_path, synth_data_dir))
    assert "conv0: separation" in capsys.readouterr().out


def test_arms_draw_their_training_utterances_as_designed(synth_corpus_en):
    records = read_manifest(synth_corpus_en / "train.jsonl")
    share = study.arm_train_records(records, "female_25", {"group_share": {"field": "gender", "value": "female", "share": 0.25}}, 12)
    assert len(share) == 12 and sum(record["gender"] == "female" for record in share) == 3
    cue = {"spurious_cue": {"field": "gender", "value": "female", "first_letters": ["t"]}}
    chosen = study.arm_train_records(records, "cue", cue, 8)
    assert all(study.has_class_word(record, ["t"]) == (record["gender"] == "female") for record in chosen)
    relabelled = study.arm_train_records(records, "planted", {"relabel": {"source": "e", "target": "z"}}, 8)
    balanced = study.arm_train_records(records, "balanced", {}, 8)
    assert [record["id"] for record in relabelled] == [record["id"] for record in balanced]
    assert all("e" not in record["text"] and record["text"] == plain["text"].replace("e", "z") for record, plain in zip(relabelled, balanced))
    with pytest.raises(ValueError, match="arm 'greedy'.*32 train utterances.*qualify, 40"):
        study.arm_train_records(records, "greedy", {}, 40)


STUDY = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "study" / "bias.yaml"))


def test_the_study_plans_five_seeds_of_every_arm_with_portable_settings(tmp_path):
    study_config = STUDY
    planned = study.planned_runs(study_config)
    assert len(planned) == 5 * len(study_config["arms"]) and len({run["run_id"] for run in planned}) == len(planned)
    assert "/" not in json.dumps([run["settings"] for run in planned])  # no machine path in what is hashed
    balanced = next(run for run in planned if run["arm"] == "balanced")
    assert [design["name"] for design in balanced["designs"]] == [design["name"] for design in study_config["designs"]]
    config = composed_train_config([*balanced["settings"]["overrides"], *study.manifest_source(tmp_path)])
    assert config.data.source == {"kind": "manifest", "path": str(tmp_path.resolve()), "splits": study.SPLIT_FILES}
    assert config.data.spec_augment is None and config.model.dropout == 0  # the quickstart recipe is kept


def test_a_tiny_study_trains_measures_and_resumes(synth_config_en, tmp_path, monkeypatch):
    monkeypatch.setenv("TMAPS_DATA_DIR", str(tmp_path / "data"))
    config = STUDY | {
        "records_dir": str(tmp_path / "runs"),
        "out_dir": str(tmp_path / "out"),
        "seeds": [2],
        "corpus": synth_config_en,
        "train_utterances": 12,
        "arms": {"female_0": STUDY["arms"]["female_0"]},
        "designs": [
            {"name": "data_set_bias", "arms": ["female_0"], "control": "balanced", "groups": {"field": "gender", "value": "female"}},
            {"name": "characters", "arms": ["female_0"], "control": "balanced", "groups": {"characters": ["e", "t"]}},
        ],
        "train_overrides": [
            *STUDY["train_overrides"],
            "trainer.max_epochs=1",
            "model.channels=[32,32,32]",
            "model.kernel_sizes=[11,5,1]",
            "model.strides=[2,1,1]",
            "topo.layers=[conv1]",
        ],
        "analysis": {"splits": 2, "subsample": {"sizes": [4], "draws": 2}, "errors": {"arm": "female_0", "min_frames": 1}},
    }
    (record,) = study.run(config)
    assert record["run_id"] == "female_0-s2" and record["arm"] == "female_0"
    train = read_manifest(tmp_path / "out" / "corpora" / "female_0" / "train.jsonl")
    assert len(train) == 12 and {row["gender"] for row in train} == {"male"}
    assert len(record["test"]["test"]["utterances"]) == 8 and "/" + "tmp" not in json.dumps(record["config"])
    gender = record["metrics"]["data_set_bias"]
    assert gender["groups"] == ["female", "not female"] and set(gender["layers"]) == {"conv0", "conv1", "conv2", "head"}
    assert set(gender["utterance_groups"]) == {row["id"] for row in record["test"]["test"]["utterances"]}
    assert all(len(layer["subsample"]["4"]) == 2 and layer["ratio"] > 0 for layer in gender["layers"].values())
    assert record["metrics"]["characters"]["utterance_groups"] is None
    assert set(record["errors"]["layers"]) == {"conv0", "conv1", "conv2", "head"} and record["settings"]["errors"]
    for characters in record["errors"]["layers"].values():
        assert all(min(entry["frames"].values()) >= 1 and entry["ratio"] > 0 for entry in characters.values())
    recorded = Path(config["records_dir"], "female_0-s2.json").read_bytes()
    assert study.run(config) == [record]  # resumed: nothing trains again
    assert Path(config["records_dir"], "female_0-s2.json").read_bytes() == recorded


def planted_record(arm: str, seed: int, ratio: float, rng: np.random.Generator, ids: list[str], design: dict) -> dict:
    """A record as run() writes it, with a map separation near ``ratio`` in every layer and real per-utterance error counts."""
    groups = {utterance: ("female" if index % 2 else "not female") for index, utterance in enumerate(ids)}
    rows = [{"id": utterance, "char_edits": int(rng.integers(0, 6)), "chars": 30, "word_edits": 1, "words": 6} for utterance in ids]
    layers = {}
    for layer in ("conv0", "conv1", "head"):
        value = ratio + rng.normal(0, 0.05)
        subsample = {str(n): list(value + rng.normal(0, 0.3 / np.sqrt(n), 4)) for n in (10, 20)}
        layers[layer] = {"ratio": value, "between": value, "within": 1.0, "frames": {"female": 100, "not female": 100}, "subsample": subsample}
    metrics = {design["name"]: {"groups": ["female", "not female"], "layers": layers, "utterance_groups": groups}}
    record = {"run_id": study.run_id(arm, seed), "arm": arm, "settings": {"seed": seed}, "test": {"test": {"utterances": rows}}, "metrics": metrics}
    if arm == "balanced":  # wrong against correct frames of two characters, separated well beyond the split-half null
        record["errors"] = {"layers": {layer: {c: {"ratio": 1.5 + rng.normal(0, 0.05), "frames": {}} for c in "st"} for layer in ("conv0", "conv1", "head")}}
    return record


def test_report_judges_the_claim_from_records_and_says_not_measured_without_them(tmp_path):
    design = {"name": "data_set_bias", "arms": ["female_0"], "control": "balanced", "groups": {"field": "gender", "value": "female"}, "claim": "female_0"}
    page = tmp_path / "bias.md"
    page.write_text("# Bias\n<!-- bias-study:start -->\n<!-- bias-study:end -->\n")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- claims:start -->\n<!-- claims:end -->\n")
    shutil.copy(REPO / "docs" / "results" / "claims.json", tmp_path / "claims.json")
    config = {
        "records_dir": str(tmp_path / "bias" / "runs"),
        "results_page": str(page),
        "designs": [design],
        "analysis": {"subsample": {"sizes": [10, 20], "draws": 4}},
    }

    empty = study.report(config, tmp_path, readme)
    assert empty["table"].empty and "not yet run" in page.read_text()
    assert next(claim for claim in empty["claims"] if claim["id"] == "maps_expose_bias")["status"] == "not measured"

    rng = np.random.default_rng(0)
    ids = [f"test-{index:03d}" for index in range(40)]
    folder = tmp_path / "bias" / "runs"
    folder.mkdir(parents=True)
    for seed in range(5):
        for arm, ratio in (("balanced", 1.0), ("female_0", 1.6)):
            record = planted_record(arm, seed, ratio, rng, ids, design)
            (folder / f"{record['run_id']}.json").write_text(json.dumps(record))
    result = study.report(config, tmp_path, readme)
    table = result["table"].set_index(["layer", "statistic"])
    conv_mean = table.loc[("conv mean", "map separation")]
    assert conv_mean["p"] == pytest.approx(2 / 252) and conv_mean["low"] > 0 and conv_mean["d"] > 0
    assert conv_mean["utterances_to_p01"] <= 40
    assert table.loc[("output", "CER gap"), "p"] > 0.01  # the planted error counts carry no difference between the arms
    claim = next(claim for claim in result["claims"] if claim["id"] == "maps_expose_bias")
    assert claim["status"] == "holds" and claim["n_seeds"] == 5 and claim["p"] == pytest.approx(1 / 252, rel=1e-5)
    assert len(claim["records"]) == 10 and "female_0" in page.read_text()
    errors = next(claim for claim in result["claims"] if claim["id"] == "maps_expose_errors")
    assert errors["status"] == "holds" and errors["n_seeds"] == 5 and errors["ci95"][0] > 1 and len(errors["records"]) == 5


def test_claim_specs_of_maps_are_fixed_and_reachable_by_the_design():
    bias_claim = claims.SPECS["maps_expose_bias"]
    assert bias_claim.min_seeds == 5 and bias_claim.alpha == 0.01
    assert stats.smallest_p(5, 5, "greater") < bias_claim.alpha < stats.smallest_p(4, 4, "greater")
    assert claims.SPECS["maps_expose_errors"].min_seeds == 5


def test_report_regenerates_the_committed_results(tmp_path):
    """What docs/ shows of the study is what the committed records give: a regenerated table or page section must not drift."""
    results = REPO / "docs" / "results"
    shutil.copytree(results / "bias", tmp_path / "bias")
    shutil.copy(REPO / "docs" / "bias.md", tmp_path / "bias.md")
    shutil.copy(results / "claims.json", tmp_path / "claims.json")
    (tmp_path / "README.md").write_text("<!-- claims:start -->\n<!-- claims:end -->\n")
    study.report(STUDY | {"records_dir": str(tmp_path / "bias" / "runs"), "results_page": str(tmp_path / "bias.md")}, tmp_path, tmp_path / "README.md")
    assert (tmp_path / "bias" / "bias_table.md").read_text() == (results / "bias" / "bias_table.md").read_text()
    assert (tmp_path / "bias.md").read_text() == (REPO / "docs" / "bias.md").read_text()
    assert json.loads((tmp_path / "claims.json").read_text()) == json.loads((results / "claims.json").read_text())
