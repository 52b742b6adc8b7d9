"""Cluster groups by their profiles and compare the clusters with phoneme classes.

Profiles are rows ``(G, U)``: one profile per group (``Profiles[layer].mean``). Both clusterings
compare profiles by angle: hierarchical clustering uses average linkage on cosine distances
with optimal leaf ordering (scipy); k-means (sklearn) runs on the rows scaled to unit length.

``adjusted_rand_by_layer`` asks, layer by layer, how well clusters of the groups' profiles
recover a reference partition (by default espeak phoneme classes). Whether units are grouped
on a grid is measured in ``tmaps.introspect.topography``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence

import matplotlib.figure
import numpy as np
import pandas as pd
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.preprocessing import normalize

from tmaps.introspect.groups import resolve_grouping
from tmaps.introspect.phonemes import phoneme_class
from tmaps.introspect.profiles import Profiles
from tmaps.introspect.render import FONT_SIZE, ColourScale, group_order

log = logging.getLogger(__name__)

METHODS = ("hierarchical", "kmeans")


def _checked(profiles: np.ndarray, groups: Sequence[str] | None = None) -> np.ndarray:
    profiles = np.asarray(profiles, dtype=np.float64)
    if profiles.ndim != 2 or len(profiles) < 2:
        raise ValueError(f"profiles must be (groups, units) with at least 2 groups, got shape {profiles.shape}")
    flat = np.flatnonzero(~np.any(profiles, axis=1))
    if len(flat):
        names = [groups[i] for i in flat] if groups is not None else flat.tolist()
        raise ValueError(f"profiles of groups {names} are all zero: their cosine distance is undefined")
    return profiles


def linkage(profiles: np.ndarray, groups: Sequence[str] | None = None) -> np.ndarray:
    """Average-linkage tree ``(G - 1, 4)`` of ``profiles (G, U)`` on cosine distance, leaves optimally ordered."""
    return hierarchy.linkage(pdist(_checked(profiles, groups), "cosine"), method="average", optimal_ordering=True)


def cluster(profiles: np.ndarray, n_clusters: int, method: str = "hierarchical", seed: int = 0) -> np.ndarray:
    """Cluster index ``(G,)`` of every group's profile.

    Args:
        profiles: ``(G, U)``.
        n_clusters: number of clusters.
        method: ``"hierarchical"`` (the ``linkage`` tree cut into ``n_clusters``) or ``"kmeans"``
            (on unit-length rows, 10 initializations).
        seed: k-means initialization.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "hierarchical":
        return hierarchy.fcluster(linkage(profiles), n_clusters, criterion="maxclust") - 1
    return KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(normalize(_checked(profiles)))


def silhouette(profiles: np.ndarray, cluster_labels: Sequence[int]) -> float:
    """Mean silhouette of a clustering of ``profiles (G, U)`` under cosine distance (sklearn)."""
    return float(silhouette_score(_checked(profiles), cluster_labels, metric="cosine"))


def plot_dendrogram(
    profiles: np.ndarray,
    groups: Sequence[str],
    reference: Callable[[str], str] | None = None,
    title: str | None = None,
) -> matplotlib.figure.Figure:
    """Dendrogram of the groups' profiles; with ``reference``, leaf labels are coloured by class."""
    figure = matplotlib.figure.Figure(figsize=(max(6.0, 0.22 * len(groups)), 4.0), layout="constrained")
    axes = figure.subplots()
    hierarchy.dendrogram(linkage(profiles, groups), labels=list(groups), ax=axes, leaf_rotation=90, color_threshold=0)
    axes.set_ylabel("cosine distance")
    if title:
        axes.set_title(title)
    if reference is not None:
        classes = sorted({reference(group) for group in groups})
        colours = dict(zip(classes, matplotlib.colormaps["tab10"].colors))
        for tick in axes.get_xticklabels():
            tick.set_color(colours[reference(tick.get_text())])
    return figure


def adjusted_rand(
    profiles: np.ndarray,
    groups: Sequence[str],
    reference: Callable[[str], str] = phoneme_class,
    method: str = "hierarchical",
    seed: int = 0,
) -> float:
    """Adjusted Rand index between clusters of ``profiles (G, U)`` and the classes ``reference(group)``.

    The groups are cut into as many clusters as there are reference classes.
    """
    classes = [reference(group) for group in groups]
    clusters = cluster(_checked(profiles, groups), len(set(classes)), method, seed)
    return float(adjusted_rand_score(classes, clusters))


def adjusted_rand_by_layer(
    profiles: Profiles,
    reference: Callable[[str], str] = phoneme_class,
    method: str = "hierarchical",
    seed: int = 0,
) -> dict[str, float]:
    """``adjusted_rand`` of every layer's time-independent profiles, in layer order."""
    return {layer: adjusted_rand(profiles[layer].mean, profiles.groups, reference, method, seed) for layer in profiles.layers}


