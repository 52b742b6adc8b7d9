"""What ``tmaps-maps`` does: from a profiles file to layouts, topographic maps and a layout-quality table.

For every requested layer and layout method, ``make_maps`` lays out the layer's units
from their profiles (:func:`~tmaps.introspect.layout.compute_layout`), scores the layout
(:func:`~tmaps.introspect.quality.layout_quality`), draws one map per group
(:func:`~tmaps.introspect.render.plot_maps`) and, per method, all layers side by side
(:func:`~tmaps.introspect.render.plot_layers`). It writes into ``output_dir``:

- ``maps/<layer>__<method>.<format>``: one panel per group, titled and ordered as the profiles'
  grouping says (``Grouping.panels``: phonemes in IPA, by phonetic class, one row section per class);
- ``layers__<method>.<format>``: layers side by side, one row per group, for a readable few
  groups: those named by ``layer_groups``, else the :data:`LAYER_FIGURE_GROUPS` groups with
  the most frames (the best-estimated profiles); the full set is in ``maps/`` and on the
  report page;
- ``coords.npz`` (arrays ``<layer>__<method>`` of shape ``(n_units, 2)``) and ``coords.csv``
  (columns ``layer, method, unit, x, y``);
- ``quality.csv`` and ``quality.md``: one row per layer and method.

Layouts and scores come from :mod:`tmaps.introspect.layout_comparison` (where the ``grid`` method finds its
grid). Every error names the profiles file and, where it applies, the layer and method at fault.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from omegaconf import DictConfig, OmegaConf

from tmaps.commands.wrapper import task_wrapper
from tmaps.introspect.layout_comparison import layer_layouts, quality_table
from tmaps.introspect.profiles import Profiles
from tmaps.introspect.render import MapStyle, plot_layers, plot_maps, save_figure

LAYER_FIGURE_GROUPS = 12


def write_coords(coords: Mapping[str, Mapping[str, NDArray[np.float64]]], output_dir: Path) -> tuple[Path, Path]:
    """``coords.npz`` (arrays ``<layer>__<method>``) and ``coords.csv`` (``layer, method, unit, x, y``)."""
    arrays = {f"{layer}__{method}": points for layer, by_method in coords.items() for method, points in by_method.items()}
    npz_path = output_dir / "coords.npz"
    np.savez(npz_path, **arrays)
    frames = [
        pd.DataFrame({"layer": layer, "method": method, "unit": np.arange(len(points)), "x": points[:, 0], "y": points[:, 1]})
        for layer, by_method in coords.items()
        for method, points in by_method.items()
    ]
    csv_path = output_dir / "coords.csv"
    pd.concat(frames, ignore_index=True).to_csv(csv_path, index=False)
    return npz_path, csv_path


def layer_figure_groups(profiles: Profiles, layer_groups: Sequence[str] | int = LAYER_FIGURE_GROUPS) -> list[int]:
    """Indices into ``profiles.groups`` of the rows of the layers figure, in the file's order.

    ``layer_groups`` names the groups, or is how many to take: those with the most frames
    (summed over layers; ties by the file's order), whose profiles are the best estimated.

    Raises:
        ValueError: a named group is not in the profiles.
    """
    groups = profiles.groups
    if isinstance(layer_groups, int):
        frames = sum(profiles[layer].counts for layer in profiles.layers)
        return sorted(np.argsort(-frames, kind="stable")[:layer_groups].tolist())
    unknown = [group for group in layer_groups if group not in groups]
    if unknown:
        raise ValueError(f"layer_groups {unknown} are not groups of the profiles; they are {groups}")
    return [groups.index(group) for group in layer_groups]


def write_figures(
    profiles: Profiles,
    coords: Mapping[str, Mapping[str, NDArray[np.float64]]],
    output_dir: Path,
    formats: Sequence[str] = ("png",),
    style: MapStyle = MapStyle(),
    layer_groups: Sequence[str] | int = LAYER_FIGURE_GROUPS,
) -> list[Path]:
    """Per layer and method a :func:`plot_maps` figure of every group; per method a
    :func:`plot_layers` figure of the groups :func:`layer_figure_groups` picks."""
    written = []
    panels = profiles.panels()
    labels = panels.labels
    methods = list(dict.fromkeys(method for by_method in coords.values() for method in by_method))
    for layer, by_method in coords.items():
        values = profiles.matrix(layer).T
        for method, points in by_method.items():
            figure = plot_maps(points, values, panels, colorbar_label=profiles.quantity, style=style, title=f"{layer}: {method} layout")
            written += [save_figure(figure, output_dir / "maps" / f"{layer}__{method}.{suffix}") for suffix in formats]
    rows = layer_figure_groups(profiles, layer_groups)
    rule = "chosen" if not isinstance(layer_groups, int) else "with the most frames"
    for method in methods:
        layers = {layer: (by_method[method], profiles.matrix(layer).T[rows]) for layer, by_method in coords.items()}
        title = f"{method} layouts: {len(rows)} of {len(labels)} groups ({rule}); all in maps/; each layer on its own colour scale"
        figure = plot_layers(
            layers, [labels[row] for row in rows], colorbar_label=profiles.quantity, share_scale=False, style=replace(style, show_units=False), title=title
        )
        written += [save_figure(figure, output_dir / f"layers__{method}.{suffix}") for suffix in formats]
    return written


def make_maps(
    profiles_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    layouts: Sequence[str] = ("pca", "som", "tsne", "random"),
    layers: Sequence[str] | None = None,
    *,
    metric: str = "cosine",
    grid_shape: Sequence[int] | None = None,
    snap: bool = False,
    seed: int = 0,
    method_options: Mapping[str, Mapping] | None = None,
    formats: Sequence[str] = ("png",),
    style: MapStyle = MapStyle(),
    quality: Mapping | None = None,
    layer_groups: Sequence[str] | int = LAYER_FIGURE_GROUPS,
) -> pd.DataFrame:
    """Layouts, maps, coordinates and the quality table of a profiles file (see the module notes).

    Args:
        profiles_path: an NPZ written by ``Profiles.save`` (time-independent profiles).
        output_dir: where the files go (created if needed).
        layouts: layout methods.
        layers: layers to map; default every layer of the file.
        metric, grid_shape, snap, seed, method_options: as in :func:`layer_layouts`.
        formats: figure formats, ``"png"`` and/or ``"svg"``.
        style: how maps are drawn.
        quality: ``n_neighbors`` and ``resolution`` of :func:`quality_table`.
        layer_groups: the rows of the layers figures (see :func:`layer_figure_groups`).

    Returns:
        The quality table (also written as ``quality.csv`` and ``quality.md``).
    """
    source = f"profiles file {profiles_path}"
    profiles = Profiles.load(profiles_path)
    bad_formats = [suffix for suffix in formats if suffix not in ("png", "svg")]
    if bad_formats:
        raise ValueError(f"figure formats must be png or svg; got {bad_formats}")
    if len(profiles.groups) < 2:
        raise ValueError(f"{source} has {len(profiles.groups)} groups with frames; maps need at least 2")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    coords, seconds = layer_layouts(
        profiles,
        list(layers) if layers else profiles.layers,
        layouts,
        metric=metric,
        grid_shape=grid_shape,
        snap=snap,
        seed=seed,
        method_options=method_options,
        source=source,
    )
    write_coords(coords, output_dir)
    write_figures(profiles, coords, output_dir, formats, style, layer_groups)
    table = quality_table(profiles, coords, seconds, metric=metric, **dict(quality or {}))
    table.to_csv(output_dir / "quality.csv", index=False)
    (output_dir / "quality.md").write_text(markdown(table) + "\n")
    return table


def maps_from_config(config: Mapping) -> pd.DataFrame:
    """:func:`make_maps` with the options of ``conf/maps.yaml`` as a plain mapping."""
    return make_maps(
        config["profiles"],
        config["output_dir"],
        layouts=config["layouts"],
        layers=config.get("layers"),
        metric=config.get("metric", "cosine"),
        grid_shape=config.get("grid_shape"),
        snap=config.get("snap", False),
        seed=config.get("seed", 0),
        method_options=config.get("method_options"),
        formats=config.get("formats", ("png",)),
        style=MapStyle(**config.get("style", {})),
        quality=config.get("quality"),
        layer_groups=config.get("layer_groups") or LAYER_FIGURE_GROUPS,
    )


def markdown(table: pd.DataFrame) -> str:
    """A table as GitHub Markdown with 3 decimals."""
    return table.to_markdown(index=False, floatfmt=".3f")


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="maps")
@task_wrapper("tmaps-maps")
def main(cfg: DictConfig) -> None:
    """``tmaps-maps profiles=path.npz layouts=[grid,som,pca,umap] layers=[...]``: maps and layout quality of a profiles file."""
    options = OmegaConf.to_container(cfg, resolve=True)
    table = maps_from_config(options)
    print(f"maps, coordinates and quality of {options['profiles']} in {options['output_dir']}")
    print(markdown(table))


if __name__ == "__main__":
    main()
