"""Lay out every layer of a :class:`~tmaps.introspect.Profiles` under several methods, and score the layouts.

:func:`layer_layouts` lays out the layer's units from their profiles
(:func:`~tmaps.introspect.layout.compute_layout`); :func:`quality_table` scores every layout
(:func:`~tmaps.introspect.quality.layout_quality`). ``tmaps-maps``
(:mod:`tmaps.commands.maps`) draws and writes them.

The ``grid`` method needs the ``(rows, cols)`` grid a layer was trained on: it is read from
the profiles' metadata entry ``grids`` (``{layer: Grid.to_dict()}``) when recorded, else
from the ``grid_shape`` argument. Every error names the source of the profiles and, where it
applies, the layer and method at fault.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tmaps.introspect.layout import LAYOUTS, compute_layout
from tmaps.introspect.profiles import Profiles
from tmaps.introspect.quality import layout_quality
from tmaps.progress import progress_bar
from tmaps.topo import Grid

QUALITY_COLUMNS = (
    "layer",
    "method",
    "units",
    "seconds",
    "trustworthiness",
    "continuity",
    "spearman",
    "smoothness_downscale_auc",
    "smoothness_blur_auc",
)


def recorded_grids(profiles: Profiles) -> dict[str, Grid]:
    """The grids the profiles' metadata records (``grids``: ``{layer: Grid.to_dict()}``)."""
    return {layer: Grid.from_dict(arguments) for layer, arguments in profiles.info.get("grids", {}).items()}


def grid_shape_of(profiles: Profiles, layer: str, grid_shape: Sequence[int] | None) -> tuple[int, int] | None:
    """The training grid ``(rows, cols)`` of ``layer``: recorded in the profiles, else ``grid_shape``."""
    recorded = recorded_grids(profiles).get(layer)
    if recorded is not None:
        return recorded.shape
    return None if grid_shape is None else (int(grid_shape[0]), int(grid_shape[1]))


def layer_layouts(
    profiles: Profiles,
    layers: Sequence[str],
    methods: Sequence[str],
    *,
    metric: str = "cosine",
    grid_shape: Sequence[int] | None = None,
    snap: bool = False,
    seed: int = 0,
    method_options: Mapping[str, Mapping] | None = None,
    source: str = "profiles",
) -> tuple[dict[str, dict[str, NDArray[np.float64]]], dict[str, dict[str, float]]]:
    """Coordinates of every layer's units under every method, and the seconds each took.

    Args:
        profiles: time-independent profiles holding ``layers``.
        layers: layer names.
        methods: keys of :data:`~tmaps.introspect.layout.LAYOUTS`.
        metric: profile distance, ``"cosine"`` or ``"euclidean"``.
        grid_shape: ``(rows, cols)`` for the ``grid`` method when the profiles do not record it.
        snap: snap every data-driven layout to a grid (the ``grid`` layout already is one).
        seed: random seed of the methods.
        method_options: per method, further keyword arguments (e.g. ``{"umap": {"n_neighbors": 10}}``).
        source: how errors name the profiles (their file).

    Returns:
        ``coords[layer][method]`` ``(n_units, 2)`` and ``seconds[layer][method]``.
    """
    unknown = [method for method in methods if method not in LAYOUTS]
    if unknown:
        raise ValueError(f"unknown layout methods {unknown}; known: {sorted(LAYOUTS)}")
    method_options = method_options or {}
    coords: dict[str, dict[str, NDArray[np.float64]]] = {}
    seconds: dict[str, dict[str, float]] = {}
    for layer in progress_bar(layers, "layouts"):
        matrix = layer_matrix(profiles, layer, source)
        coords[layer], seconds[layer] = {}, {}
        for method in methods:
            options = dict(method_options.get(method, {}))
            if method == "grid":
                options.setdefault("shape", grid_shape_of(profiles, layer, grid_shape))
                if options["shape"] is None:
                    raise ValueError(
                        f"{source}: layer {layer!r} has no recorded grid (metadata 'grids'); "
                        "give grid_shape=[rows,cols] or leave 'grid' out of layouts"
                    )
            started = time.perf_counter()
            try:
                coords[layer][method] = compute_layout(
                    method, matrix, metric=metric, snap=snap and method != "grid", seed=seed, **options
                )
            except ValueError as error:
                raise ValueError(f"{source}: layer {layer!r}, layout {method!r}: {error}") from error
            seconds[layer][method] = time.perf_counter() - started
    return coords, seconds


def layer_matrix(profiles: Profiles, layer: str, source: str = "profiles") -> NDArray[np.float64]:
    """The units x groups matrix ``(U, G)`` of ``layer``, with errors that name ``source``."""
    if layer not in profiles.layers:
        raise ValueError(f"{source} has no layer {layer!r}; its layers are {profiles.layers}")
    try:
        return profiles.matrix(layer)
    except ValueError as error:
        raise ValueError(f"{source}: layer {layer!r}: {error}") from error


def quality_table(
    profiles: Profiles,
    coords: Mapping[str, Mapping[str, NDArray[np.float64]]],
    seconds: Mapping[str, Mapping[str, float]],
    *,
    metric: str = "cosine",
    n_neighbors: int = 10,
    resolution: int = 64,
) -> pd.DataFrame:
    """One row per layer and method with the columns of :data:`QUALITY_COLUMNS`.

    ``n_neighbors`` is lowered to ``units // 2 - 1`` on layers too small for it, as
    trustworthiness requires.
    """
    rows = []
    for layer, by_method in coords.items():
        matrix = profiles.matrix(layer)
        neighbours = max(1, min(n_neighbors, len(matrix) // 2 - 1))
        for method, points in by_method.items():
            scores = layout_quality(matrix, points, metric=metric, n_neighbors=neighbours, resolution=resolution)
            rows.append({"layer": layer, "method": method, "units": len(matrix), "seconds": seconds[layer][method], **scores})
    return pd.DataFrame(rows, columns=list(QUALITY_COLUMNS))
