"""Two-dimensional layouts of a layer's neurons from their activation profiles.

A layout places the ``N`` units of one layer in the plane so that units with similar
activation profiles sit near each other (Krug et al., topographic activation maps). Every
method takes the profile matrix ``(n_units, n_groups)`` and returns coordinates ``(N, 2)``
as ``(x, y)``; they share one keyword-only signature ``method(profiles, *, metric, seed,
**options)`` and are listed in :data:`LAYOUTS`. :func:`compute_layout` runs one of them and
optionally aligns, de-overlaps or snaps the result.

Profile distance is cosine by default (the angle between two units' profiles, blind to how
strongly a unit fires overall) or Euclidean. Methods that work in a vector space (PCA, SOM,
the k-nearest-neighbour graph) see cosine distance as Euclidean distance between profiles
scaled to unit length, which orders unit pairs the same way; see :func:`profile_features`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import orthogonal_procrustes
from scipy.ndimage import gaussian_filter
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import kneighbors_graph
from sklearn.preprocessing import normalize

from tmaps.extras import require

METRICS = ("cosine", "euclidean")

#: Fraction of a SOM cell within which units that share a best-matching unit are spread.
_SOM_CELL_SPREAD = 0.4
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
#: umap-learn computes exact neighbours below this many points.
_UMAP_EXACT_LIMIT = 4096


def unit_list(indices: NDArray[np.int64], limit: int = 10) -> str:
    """Unit indices for an error message, at most ``limit`` of them."""
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (", ..." if len(indices) > limit else "")


def check_profiles(profiles: ArrayLike) -> NDArray[np.float64]:
    """Profiles as a float matrix ``(n_units, n_groups)``.

    Raises:
        ValueError: if ``profiles`` is not a matrix with at least 2 units and 1 group, or
            if a unit's profile holds NaN or infinite values (the message names the units).
    """
    matrix = np.asarray(profiles, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 2 or matrix.shape[1] < 1:
        raise ValueError(
            f"profiles must be a matrix (n_units, n_groups) with at least 2 units and 1 group; got shape {matrix.shape}"
        )
    bad_units = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad_units.size:
        raise ValueError(
            f"profiles hold NaN or infinite values in {bad_units.size} of {matrix.shape[0]} units "
            f"(units {unit_list(bad_units)})"
        )
    return matrix


def check_coords(coords: ArrayLike, n_units: int | None = None) -> NDArray[np.float64]:
    """Coordinates as a finite float array ``(N, 2)``, ``N == n_units`` when given."""
    points = np.asarray(coords, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"coordinates must have shape (n_units, 2); got {points.shape}")
    if n_units is not None and points.shape[0] != n_units:
        raise ValueError(f"coordinates are given for {points.shape[0]} units, the profiles have {n_units}")
    bad_units = np.flatnonzero(~np.isfinite(points).all(axis=1))
    if bad_units.size:
        raise ValueError(f"coordinates are NaN or infinite for units {unit_list(bad_units)}")
    return points


def profile_features(profiles: ArrayLike, metric: str = "cosine") -> NDArray[np.float64]:
    """Rows whose Euclidean distances rank unit pairs as ``metric`` does on the profiles.

    For ``"cosine"`` every profile is scaled to unit length (Euclidean distance is then
    ``sqrt(2 * cosine distance)``); a unit whose profile is all zeros has no direction and
    stays at the origin, equally far (1) from every other unit. ``"euclidean"`` keeps the
    profiles as they are.

    Args:
        profiles: ``(n_units, n_groups)``.
        metric: ``"cosine"`` or ``"euclidean"``.

    Returns:
        ``(n_units, n_groups)`` float array.
    """
    matrix = check_profiles(profiles)
    return normalize(matrix) if _check_metric(metric) == "cosine" else matrix


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}; got {metric!r}")
    return metric


def _require_units(method: str, n_units: int, minimum: int, reason: str) -> None:
    if n_units < minimum:
        raise ValueError(f"the {method} layout needs at least {minimum} units ({reason}); got {n_units}")


def grid_layout(
    profiles: ArrayLike, *, metric: str = "cosine", seed: int = 0, shape: tuple[int, int] | None = None
) -> NDArray[np.float64]:
    """The grid a topographically trained layer learned on: channel ``c`` in row ``c // cols``, column ``c % cols``.

    Coordinates are ``(x, y) = (column, rows - 1 - row)``, so the map shows row 0 at the top
    as an image of the ``(rows, cols)`` grid does. ``metric`` and ``seed`` are accepted for the
    common signature and have no effect: the positions come from training, not from the profiles.

    Args:
        profiles: ``(n_units, n_groups)``; only ``n_units`` is used.
        shape: ``(rows, cols)`` of the training grid, ``rows * cols >= n_units``.
    """
    n_units = check_profiles(profiles).shape[0]
    if shape is None:
        raise ValueError("the grid layout needs shape=(rows, cols), the grid the layer was trained on")
    rows, cols = shape
    if rows < 1 or cols < 1 or rows * cols < n_units:
        raise ValueError(f"grid shape {tuple(shape)} has fewer cells than the layer's {n_units} units")
    channel = np.arange(n_units)
    return np.stack([channel % cols, rows - 1 - channel // cols], axis=1).astype(np.float64)


def pca_layout(profiles: ArrayLike, *, metric: str = "cosine", seed: int = 0) -> NDArray[np.float64]:
    """The first two principal components of the profile features (sklearn ``PCA``)."""
    features = profile_features(profiles, metric)
    if features.shape[1] < 2:
        raise ValueError(f"the pca layout needs at least 2 groups; the profiles have {features.shape[1]}")
    return PCA(n_components=2, random_state=seed).fit_transform(features)


def som_layout(
    profiles: ArrayLike,
    *,
    metric: str = "cosine",
    seed: int = 0,
    shape: tuple[int, int] | None = None,
    sigma: float | None = None,
    epochs: int = 20,
) -> NDArray[np.float64]:
    """Each unit at its best-matching cell of a self-organizing map trained on the profiles.

    A batch SOM (Kohonen 2013, "Essentials of the self-organizing map"): the cell weights
    start on the plane of the profiles' first two principal components (``x`` along the
    first), and each epoch sets every cell's weight to the mean of all profiles weighted by
    a Gaussian of the grid distance between the cell and each profile's best-matching cell.
    That weighted mean is a Gaussian filter over the grid of per-cell sums
    (``scipy.ndimage.gaussian_filter``), so an epoch costs one distance computation. The
    radius shrinks linearly from ``sigma`` to 1 cell. Nothing is random, so ``seed`` has no
    effect. It replaces MiniSom's online training, which took 10-15x longer for the same
    trustworthiness on 2000 units (``benchmarks/layout_quality.py`` runs both).

    Units that share a best-matching cell are spread on a small spiral inside it (the one
    closest to the cell's weight at the centre), so no two units coincide; snap with
    :func:`snap_to_grid` to give each unit a cell of its own.

    Args:
        profiles: ``(n_units, n_groups)``.
        shape: ``(rows, cols)`` of the map; default the smallest square with a cell per unit.
        sigma: initial neighbourhood radius in cells; default half the map's longer side.
        epochs: batch updates.

    Returns:
        ``(n_units, 2)`` coordinates ``(x, y)`` in cell units.
    """
    features = profile_features(profiles, metric)
    n_units, n_groups = features.shape
    _require_units("som", n_units, 4, "a map needs at least 2 x 2 cells to organize")
    if n_groups < 2:
        raise ValueError(f"the som layout needs at least 2 groups; the profiles have {n_groups}")
    side = math.ceil(math.sqrt(n_units))
    rows, cols = shape if shape is not None else (side, side)
    if min(rows, cols) < 2:
        raise ValueError(f"the som layout needs a map of at least 2 x 2 cells; got shape {(rows, cols)}")
    cells = _grid_cells(rows, cols)
    pca = PCA(n_components=2).fit(features)
    plane = cells / np.array([cols - 1, rows - 1]) * 2 - 1
    weights = pca.mean_ + (plane * 2 * np.sqrt(pca.explained_variance_)) @ pca.components_
    for radius in np.linspace(sigma if sigma is not None else max(rows, cols) / 2, 1.0, epochs):
        best = _best_matching_cells(features, weights)
        sums = np.zeros((rows * cols, n_groups))
        np.add.at(sums, best, features)
        counts = np.bincount(best, minlength=rows * cols).astype(np.float64)
        pulled = gaussian_filter(sums.reshape(rows, cols, n_groups), (radius, radius, 0), mode="constant")
        weight = gaussian_filter(counts.reshape(rows, cols), radius, mode="constant")
        weights = (pulled / np.maximum(weight, np.finfo(np.float64).tiny)[..., None]).reshape(rows * cols, n_groups)
    best = _best_matching_cells(features, weights)
    residual = np.linalg.norm(features - weights[best], axis=1)
    return cells[best] + _spread_within_cells(best, residual)


def _grid_cells(rows: int, cols: int) -> NDArray[np.float64]:
    """Cell centres ``(rows * cols, 2)`` as ``(x, y) = (column, row)``, row by row."""
    return np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), axis=-1).reshape(-1, 2).astype(np.float64)


def _best_matching_cells(features: NDArray[np.float64], weights: NDArray[np.float64]) -> NDArray[np.int64]:
    return np.argmin(np.sum(weights**2, axis=1) - 2 * features @ weights.T, axis=1)


def _spread_within_cells(cell: NDArray[np.int64], residual: NDArray[np.float64]) -> NDArray[np.float64]:
    """Offsets ``(N, 2)`` on a sunflower spiral per cell, ordered by ``residual`` (smallest at the centre)."""
    order = np.lexsort((np.arange(len(cell)), residual, cell))
    sorted_cells = cell[order]
    first_of_cell = np.searchsorted(sorted_cells, sorted_cells, side="left")
    rank = np.arange(len(cell)) - first_of_cell
    occupancy = np.bincount(sorted_cells)[sorted_cells]
    radius = _SOM_CELL_SPREAD * np.sqrt(rank / occupancy)
    angle = rank * _GOLDEN_ANGLE
    offsets = np.empty((len(cell), 2))
    offsets[order] = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return offsets


def tsne_layout(
    profiles: ArrayLike, *, metric: str = "cosine", seed: int = 0, perplexity: float = 30.0, **tsne_options
) -> NDArray[np.float64]:
    """sklearn t-SNE on the profiles, initialized with PCA.

    Args:
        profiles: ``(n_units, n_groups)``; t-SNE needs more units than ``perplexity``.
        perplexity: effective number of neighbours each unit attends to.
        **tsne_options: further ``sklearn.manifold.TSNE`` arguments (e.g. ``max_iter``).
    """
    features = check_profiles(profiles)
    _require_units("tsne", features.shape[0], math.floor(perplexity) + 1, f"more than perplexity={perplexity}")
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        metric=_check_metric(metric),
        init="pca",
        random_state=seed,
        **tsne_options,
    )
    return tsne.fit_transform(features)


def umap_layout(
    profiles: ArrayLike,
    *,
    metric: str = "cosine",
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    **umap_options,
) -> NDArray[np.float64]:
    """UMAP (umap-learn) on the profiles, seeded and therefore single-threaded.

    umap-learn (the ``umap`` extra) compiles its kernels with numba on first use in a process
    (tens of seconds); later calls are fast. It is imported here rather than at module load for
    that reason.

    Args:
        profiles: ``(n_units, n_groups)``; UMAP needs more units than ``n_neighbors``.
        n_neighbors: size of the neighbourhood graph UMAP preserves.
        min_dist: how tightly UMAP packs similar units.
        **umap_options: further ``umap.UMAP`` arguments.
    """
    umap = require("umap", extra="umap", feature="the UMAP layout")
    features = check_profiles(profiles)
    _require_units("umap", features.shape[0], n_neighbors + 1, f"more than n_neighbors={n_neighbors}")
    # For fewer than 4096 points umap-learn takes all pairwise distances, calling its numba
    # metric once per pair from Python (about 5 s for 2000 units); sklearn's vectorized
    # distances give the same matrix in milliseconds. Larger sets use umap's NN-descent.
    exact = features.shape[0] < _UMAP_EXACT_LIMIT
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric="precomputed" if exact else _check_metric(metric),
        random_state=seed,
        n_jobs=1,
        **umap_options,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "using precomputed metric; inverse_transform", UserWarning)
        return reducer.fit_transform(pairwise_distances(features, metric=_check_metric(metric)) if exact else features)


def force_layout(
    profiles: ArrayLike, *, metric: str = "cosine", seed: int = 0, n_neighbors: int = 10, iterations: int = 50
) -> NDArray[np.float64]:
    """Force-directed layout (networkx ``spring_layout``) of the k-nearest-neighbour graph.

    Each unit is joined to its ``n_neighbors`` most similar units; an edge pulls with the
    similarity ``exp(-d**2 / (2 s**2))`` of its units, ``d`` their profile distance and ``s`` the
    median neighbour distance. The springs start from the PCA layout (from positions drawn
    with ``seed`` when there is a single group).

    Args:
        profiles: ``(n_units, n_groups)``; needs more units than ``n_neighbors``.
        n_neighbors: neighbours per unit in the graph.
        iterations: spring-layout iterations.
    """
    # Imported here: no other layout needs networkx, and importing it slows the start-up of every command.
    import networkx as nx

    features = profile_features(profiles, metric)
    _require_units("force", features.shape[0], n_neighbors + 1, f"more than n_neighbors={n_neighbors}")
    graph = kneighbors_graph(features, n_neighbors, mode="distance")
    scale = np.median(graph.data)
    graph.data = np.exp(-(graph.data**2) / (2 * scale**2)) if scale > 0 else np.ones_like(graph.data)
    similarity_graph = nx.from_scipy_sparse_array(graph.maximum(graph.T))
    initial = dict(enumerate(pca_layout(features, metric="euclidean"))) if features.shape[1] >= 2 else None
    positions = nx.spring_layout(similarity_graph, pos=initial, iterations=iterations, weight="weight", seed=seed)
    return np.array([positions[unit] for unit in range(features.shape[0])])


def random_layout(profiles: ArrayLike, *, metric: str = "cosine", seed: int = 0) -> NDArray[np.float64]:
    """Units uniformly at random in the unit square: the baseline every layout should beat."""
    n_units = check_profiles(profiles).shape[0]
    return np.random.default_rng(seed).uniform(size=(n_units, 2))


LayoutMethod = Callable[..., NDArray[np.float64]]

LAYOUTS: dict[str, LayoutMethod] = {
    "grid": grid_layout,
    "som": som_layout,
    "pca": pca_layout,
    "tsne": tsne_layout,
    "umap": umap_layout,
    "force": force_layout,
    "random": random_layout,
}

#: Methods whose orientation carries meaning and is never rotated.
FIXED_ORIENTATION = frozenset({"grid"})


def align_orientation(coords: ArrayLike, reference: ArrayLike | None = None) -> NDArray[np.float64]:
    """Rotate or mirror a layout into a canonical orientation, or onto a reference layout.

    Without ``reference`` the layout is centred on its mean and turned so that its main
    axis of spread is ``x``; each axis is then mirrored if needed so that the layout's
    skew along it is non-negative (its long tail points to +x and +y). Layouts that are
    rotations or mirror images of each other come out identical, which keeps maps of
    different layers in one orientation. A layout spread equally in every direction (a
    square grid, a disc) has no main axis and gets an arbitrary turn; align it onto a
    reference instead.

    With ``reference`` (the same units laid out before, e.g. at the previous epoch), the
    layout is rotated or mirrored onto it by orthogonal Procrustes and moved to its centre;
    its scale is kept.

    Args:
        coords: ``(N, 2)``.
        reference: ``(N, 2)`` or None.

    Returns:
        ``(N, 2)`` coordinates.
    """
    points = check_coords(coords)
    centred = points - points.mean(axis=0)
    if reference is not None:
        target = check_coords(reference, points.shape[0])
        rotation, _ = orthogonal_procrustes(centred, target - target.mean(axis=0))
        return centred @ rotation + target.mean(axis=0)
    _, axes = np.linalg.eigh(centred.T @ centred)
    rotated = centred @ axes[:, ::-1]
    skew_sign = np.where(np.sum(rotated**3, axis=0) < 0, -1.0, 1.0)
    return rotated * skew_sign


def remove_overlaps(
    coords: ArrayLike, min_distance: float | None = None, max_iterations: int = 100
) -> NDArray[np.float64]:
    """Push units apart until no two are closer than ``min_distance``.

    Each round finds every pair closer than ``min_distance`` (a k-d tree query) and moves
    both units of a pair apart along the line joining them by half of what is missing,
    halved again so that a unit crowded from several sides does not overshoot. Units at
    the same spot separate along a direction fixed by their indices. Rounds repeat until no
    pair is too close or ``max_iterations`` is reached; units far from any other do not move.

    Args:
        coords: ``(N, 2)``.
        min_distance: default half the spacing of ``N`` units spread evenly over the
            square spanned by the layout's longer side.
        max_iterations: rounds at most.

    Returns:
        ``(N, 2)`` coordinates.
    """
    points = check_coords(coords).copy()
    if min_distance is None:
        extent = float(np.ptp(points, axis=0).max()) or 1.0
        min_distance = 0.5 * extent / math.sqrt(len(points))
    for _ in range(max_iterations):
        pairs = cKDTree(points).query_pairs(min_distance, output_type="ndarray")
        if not len(pairs):
            break
        first, second = pairs.T
        delta = points[second] - points[first]
        distance = np.linalg.norm(delta, axis=1)
        tie_angle = (first + second) * _GOLDEN_ANGLE
        direction = np.where(
            distance[:, None] > 0,
            delta / np.maximum(distance, 1e-300)[:, None],
            np.stack([np.cos(tie_angle), np.sin(tie_angle)], axis=1),
        )
        push = 0.25 * (min_distance - distance)[:, None] * direction
        np.add.at(points, first, -push)
        np.add.at(points, second, push)
    return points


def snap_to_grid(coords: ArrayLike, shape: tuple[int, int] | None = None) -> NDArray[np.float64]:
    """Give every unit a cell of its own on a regular grid, moving units as little as possible.

    The layout is stretched onto the grid's extent (each axis min-max scaled onto the cell
    centres), and units are assigned to distinct cells by minimizing the total squared
    distance between units and their cells (``scipy.optimize.linear_sum_assignment``).

    Args:
        coords: ``(N, 2)``.
        shape: ``(rows, cols)`` with ``rows * cols >= N``; default the fewest cells that hold
            all units with about the layout's aspect ratio.

    Returns:
        ``(N, 2)`` integer-valued coordinates ``(x, y) = (column, row)``, pairwise distinct.
    """
    points = check_coords(coords)
    n_units = len(points)
    lower = points.min(axis=0)
    extent = np.ptp(points, axis=0)
    extent[extent == 0] = 1.0
    if shape is None:
        aspect = float(np.clip(extent[0] / extent[1], 1 / n_units, n_units))
        cols = math.ceil(math.sqrt(n_units * aspect))
        rows = math.ceil(n_units / cols)
    else:
        rows, cols = shape
    if rows * cols < n_units:
        raise ValueError(f"grid shape {(rows, cols)} has fewer cells than the layout's {n_units} units")
    scaled = (points - lower) / extent * np.array([cols - 1, rows - 1])
    cells = _grid_cells(rows, cols)
    _, assigned = linear_sum_assignment(cdist(scaled, cells, "sqeuclidean"))
    return cells[assigned]


def compute_layout(
    method: str,
    profiles: ArrayLike,
    *,
    metric: str = "cosine",
    snap: bool | tuple[int, int] = False,
    deoverlap: bool = False,
    align: bool = True,
    reference: ArrayLike | None = None,
    seed: int = 0,
    **options,
) -> NDArray[np.float64]:
    """Lay out a layer's units with one of :data:`LAYOUTS`, then align and tidy the result.

    Steps, in order: the method; :func:`align_orientation` (onto ``reference`` when given,
    else canonical; skipped for methods in :data:`FIXED_ORIENTATION` and when ``align`` is
    False); :func:`remove_overlaps` if ``deoverlap``; :func:`snap_to_grid` if ``snap``.
    Aligning before snapping keeps the grid square to the axes.

    Args:
        method: a key of :data:`LAYOUTS`.
        profiles: ``(n_units, n_groups)``.
        metric: profile distance, ``"cosine"`` or ``"euclidean"``.
        snap: True snaps to a grid of automatic shape, a ``(rows, cols)`` tuple to that grid.
        deoverlap: push units apart (not together with ``snap``, which already separates them).
        align: rotate or mirror into a canonical orientation or onto ``reference``.
        reference: ``(N, 2)`` layout of the same units to align onto (e.g. the previous epoch's).
        seed: random seed; equal inputs and seed give equal coordinates.
        **options: the method's own options (e.g. ``shape`` for ``grid``, ``perplexity``).

    Returns:
        ``(n_units, 2)`` coordinates ``(x, y)``.
    """
    if method not in LAYOUTS:
        raise ValueError(f"unknown layout method {method!r}; known: {sorted(LAYOUTS)}")
    if snap is not False and deoverlap:
        raise ValueError("choose snap or deoverlap, not both: snapping already gives every unit its own cell")
    coords = LAYOUTS[method](profiles, metric=metric, seed=seed, **options)
    if align and method not in FIXED_ORIENTATION:
        coords = align_orientation(coords, reference)
    if deoverlap:
        coords = remove_overlaps(coords)
    if snap is not False:
        coords = snap_to_grid(coords, None if snap is True else snap)
    return coords
