"""Topographic activation maps: unit values interpolated over a layout, drawn like EEG topographies.

:func:`render_map` turns a layout ``(N, 2)`` and one value per unit into an image: the
layout is scaled into the unit square (aspect kept), values are interpolated onto a
``resolution x resolution`` pixel grid and pixels outside the map (the layout's convex hull,
or a head-like disc) are NaN. Image row ``i`` is ``y = (i + 0.5) / resolution``, so images
are shown with ``origin="lower"``. :func:`plot_maps` draws one panel per group,
:func:`plot_layers` puts layers side by side, :func:`save_figure` writes PNG or SVG files
that are byte-identical for identical inputs, and :func:`save_gif` animates maps across
epochs or checkpoints.

Figures are built as ``matplotlib.figure.Figure`` objects, never through pyplot, so that
library code leaves no global figure state behind.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Circle
from numpy.typing import ArrayLike, NDArray
from PIL import Image
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.interpolate import CloughTocher2DInterpolator, LinearNDInterpolator, RBFInterpolator
from scipy.spatial import Delaunay, QhullError, cKDTree
from scipy.spatial.distance import pdist

from tmaps.introspect.layout import check_coords, unit_list

INTERPOLATIONS = ("linear", "cubic", "rbf")
MASKS = ("hull", "disc")
FIGURE_FORMATS = (".png", ".svg")
_FIGURE_DPI = 100
_RIM_POINTS = 64
_RIM_NEIGHBOURS = 3


def map_points(coords: ArrayLike, *, mask: str = "hull", padding: float = 0.05) -> NDArray[np.float64]:
    """A layout scaled into the unit square, its aspect ratio kept.

    With ``mask="hull"`` the layout's bounding box is centred and its longer side spans
    ``[padding, 1 - padding]``; with ``mask="disc"`` the unit farthest from the box centre
    lies on the circle of radius ``0.5 - padding`` around ``(0.5, 0.5)``.

    Args:
        coords: ``(N, 2)``.

    Returns:
        ``(N, 2)`` points in ``[0, 1]**2``.
    """
    _check_choice("mask", mask, MASKS)
    points = check_coords(coords)
    centre = (points.min(axis=0) + points.max(axis=0)) / 2
    offsets = points - centre
    reach = np.linalg.norm(offsets, axis=1).max() if mask == "disc" else np.ptp(points, axis=0).max() / 2
    return 0.5 + offsets * ((0.5 - padding) / reach if reach > 0 else 1.0)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")


def render_map(
    coords: ArrayLike,
    values: ArrayLike,
    *,
    resolution: int = 128,
    interpolation: str = "linear",
    mask: str = "hull",
    padding: float = 0.05,
) -> NDArray[np.float64]:
    """Interpolate unit values over a layout onto a pixel grid.

    Interpolation is piecewise linear or Clough-Tocher cubic on the Delaunay triangulation
    of the units (``"linear"``, ``"cubic"``) or a thin-plate-spline RBF (``"rbf"``). With
    ``mask="hull"`` pixels outside the units' convex hull are NaN. With ``mask="disc"`` the
    map fills the disc of :func:`map_points`, as EEG topographies fill the head: a ring of
    rim points around the disc takes the mean value of the 3 units nearest to each, so that
    interpolation reaches the rim and the map fades towards its neighbourhood's level.

    Args:
        coords: ``(N, 2)`` layout.
        values: ``(N,)`` one value per unit, or ``(G, N)`` one row per group.
        resolution: image side in pixels.
        interpolation: ``"linear"``, ``"cubic"`` or ``"rbf"``.
        mask: ``"hull"`` or ``"disc"``.
        padding: margin around the map, a fraction of the image side.

    Returns:
        ``(resolution, resolution)`` image, or ``(G, resolution, resolution)`` for ``(G, N)``
        values; NaN outside the mask; row ``i`` is ``y = (i + 0.5) / resolution``.
    """
    _check_choice("interpolation", interpolation, INTERPOLATIONS)
    points = map_points(coords, mask=mask, padding=padding)
    unit_values = np.asarray(values, dtype=np.float64)
    if unit_values.ndim not in (1, 2) or unit_values.shape[-1] != len(points):
        raise ValueError(
            f"values must have shape ({len(points)},) or (n_groups, {len(points)}); got {unit_values.shape}"
        )
    per_unit = np.atleast_2d(unit_values).T
    bad_units = np.flatnonzero(~np.isfinite(per_unit).all(axis=1))
    if bad_units.size:
        raise ValueError(f"values are NaN or infinite for {bad_units.size} units (units {unit_list(bad_units)})")
    nodes, node_values = (points, per_unit) if mask == "hull" else _with_rim(points, per_unit)
    try:
        triangulation = Delaunay(nodes)
    except QhullError as error:
        raise ValueError(f"cannot triangulate the layout of {len(points)} units (all on one line?): {error}") from None
    centres = (np.arange(resolution) + 0.5) / resolution
    pixels = np.stack(np.meshgrid(centres, centres), axis=-1).reshape(-1, 2)
    if interpolation == "rbf":
        image = RBFInterpolator(nodes, node_values, kernel="thin_plate_spline")(pixels)
    else:
        interpolator = LinearNDInterpolator if interpolation == "linear" else CloughTocher2DInterpolator
        image = interpolator(triangulation, node_values)(pixels)
    outside = (
        triangulation.find_simplex(pixels) < 0 if mask == "hull" else np.linalg.norm(pixels - 0.5, axis=1) > 0.5
    )
    image[outside] = np.nan
    images = image.T.reshape(-1, resolution, resolution)
    return images[0] if unit_values.ndim == 1 else images


def _with_rim(
    points: NDArray[np.float64], per_unit: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Units plus a polygon of rim points that encloses the disc of radius 0.5, valued from nearby units."""
    angles = np.linspace(0, 2 * np.pi, _RIM_POINTS, endpoint=False)
    radius = 0.5 / np.cos(np.pi / _RIM_POINTS)
    rim = 0.5 + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    _, nearest = cKDTree(points).query(rim, k=min(_RIM_NEIGHBOURS, len(points)))
    rim_values = per_unit[nearest.reshape(len(rim), -1)].mean(axis=1)
    return np.concatenate([points, rim]), np.concatenate([per_unit, rim_values])


