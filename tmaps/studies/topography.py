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
    checkpoint_test_errors,
    locked,
    new_record,
    read_config,
    relative_path,
    trained_record,
)
from tmaps.topo import Grid, distance_profile, filter_diversity, placement_by_similarity, reduced_rank_filters, topography_metrics
from tmaps.topo.layers import get_layer, weight_module

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

    test = checkpoint_test_errors(checkpoint_path, data)

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


CONTROL_METHOD = "reduced rank, full search; placements: channel order, weight similarity, profile similarity"
ARRANGEMENTS = ("channel_order", "by_similarity", "by_profiles")


def collapse_control(checkpoint_path: Path, data: Mapping, analysis: Mapping, target_participation: Mapping[str, float]) -> dict:
    """Moran's I of a baseline layer's phoneme maps once its diversity is cut to a topographic setting's, without a topographic loss.

    For each layer of ``target_participation`` (layer -> participation ratio to match), the
    layer's filters are reduced in rank (:func:`tmaps.topo.reduced_rank_filters`) to the rank,
    of all ranks, whose participation ratio is nearest the target (a target above the layer's own
    ratio cannot be reached: ``target_reached`` says whether it was, within 5%), and the reduced
    model's test NAP maps are measured with three arrangements of the units on the grid, none
    trained: where training left them (``channel_order``), placed by weight similarity
    (``by_similarity``: :func:`tmaps.topo.placement_by_similarity` of the filters) and placed by the
    similarity of the very NAP profiles whose Moran's I is measured (``by_profiles``). The last
    two are simple two-component arrangements, not the smoothest possible ones.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    layers = {}
    for layer, target in target_participation.items():
        parameter = weight_module(get_layer(checkpoint.model, layer)).weight
        original = parameter.detach().clone()
        unreduced = filter_diversity(original)["participation_ratio"]
        ranks = range(1, min(original.reshape(original.shape[0], -1).shape) + 1)
        candidates = [(rank, filter_diversity(reduced_rank_filters(original, rank))["participation_ratio"]) for rank in ranks]
        rank, participation = min(candidates, key=lambda candidate: abs(candidate[1] - target))
        with torch.no_grad():
            parameter.copy_(reduced_rank_filters(original, rank))
        layers[layer] = {
            "target_participation_ratio": float(target),
            "unreduced_participation_ratio": unreduced,
            "rank": rank,
            "participation_ratio": participation,
            "target_reached": bool(abs(participation - target) <= 0.05 * target),
        }
    options = {"layers": sorted(target_participation), "groups": "phoneme", "max_utterances": analysis.get("max_utterances")}
    nap = checkpoint_profiles(checkpoint, data, kind="nap", split=analysis["split"], **options)
    for layer, numbers in layers.items():
        grid = checkpoint.grids[layer]
        units = nap[layer].mean
        orders = {
            "channel_order": np.arange(grid.n_units),
            "by_similarity": placement_by_similarity(weight_module(get_layer(checkpoint.model, layer)).weight, grid).numpy(),
            "by_profiles": placement_by_similarity(torch.as_tensor(np.ascontiguousarray(units.T)), grid).numpy(),
        }
        for arrangement, order in orders.items():
            numbers[arrangement] = joint_morans_i(units[:, order], grid, analysis["permutations"])
    return {"layers": layers, "nap_utterances": nap.info["utterances"]}


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
            record, best, config = trained_record(study["name"], planned, planned["settings"]["overrides"], run_dir, out_dir)
            record |= measure(best, config["data"], study["analysis"])
            store.save(record)
        log.info("%s: test CER %.4f", planned["run_id"], record["test"]["test"]["cer"])
    run_controls(study, store.records())
    return store.records()


def control_id(setting: tuple[str, str, float], seed: int) -> str:
    loss, layers, weight = setting
    return f"collapse-to-{run_id(loss, layers.split('+'), weight, seed)}"


def run_controls(study: Mapping, records: Sequence[Mapping]) -> None:
    """The collapse control of the chosen setting (:func:`collapse_control`), one record per seed of its weight-0 baseline.

    Measured on the baseline's checkpoints in ``out_dir``; a seed whose checkpoint is not there is
    skipped with a warning (it is measured when the study runs again where it was trained).
    """
    if not records:
        return
    table = sweep_table(records)
    chosen = choose_default(table, study["default_criteria"])
    if chosen is None:
        log.info("no setting meets the default criteria: no collapse control to measure")
        return
    setting = (chosen["loss"], chosen["layers"], chosen["weight"])
    targets = participation_by_layer(records, setting)
    store = RecordStore(control_folder(study))
    out_dir = Path(study["out_dir"])
    for baseline in baseline_records(records, chosen["layers"]):
        seed = baseline["settings"]["seed"]
        settings = {
            "of": control_id(setting, seed),
            "baseline": baseline["run_id"],
            "method": CONTROL_METHOD,
            "targets": {layer: round(value, 1) for layer, value in targets.items()},
            "analysis": dict(study["analysis"]),
        }
        if store.load(settings["of"], settings) is not None:
            continue
        checkpoint = out_dir / baseline["checkpoint"]["path"]
        if not checkpoint.is_file() or checkpoint_reference(checkpoint, out_dir) != baseline["checkpoint"]:
            log.warning("collapse control of %s: its checkpoint %s is not here (or not the recorded one); skipped", baseline["run_id"], checkpoint)
            continue
        log.info("measuring %s", settings["of"])
        record = new_record(study["name"], settings["of"], settings, precision="32-true")
        record |= {"setting": {"loss": setting[0], "layers": setting[1].split("+"), "weight": setting[2]}, "checkpoint": baseline["checkpoint"]}
        data = read_config(out_dir / baseline["run_id"])["data"]
        record |= collapse_control(checkpoint, data, study["analysis"], targets)
        store.save(record)


def control_folder(study: Mapping) -> Path:
    return Path(study["records_dir"]).parent / "collapse_controls"


def baseline_records(records: Sequence[Mapping], layers: str) -> list[Mapping]:
    """The weight-0 runs on ``layers`` (joined by ``+``), whatever their loss: at weight 0 no loss pulls, so they are one baseline."""
    return [record for record in records if setting_of(record)[1] == layers and setting_of(record)[2] == 0]


def participation_by_layer(records: Sequence[Mapping], setting: tuple[str, str, float]) -> dict[str, float]:
    """Each topographic layer's participation ratio at ``setting``, the mean over its seeds."""
    runs = [record for record in records if setting_of(record) == setting]
    return {layer: float(np.mean([record["layers"][layer]["participation_ratio"] for record in runs])) for layer in runs[0]["topographic_layers"]}



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
    """Mean with its percentile bootstrap interval over seeds (:func:`tmaps.studies.stats.seed_ci`), which with 2 or 3 seeds is
    their range; with 1, none."""
    if len(values) < 2:
        return float(values[0]), math.nan, math.nan
    if len(values) == 2:
        return float(np.mean(values)), float(min(values)), float(max(values))
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
    weight-0 setting on the same layers (at weight 0 no loss pulls, so any loss's weight 0 is that baseline).
    """
    candidates = []
    for _, row in table[table["weight"] > 0].iterrows():
        baseline = table[(table["layers"] == row["layers"]) & (table["weight"] == 0)]
        if baseline.empty:
            continue
        if (
            row["dev_morans_i"] >= criteria["morans_i"]
            and row["participation_fraction_min"] >= criteria["participation_fraction"]
            and row["dev_cer"] <= baseline["dev_cer"].min() + criteria["dev_cer_margin"]
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


def plot_distance_profiles(records: Sequence[Mapping], path: Path, max_distance: float = 8.0) -> None:
    """TDANN-style curves: the phoneme profiles' similarity of unit pairs against their grid distance, one panel per loss and layers,
    one line per weight (mean over seeds and topographic layers)."""
    curves: dict[tuple[str, str], dict[float, list[np.ndarray]]] = {}
    distances: dict[tuple[str, str], np.ndarray] = {}
    for record in records:
        loss, layers, weight = setting_of(record)
        for layer in record["topographic_layers"]:
            profile = record["layers"][layer]["profile_similarity_by_distance"]
            distance = np.asarray(profile["distance"])
            keep = distance <= max_distance
            distances[loss, layers] = distance[keep]
            curves.setdefault((loss, layers), {}).setdefault(weight, []).append(np.asarray(profile["similarity"])[keep])
    panels = sorted(curves)
    # Weight 0 is one baseline whatever the loss: every panel on the same layers shows it.
    for panel in panels:
        baseline = next((curves[other][0.0] for other in panels if other[1] == panel[1] and 0.0 in curves[other]), None)
        if baseline is not None:
            curves[panel].setdefault(0.0, baseline)
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), layout="constrained", squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        weights = sorted(curves[panel])
        colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(weights)))
        for weight, colour in zip(weights, colours):
            ax.plot(distances[panel], np.mean(curves[panel][weight], axis=0), color=colour, marker=".", label=f"{weight:g}")
        ax.set_title(f"{panel[0]} on {panel[1]}", fontsize=9)
        ax.set_xlabel("grid distance (units)")
        ax.legend(title="topo.weight", fontsize=8, title_fontsize=8)
    axes[0, 0].set_ylabel("cosine of unit pairs' phoneme NAP profiles\n(test, mean over seeds and layers)")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _error_bars(group: pd.DataFrame, column: str) -> np.ndarray | None:
    low, high = group[f"{column}_low"], group[f"{column}_high"]
    if low.isna().all():
        return None
    return np.stack([(group[column] - low).fillna(0).clip(lower=0), (high - group[column]).fillna(0).clip(lower=0)])


def control_seeds(controls: Sequence[Mapping], setting: tuple[str, str, float]) -> pd.DataFrame:
    """Per seed of the collapse control of ``setting``: Moran's I (mean over layers) in each arrangement and the largest of them,
    the ranks, participation ratios and whether every layer reached its target."""
    rows = []
    for record in controls:
        if (record["setting"]["loss"], "+".join(record["setting"]["layers"]), float(record["setting"]["weight"])) != setting:
            continue
        layers = record["layers"].values()
        row = {"run_id": record["run_id"]}
        row |= {f"morans_i_{arrangement}": np.mean([layer[arrangement]["morans_i"] for layer in layers]) for arrangement in ARRANGEMENTS}
        row["morans_i_largest"] = max(row[f"morans_i_{arrangement}"] for arrangement in ARRANGEMENTS)
        row |= {
            "rank": "/".join(str(layer["rank"]) for layer in layers),
            "participation_ratio": "/".join(f"{layer['participation_ratio']:.1f}" for layer in layers),
            "target_participation_ratio": "/".join(f"{layer['target_participation_ratio']:.1f}" for layer in layers),
            "unreduced_participation_ratio": "/".join(f"{layer['unreduced_participation_ratio']:.1f}" for layer in layers),
            "target_reached": all(layer["target_reached"] for layer in layers),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def claim_measurements(
    records: Sequence[Mapping], chosen: pd.Series | None, record_paths: Mapping[str, str], controls: pd.DataFrame, control_paths: Sequence[str]
) -> dict:
    """The topography study's claims, judged at the chosen setting (``None``: not measured).

    ``topo_groups_phonemes`` needs the chosen setting's runs, its weight-0 baseline and its collapse
    control (:func:`collapse_control`; per seed the largest Moran's I of its three arrangements);
    ``gradnap_clusters_groups`` needs the chosen setting's runs. Below 3 seeds neither is measured.
    """
    measurements = {"topo_groups_phonemes": None, "gradnap_clusters_groups": None}
    if chosen is None:
        return measurements
    runs = [record for record in records if setting_of(record) == (chosen["loss"], chosen["layers"], chosen["weight"])]
    if len(runs) < claims.MIN_SEEDS:
        return measurements
    paths = [record_paths[record["run_id"]] for record in runs]
    measurements["gradnap_clusters_groups"] = claims.Measurement(
        chosen["ari_gradnap"], (chosen["ari_gradnap_low"], chosen["ari_gradnap_high"]), len(runs), paths,
        conditions_met=bool(chosen["gradnap_layers_above_null_min"] > 0.5),
    )
    baseline = [seed_numbers(record)["morans_i"] for record in baseline_records(records, chosen["layers"])]
    if len(baseline) >= claims.MIN_SEEDS and len(controls) >= claims.MIN_SEEDS:
        baseline_high = stats.seed_ci(baseline).high
        control_high = stats.seed_ci(controls["morans_i_largest"].tolist()).high
        measurements["topo_groups_phonemes"] = claims.Measurement(
            chosen["morans_i"], (chosen["morans_i_low"], chosen["morans_i_high"]), len(runs),
            paths + [record_paths[record["run_id"]] for record in baseline_records(records, chosen["layers"])] + list(control_paths),
            p=chosen["morans_i_p"],
            conditions_met=bool(
                chosen["morans_i_low"] > max(baseline_high, control_high) and chosen["participation_fraction_min"] >= 0.5
            ),
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


def status_line(table: pd.DataFrame, chosen: pd.Series | None, criteria: Mapping, missing: Sequence[str] = ()) -> str:
    """Where the topography study stands, for the README beside the claims: a miss is stated where the headline is."""
    fewest, most = int(table["seeds"].min()), int(table["seeds"].max())
    seeds = f"{fewest} seeds each" if fewest == most else f"{fewest} to {most} seeds each"
    settings = f"{len(table)} settings of {', '.join(sorted(table['loss'].unique()))}, {seeds}"
    if missing:
        return f"Topography study so far ({settings}): running; {len(missing)} planned runs have no record, so no default is chosen and no claim judged yet."
    if chosen is None:
        topographic = table[table["dev_morans_i"] >= criteria["morans_i"]]
        diverse = topographic[topographic["participation_fraction_min"] >= criteria["participation_fraction"]]
        if topographic.empty:
            why = "no setting reaches the Moran's I"
        elif diverse.empty:
            kept = topographic["participation_fraction_min"].max()
            why = f"those that reach the Moran's I keep at most {kept:.0%} of the untouched layers' participation ratio"
        else:
            why = "those that reach the Moran's I and keep the diversity miss the dev-CER margin"
        return (
            f"Topography study so far ({settings}): **no setting meets the default criteria** ({_criteria_text(criteria)}); "
            f"{why}. See [Topography](docs/topography.md#the-topography-study)."
        )
    baseline = table[(table["layers"] == chosen["layers"]) & (table["weight"] == 0)].iloc[0]
    return (
        f"Topography study so far ({settings}): the default chosen on dev is **{chosen['loss']} on {chosen['layers']} at weight "
        f"{chosen['weight']:g}** ({_criteria_text(criteria)}); its test CER is {chosen['test_cer']:.3f} against the baseline's "
        f"{baseline['test_cer']:.3f} [{baseline['test_cer_low']:.3f}, {baseline['test_cer_high']:.3f}]. "
        "See [Topography](docs/topography.md#the-topography-study)."
    )


def control_text(controls: pd.DataFrame, chosen: pd.Series) -> str:
    """The collapse control of the chosen setting as a paragraph and a per-seed table."""
    setting = f"{chosen['loss']} on {chosen['layers']} at weight {chosen['weight']:g}"
    if controls.empty:
        return f"\nCollapse control of {setting}: not measured yet (`tmaps-study topography` measures it on the weight-0 checkpoints).\n"
    columns = {
        "run_id": "record", "rank": "rank", "participation_ratio": "participation ratio", "target_participation_ratio": "target",
        "unreduced_participation_ratio": "baseline's own", "target_reached": "target reached (5%)",
        "morans_i_channel_order": "Moran's I, channel order", "morans_i_by_similarity": "by weight similarity",
        "morans_i_by_profiles": "by profile similarity", "morans_i_largest": "largest",
    }
    table = controls[list(columns)].rename(columns=columns).to_markdown(index=False, floatfmt=".3g")
    return (
        f"\nCollapse control of {setting}: each weight-0 baseline's topographic layers (per layer, separated by /) cut to the rank whose "
        "participation ratio is nearest the setting's, no topographic loss; Moran's I of the test NAP maps with the units in three "
        "untrained arrangements (mean over layers); the claim compares with the largest. A target above the baseline's own ratio "
        "cannot be reached.\n\n"
        f"{table}\n"
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
    missing = [planned["run_id"] for planned in planned_runs(study) if not store.path(planned["run_id"]).is_file()]
    # A default or a claim from part of the design could change when the rest arrives.
    chosen = None if missing else choose_default(table, study["default_criteria"])
    if missing:
        choice = f"none yet: {len(missing)} planned runs have no record (first: {missing[0]})"
    elif chosen is None:
        choice = "no setting meets the criteria"
    else:
        choice = f"{chosen['loss']} on {chosen['layers']} at weight {chosen['weight']:g}"
    summary = (
        f"{markdown_table(table)}\n\n{len(records)} runs. Test CER: mean over seeds with the 95% CI over seeds and test utterances; "
        "every other number: mean over seeds [percentile bootstrap over seeds], which with 2 or 3 seeds is their range "
        "(tmaps.studies.stats); none with one seed. "
        f"Default chosen on dev ({_criteria_text(study['default_criteria'])}): **{choice}**.\n"
    )
    plot_pareto(table, results_dir / "topography_pareto.png")
    plot_distance_profiles(records, results_dir / "topography_distance_profiles.png")
    control_store = RecordStore(control_folder(study))
    control_records = control_store.records() if control_store.folder.is_dir() else []
    controls = pd.DataFrame()
    if chosen is not None:
        controls = control_seeds(control_records, (chosen["loss"], chosen["layers"], chosen["weight"]))
        summary += control_text(controls, chosen)
    (results_dir / "topography_sweep.md").write_text(summary, encoding="utf-8")
    claims.replace_marked_section(study["results_page"], summary, name="topography-sweep")
    record_paths = {record["run_id"]: relative_path(store.path(record["run_id"])) for record in records}
    control_paths = [relative_path(control_store.path(run_id)) for run_id in controls.get("run_id", [])]
    judged = claims.update_claims(claim_measurements(records, chosen, record_paths, controls, control_paths), claims_dir, markdown_files=[readme])
    claims.replace_marked_section(readme, status_line(table, chosen, study["default_criteria"], missing), name="topography-status")
    return {"table": table, "chosen": chosen, "claims": judged}
