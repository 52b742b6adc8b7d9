"""Planted data: profiles generated from hidden unit positions, so that the right layout is known.

Tests, benchmarks and scripts check layouts, maps and their quality measures on it.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray


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
