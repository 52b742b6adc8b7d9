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
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray
from PIL import Image
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.interpolate import CloughTocher2DInterpolator, LinearNDInterpolator, RBFInterpolator
from scipy.spatial import ConvexHull, Delaunay, QhullError, cKDTree
from scipy.spatial.distance import pdist

from tmaps.introspect.layout import check_coords, unit_list

INTERPOLATIONS = ("linear", "cubic", "rbf")
MASKS = ("hull", "disc")
FIGURE_FORMATS = (".png", ".svg")
_FIGURE_DPI = 100
# zlib level 3 instead of PIL's 6: map PNGs encode in half the time for 3% more bytes.
_PNG_COMPRESSION = 3
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
class RenderedMaps:
    """Maps of one layout, ready to draw: what :meth:`MapStyle.render` returns.

    Attributes:
        images: ``(G, H, W)`` one image per group, NaN outside the map.
        points: ``(N, 2)`` the units in map space (:func:`map_points`).
        outline: ``(K, 2)`` closed polygon around the map (the hull, or the disc's rim).
        limit: ``max |value|`` over the images (1 for an all-zero or empty map).
    """

    images: NDArray[np.float64]
    points: NDArray[np.float64]
    outline: NDArray[np.float64]
    limit: float


@dataclass(frozen=True)
class MapStyle:
    """How :func:`plot_maps` and :func:`plot_layers` draw maps, by default like MNE's ``plot_topomap``.

    Attributes:
        resolution, interpolation, mask: as in :func:`render_map`; Clough-Tocher (``"cubic"``)
            by default, smooth like MNE's topomaps with no faceted triangles.
        cmap: a diverging matplotlib colour map; limits are symmetric around zero.
        contours: number of contour lines, evenly spaced between the colour limits (0: none).
        show_units: mark each unit's position with a dot.
        outline: draw the map's outline (hull polygon or disc).
        panel_size: side of one map in inches.
    """

    resolution: int = 96
    interpolation: str = "cubic"
    mask: str = "hull"
    cmap: str = "RdBu_r"
    contours: int = 6
    show_units: bool = True
    outline: bool = True
    panel_size: float = 1.5

    def __post_init__(self) -> None:
        _check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        _check_choice("mask", self.mask, MASKS)

    def render(self, coords: ArrayLike, values_by_group: ArrayLike) -> RenderedMaps:
        """Interpolate ``values_by_group (G, N)`` over the layout ``coords (N, 2)``."""
        images = render_map(
            coords, values_by_group, resolution=self.resolution, interpolation=self.interpolation, mask=self.mask
        )
        images = images.reshape(-1, self.resolution, self.resolution)
        limit = float(np.nanmax(np.abs(images))) if np.isfinite(images).any() else 0.0
        points = map_points(coords, mask=self.mask)
        return RenderedMaps(images, points, _outline(points, self.mask), limit or 1.0)


def _outline(points: NDArray[np.float64], mask: str) -> NDArray[np.float64]:
    if mask == "disc":
        angles = np.linspace(0, 2 * np.pi, _RIM_POINTS + 1)
        return 0.5 + 0.5 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    hull = ConvexHull(points).vertices
    return points[np.append(hull, hull[0])]


# Gaps between panels, as fractions of a panel's side: room for a title line above each panel.
_GAP_X = 0.08
_GAP_Y = 0.22