def plot_adjusted_rand(scores: Mapping[str, float], title: str | None = None) -> matplotlib.figure.Figure:
    """Adjusted Rand index across layers (``adjusted_rand_by_layer`` output)."""
    figure = matplotlib.figure.Figure(figsize=(max(4.0, 0.6 * len(scores)), 3.0), layout="constrained")
    axes = figure.subplots()
    axes.plot(range(len(scores)), list(scores.values()), marker="o")
    axes.set_xticks(range(len(scores)), list(scores), rotation=45)
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_xlabel("layer")
    axes.set_ylabel("adjusted Rand index")
    if title:
        axes.set_title(title)
    return figure


def profile_matrix(profiles: Profiles, layer: str) -> np.ndarray:
    """Rows ``(G, F)`` to cluster: one per group, ``F`` = units, or units x offsets when time-resolved.

    Offsets without frames count as 0.
    """
    mean = profiles[layer].mean
    return np.ma.filled(mean, 0.0).reshape(len(mean), -1)


def leaf_order(rows: np.ndarray) -> np.ndarray:
    """Indices of ``rows (N, F)`` in the leaf order of their dendrogram; all-zero rows (no cosine distance) last."""
    active = np.any(rows, axis=1)
    indices = np.flatnonzero(active)
    return np.concatenate([indices[group_order(rows[indices])], np.flatnonzero(~active)])


def default_n_clusters(groups: Sequence[str], reference: Callable[[str], str] | None = None) -> int:
    """The reference classes present (e.g. phoneme classes of phoneme groups), else ``round(sqrt(G))``; within ``[2, G - 1]``."""
    n_clusters = len({reference(group) for group in groups}) if reference else round(math.sqrt(len(groups)))
    return min(max(n_clusters, 2), len(groups) - 1)


def cluster_summary(profiles: Profiles, n_clusters: int | None = None) -> pd.DataFrame:
    """Per layer: ``units``, ``groups``, ``clusters``, ``silhouette`` and ``adjusted_rand``.

    The groups' profiles (:func:`profile_matrix`) are clustered hierarchically into
    ``n_clusters`` (``None``: :func:`default_n_clusters`); ``silhouette`` is that clustering's
    mean silhouette (cosine distance), ``adjusted_rand`` its ARI against the reference classes
    of the profiles' grouping (``Grouping.reference``: phoneme classes of phoneme groups; NaN
    for groupings without), with as many clusters as classes. Layers that cannot be clustered
    (e.g. all profiles zero) get NaN and a logged warning.
    """
    grouping = profiles.info.get("grouping")
    reference = resolve_grouping(grouping).reference if grouping else None
    groups = profiles.groups
    clusters = n_clusters or default_n_clusters(groups, reference)
    rows = []
    for layer in profiles.layers:
        matrix = profile_matrix(profiles, layer)
        row = {"layer": layer, "units": profiles.sums[layer].shape[1], "groups": len(groups), "clusters": clusters}
        row |= {"silhouette": math.nan, "adjusted_rand": math.nan}
        try:
            row["silhouette"] = silhouette(matrix, cluster(matrix, clusters))
            if reference is not None:
                row["adjusted_rand"] = adjusted_rand(matrix, groups, reference)
        except ValueError as error:
            log.warning("layer %s cannot be clustered: %s", layer, error)
        rows.append(row)
    return pd.DataFrame(rows)


def plot_profile_heatmap(
    matrix: np.ndarray, groups: Sequence[str], title: str | None = None, columns: str = "unit", value: str = "profile"
) -> matplotlib.figure.Figure:
    """Profiles ``(G, F)`` as a group x unit heatmap, rows and columns in dendrogram leaf order.

    The colour scale is symmetric around 0 (a centred profile's mean over groups) and robust, as the maps' are
    (:class:`~tmaps.introspect.render.ColourScale`); ``value`` names the quantity on the colour bar.
    """
    rows, cols = leaf_order(matrix), leaf_order(matrix.T)
    ordered = matrix[np.ix_(rows, cols)]
    scale = ColourScale.robust(ordered)
    n_groups, n_columns = ordered.shape
    figure = matplotlib.figure.Figure(figsize=(min(16.0, 5.0 + 0.04 * n_columns), min(30.0, 2.0 + 0.16 * n_groups)), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(ordered, aspect="auto", cmap="RdBu_r", vmin=-scale.limit, vmax=scale.limit, interpolation="nearest")
    axes.set_yticks(range(n_groups), [groups[i] for i in rows], fontsize=FONT_SIZE)
    axes.set_xlabel(f"{columns} (dendrogram order)")
    axes.set_ylabel("group (dendrogram order)")
    figure.colorbar(image, ax=axes, label=scale.label(value))
    if title:
        axes.set_title(title)
    return figure
