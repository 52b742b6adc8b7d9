"""How good a neuron layout is: neighbourhoods kept, distances kept, and how smooth its maps are.

- Trustworthiness (sklearn): are the units near each other on the map also near in profile
  space? Continuity is the same measure with the roles swapped: are units near in profile
  space also near on the map? Both are 1 for a perfect layout and about 0.5 for a random one.
- Spearman rank correlation between all pairwise profile distances and map distances.
- Map smoothness (:func:`~tmaps.introspect.topography.map_smoothness`) of the rendered maps.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr
from sklearn.manifold import trustworthiness as sklearn_trustworthiness

from tmaps.introspect.layout import check_coords, profile_features
from tmaps.introspect.render import render_map
from tmaps.introspect.topography import map_smoothness


def _profiles_and_coords(
    profiles: ArrayLike, coords: ArrayLike, metric: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    features = profile_features(profiles, metric)
    return features, check_coords(coords, len(features))


def trustworthiness(profiles: ArrayLike, coords: ArrayLike, *, n_neighbors: int = 10, metric: str = "cosine") -> float:
    """How far the units' ``n_neighbors`` nearest map neighbours are also near in profile space.

    Args:
        profiles: ``(N, G)``.
        coords: ``(N, 2)``.
        n_neighbors: neighbourhood size, below ``N / 2``.
        metric: profile distance, ``"cosine"`` or ``"euclidean"``.
    """
    features, points = _profiles_and_coords(profiles, coords, metric)
    return float(sklearn_trustworthiness(features, points, n_neighbors=n_neighbors))


def continuity(profiles: ArrayLike, coords: ArrayLike, *, n_neighbors: int = 10, metric: str = "cosine") -> float:
    """How far the units' ``n_neighbors`` nearest profile neighbours are also near on the map.

    Trustworthiness with map and profiles swapped; arguments as in :func:`trustworthiness`.
    """
    features, points = _profiles_and_coords(profiles, coords, metric)
    return float(sklearn_trustworthiness(points, features, n_neighbors=n_neighbors))


def distance_correlation(profiles: ArrayLike, coords: ArrayLike, *, metric: str = "cosine") -> float:
    """Spearman rank correlation between pairwise profile distances and pairwise map distances."""
    features, points = _profiles_and_coords(profiles, coords, metric)
    return float(spearmanr(pdist(features), pdist(points)).statistic)


def layout_quality(
    profiles: ArrayLike,
    coords: ArrayLike,
    *,
    metric: str = "cosine",
    n_neighbors: int = 10,
    resolution: int = 64,
    interpolation: str = "linear",
    mask: str = "hull",
) -> dict[str, float]:
    """All quality measures of one layout of one layer.

    The smoothness entries average :func:`map_smoothness` over the maps of all groups,
    rendered with :func:`render_map` at ``resolution``.

    Args:
        profiles: ``(N, G)``.
        coords: ``(N, 2)``.
        metric: profile distance.
        n_neighbors: neighbourhood size for trustworthiness and continuity.
        resolution, interpolation, mask: how the maps are rendered.

    Returns:
        ``trustworthiness``, ``continuity``, ``spearman``, ``smoothness_downscale_auc`` and
        ``smoothness_blur_auc``.
    """
    features, points = _profiles_and_coords(profiles, coords, metric)
    values_by_group = np.asarray(profiles, dtype=np.float64).T
    images = render_map(points, values_by_group, resolution=resolution, interpolation=interpolation, mask=mask)
    smoothness = map_smoothness(images)
    return {
        "trustworthiness": trustworthiness(features, points, n_neighbors=n_neighbors, metric="euclidean"),
        "continuity": continuity(features, points, n_neighbors=n_neighbors, metric="euclidean"),
        "spearman": distance_correlation(features, points, metric="euclidean"),
        "smoothness_downscale_auc": float(smoothness["downscale_auc"].mean()),
        "smoothness_blur_auc": float(smoothness["blur_auc"].mean()),
    }


