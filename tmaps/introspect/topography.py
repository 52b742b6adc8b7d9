"""Are the units that respond to a group neighbours on a grid? A topographic model against its baseline.

:func:`group_morans_i` measures, for every group (e.g. phoneme), Moran's I of the group's
profile across a layer's units placed on a grid (:func:`~tmaps.introspect.morans_i`, rook
neighbours, no wrap-around even on a torus grid), with its permutation p-value.
:func:`topography_comparison` puts a topographic model and its baseline side by side: per
layer the ARI of both (:func:`~tmaps.introspect.cluster_summary`) and, on the topographic
layers, the mean Moran's I over groups of both. The baseline's units sit on the same grid in
channel order, so its Moran's I is what the arrangement gives without topographic training.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tmaps.introspect.clustering import cluster_summary, morans_i
from tmaps.introspect.profiles import Profiles
from tmaps.topo import Grid

MODELS = ("topo", "baseline")
SIGNIFICANCE = 0.05


def group_morans_i(profiles: Profiles, layer: str, grid: Grid, permutations: int, seed: int = 0) -> pd.DataFrame:
    """Moran's I and its permutation p-value of every group's profile ``(units,)`` on ``grid``.

    Returns:
        Columns ``group``, ``statistic``, ``p_value``; groups whose profile is constant (no
        Moran's I) are left out.
    """
    mean = profiles[layer].mean
    if mean.shape[1] != grid.n_units:
        raise ValueError(f"{profiles.info.get('checkpoint')}: layer {layer!r} has {mean.shape[1]} units, the grid {grid.n_units}")
    positions = grid.positions.numpy()
    rows = []
    for group, values in zip(profiles.groups, mean):
        if np.ptp(values) == 0:
            continue
        result = morans_i(values, positions, permutations=permutations, seed=seed)
        rows.append({"group": group, "statistic": result.statistic, "p_value": result.p_value})
    return pd.DataFrame(rows, columns=["group", "statistic", "p_value"])


def topography_comparison(
    topo: Profiles, baseline: Profiles, grids: Mapping[str, Grid], permutations: int
) -> tuple[pd.DataFrame, dict[str, dict[str, pd.DataFrame]]]:
    """One row per layer, and the per-group Moran's I behind it (``[layer][model]``).

    Columns: ``layer``, ``units``, ``ari_topo``, ``ari_baseline`` and, on the layers of
    ``grids``, ``grid`` (``rows x cols``), ``morans_i_expected`` (``-1 / (units - 1)``,
    I's expectation without spatial structure), ``morans_i_*`` (mean over groups) and
    ``p_below_05_*`` (the share of groups whose p-value is below 0.05).
    """
    if not grids:
        raise ValueError(f"checkpoint {topo.info.get('checkpoint')} has no topographic layers (its topo config is {topo.info.get('topo')})")
    profiles = dict(zip(MODELS, (topo, baseline)))
    summaries = {model: cluster_summary(profiles[model]).set_index("layer") for model in MODELS}
    per_group: dict[str, dict[str, pd.DataFrame]] = {}
    rows = []
    for layer in topo.layers:
        row = {"layer": layer, "units": int(summaries["topo"].loc[layer, "units"])}
        row |= {f"ari_{model}": summaries[model].loc[layer, "adjusted_rand"] for model in MODELS}
        if layer in grids:
            grid = grids[layer]
            per_group[layer] = {model: group_morans_i(profiles[model], layer, grid, permutations) for model in MODELS}
            row["grid"] = f"{grid.rows}x{grid.cols}"
            row["morans_i_expected"] = -1.0 / (grid.n_units - 1)
            for model, table in per_group[layer].items():
                row[f"morans_i_{model}"] = table["statistic"].mean()
                row[f"p_below_05_{model}"] = (table["p_value"] < SIGNIFICANCE).mean()
        rows.append(row)
    columns = ["layer", "units", "ari_topo", "ari_baseline", "grid", "morans_i_expected"]
    columns += [f"{name}_{model}" for name in ("morans_i", "p_below_05") for model in MODELS]
    return pd.DataFrame(rows).reindex(columns=columns), per_group


def plot_topography_comparison(table: pd.DataFrame, per_group: Mapping[str, Mapping[str, pd.DataFrame]], grouping: str = "phoneme") -> Figure:
    """ARI by layer for both models, and each topographic layer's per-group Moran's I as box plots."""
    figure = Figure(figsize=(11.0, 4.0), layout="constrained")
    ari_axes, moran_axes = figure.subplots(1, 2, width_ratios=[3, 2])
    for model in MODELS:
        ari_axes.plot(table["layer"], table[f"ari_{model}"], marker="o", label=model)
    ari_axes.axhline(0.0, color="grey", linewidth=0.8)
    ari_axes.tick_params(axis="x", rotation=45)
    ari_axes.set(xlabel="layer", ylabel="adjusted Rand index", title=f"{grouping} profile clusters vs reference classes")
    ari_axes.legend()
    boxes, labels = [], []
    for layer, tables in per_group.items():
        boxes += [tables[model]["statistic"] for model in MODELS]
        labels += [f"{layer}\n{model}" for model in MODELS]
    moran_axes.boxplot(boxes, tick_labels=labels)
    expected = table["morans_i_expected"].dropna()
    moran_axes.axhline(expected.mean(), color="grey", linewidth=0.8, linestyle="--", label="no spatial structure")
    moran_axes.set(ylabel=f"Moran's I of a {grouping}'s profile", title=f"{grouping} maps on the learned grid")
    moran_axes.legend()
    return figure
