"""Where topography is measured on maps: Moran's I, map smoothness, and a topographic model against its baseline.

Topography has two owners, split by what is measured. Measures of a layer's weights (filter
similarity against grid distance, diversity, participation ratio) live in ``tmaps.topo.metrics``,
since ``tmaps.topo`` sits below ``tmaps.introspect`` and its training losses and callbacks use
them. Measures of maps, i.e. of per-unit values such as profiles placed on a grid or a layout,
live here:

- :func:`morans_i` (with :func:`grid_adjacency`) asks whether a per-unit value (e.g. how much a
  unit responds to vowels) is spatially grouped on a grid: ``I = N / W * sum_ij w_ij z_i z_j /
  sum_i z_i^2`` with a permutation p-value.
- :func:`map_smoothness` (Krug et al.): a rendered map that changes smoothly loses little when it is
  coarsened. Each map image is compared with a copy that was downscaled by block averaging
  and upscaled again (factors 2, 4, 8, 16), and with a Gaussian-blurred copy (sigma 0.5 to 8
  pixels). Images are standardized first (zero mean, unit variance over the pixels inside
  the map) so that maps of different amplitude compare; the mean squared error is then a
  fraction of the map's variance: 0 for a constant map, near 1 for pixel noise at coarse
  scales. The area under each error-over-scale curve, taken over log2 of the scale and
  divided by the log2 range, is the mean error across scales; lower is smoother.

:func:`group_morans_i` measures, for every group (e.g. phoneme), Moran's I of the group's
profile across a layer's units placed on a grid (:func:`morans_i`, rook
neighbours, no wrap-around even on a torus grid), with its permutation p-value.
:func:`topography_comparison` puts a topographic model and its baseline side by side: per
layer the ARI of both (:func:`~tmaps.introspect.cluster_summary`) and, on the topographic
layers, the mean Moran's I over groups of both. The baseline's units sit on the same grid in
channel order, so its Moran's I is what the arrangement gives without topographic training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray
from scipy.integrate import trapezoid
from scipy.ndimage import gaussian_filter
from scipy.sparse import coo_matrix
from scipy.spatial import cKDTree

from tmaps.introspect.clustering import cluster_summary
from tmaps.introspect.profiles import Profiles
from tmaps.topo import Grid

MODELS = ("topo", "baseline")
SIGNIFICANCE = 0.05
NEIGHBOURHOODS = {"rook": 1, "queen": np.inf}  # Minkowski p of a grid step of length 1
DOWNSCALE_FACTORS = (2, 4, 8, 16)
BLUR_SIGMAS = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class MoransI:
    """Moran's I of a map, its expectation without spatial structure, and a permutation p-value.

    ``p_value`` is one-sided: the share of random placements of the same values (the observed
    one included) whose I is at least the observed one.
    """

    statistic: float
    expected: float
    p_value: float
    permutations: int


def grid_adjacency(positions: np.ndarray, neighbourhood: str = "rook") -> coo_matrix:
    """Symmetric 0/1 adjacency ``(N, N)`` of units at integer grid ``positions (N, 2)``.

    ``"rook"``: units one step apart along a row or a column; ``"queen"``: also diagonally.
    The grid does not wrap around.
    """
    if neighbourhood not in NEIGHBOURHOODS:
        raise ValueError(f"neighbourhood must be one of {sorted(NEIGHBOURHOODS)}, got {neighbourhood!r}")
    positions = np.asarray(positions, dtype=np.float64)
    pairs = cKDTree(positions).query_pairs(1.0, p=NEIGHBOURHOODS[neighbourhood], output_type="ndarray")
    rows, cols = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    return coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(positions), len(positions)))


def morans_i(
    values: np.ndarray,
    positions: np.ndarray,
    neighbourhood: str = "rook",
    permutations: int = 999,
    seed: int = 0,
) -> MoransI:
    """Moran's I of per-unit ``values (N,)`` at grid ``positions (N, 2)`` (e.g. ``Grid.positions()``).

    ``I = N / W * sum_ij w_ij z_i z_j / sum_i z_i^2`` with ``z`` the centred values and ``w`` the
    ``grid_adjacency``; positive when neighbouring units have similar values. The p-value
    comes from ``permutations`` random placements of the values on the same grid.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) != len(positions):
        raise ValueError(f"values must be (N,) for {len(positions)} positions, got shape {values.shape}")
    adjacency = grid_adjacency(positions, neighbourhood).tocsr()
    if adjacency.nnz == 0:
        raise ValueError("no two positions are neighbours on the grid")
    centred = values - values.mean()
    spread = centred @ centred
    if spread == 0:
        raise ValueError("the values are constant: Moran's I is undefined")
    scale = len(values) / adjacency.sum() / spread
    statistic = scale * centred @ (adjacency @ centred)
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(centred) for _ in range(permutations)])
    null = scale * np.einsum("pn,pn->p", shuffled, (adjacency @ shuffled.T).T)
    p_value = (1 + np.count_nonzero(null >= statistic)) / (permutations + 1)
    return MoransI(float(statistic), -1.0 / (len(values) - 1), float(p_value), permutations)


