"""The topography study: how much topography a loss buys, and how much filter diversity it costs.

Each setting (a topographic loss, its layers and its weight) is trained over seeds on the
quickstart recipe (``conf/study/topography.yaml``); each run leaves a record
(:mod:`tmaps.studies.runs`) with, besides its curve and per-utterance test errors:

- per conv layer, the weight metrics of :func:`tmaps.topo.topography_metrics`: neighbour ratio,
  smoothness, random-pair cosine of centred filters and the participation ratio (the effective
  number of distinct filters); layers without a topographic loss are measured in channel order;
- per topographic layer, Moran's I of the phoneme NAP maps on the layer's grid (mean over
  phonemes) with the permutation p of that mean (one placement of the units shared by every
  phoneme per permutation), and a TDANN-style curve of the units' profile similarity against
  their grid distance;
- per layer, the phoneme-class ARI of NAP and of GradNAP clusterings, each against a null of
  shuffled class labels, and the ARI between the NAP and the GradNAP clusterings.

A weight of 0 keeps the loss's grids without its pull: it is the baseline, measured on the
same grids.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import adjusted_rand_score

from tmaps.checkpoint import load_checkpoint
from tmaps.introspect import Profiles, profile_matrix, resolve_grouping
from tmaps.introspect.clustering import cluster
from tmaps.introspect.topography import grid_adjacency
from tmaps.studies import claims, stats
from tmaps.studies.profiles import checkpoint_profiles
from tmaps.studies.runs import (
    RecordStore,
    checkpoint_reference,
    locked,
    new_record,
    read_config,
    read_curve,
    relative_path,
    test_errors,
    train_run,
    without_machine_paths,
)
from tmaps.topo import Grid, distance_profile, topography_metrics

log = logging.getLogger(__name__)


def run_id(loss: str, layers: Sequence[str], weight: float, seed: int) -> str:
    return f"{loss}-{'+'.join(layers)}-w{weight:g}-s{seed}"


def joint_morans_i(profiles: np.ndarray, grid: Grid, permutations: int, seed: int = 0) -> dict:
    """Mean Moran's I over the rows of ``profiles (groups, units)`` on ``grid``, and its permutation p.

    Each permutation places the units anew on the grid, the same placement for every group, so
    the p-value asks whether the layer's arrangement as a whole is smoother than chance. Rows
    that are constant are left out.
    """
    rows = profiles[np.ptp(profiles, axis=1) > 0]
    centred = rows - rows.mean(axis=1, keepdims=True)
    adjacency = grid_adjacency(grid.positions.numpy()).tocsr()
    scale = grid.n_units / adjacency.sum()

    def mean_i(values: np.ndarray) -> float:
        return float(np.mean(scale * np.einsum("gu,gu->g", values, (adjacency @ values.T).T) / np.einsum("gu,gu->g", values, values)))

    statistic = mean_i(centred)
    rng = np.random.default_rng(seed)
    null = np.array([mean_i(centred[:, rng.permutation(grid.n_units)]) for _ in range(permutations)])
    return {
        "morans_i": statistic,
        "morans_i_p": float((1 + np.count_nonzero(null >= statistic)) / (permutations + 1)) if permutations else None,
        "morans_i_null_mean": float(null.mean()) if permutations else None,
        "groups": int(len(rows)),
    }


def clustering_scores(nap: Profiles, gradnap: Profiles, layer: str, shuffles: int, seed: int = 0) -> dict:
    """Phoneme-class ARI of NAP and GradNAP clusterings, against shuffled class labels, and NAP-against-GradNAP ARI."""
    reference = resolve_grouping(nap.info["grouping"]).reference
    classes = np.array([reference(group) for group in nap.groups])
    n_clusters = len(set(classes))
    clusters = {kind: cluster(profile_matrix(profiles, layer), n_clusters) for kind, profiles in (("nap", nap), ("gradnap", gradnap))}
    rng = np.random.default_rng(seed)
    scores = {}
    for kind, labels in clusters.items():
        observed = adjusted_rand_score(classes, labels)
        null = np.array([adjusted_rand_score(rng.permutation(classes), labels) for _ in range(shuffles)])
        scores |= {
            f"ari_{kind}": float(observed),
            f"ari_{kind}_null_mean": float(null.mean()),
            f"ari_{kind}_null_q95": float(np.quantile(null, 0.95)),
            f"ari_{kind}_p": float((1 + np.count_nonzero(null >= observed)) / (shuffles + 1)),
        }
    scores["ari_nap_vs_gradnap"] = float(adjusted_rand_score(clusters["nap"], clusters["gradnap"]))
    return scores


def measure(checkpoint_path: Path, data: Mapping, analysis: Mapping) -> dict:
    """Everything the record holds about a trained model besides its curve (module docstring)."""
    checkpoint = load_checkpoint(checkpoint_path)
    conv_layers = [name for name in checkpoint.model.layer_names if name != "head"]
    grids = checkpoint.grids
    weights = topography_metrics(checkpoint.model, conv_layers, grids)
    layers = {layer: {key.split("/", 1)[1]: value for key, value in weights.items() if key.startswith(f"{layer}/")} for layer in conv_layers}

    test = test_errors(checkpoint_path, data)

    options = {"layers": conv_layers, "groups": "phoneme", "max_utterances": analysis.get("max_utterances")}
    nap = checkpoint_profiles(checkpoint, data, kind="nap", split=analysis["split"], **options)
    gradnap = checkpoint_profiles(checkpoint, data, kind="gradnap", split=analysis["split"], **options)
    # The default weight is chosen on dev: Moran's I of dev NAPs selects, that of test NAPs judges.
    selection = checkpoint_profiles(checkpoint, data, kind="nap", split=analysis["selection_split"], **{**options, "layers": sorted(grids)})
    for layer in grids:
        layers[layer]["dev_morans_i"] = joint_morans_i(selection[layer].mean, grids[layer], permutations=0)["morans_i"]
    for layer in conv_layers:
        layers[layer] |= clustering_scores(nap, gradnap, layer, analysis["shuffles"])
        if layer in grids:
            units = nap[layer].mean
            layers[layer] |= joint_morans_i(units, grids[layer], analysis["permutations"])
            distances, similarity, pairs = distance_profile(torch.as_tensor(np.ascontiguousarray(units.T)), grids[layer])
            layers[layer]["profile_similarity_by_distance"] = {
                "distance": [round(float(d), 4) for d in distances],
                "similarity": [float(s) for s in similarity],
                "pairs": [int(n) for n in pairs],
            }
    return {"test": test, "layers": layers, "topographic_layers": sorted(grids), "nap_utterances": nap.info["utterances"]}


def planned_runs(study: Mapping) -> list[dict]:
    """The settings of every run, seed-major so that an interrupted study has every setting at its first seeds."""
    runs = []
    for seed in study["seeds"]:
        for arm in study["arms"]:
            for weight in arm["weights"]:
                overrides = [*study["train_overrides"], f"topo={arm['loss']}", f"topo.layers=[{','.join(arm['layers'])}]", f"topo.weight={weight}"]
                overrides += [*arm.get("overrides", []), f"seed={seed}"]
                runs.append({
                    "run_id": run_id(arm["loss"], arm["layers"], weight, seed),
                    "settings": {"overrides": overrides, "seed": seed, "analysis": dict(study["analysis"])},
                    "arm": {"loss": arm["loss"], "layers": list(arm["layers"]), "weight": weight},
                })
    return runs


def run(study: Mapping) -> list[dict]:
    """Train and measure every planned run that has no record yet; return all records of the study."""
    store = RecordStore(study["records_dir"])
    out_dir = Path(study["out_dir"])
    for planned in planned_runs(study):
        if store.load(planned["run_id"], planned["settings"]) is not None:
            continue
        run_dir = out_dir / planned["run_id"]
        with locked(run_dir):
            # No record: whatever the folder holds is an unfinished run.
            shutil.rmtree(run_dir, ignore_errors=True)
            log.info("training %s", planned["run_id"])
            wall = train_run([*planned["settings"]["overrides"], f"hydra.run.dir={run_dir}"], run_dir / "console.log")
            best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))[-1]
            config = read_config(run_dir)
            record = new_record(study["name"], planned["run_id"], planned["settings"], precision=config["trainer"]["precision"])
            record |= {"arm": planned["arm"], "config": without_machine_paths(config, run_dir)}
            record["checkpoint"] = checkpoint_reference(best, out_dir)
            record["provenance"]["wall_seconds"] = wall
            record["curve"] = read_curve(run_dir)
            record |= measure(best, config["data"], study["analysis"])
            store.save(record)
        log.info("%s: test CER %.4f", planned["run_id"], record["test"]["test"]["cer"])
    return store.records()



def setting_of(record: Mapping) -> tuple[str, str, float]:
    arm = record["arm"]
    return arm["loss"], "+".join(arm["layers"]), float(arm["weight"])


def seed_numbers(record: Mapping) -> dict:
    """One seed's summary: means over the topographic layers (topography, diversity) and over every conv layer (ARIs)."""
    layers, topographic = record["layers"], record["topographic_layers"]
    widths = dict(zip(layers, record["config"]["model"]["channels"]))
    untouched = [layer for layer in layers if layer not in topographic]
    fractions = []
    for layer in topographic:
        references = [layers[other]["participation_ratio"] for other in untouched if widths[other] == widths[layer]]
        fractions.append(layers[layer]["participation_ratio"] / np.mean(references))
    gradnap_above_null = [layers[layer]["ari_gradnap"] > layers[layer]["ari_gradnap_null_q95"] for layer in layers]
    return {
        "test_cer": record["test"]["test"]["cer"],
        "test_unseen_cer": record["test"]["test_unseen"]["cer"],
        "dev_cer": min(point["dev_cer"] for point in record["curve"]),
        "ratio": np.mean([layers[layer]["ratio"] for layer in topographic]),
        "centred_cosine": np.mean([layers[layer]["centred_cosine"] for layer in topographic]),
        "participation_ratio": np.mean([layers[layer]["participation_ratio"] for layer in topographic]),
        "participation_fraction": min(fractions),
        "morans_i": np.mean([layers[layer]["morans_i"] for layer in topographic]),
        "morans_i_p": max(layers[layer]["morans_i_p"] for layer in topographic),
        "dev_morans_i": np.mean([layers[layer]["dev_morans_i"] for layer in topographic]),
        "ari_nap": np.mean([layers[layer]["ari_nap"] for layer in layers]),
        "ari_gradnap": np.mean([layers[layer]["ari_gradnap"] for layer in layers]),
        "gradnap_layers_above_null": float(np.mean(gradnap_above_null)),
    }