def draw_panels(
    axes: Axes,
    maps: RenderedMaps,
    groups: Sequence[int],
    labels: Sequence[str],
    ncols: int,
    limit: float,
    style: MapStyle,
) -> ScalarMappable:
    """The maps of ``groups`` as panels of one image on ``axes``, ``ncols`` panels a row.

    All panels are one ``imshow`` of a composite array (NaN between panels), one ``contour``
    call, one scatter of the units and one line collection of the outlines: a handful of
    artists whatever the number of groups, which is what makes drawing 10-20x faster than
    an axes per panel (``benchmarks/map_drawing.py``).

    Returns:
        The colour scale (for a colour bar).
    """
    nrows = math.ceil(len(groups) / ncols)
    side = style.resolution
    gap_x, gap_y = round(_GAP_X * side), round(_GAP_Y * side)
    height, width = nrows * side + (nrows - 1) * gap_y, ncols * side + (ncols - 1) * gap_x
    composite = np.full((height, width), np.nan)
    corners = []
    for index, group in enumerate(groups):
        row, col = divmod(index, ncols)
        top, left = (nrows - 1 - row) * (side + gap_y), col * (side + gap_x)
        composite[top : top + side, left : left + side] = maps.images[group]
        corners.append((left / side, top / side))
        axes.text(left / side + 0.5, (top + side) / side + 0.03, labels[group], ha="center", va="bottom", fontsize=8)
    corners = np.asarray(corners)
    extent = (0, width / side, 0, height / side)
    # Coloured here once, so that matplotlib only resamples pixels: colour-mapping a masked
    # float image while drawing takes longer than all else (benchmarks/map_drawing.py).
    colours = ScalarMappable(Normalize(-limit, limit), style.cmap)
    pixels = colours.to_rgba(composite, bytes=True)
    pixels[np.isnan(composite)] = 0
    axes.imshow(pixels, origin="lower", extent=extent, interpolation="nearest")
    if style.contours:
        centres_x, centres_y = (np.arange(width) + 0.5) / side, (np.arange(height) + 0.5) / side
        levels = np.linspace(-limit, limit, style.contours + 2)[1:-1]
        axes.contour(centres_x, centres_y, composite, levels=levels, colors="k", linewidths=0.4, alpha=0.6)
    if style.show_units:
        dots = (maps.points[None] + corners[:, None]).reshape(-1, 2)
        axes.scatter(dots[:, 0], dots[:, 1], s=1.0, c="k", alpha=0.5, linewidths=0)
    if style.outline:
        axes.add_collection(LineCollection(maps.outline[None] + corners[:, None], colors="0.3", linewidths=0.8))
    axes.set_xlim(extent[0], extent[1])
    axes.set_ylim(extent[2], extent[3] + _GAP_Y)
    axes.set_aspect("equal")
    axes.set_axis_off()
    return colours


def _labels(group_labels: Sequence[str] | None, n_groups: int) -> list[str]:
    if group_labels is None:
        return [str(group) for group in range(n_groups)]
    if len(group_labels) != n_groups:
        raise ValueError(f"{len(group_labels)} group labels for {n_groups} groups")
    return [str(label) for label in group_labels]


# Figure margins in inches. Figures are laid out by hand: constrained layout would measure
# every artist at every draw, which costs as much as drawing the maps.
_MARGIN = 0.1
_BAR_SPACE = 1.1  # right of the maps: colour bar, its ticks and label
_BAR_WIDTH = 0.15
_LAYER_GAP = 0.25  # between the columns of plot_layers
_LAYER_TITLE = 0.3
_LAYER_BAR_SPACE = 0.75  # below each column of plot_layers
_TITLE_SIZE = 11


def _panels_inches(nrows: int, ncols: int, panel_size: float) -> tuple[float, float]:
    """Width and height of ``draw_panels``' axes in inches, so that its panels are ``panel_size`` square."""
    return (ncols * (1 + _GAP_X) - _GAP_X) * panel_size, nrows * (1 + _GAP_Y) * panel_size


def _titled_figure(width: float, height: float, title: str | None) -> tuple[Figure, float]:
    """A figure of ``width`` x ``height`` inches plus room above for ``title``; returns it and that room."""
    lines = textwrap.wrap(title, max(20, int(width * 72 / (0.6 * _TITLE_SIZE)))) if title else []
    room = _MARGIN + 0.25 * len(lines)
    figure = Figure(figsize=(width, height + room), dpi=_FIGURE_DPI)
    if lines:
        figure.text(0.5, 1 - 0.5 * _MARGIN / (height + room), "\n".join(lines), ha="center", va="top", fontsize=_TITLE_SIZE)
    return figure, room


def _add_axes(figure: Figure, left: float, bottom: float, width: float, height: float) -> Axes:
    """Axes at a rectangle given in inches from the figure's lower left corner."""
    figure_width, figure_height = figure.get_size_inches()
    return figure.add_axes((left / figure_width, bottom / figure_height, width / figure_width, height / figure_height))


def plot_maps(
    coords: ArrayLike,
    values_by_group: ArrayLike,
    group_labels: Sequence[str] | None = None,
    *,
    order: bool = True,
    ncols: int | None = None,
    style: MapStyle = MapStyle(),
    title: str | None = None,
    limit: float | None = None,
    value_label: str = "value",
) -> Figure:
    """One topographic map per group over a single layout, sharing one symmetric colour scale.

    Colours are a diverging map centred on zero with limits ``±limit``, by default
    ``max |value|`` over all panels, so panels compare directly. Give ``limit`` to share a
    scale with other figures, e.g. the frames of an evolution.

    Args:
        coords: ``(N, 2)`` layout.
        values_by_group: ``(G, N)`` e.g. a layer's profiles transposed.
        group_labels: ``G`` panel titles; default the group indices.
        order: order panels by :func:`group_order`; otherwise as given.
        ncols: panels per row; default about ``sqrt(G)``.
        style: how maps are rendered and drawn.
        title: figure title.
        limit: colour limit; default the largest absolute value of the maps.
        value_label: the colour bar's label.

    Returns:
        The figure.
    """
    values = np.atleast_2d(np.asarray(values_by_group, dtype=np.float64))
    labels = _labels(group_labels, len(values))
    panels = group_order(values) if order else None
    maps = style.render(coords, values)
    return plot_rendered(maps, labels, panels=panels, ncols=ncols, style=style, title=title, limit=limit, value_label=value_label)