def group_order(values_by_group: ArrayLike) -> NDArray[np.int64]:
    """Order groups so that groups with similar maps are neighbours.

    Average-linkage hierarchical clustering of the groups' value vectors under cosine
    distance, leaves in optimal order (scipy). A group whose values are all zero has no
    direction; its cosine distance to every group counts as 1 (orthogonal).

    Args:
        values_by_group: ``(G, N)``.

    Returns:
        ``(G,)`` permutation of the groups.
    """
    vectors = np.asarray(values_by_group, dtype=np.float64)
    if len(vectors) < 3:
        return np.arange(len(vectors))
    distances = np.nan_to_num(pdist(vectors, "cosine"), nan=1.0)
    return leaves_list(linkage(distances, method="average", optimal_ordering=True))


@dataclass(frozen=True)
class MapStyle:
    """How :func:`plot_maps` and :func:`plot_layers` draw maps.

    Attributes:
        resolution, interpolation, mask: as in :func:`render_map`.
        cmap: a diverging matplotlib colour map; limits are symmetric around zero.
        show_units: mark each unit's position.
        panel_size: side of one map in inches.
    """

    resolution: int = 96
    interpolation: str = "linear"
    mask: str = "hull"
    cmap: str = "RdBu_r"
    show_units: bool = True
    panel_size: float = 1.5

    def __post_init__(self) -> None:
        _check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        _check_choice("mask", self.mask, MASKS)

    def render(self, coords: ArrayLike, values_by_group: NDArray[np.float64]) -> tuple[NDArray, NDArray, float]:
        """Images ``(G, H, W)``, unit points in map space ``(N, 2)`` and the symmetric colour limit."""
        images = render_map(
            coords, values_by_group, resolution=self.resolution, interpolation=self.interpolation, mask=self.mask
        )
        limit = float(np.nanmax(np.abs(images))) if np.isfinite(images).any() else 0.0
        return images, map_points(coords, mask=self.mask), limit or 1.0

    def draw(self, axes: Axes, image: NDArray[np.float64], points: NDArray[np.float64], limit: float) -> AxesImage:
        """One map on ``axes``; returns the image artist (for a colour bar)."""
        artist = axes.imshow(
            image, origin="lower", extent=(0, 1, 0, 1), cmap=self.cmap, vmin=-limit, vmax=limit, interpolation="nearest"
        )
        if self.show_units:
            axes.scatter(points[:, 0], points[:, 1], s=1.5, c="k", alpha=0.4, linewidths=0)
        if self.mask == "disc":
            axes.add_patch(Circle((0.5, 0.5), 0.5, fill=False, linewidth=0.8, color="0.3"))
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_axis_off()
        return artist

    def figure(self, nrows: int, ncols: int) -> tuple[Figure, NDArray]:
        """An empty figure with a ``(nrows, ncols)`` array of axes, room left for labels and colour bars."""
        figure = Figure(
            figsize=(ncols * self.panel_size + 0.8, nrows * self.panel_size + 0.4),
            dpi=_FIGURE_DPI,
            layout="constrained",
        )
        return figure, figure.subplots(nrows, ncols, squeeze=False)