def _interval(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return float(values[0]), math.nan, math.nan
    interval = stats.seed_ci(values)
    return interval.estimate, interval.low, interval.high


def sweep_table(records: Sequence[Mapping]) -> pd.DataFrame:
    """One row per setting: its seeds, test CER with the CI over seeds and utterances, and every number of
    :func:`seed_numbers` as the mean over seeds with its 95% CI over seeds where there are two or more."""
    groups: dict[tuple, list[Mapping]] = {}
    for record in records:
        groups.setdefault(setting_of(record), []).append(record)
    rows = []
    for (loss, layers, weight), runs in sorted(groups.items()):
        runs = sorted(runs, key=lambda record: record["settings"]["seed"])
        per_seed = pd.DataFrame([seed_numbers(record) for record in runs])
        row = {"loss": loss, "layers": layers, "weight": weight, "seeds": len(runs)}
        cer = stats.hierarchical_ci([record["test"]["test"]["utterances"] for record in runs])
        row |= {"test_cer": cer.estimate, "test_cer_low": cer.low, "test_cer_high": cer.high}
        for column in per_seed.columns.drop("test_cer"):
            estimate, low, high = _interval(per_seed[column].tolist())
            row |= {column: estimate, f"{column}_low": low, f"{column}_high": high}
        row["morans_i_p"] = per_seed["morans_i_p"].max()
        del row["morans_i_p_low"], row["morans_i_p_high"]
        row["participation_fraction_min"] = per_seed["participation_fraction"].min()
        row["gradnap_layers_above_null_min"] = per_seed["gradnap_layers_above_null"].min()
        rows.append(row)
    return pd.DataFrame(rows)


def choose_default(table: pd.DataFrame, criteria: Mapping) -> pd.Series | None:
    """The setting with the highest dev Moran's I among those that meet the dev criteria, or ``None``.

    Criteria (``conf/study/topography.yaml``, ``default_criteria``): dev Moran's I at least
    ``morans_i``; the participation ratio of every topographic layer at least ``participation_fraction``
    of the untouched layers' in every seed; best dev CER no more than ``dev_cer_margin`` above the
    weight-0 setting of the same loss and layers.
    """
    candidates = []
    for _, row in table[table["weight"] > 0].iterrows():
        baseline = table[(table["loss"] == row["loss"]) & (table["layers"] == row["layers"]) & (table["weight"] == 0)]
        if baseline.empty:
            continue
        if (
            row["dev_morans_i"] >= criteria["morans_i"]
            and row["participation_fraction_min"] >= criteria["participation_fraction"]
            and row["dev_cer"] <= baseline["dev_cer"].iloc[0] + criteria["dev_cer_margin"]
        ):
            candidates.append(row)
    return max(candidates, key=lambda row: row["dev_morans_i"]) if candidates else None


def plot_pareto(table: pd.DataFrame, path: Path) -> None:
    """Topography (Moran's I of test NAP maps) against diversity (participation ratio over the untouched layers'), coloured by test CER."""
    figure, ax = plt.subplots(figsize=(6.4, 4.8), layout="constrained")
    colours = plt.Normalize(table["test_cer"].min(), table["test_cer"].max())
    for (loss, layers), group in table.groupby(["loss", "layers"]):
        ax.plot(group["participation_fraction"], group["morans_i"], color="0.7", zorder=1)
        points = ax.scatter(group["participation_fraction"], group["morans_i"], c=group["test_cer"], cmap="viridis", norm=colours,
                            s=60, zorder=2, label=f"{loss} on {layers}")
        ax.errorbar(group["participation_fraction"], group["morans_i"], yerr=_error_bars(group, "morans_i"),
                    xerr=_error_bars(group, "participation_fraction"), fmt="none", ecolor="0.5", zorder=1)
        for _, row in group.iterrows():
            ax.annotate(f"{row['weight']:g}", (row["participation_fraction"], row["morans_i"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    figure.colorbar(points, ax=ax, label="test CER (mean over seeds)")
    ax.axhline(0.5, color="0.4", linestyle=":", linewidth=1)
    ax.axvline(0.5, color="0.4", linestyle=":", linewidth=1)
    ax.set_xlabel("participation ratio of the topographic layers / untouched layers' (min over layers)")
    ax.set_ylabel("Moran's I of phoneme NAP maps (test, mean over layers)")
    ax.set_title("Topography against filter diversity; labels: topo.weight; bars: 95% CI over seeds", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _error_bars(group: pd.DataFrame, column: str) -> np.ndarray | None:
    low, high = group[f"{column}_low"], group[f"{column}_high"]
    if low.isna().all():
        return None
    return np.stack([(group[column] - low).fillna(0).clip(lower=0), (high - group[column]).fillna(0).clip(lower=0)])


def claim_measurements(records: Sequence[Mapping], chosen: pd.Series | None, record_paths: Mapping[str, str]) -> dict:
    """The topography study's claims, judged at the chosen setting.

    ``topo_groups_phonemes`` stays not measured: its criterion compares with a collapse control (a layer reduced to the
    same participation ratio without topography) that this study does not train yet.
    """
    measurements = {"topo_groups_phonemes": None, "gradnap_clusters_groups": None}
    if chosen is None:
        return measurements
    runs = [record for record in records if setting_of(record) == (chosen["loss"], chosen["layers"], chosen["weight"])]
    if len(runs) >= 2:
        measurements["gradnap_clusters_groups"] = claims.Measurement(
            chosen["ari_gradnap"],
            (chosen["ari_gradnap_low"], chosen["ari_gradnap_high"]),
            len(runs),
            [record_paths[record["run_id"]] for record in runs],
            conditions_met=bool(chosen["gradnap_layers_above_null_min"] > 0.5),
        )
    return measurements


TABLE_COLUMNS = {
    "loss": "loss", "layers": "layers", "weight": "weight", "seeds": "seeds",
    "test_cer": "test CER", "dev_cer": "best dev CER", "ratio": "neighbour ratio", "centred_cosine": "random-pair cosine (centred)",
    "participation_ratio": "participation ratio", "participation_fraction": "PR / untouched PR", "dev_morans_i": "Moran's I (dev)",
    "morans_i": "Moran's I (test)", "morans_i_p": "Moran's I p (max)", "ari_nap": "ARI NAP", "ari_gradnap": "ARI GradNAP",
    "gradnap_layers_above_null": "GradNAP layers above null",
}


def markdown_table(table: pd.DataFrame) -> str:
    """The sweep table with each number as ``mean [low, high]`` where it has an interval over seeds (over seeds and utterances for test CER)."""
    cells = pd.DataFrame(index=table.index)
    for column, title in TABLE_COLUMNS.items():
        values = table[column]
        if f"{column}_low" in table and values.dtype.kind == "f":
            cells[title] = [_with_interval(value, low, high) for value, low, high in zip(values, table[f"{column}_low"], table[f"{column}_high"])]
        elif values.dtype.kind == "f" and column != "weight":
            cells[title] = [f"{value:.3g}" for value in values]
        else:
            cells[title] = values.astype(str)
    return cells.to_markdown(index=False)


def _criteria_text(criteria: Mapping) -> str:
    return (
        f"dev Moran's I ≥ {criteria['morans_i']}, every topographic layer's participation ratio ≥ "
        f"{criteria['participation_fraction']:.0%} of the untouched layers' in every seed, best dev CER ≤ weight 0's + {criteria['dev_cer_margin']}"
    )


def _with_interval(value: float, low: float, high: float) -> str:
    return f"{value:.3g}" if math.isnan(low) else f"{value:.3g} [{low:.3g}, {high:.3g}]"


def report(study: Mapping, claims_dir: str | Path = claims.RESULTS_DIR, readme: str | Path = claims.README) -> dict:
    """Tables, the Pareto figure, the chosen default and the claims (in ``claims_dir`` and ``readme``), from the committed records alone."""
    store = RecordStore(study["records_dir"])
    records = store.records()
    if not records:
        raise FileNotFoundError(f"no records in {store.folder}: run the study first (tmaps-study topography)")
    results_dir = store.folder.parent
    table = sweep_table(records)
    table.to_csv(results_dir / "topography_sweep.csv", index=False, float_format="%.6g")
    chosen = choose_default(table, study["default_criteria"])
    choice = "no setting meets the criteria" if chosen is None else f"{chosen['loss']} on {chosen['layers']} at weight {chosen['weight']:g}"
    summary = (
        f"{markdown_table(table)}\n\n{len(records)} runs. Test CER: mean over seeds with the 95% CI over seeds and test utterances; "
        "every other number: mean over seeds [95% CI over seeds] (no interval with one seed). "
        f"Default chosen on dev ({_criteria_text(study['default_criteria'])}): **{choice}**.\n"
    )
    (results_dir / "topography_sweep.md").write_text(summary, encoding="utf-8")
    plot_pareto(table, results_dir / "topography_pareto.png")
    claims.replace_marked_section(study["results_page"], summary, name="topography-sweep")
    record_paths = {record["run_id"]: relative_path(store.path(record["run_id"])) for record in records}
    judged = claims.update_claims(claim_measurements(records, chosen, record_paths), claims_dir, markdown_files=[readme])
    return {"table": table, "chosen": chosen, "claims": judged}
