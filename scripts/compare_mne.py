"""tmaps' topographic maps next to MNE-Python's ``plot_topomap`` on the same values (docs/maps.md).

    pip install -e ".[mne]"
    python scripts/compare_mne.py [--profiles NAPS.npz --layer conv3 --layout som] [--out docs/figures/mne_vs_tmaps.png]

Top row: :func:`tmaps.introspect.plot_map` with its default style. Bottom row:
``mne.viz.plot_topomap`` with its defaults (Clough-Tocher interpolation, 6 contours, head
outline) but for ``extrapolate="local"`` (its default for MEG; the EEG default ``"head"``
extrapolates streaks across a head that a layout does not fill) and one-pixel sensor marks
(its dots hide a 192-unit layout), the units placed as sensors at the same map positions and
on the same symmetric colour scale (tmaps' default: the 99th percentile of ``|values|``). Both
draw into axes of one figure and return their image. Without ``--profiles`` the values are
profiles with planted structure on a SOM layout. It also times drawing every group of the
layer both ways (CPU seconds, one PNG each) and prints the ratio last.
"""

from __future__ import annotations

import argparse
import io
import math
import time
from collections.abc import Sequence
from pathlib import Path

import mne
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tmaps.introspect import ColourScale, Profiles, compute_layout, plot_map, plot_maps, save_figure
from tmaps.introspect.planted import make_planted_profiles

HEAD_RADIUS = 0.095  # MNE's default sphere, metres


def mne_maps(axes: Sequence[Axes], positions: np.ndarray, values: np.ndarray, labels: list[str], limit: float):
    """``mne.viz.plot_topomap`` once per group into ``axes``, units as sensors inside MNE's head; the last image."""
    for ax, row, label in zip(axes, values, labels):
        image, _ = mne.viz.plot_topomap(row, positions, axes=ax, vlim=(-limit, limit), cmap="RdBu_r", show=False, sensors="k,", extrapolate="local")
        ax.set_title(label, fontsize=8)
    return image


def head_positions(map_positions: np.ndarray) -> np.ndarray:
    """Units at their tmaps map positions (the unit square) as sensor positions inside MNE's default head."""
    return (map_positions - 0.5) * 2 * HEAD_RADIUS * 0.9


def side_by_side(coords: np.ndarray, values: np.ndarray, labels: list[str], quantity: str, source: str) -> tuple[Figure, np.ndarray]:
    """tmaps' maps above MNE's of the same values, positions and colour scale; the figure and MNE's sensor positions."""
    scale = ColourScale.robust(values)
    figure = Figure(figsize=(1.65 * len(values) + 1.6, 4.6), dpi=100, layout="constrained")
    ours, theirs = figure.subfigures(2, 1)
    ours.suptitle(f"tmaps.introspect.plot_map ({source})", fontsize=10)
    theirs.suptitle(f"mne.viz.plot_topomap, same values, positions and colour scale (±{scale.limit:.3g}: {scale.source})", fontsize=10)
    drawn = [plot_map(row, coords, ax, limit=scale, title=label) for ax, row, label in zip(ours.subplots(1, len(values)), values, labels)]
    positions = head_positions(drawn[0].units.get_offsets().data)
    image = mne_maps(theirs.subplots(1, len(values)), positions, values, labels, scale.limit)
    for subfigure, mappable in ((ours, drawn[0].image), (theirs, image)):
        bar = subfigure.colorbar(mappable, ax=subfigure.axes, shrink=0.8)
        bar.set_label(quantity, fontsize=8)
        bar.ax.tick_params(labelsize=8)
    return figure, positions


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", help="a Profiles NPZ (tmaps-introspect or a run's profiles/); default planted profiles")
    parser.add_argument("--layer", default="conv3")
    parser.add_argument("--layout", default="som")
    parser.add_argument("--groups", type=int, default=6, help="the first groups, shown side by side")
    parser.add_argument("--out", default="docs/figures/mne_vs_tmaps.png")
    args = parser.parse_args()
    if args.profiles:
        profiles = Profiles.load(args.profiles)
        matrix, labels, quantity = profiles.matrix(args.layer), profiles.groups, profiles.quantity
        source = f"{args.layer} of {args.profiles}"
    else:
        matrix, _, _ = make_planted_profiles(192, n_groups=58, seed=0)
        labels, quantity = [f"g{group}" for group in range(matrix.shape[1])], "planted profile"
        source = "planted profiles, 192 units"
    coords = compute_layout(args.layout, matrix)
    values = matrix.T
    figure, positions = side_by_side(coords, values[: args.groups], labels[: args.groups], quantity, f"{source}, {args.layout} layout")
    print(f"side by side: {save_figure(figure, Path(args.out))}")

    started = time.process_time()
    png_bytes(plot_maps(coords, values, labels, colorbar_label=quantity))
    tmaps_seconds = time.process_time() - started
    started = time.process_time()
    ncols = math.ceil(math.sqrt(len(values)))
    everything = Figure(figsize=(1.65 * ncols + 1.0, 1.8 * math.ceil(len(values) / ncols) + 0.5), dpi=100, layout="constrained")
    panels = everything.subplots(math.ceil(len(values) / ncols), ncols, squeeze=False).flat
    for ax in panels[len(values) :]:
        ax.set_axis_off()
    image = mne_maps(panels, positions, values, labels, ColourScale.robust(values).limit)
    everything.colorbar(image, ax=everything.axes, shrink=0.6, label=quantity)
    png_bytes(everything)
    mne_seconds = time.process_time() - started
    print(f"all {len(values)} groups, CPU seconds: tmaps {tmaps_seconds:.2f}, MNE {mne_seconds:.2f}")
    print(f"MNE / tmaps drawing time: {mne_seconds / tmaps_seconds:.1f}x")


if __name__ == "__main__":
    main()