def _labels(group_labels: Sequence[str] | None, n_groups: int) -> list[str]:
    if group_labels is None:
        return [str(group) for group in range(n_groups)]
    if len(group_labels) != n_groups:
        raise ValueError(f"{len(group_labels)} group labels for {n_groups} groups")
    return [str(label) for label in group_labels]


def plot_maps(
    coords: ArrayLike,
    values_by_group: ArrayLike,
    group_labels: Sequence[str] | None = None,
    *,
    order: bool = True,
    ncols: int | None = None,
    style: MapStyle = MapStyle(),
    title: str | None = None,
) -> Figure:
    """One topographic map per group over a single layout, sharing one symmetric colour scale.

    Colours are a diverging map centred on zero with limits ``±max |value|`` over all panels,
    so panels compare directly.

    Args:
        coords: ``(N, 2)`` layout.
        values_by_group: ``(G, N)`` e.g. a layer's profiles transposed.
        group_labels: ``G`` panel titles; default the group indices.
        order: order panels by :func:`group_order`; otherwise as given.
        ncols: panels per row; default about ``sqrt(G)``.
        style: how maps are rendered and drawn.
        title: figure title.

    Returns:
        The figure.
    """
    values = np.atleast_2d(np.asarray(values_by_group, dtype=np.float64))
    labels = _labels(group_labels, len(values))
    groups = group_order(values) if order else np.arange(len(values))
    images, points, limit = style.render(coords, values)
    ncols = ncols or math.ceil(math.sqrt(len(values)))
    figure, panels = style.figure(math.ceil(len(values) / ncols), ncols)
    for axes in panels.flat[len(groups) :]:
        axes.set_axis_off()
    for axes, group in zip(panels.flat, groups):
        artist = style.draw(axes, images[group], points, limit)
        axes.set_title(labels[group], fontsize=8)
    figure.colorbar(artist, ax=panels, shrink=0.6)
    if title:
        figure.suptitle(title)
    return figure


