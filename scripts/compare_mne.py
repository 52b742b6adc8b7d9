"""tmaps' topographic maps next to MNE-Python's ``plot_topomap`` on the same values (docs/maps.md).

    pip install -e ".[mne]"
    python scripts/compare_mne.py [--profiles NAPS.npz --layer conv3 --layout som] [--out docs/figures/mne_vs_tmaps.png]

Top row: :func:`tmaps.introspect.plot_maps` with its default style. Bottom row:
``mne.viz.plot_topomap`` with its defaults (Clough-Tocher interpolation, 6 contours, head
outline) but for ``extrapolate="local"`` (its default for MEG; the EEG default ``"head"``
extrapolates streaks across a head that a layout does not fill) and one-pixel sensor marks
(its dots hide a 192-unit layout), the units placed as sensors at the same map positions and
on the same symmetric colour scale. Without ``--profiles`` the values are
profiles with planted structure on a SOM layout. It also times drawing every group of the
layer both ways (CPU seconds, one PNG each) and prints the ratio last.
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path

import mne
import numpy as np
from matplotlib.figure import Figure

from tmaps.introspect import Profiles, compute_layout, plot_maps, save_figure
from tmaps.introspect.planted import make_planted_profiles
from tmaps.introspect.render import MapStyle, figure_image, group_order, map_points

HEAD_RADIUS = 0.095  # MNE's default sphere, metres


def mne_maps(points: np.ndarray, values: np.ndarray, labels: list[str], limit: float, ncols: int) -> Figure:
    """``mne.viz.plot_topomap`` once per group, one axes each, units as sensors inside MNE's head."""
    positions = (points - 0.5) * 2 * HEAD_RADIUS * 0.9
    nrows = math.ceil(len(values) / ncols)
    figure = Figure(figsize=(1.65 * ncols + 1.0, 1.8 * nrows + 0.5), dpi=100, layout="constrained")
    panels = figure.subplots(nrows, ncols, squeeze=False)
    for axes in panels.flat[len(values) :]:
        axes.set_axis_off()
    for axes, row, label in zip(panels.flat, values, labels):
        image, _ = mne.viz.plot_topomap(row, positions, axes=axes, vlim=(-limit, limit), cmap="RdBu_r", show=False, sensors="k,", extrapolate="local")
        axes.set_title(label, fontsize=8)
    figure.colorbar(image, ax=panels, shrink=0.6, label="value")
    return figure


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", help="a Profiles NPZ (tmaps-introspect or a run's profiles/); default planted profiles")
    parser.add_argument("--layer", default="conv3")
    parser.add_argument("--layout", default="som")
    parser.add_argument("--groups", type=int, default=6, help="groups shown side by side")
    parser.add_argument("--out", default="docs/figures/mne_vs_tmaps.png")
    args = parser.parse_args()
    if args.profiles:
        profiles = Profiles.load(args.profiles)
        matrix, labels = profiles.matrix(args.layer), profiles.groups
        source = f"{args.layer} of {args.profiles}"
    else:
        matrix, _, _ = make_planted_profiles(192, n_groups=58, seed=0)
        labels, source = [f"g{group}" for group in range(matrix.shape[1])], "planted profiles, 192 units"
    coords = compute_layout(args.layout, matrix)
    values = matrix.T
    shown = group_order(values)[: args.groups]
    limit = float(np.abs(values[shown]).max())
    title = f"tmaps ({source}, {args.layout} layout)"
    ours = plot_maps(coords, values[shown], [labels[group] for group in shown], order=False, ncols=args.groups, limit=limit, title=title)
    theirs = mne_maps(map_points(coords), values[shown], [labels[group] for group in shown], limit, args.groups)
    theirs.suptitle("mne.viz.plot_topomap, same values and positions")
    top, bottom = figure_image(ours), figure_image(theirs)
    width = max(top.shape[1], bottom.shape[1])
    pad = lambda image: np.pad(image, ((0, 0), (0, width - image.shape[1]), (0, 0)), constant_values=255)  # noqa: E731
    both = Figure(figsize=(width / 100, (top.shape[0] + bottom.shape[0]) / 100), dpi=100)
    both.figimage(np.concatenate([pad(top), pad(bottom)]), origin="upper")
    print(f"side by side: {save_figure(both, Path(args.out))}")

    all_groups = [labels[group] for group in range(len(values))]
    started = time.process_time()
    png_bytes(plot_maps(coords, values, all_groups, style=MapStyle()))
    tmaps_seconds = time.process_time() - started
    started = time.process_time()
    png_bytes(mne_maps(map_points(coords), values, all_groups, float(np.abs(values).max()), math.ceil(math.sqrt(len(values)))))
    mne_seconds = time.process_time() - started
    print(f"all {len(values)} groups, CPU seconds: tmaps {tmaps_seconds:.2f}, MNE {mne_seconds:.2f}")
    print(f"MNE / tmaps drawing time: {mne_seconds / tmaps_seconds:.1f}x")


if __name__ == "__main__":
    main()
