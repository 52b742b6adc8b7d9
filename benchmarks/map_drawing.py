"""Drawing the figures of ``tmaps-maps``: all panels in one axes against an axes per panel.

Usage:
    python benchmarks/map_drawing.py [--layers 4] [--layouts 1] [--groups 58]

The workload is what ``tmaps-maps`` draws for a quickstart checkpoint's phoneme NAPs: the
small model's layers (the first ``--layers`` of 8 x 192, 2 x 512 and 30 units; all 11 with
``--layers 11``), ``--groups`` phonemes, per layer and layout one figure with a map per
phoneme, per layout one figure of all layers side by side. The default keeps the baseline
under a minute of CPU time. Profiles with planted structure
(``tmaps.introspect.planted.make_planted_profiles``) on a SOM layout stand in for real ones;
drawing time does not depend on the values.

The baseline is the drawing code tmaps used before (kept below): linear interpolation, one
matplotlib axes per panel with its own image, dots and title, and every phoneme in the
layers figure. The new code draws Clough-Tocher maps with contour lines and outlines (more
work per map), all panels of a figure into one axes (``plot_map`` each, its image coloured
before drawing, no autoscaling per map), and the 12 phonemes with the most frames
in the layers figure (the rule of ``tmaps-maps``). Both write PNGs through
:func:`tmaps.introspect.render.save_figure`.

Times are CPU seconds of this process (``time.process_time``), so that other jobs on a
shared machine distort them less than wall time. Drawing is single-threaded; thread pools
(OpenMP, BLAS) are held to one thread while timing, since their idle workers, still spinning
after the layouts, added seconds of CPU time at random to single calls. The last line is the speed-up of the whole
figure set; the target is >= 10x.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits

from tmaps.commands.maps import LAYER_FIGURE_GROUPS
from tmaps.introspect.layout import compute_layout
from tmaps.introspect.planted import make_planted_profiles
from tmaps.introspect.render import group_order, map_points, plot_layers, plot_maps, render_map, save_figure

LAYER_UNITS = [192] * 8 + [512, 512, 30]
TARGET = 10.0


def baseline_panel(axes, image: np.ndarray, points: np.ndarray, limit: float, show_units: bool) -> object:
    artist = axes.imshow(image, origin="lower", extent=(0, 1, 0, 1), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    if show_units:
        axes.scatter(points[:, 0], points[:, 1], s=1.5, c="k", alpha=0.4, linewidths=0)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_axis_off()
    return artist


def baseline_figure(nrows: int, ncols: int) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(ncols * 1.5 + 0.8, nrows * 1.5 + 0.4), dpi=100, layout="constrained")
    return figure, figure.subplots(nrows, ncols, squeeze=False)


def baseline_render(coords: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    images = render_map(coords, values, resolution=96, interpolation="linear")
    return images, map_points(coords), float(np.nanmax(np.abs(images))) or 1.0


def baseline_maps(coords: np.ndarray, values: np.ndarray, labels: list[str], title: str) -> Figure:
    """The former ``plot_maps``: an axes per group."""
    groups = group_order(values)
    images, points, limit = baseline_render(coords, values)
    ncols = math.ceil(math.sqrt(len(values)))
    figure, panels = baseline_figure(math.ceil(len(values) / ncols), ncols)
    for axes in panels.flat[len(groups) :]:
        axes.set_axis_off()
    for axes, group in zip(panels.flat, groups):
        artist = baseline_panel(axes, images[group], points, limit, show_units=True)
        axes.set_title(labels[group], fontsize=8)
    figure.colorbar(artist, ax=panels, shrink=0.6)
    figure.suptitle(title)
    return figure


def baseline_layers(layers: dict[str, tuple[np.ndarray, np.ndarray]], labels: list[str], title: str) -> Figure:
    """The former ``plot_layers``: an axes per layer and group, every group."""
    joined = np.concatenate([values / np.linalg.norm(values) for _, values in layers.values()], axis=1)
    groups = group_order(joined)
    figure, panels = baseline_figure(len(groups), len(layers))
    for column, (name, (coords, values)) in enumerate(layers.items()):
        images, points, limit = baseline_render(coords, values)
        for row, group in enumerate(groups):
            artist = baseline_panel(panels[row, column], images[group], points, limit, show_units=False)
            if column == 0:
                panels[row, column].text(-0.05, 0.5, labels[group], transform=panels[row, column].transAxes, ha="right", va="center", fontsize=8)
        panels[0, column].set_title(name, fontsize=9)
        figure.colorbar(artist, ax=panels[:, column], shrink=0.6, location="bottom")
    figure.suptitle(title)
    return figure


def timed(draw, path: Path) -> float:
    started = time.process_time()
    save_figure(draw(), path)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help=f"layers, at most {len(LAYER_UNITS)}")
    parser.add_argument("--layouts", type=int, default=1, help="layouts per layer (tmaps-maps layouts=[som,umap] is 2)")
    parser.add_argument("--groups", type=int, default=58, help="groups (phonemes) per map")
    args = parser.parse_args()
    labels = [f"ph{group}" for group in range(args.groups)]
    layers = {}
    for index, n_units in enumerate(LAYER_UNITS[: args.layers]):
        profiles, _, _ = make_planted_profiles(n_units, n_groups=args.groups, seed=index)
        layers[f"conv{index}"] = (compute_layout("som", profiles), profiles.T)
    counts = np.random.default_rng(0).integers(50, 5000, args.groups)
    shown = np.sort(np.argsort(-counts, kind="stable")[:LAYER_FIGURE_GROUPS])
    totals = {"baseline": 0.0, "composite": 0.0}
    with tempfile.TemporaryDirectory() as folder, threadpool_limits(limits=1):
        out = Path(folder)
        for layout in range(args.layouts):
            for name, (coords, values) in layers.items():
                title = f"{name}: layout {layout}"
                old = timed(lambda: baseline_maps(coords, values, labels, title), out / "old.png")
                new = timed(lambda: plot_maps(coords, values, labels, title=title, colorbar_label="NAP"), out / "new.png")
                totals["baseline"] += old
                totals["composite"] += new
                print(f"maps of {name} ({len(values)} groups, {values.shape[1]} units): {old:.2f} s -> {new:.2f} s ({old / new:.1f}x)")
            old = timed(lambda: baseline_layers(layers, labels, "layers"), out / "old.png")
            subset = {name: (coords, values[shown]) for name, (coords, values) in layers.items()}
            shown_labels = [labels[group] for group in shown]
            new = timed(lambda: plot_layers(subset, shown_labels, title="layers", colorbar_label="NAP", share_scale=False), out / "new.png")
            totals["baseline"] += old
            totals["composite"] += new
            print(f"layers figure ({len(layers)} layers; {args.groups} groups -> {len(shown)}): {old:.2f} s -> {new:.2f} s ({old / new:.1f}x)")
    speedup = totals["baseline"] / totals["composite"]
    print(f"all figures: {totals['baseline']:.1f} s -> {totals['composite']:.1f} s CPU (target >= {TARGET:.0f}x)")
    print(f"map drawing speed-up: {speedup:.1f}x")


if __name__ == "__main__":
    main()