def _standardize(images: NDArray[np.float64], inside: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Zero mean and unit variance over the pixels inside each map; a constant map becomes 0."""
    count = inside.sum(axis=(-2, -1), keepdims=True)
    filled = np.where(inside, images, 0.0)
    mean = filled.sum(axis=(-2, -1), keepdims=True) / count
    spread = np.sqrt((np.where(inside, images - mean, 0.0) ** 2).sum(axis=(-2, -1), keepdims=True) / count)
    return np.where(inside, (images - mean) / np.where(spread > 0, spread, 1.0), 0.0)


def _block_mean_upscaled(images: NDArray[np.float64], inside: NDArray[np.bool_], factor: int) -> NDArray[np.float64]:
    """Each pixel replaced by the mean over the inside pixels of its ``factor x factor`` block."""
    height, width = images.shape[-2:]
    padding = [(0, 0)] * (images.ndim - 2) + [(0, -height % factor), (0, -width % factor)]
    padded_images = np.pad(images, padding)
    padded_inside = np.pad(inside, padding)
    padded_height, padded_width = padded_images.shape[-2:]
    block_shape = (*images.shape[:-2], padded_height // factor, factor, padded_width // factor, factor)
    sums = padded_images.reshape(block_shape).sum(axis=(-3, -1))
    counts = padded_inside.reshape(block_shape).sum(axis=(-3, -1))
    means = sums / np.maximum(counts, 1)
    return means.repeat(factor, axis=-2).repeat(factor, axis=-1)[..., :height, :width]


def _masked_blur(images: NDArray[np.float64], inside: NDArray[np.bool_], sigma: float) -> NDArray[np.float64]:
    """Gaussian blur that averages over inside pixels only (normalized convolution)."""
    sigmas = (0,) * (images.ndim - 2) + (sigma, sigma)
    weight = gaussian_filter(inside.astype(np.float64), sigmas, mode="constant")
    return gaussian_filter(images, sigmas, mode="constant") / np.maximum(weight, np.finfo(np.float64).tiny)


def _inside_mse(
    images: NDArray[np.float64], coarse: NDArray[np.float64], inside: NDArray[np.bool_]
) -> NDArray[np.float64]:
    return np.where(inside, (images - coarse) ** 2, 0.0).sum(axis=(-2, -1)) / inside.sum(axis=(-2, -1))


def _area_under_log_scale(errors: NDArray[np.float64], scales: tuple[float, ...]) -> NDArray[np.float64]:
    log_scales = np.log2(scales)
    return trapezoid(errors, log_scales, axis=-1) / (log_scales[-1] - log_scales[0])


def map_smoothness(
    images: ArrayLike,
    *,
    factors: tuple[int, ...] = DOWNSCALE_FACTORS,
    sigmas: tuple[float, ...] = BLUR_SIGMAS,
) -> dict[str, NDArray[np.float64]]:
    """Standardized reconstruction errors of map images at coarser scales (see the module notes).

    Args:
        images: ``(..., H, W)`` maps, NaN outside the map (as :func:`render_map` returns).
        factors: downscale factors, increasing, at least two.
        sigmas: Gaussian blur sigmas in pixels, increasing, at least two.

    Returns:
        ``downscale_mse`` ``(..., len(factors))``, ``blur_mse`` ``(..., len(sigmas))``, and
        their areas ``downscale_auc`` and ``blur_auc`` ``(...)``; lower is smoother.
    """
    maps = np.asarray(images, dtype=np.float64)
    if maps.ndim < 2 or len(factors) < 2 or len(sigmas) < 2:
        raise ValueError(
            f"need images (..., H, W) and at least two factors and sigmas; got shape {maps.shape}, "
            f"factors {factors}, sigmas {sigmas}"
        )
    inside = np.isfinite(maps)
    empty = np.flatnonzero(~inside.any(axis=(-2, -1)).ravel())
    if empty.size:
        raise ValueError(f"maps {empty[:10].tolist()} have no pixel inside the map")
    standard = _standardize(maps, inside)
    downscale_mse = np.stack(
        [_inside_mse(standard, _block_mean_upscaled(standard, inside, factor), inside) for factor in factors], axis=-1
    )
    blur_mse = np.stack(
        [_inside_mse(standard, _masked_blur(standard, inside, sigma), inside) for sigma in sigmas], axis=-1
    )
    return {
        "downscale_mse": downscale_mse,
        "blur_mse": blur_mse,
        "downscale_auc": _area_under_log_scale(downscale_mse, factors),
        "blur_auc": _area_under_log_scale(blur_mse, sigmas),
    }


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