def plot_layers(
    layers: Mapping[str, tuple[ArrayLike, ArrayLike]],
    group_labels: Sequence[str] | None = None,
    *,
    order: bool = True,
    style: MapStyle = MapStyle(show_units=False),
    title: str | None = None,
) -> Figure:
    """Maps of several layers side by side: one column per layer, one row per group.

    Each layer keeps its own symmetric colour scale (activations of different layers have
    different ranges). Rows are ordered by :func:`group_order` on all layers' values
    together, each layer's block scaled to unit norm so that no layer dominates.

    Args:
        layers: layer name -> ``(coords (N_l, 2), values_by_group (G, N_l))``; every layer
            has the same ``G`` groups.
        group_labels: ``G`` row labels; default the group indices.
        order, style, title: as in :func:`plot_maps`.

    Returns:
        The figure.
    """
    if not layers:
        raise ValueError("plot_layers needs at least one layer")
    blocks = {name: np.atleast_2d(np.asarray(values, dtype=np.float64)) for name, (_, values) in layers.items()}
    group_counts = {name: len(block) for name, block in blocks.items()}
    if len(set(group_counts.values())) != 1:
        raise ValueError(f"every layer needs the same groups; group counts per layer: {group_counts}")
    n_groups = next(iter(group_counts.values()))
    labels = _labels(group_labels, n_groups)
    joined = np.concatenate([block / (np.linalg.norm(block) or 1.0) for block in blocks.values()], axis=1)
    groups = group_order(joined) if order else np.arange(n_groups)
    figure, panels = style.figure(n_groups, len(layers))
    for column, (name, (coords, _)) in enumerate(layers.items()):
        images, points, limit = style.render(coords, blocks[name])
        for row, group in enumerate(groups):
            axes = panels[row, column]
            artist = style.draw(axes, images[group], points, limit)
            if column == 0:
                axes.text(-0.05, 0.5, labels[group], transform=axes.transAxes, ha="right", va="center", fontsize=8)
        panels[0, column].set_title(name, fontsize=9)
        figure.colorbar(artist, ax=panels[:, column], shrink=0.6, location="bottom")
    if title:
        figure.suptitle(title)
    return figure


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write a figure as PNG or SVG (by the file suffix), byte-identical for identical figures.

    PNG files carry no software or date entries; SVG files no date, and their element ids
    are derived from a fixed salt instead of a random one.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    _check_choice("figure file suffix", suffix, FIGURE_FORMATS)
    metadata = {"Software": None} if suffix == ".png" else {"Date": None, "Creator": None}
    path.parent.mkdir(parents=True, exist_ok=True)
    with mpl.rc_context({"svg.hashsalt": "tmaps"}):
        figure.savefig(path, metadata=metadata, dpi=_FIGURE_DPI)
    return path


def figure_image(figure: Figure) -> NDArray[np.uint8]:
    """The figure rasterized to an RGB image ``(height, width, 3)``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_FIGURE_DPI, metadata={"Software": None})
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB"))


def save_gif(frames: Sequence[Figure | ArrayLike], path: str | Path, fps: float = 2.0) -> Path:
    """An animated GIF, e.g. of one layer's maps across epochs or checkpoints.

    Args:
        frames: figures or RGB(A) ``uint8`` images ``(height, width, 3 or 4)``, all the same size.
        path: the ``.gif`` file.
        fps: frames per second; the animation loops forever.
    """
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    images = [figure_image(frame) if isinstance(frame, Figure) else np.asarray(frame) for frame in frames]
    for index, image in enumerate(images):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(
                f"frame {index} must be a figure or a uint8 image (height, width, 3 or 4); "
                f"got {image.dtype} {image.shape}"
            )
        if image.shape[:2] != images[0].shape[:2]:
            raise ValueError(
                f"frame {index} is {image.shape[1]}x{image.shape[0]} pixels, "
                f"frame 0 is {images[0].shape[1]}x{images[0].shape[0]}"
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first, *rest = (Image.fromarray(image[..., :3]) for image in images)
    first.save(path, save_all=True, append_images=rest, duration=round(1000 / fps), loop=0)
    return path
