"""How good a neuron layout is: neighbourhoods kept, distances kept, and how smooth its maps are.

- Trustworthiness (sklearn): are the units near each other on the map also near in profile
  space? Continuity is the same measure with the roles swapped: are units near in profile
  space also near on the map? Both are 1 for a perfect layout and about 0.5 for a random one.
- Spearman rank correlation between all pairwise profile distances and map distances.
- Map smoothness (Krug et al.): a rendered map that changes smoothly loses little when it is
  coarsened. Each map image is compared with a copy that was downscaled by block averaging
  and upscaled again (factors 2, 4, 8, 16), and with a Gaussian-blurred copy (sigma 0.5 to 8
  pixels). Images are standardized first (zero mean, unit variance over the pixels inside
  the map) so that maps of different amplitude compare; the mean squared error is then a
  fraction of the map's variance: 0 for a constant map, near 1 for pixel noise at coarse
  scales. The area under each error-over-scale curve, taken over log2 of the scale and
  divided by the log2 range, is the mean error across scales; lower is smoother.

:func:`make_planted_profiles` generates profiles with a known layout for checking methods.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.integrate import trapezoid
from scipy.ndimage import gaussian_filter
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr
from sklearn.manifold import trustworthiness as sklearn_trustworthiness

from tmaps.introspect.layout import check_coords, profile_features
from tmaps.introspect.render import render_map

DOWNSCALE_FACTORS = (2, 4, 8, 16)
BLUR_SIGMAS = (0.5, 1.0, 2.0, 4.0, 8.0)


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


def make_planted_profiles(
    n_units: int,
    n_groups: int = 40,
    *,
    width: float = 0.25,
    noise: float = 0.05,
    seed: int = 0,
) -> tuple[NDArray[np.float64], NDArray[np.float64], tuple[int, int]]:
    """Profiles generated from hidden unit positions, so that the right layout is known.

    Unit ``c`` sits in row ``c // cols``, column ``c % cols`` of the smallest near-square grid
    (jittered by up to 0.3 cells, scaled into the unit square; the same convention as
    :func:`~tmaps.introspect.layout.grid_layout`). Each group has a random centre in the unit
    square, and a unit's response to it is ``exp(-d**2 / (2 width**2))`` of their distance
    ``d`` plus Gaussian noise of standard deviation ``noise``: nearby units have similar profiles.

    Returns:
        ``profiles (n_units, n_groups)``, the hidden ``positions (n_units, 2)`` and the grid
        ``shape (rows, cols)``.
    """
    rng = np.random.default_rng(seed)
    cols = math.ceil(math.sqrt(n_units))
    rows = math.ceil(n_units / cols)
    unit = np.arange(n_units)
    lattice = np.stack([unit % cols, rows - 1 - unit // cols], axis=1)
    positions = (lattice + rng.uniform(-0.3, 0.3, size=(n_units, 2))) / max(rows, cols)
    centres = rng.uniform(size=(n_groups, 2))
    squared_distance = ((positions[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)
    profiles = np.exp(-squared_distance / (2 * width**2)) + noise * rng.standard_normal((n_units, n_groups))
    return profiles, positions, (rows, cols)