def plot_rendered(
    maps: RenderedMaps,
    group_labels: Sequence[str] | None = None,
    *,
    panels: Sequence[int] | None = None,
    ncols: int | None = None,
    style: MapStyle = MapStyle(),
    title: str | None = None,
    limit: float | None = None,
    value_label: str = "value",
) -> Figure:
    """:func:`plot_maps` of maps already rendered by ``style.render``, e.g. to redraw them on another scale.

    Args:
        panels: the groups in the order drawn; default all, as rendered.
        Others: as in :func:`plot_maps`.
    """
    labels = _labels(group_labels, len(maps.images))
    groups = list(range(len(maps.images))) if panels is None else list(panels)
    n_groups = len(groups)
    ncols = min(ncols or math.ceil(math.sqrt(n_groups)), n_groups)
    nrows = math.ceil(n_groups / ncols)
    width, height = _panels_inches(nrows, ncols, style.panel_size)
    figure, _ = _titled_figure(width + 2 * _MARGIN + _BAR_SPACE, height + _MARGIN, title)
    axes = _add_axes(figure, _MARGIN, _MARGIN, width, height)
    colours = draw_panels(axes, maps, groups, labels, ncols, limit or maps.limit, style)
    bar_height = min(height - 0.2, 3.5)
    colour_bar = _add_axes(figure, _MARGIN + width + 0.2, _MARGIN + (height - bar_height) / 2, _BAR_WIDTH, bar_height)
    figure.colorbar(colours, cax=colour_bar, label=value_label)
    return figure
def plot_layers(
    layers: Mapping[str, tuple[ArrayLike, ArrayLike]],
    group_labels: Sequence[str] | None = None,
    *,
    order: bool = True,
    style: MapStyle = MapStyle(show_units=False),
    title: str | None = None,
    value_label: str = "value",
) -> Figure:
    """Maps of several layers side by side: one column per layer, one row per group.

    Each layer keeps its own symmetric colour scale (activations of different layers have
    different ranges). Rows are ordered by :func:`group_order` on all layers' values
    together, each layer's block scaled to unit norm so that no layer dominates. The figure
    grows with the groups: give it the few that matter (``tmaps-maps`` picks them by a rule).

    Args:
        layers: layer name -> ``(coords (N_l, 2), values_by_group (G, N_l))``; every layer
            has the same ``G`` groups.
        group_labels: ``G`` row labels; default the group indices.
        order, style, title, value_label: as in :func:`plot_maps`.

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
    width, height = _panels_inches(n_groups, 1, style.panel_size)
    figure, _ = _titled_figure(
        len(layers) * (width + _LAYER_GAP) - _LAYER_GAP + 2 * _MARGIN, _MARGIN + _LAYER_BAR_SPACE + height + _LAYER_TITLE, title
    )
    for column, (name, (coords, _)) in enumerate(layers.items()):
        left = _MARGIN + column * (width + _LAYER_GAP)
        axes = _add_axes(figure, left, _MARGIN + _LAYER_BAR_SPACE, width, height)
        maps = style.render(coords, blocks[name])
        colours = draw_panels(axes, maps, groups, labels if column == 0 else [""] * n_groups, 1, maps.limit, style)
        axes.set_title(name, fontsize=9)
        colour_bar = _add_axes(figure, left + 0.1 * width, _MARGIN + _LAYER_BAR_SPACE - 0.25, 0.8 * width, 0.1)
        figure.colorbar(colours, cax=colour_bar, orientation="horizontal", label=value_label)
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
    options = {"pil_kwargs": {"compress_level": _PNG_COMPRESSION}} if suffix == ".png" else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with mpl.rc_context({"svg.hashsalt": "tmaps"}):
        figure.savefig(path, metadata=metadata, dpi=_FIGURE_DPI, **options)
    return path


def figure_image(figure: Figure) -> NDArray[np.uint8]:
    """The figure rasterized to an RGB image ``(height, width, 3)``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_FIGURE_DPI, metadata={"Software": None}, pil_kwargs={"compress_level": _PNG_COMPRESSION})
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
