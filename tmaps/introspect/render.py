"""Topographic activation maps: unit values interpolated over a layout, drawn like EEG topographies.

:func:`render_map` turns a layout ``(N, 2)`` and one value per unit into an image: the
layout is scaled into the unit square (aspect kept), values are interpolated onto a
``resolution x resolution`` pixel grid and pixels outside the map (the layout's convex hull,
or a head-like disc) are NaN. Image row ``i`` is ``y = (i + 0.5) / resolution``, so images
are shown with ``origin="lower"``. :func:`plot_map` draws one map into the caller's axes and
returns its artists, as ``mne.viz.plot_topomap`` does; the figures are built on it:
:func:`plot_maps` draws one panel per group, :func:`plot_layers` puts layers (or models) side
by side.

Figures follow one set of rules: the colour bar names the quantity; the colour scale is
symmetric and robust (:func:`robust_limit`: the 99th percentile of ``|values|``, so that a few
outlying units do not wash the maps out), stated on the figure (:class:`ColourScale`); maps
compared in one figure share it; text is at least :data:`FONT_SIZE` points. Panels can be
grouped into sections, e.g. phonemes by class (``Grouping.panels``).
:func:`save_figure` writes PNG or SVG files
that are byte-identical for identical inputs, and :func:`save_gif` animates maps across
epochs or checkpoints.

Figures are built as ``matplotlib.figure.Figure`` objects, never through pyplot, so that
library code leaves no global figure state behind.
"""

from __future__ import annotations

import io
import json
import math
import textwrap
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import PathCollection
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Normalize
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.text import Text
from numpy.typing import ArrayLike, NDArray
from PIL import Image
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.interpolate import CloughTocher2DInterpolator, LinearNDInterpolator, RBFInterpolator
from scipy.spatial import ConvexHull, Delaunay, QhullError, cKDTree
from scipy.spatial.distance import pdist

from tmaps.introspect.groups import Panels
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


COLOUR_PERCENTILE = 99.0


def robust_limit(values: ArrayLike, percentile: float = COLOUR_PERCENTILE) -> float:
    """A symmetric colour limit that a few outlying units cannot set: the ``percentile`` of ``|values|`` (1 for all-zero values)."""
    magnitudes = np.abs(np.asarray(values, dtype=np.float64))
    finite = magnitudes[np.isfinite(magnitudes)]
    return (float(np.percentile(finite, percentile)) if finite.size else 0.0) or 1.0


@dataclass(frozen=True)
class ColourScale:
    """A symmetric colour scale ``±limit`` and how its limit was chosen, which the figure states under its colour bar.

    Attributes:
        limit: values beyond ``±limit`` saturate.
        source: how the limit was chosen, e.g. ``"99th percentile of |values|"``; empty: not stated.
    """

    limit: float
    source: str = ""

    @classmethod
    def robust(cls, values: ArrayLike, percentile: float = COLOUR_PERCENTILE, scope: str = "") -> ColourScale:
        """:func:`robust_limit` of ``values``, its source saying so (``scope`` says over which maps, e.g. ``" of every column"``)."""
        return cls(robust_limit(values, percentile), f"{percentile:g}th percentile of |values|{scope}")

    def label(self, quantity: str) -> str:
        """A colour bar's label: the quantity, and on a line of its own the limit and its source."""
        return f"{quantity}\ncolour limit ±{self.limit:.3g}" + (f": {self.source}" if self.source else "")


def _scale(limit: float | ColourScale | None, values: ArrayLike, scope: str = "") -> ColourScale:
    if isinstance(limit, ColourScale):
        return limit
    if limit is None:
        return ColourScale.robust(values, scope=scope)
    if not limit > 0:
        raise ValueError(f"the colour limit must be > 0; got {limit}")
    return ColourScale(float(limit))


@dataclass(frozen=True)
class RenderedMaps:
    """Maps of one layout, ready to draw: what :meth:`MapStyle.render` returns.

    Attributes:
        images: ``(G, H, W)`` one image per group, NaN outside the map.
        coords: ``(N, 2)`` the layout.
        values: ``(G, N)`` the unit values the images interpolate.
    """

    images: NDArray[np.float64]
    coords: NDArray[np.float64]
    values: NDArray[np.float64]

    @property
    def limit(self) -> float:
        """The default colour limit of these maps: :func:`robust_limit` of their unit values."""
        return robust_limit(self.values)


@dataclass(frozen=True)
class MapStyle:
    """How maps are drawn (:func:`plot_map` and the figures built on it), by default like MNE's ``plot_topomap``.

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
        values = np.atleast_2d(np.asarray(values_by_group, dtype=np.float64))
        images = render_map(coords, values, resolution=self.resolution, interpolation=self.interpolation, mask=self.mask)
        return RenderedMaps(images.reshape(-1, self.resolution, self.resolution), check_coords(coords), values)


def _outline(points: NDArray[np.float64], mask: str) -> NDArray[np.float64]:
    if mask == "disc":
        angles = np.linspace(0, 2 * np.pi, _RIM_POINTS + 1)
        return 0.5 + 0.5 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    hull = ConvexHull(points).vertices
    return points[np.append(hull, hull[0])]


# Every text of a figure is at least this size in points: legible at 100% zoom at the saved dpi.
FONT_SIZE = 8
_TITLE_SIZE = 11


@dataclass(frozen=True)
class MapArtists:
    """What :func:`plot_map` drew, as ``mne.viz.plot_topomap`` returns its image and contours.

    Attributes:
        image: the map; its ``norm`` and ``cmap`` are the colour scale (hand it to ``colorbar``).
        contours: the contour lines, or None.
        units: the dots at the units, or None.
        outline: the map's outline, or None.
        title: the title above the map, or None.
        colorbar: the colour bar, or None.
        scale: the symmetric colour scale, or None where ``vmin``/``vmax`` were given.
    """

    image: AxesImage
    contours: ContourSet | None
    units: PathCollection | None
    outline: Line2D | None
    title: Text | None
    colorbar: Colorbar | None
    scale: ColourScale | None


def plot_map(
    values: ArrayLike,
    coords: ArrayLike,
    ax: Axes | None = None,
    *,
    style: MapStyle = MapStyle(),
    limit: float | ColourScale | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str | None = None,
    colorbar_label: str | None = None,
    title: str | None = None,
    corner: tuple[float, float] = (0.0, 0.0),
    image: ArrayLike | None = None,
) -> MapArtists:
    """Draw ONE topographic map into ``ax``, like ``mne.viz.plot_topomap``; every map figure of tmaps is built on it.

    The map fills the unit square at ``corner`` (data coordinates of ``ax``): several maps
    share one axes side by side, which draws much faster than an axes per map
    (``benchmarks/map_drawing.py``). The axes keep equal aspect and no frame.

    Args:
        values: ``(N,)`` one value per unit.
        coords: ``(N, 2)`` the layout.
        ax: the axes to draw into; default a new figure's.
        style: how the map is rendered and drawn.
        limit: the symmetric colour limit, or a :class:`ColourScale` that states its source;
            default :func:`robust_limit` of ``values``. Excludes ``vmin``/``vmax``.
        vmin, vmax: an asymmetric colour range instead.
        cmap: the colour map; default ``style.cmap``.
        colorbar_label: when given, a colour bar beside the map labelled with it and, for a
            symmetric scale, the colour limit and its source.
        title: drawn above the map.
        corner: lower left corner of the map in ``ax``'s data coordinates.
        image: the map already interpolated by ``style.render(coords, values[None]).images[0]``,
            to redraw it without interpolating again.

    Returns:
        The artists drawn.
    """
    unit_values = np.asarray(values, dtype=np.float64)
    if (vmin is None) != (vmax is None) or (vmin is not None and limit is not None):
        raise ValueError(f"give either limit or both vmin and vmax; got limit={limit}, vmin={vmin}, vmax={vmax}")
    scale = None if vmin is not None else _scale(limit, unit_values)
    low, high = (vmin, vmax) if scale is None else (-scale.limit, scale.limit)
    if not high > low:
        raise ValueError(f"vmax must exceed vmin; got vmin={vmin}, vmax={vmax}")
    if image is None:
        image = style.render(coords, unit_values[None]).images[0]
    image = np.asarray(image, dtype=np.float64)
    if ax is None:
        size = (style.panel_size + (1.6 if colorbar_label else 0.2), style.panel_size + 0.4)
        ax = Figure(figsize=size, dpi=_FIGURE_DPI, layout="constrained").add_subplot()
    left, bottom = corner
    colours = ScalarMappable(Normalize(low, high), cmap or style.cmap)
    # Coloured here once, so that matplotlib only resamples pixels: colour-mapping a masked
    # float image while drawing takes longer than all else (benchmarks/map_drawing.py).
    pixels = colours.to_rgba(image, bytes=True)
    pixels[np.isnan(image)] = 0
    extent = (left, left + 1, bottom, bottom + 1)
    drawn = ax.imshow(pixels, origin="lower", extent=extent, interpolation="nearest", norm=colours.norm, cmap=colours.cmap)
    contours = None
    if style.contours and np.isfinite(image).any():
        centres = (np.arange(image.shape[0]) + 0.5) / image.shape[0]
        levels = np.linspace(low, high, style.contours + 2)[1:-1]
        contours = ax.contour(left + centres, bottom + centres, image, levels=levels, colors="k", linewidths=0.4, alpha=0.6)
    points, offset = map_points(coords, mask=style.mask), np.asarray(corner, dtype=np.float64)
    units = ax.scatter(*(points + offset).T, s=1.0, c="k", alpha=0.5, linewidths=0) if style.show_units else None
    outline = None
    if style.outline:
        (outline,) = ax.plot(*(_outline(points, style.mask) + offset).T, color="0.3", linewidth=0.8)
    heading = ax.text(left + 0.5, bottom + 1.03, title, ha="center", va="bottom", fontsize=FONT_SIZE) if title else None
    ax.set_aspect("equal")
    ax.set_axis_off()
    colorbar = None
    if colorbar_label is not None:
        colorbar = ax.figure.colorbar(drawn, ax=ax, shrink=0.8)
        _label_colour_bar(colorbar, colorbar_label if scale is None else scale.label(colorbar_label), style.panel_size + 0.4)
    return MapArtists(drawn, contours, units, outline, heading, colorbar, scale)


def _label_colour_bar(colorbar: Colorbar, label: str, length: float) -> None:
    """Label a colour bar, wrapped to its ``length`` in inches, in legible type."""
    colorbar.set_label(_wrapped(label, length), fontsize=FONT_SIZE)
    colorbar.ax.tick_params(labelsize=FONT_SIZE)


def _wrapped(text: str, inches: float, size: float = FONT_SIZE) -> str:
    """``text`` in lines that fit into ``inches`` in type of ``size`` points, its own line breaks kept."""
    width = _characters_in(inches, size)
    return "\n".join(line for paragraph in text.splitlines() for line in textwrap.wrap(paragraph, width, break_long_words=False))


def _characters_in(inches: float, size: float = FONT_SIZE) -> int:
    """About how many characters of type ``size`` fit into ``inches``."""
    return max(16, int(inches * 72 / (0.55 * size)))


# Gaps between panels, as fractions of a panel's side: room for a title line above each panel,
# and left of the panels for the headings of sections.
_GAP_X = 0.08
_GAP_Y = 0.22
_SECTION_MARGIN = 0.3


def _panel_cells(n_panels: int, ncols: int, sections: Sequence[str] | None) -> list[tuple[int, int]]:
    """Row and column of each panel: rows filled left to right, a new row where the section changes."""
    cells, row, col = [], 0, 0
    for index in range(n_panels):
        if index and (col == ncols or (sections is not None and sections[index] != sections[index - 1])):
            row, col = row + 1, 0
        cells.append((row, col))
        col += 1
    return cells


def draw_panels(
    axes: Axes,
    maps: RenderedMaps,
    groups: Sequence[int],
    labels: Sequence[str],
    ncols: int,
    scale: ColourScale,
    style: MapStyle,
    sections: Sequence[str] | None = None,
) -> list[MapArtists]:
    """The maps of ``groups`` as panels on ``axes`` (:func:`plot_map` each), ``ncols`` panels a row.

    With ``sections`` (one name per group, e.g. a phoneme's class) each section starts a row,
    is headed by its name on the left and parted from the one above by a line.
    """
    shown_sections = None if sections is None else [sections[group] for group in groups]
    cells = _panel_cells(len(groups), ncols, shown_sections)
    nrows = cells[-1][0] + 1
    axes.set_autoscale_on(False)  # the limits are set below, once: autoscaling after every map costs a fifth of the drawing
    artists = []
    for group, (row, col) in zip(groups, cells):
        corner = (col * (1 + _GAP_X), (nrows - 1 - row) * (1 + _GAP_Y))
        artists.append(
            plot_map(
                maps.values[group], maps.coords, axes, style=style, limit=scale, title=labels[group], corner=corner, image=maps.images[group]
            )
        )
    width = ncols * (1 + _GAP_X) - _GAP_X
    left = 0.0
    if shown_sections is not None:
        left = -_SECTION_MARGIN
        starts = [index for index in range(len(groups)) if index == 0 or shown_sections[index] != shown_sections[index - 1]]
        for start, stop in zip(starts, [*starts[1:], len(groups)]):
            top_row, bottom_row = cells[start][0], cells[stop - 1][0]
            middle = (nrows - 1 - (top_row + bottom_row) / 2) * (1 + _GAP_Y) + 0.5
            axes.text(-_SECTION_MARGIN / 2, middle, shown_sections[start], rotation=90, ha="center", va="center", fontsize=FONT_SIZE)
            if start:
                line = (nrows - top_row) * (1 + _GAP_Y) - 0.02
                axes.plot([left, width], [line, line], color="0.5", linewidth=0.6)
    axes.set_xlim(left, width)
    axes.set_ylim(0, nrows * (1 + _GAP_Y))
    return artists


def _labels(group_labels: Sequence[str] | None, n_groups: int) -> list[str]:
    if group_labels is None:
        return [str(group) for group in range(n_groups)]
    if len(group_labels) != n_groups:
        raise ValueError(f"{len(group_labels)} group labels for {n_groups} groups")
    return [str(label) for label in group_labels]


# Figure margins in inches. Figures are laid out by hand: constrained layout would measure
# every artist at every draw, which costs as much as drawing the maps.
_MARGIN = 0.1
_BAR_SPACE = 1.3  # right of the maps: colour bar, its ticks and label
_BAR_WIDTH = 0.15
_LAYER_GAP = 0.25  # between the columns of plot_layers
_LAYER_TITLE = 0.3
_BAR_TICKS = 0.45  # below each column of plot_layers: its colour bar and tick labels, then a _LINE per line of its label
_LINE = 0.16


def _panels_inches(nrows: int, ncols: int, panel_size: float, sections: bool = False) -> tuple[float, float]:
    """Width and height of ``draw_panels``' axes in inches, so that its panels are ``panel_size`` square."""
    return (ncols * (1 + _GAP_X) - _GAP_X + (_SECTION_MARGIN if sections else 0)) * panel_size, nrows * (1 + _GAP_Y) * panel_size


def _titled_figure(width: float, height: float, title: str | None) -> tuple[Figure, float]:
    """A figure of ``width`` x ``height`` inches plus room above for ``title``; returns it and that room."""
    lines = _wrapped(title, width, _TITLE_SIZE) if title else ""
    room = _MARGIN + 0.25 * len(lines.splitlines())
    figure = Figure(figsize=(width, height + room), dpi=_FIGURE_DPI)
    if lines:
        figure.text(0.5, 1 - 0.5 * _MARGIN / (height + room), lines, ha="center", va="top", fontsize=_TITLE_SIZE)
    return figure, room


def _add_axes(figure: Figure, left: float, bottom: float, width: float, height: float) -> Axes:
    """Axes at a rectangle given in inches from the figure's lower left corner."""
    figure_width, figure_height = figure.get_size_inches()
    return figure.add_axes((left / figure_width, bottom / figure_height, width / figure_width, height / figure_height))


def _panel_order(order: bool | Sequence[int], values: NDArray[np.float64]) -> list[int]:
    if order is True:
        return group_order(values).tolist()
    if order is False:
        return list(range(len(values)))
    return [int(group) for group in order]


def plot_maps(
    coords: ArrayLike,
    values_by_group: ArrayLike,
    group_labels: Sequence[str] | Panels | None = None,
    *,
    colorbar_label: str,
    order: bool | Sequence[int] = True,
    sections: Sequence[str] | None = None,
    ncols: int | None = None,
    style: MapStyle = MapStyle(),
    title: str | None = None,
    limit: float | ColourScale | None = None,
) -> Figure:
    """One topographic map per group over a single layout (:func:`plot_map` each), sharing one symmetric colour scale.

    The scale is ``±limit``, by default the 99th percentile of ``|values|`` over all panels
    (:func:`robust_limit`: a few outlying units do not wash the maps out; values beyond it
    saturate), stated under the colour bar. Give ``limit`` to share a scale with other
    figures, e.g. the frames of an evolution.

    Args:
        coords: ``(N, 2)`` layout.
        values_by_group: ``(G, N)`` e.g. a layer's profiles transposed.
        group_labels: ``G`` panel titles, default the group indices; or :class:`Panels` (e.g.
            ``Profiles.panels()``: phonemes in IPA by class), whose titles, order (where it has
            one) and sections are used.
        colorbar_label: the quantity the colours show, e.g. ``Profiles.quantity``.
        order: ``True``: similar maps side by side (:func:`group_order`); ``False``: as given;
            or the groups to draw, in order (e.g. ``Panels.order``).
        sections: one section name per group (e.g. ``Panels.sections``, phoneme classes): each
            section starts a row, headed by its name.
        ncols: panels per row; default about ``sqrt(G)``.
        style: how maps are rendered and drawn.
        title: figure title.
        limit: colour limit, or a :class:`ColourScale` that states its source.

    Returns:
        The figure.
    """
    values = np.atleast_2d(np.asarray(values_by_group, dtype=np.float64))
    if isinstance(group_labels, Panels):
        order = order if group_labels.order is None else group_labels.order
        sections = group_labels.sections if sections is None else sections
        group_labels = group_labels.labels
    labels = _labels(group_labels, len(values))
    maps = style.render(coords, values)
    panels = _panel_order(order, values)
    return plot_rendered(
        maps, labels, colorbar_label=colorbar_label, panels=panels, sections=sections, ncols=ncols, style=style, title=title, limit=limit
    )


def plot_rendered(
    maps: RenderedMaps,
    group_labels: Sequence[str] | None = None,
    *,
    colorbar_label: str,
    panels: Sequence[int] | None = None,
    sections: Sequence[str] | None = None,
    ncols: int | None = None,
    style: MapStyle = MapStyle(),
    title: str | None = None,
    limit: float | ColourScale | None = None,
) -> Figure:
    """:func:`plot_maps` of maps already rendered by ``style.render``, e.g. to redraw them on another scale.

    Args:
        panels: the groups in the order drawn; default all, as rendered.
        Others: as in :func:`plot_maps`.
    """
    labels = _labels(group_labels, len(maps.images))
    groups = list(range(len(maps.images))) if panels is None else list(panels)
    if sections is not None and len(sections) != len(maps.images):
        raise ValueError(f"{len(sections)} sections for {len(maps.images)} groups")
    scale = _scale(limit, maps.values[groups])
    ncols = min(ncols or math.ceil(math.sqrt(len(groups))), len(groups))
    nrows = _panel_cells(len(groups), ncols, None if sections is None else [sections[group] for group in groups])[-1][0] + 1
    width, height = _panels_inches(nrows, ncols, style.panel_size, sections is not None)
    figure, _ = _titled_figure(width + 2 * _MARGIN + _BAR_SPACE, height + _MARGIN, title)
    axes = _add_axes(figure, _MARGIN, _MARGIN, width, height)
    artists = draw_panels(axes, maps, groups, labels, ncols, scale, style, sections)
    bar_height = min(height - 0.2, 3.5)
    colour_bar = _add_axes(figure, _MARGIN + width + 0.2, _MARGIN + (height - bar_height) / 2, _BAR_WIDTH, bar_height)
    _label_colour_bar(figure.colorbar(artists[0].image, cax=colour_bar), scale.label(colorbar_label), bar_height)
    return figure


def plot_layers(
    layers: Mapping[str, tuple[ArrayLike, ArrayLike]],
    group_labels: Sequence[str] | None = None,
    *,
    colorbar_label: str,
    order: bool = True,
    share_scale: bool = True,
    style: MapStyle = MapStyle(show_units=False),
    title: str | None = None,
) -> Figure:
    """Maps side by side: one column per layer (or per model), one row per group.

    By default every column shares one symmetric colour scale (:func:`robust_limit` over all
    columns), as maps compared in one figure must; ``share_scale=False`` gives each column its
    own (layers of one model whose activations have different ranges). Each colour bar says
    which. Columns may have different layouts (layers, or models whose units differ). Rows are
    ordered by :func:`group_order` on all columns' values together, each column's block scaled
    to unit norm so that no column dominates. The figure grows with the groups: give it the
    few that matter (``tmaps-maps`` picks them by a rule).

    Args:
        layers: column title -> ``(coords (N_l, 2), values_by_group (G, N_l))``; every column
            has the same ``G`` groups.
        group_labels: ``G`` row labels; default the group indices.
        colorbar_label, order, style, title: as in :func:`plot_maps`.
        share_scale: one colour scale for all columns.

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
    shared = ColourScale.robust(np.concatenate([block.ravel() for block in blocks.values()]), scope=", one scale for every column")
    scales = {name: shared if share_scale else ColourScale.robust(block, scope=" of this column") for name, block in blocks.items()}
    width, height = _panels_inches(n_groups, 1, style.panel_size)
    bar_lines = max(len(_wrapped(scale.label(colorbar_label), width).splitlines()) for scale in scales.values())
    bar_space = _BAR_TICKS + _LINE * bar_lines
    figure, _ = _titled_figure(len(layers) * (width + _LAYER_GAP) - _LAYER_GAP + 2 * _MARGIN, _MARGIN + bar_space + height + _LAYER_TITLE, title)
    for column, (name, (coords, _)) in enumerate(layers.items()):
        left = _MARGIN + column * (width + _LAYER_GAP)
        axes = _add_axes(figure, left, _MARGIN + bar_space, width, height)
        artists = draw_panels(axes, style.render(coords, blocks[name]), groups, labels if column == 0 else [""] * n_groups, 1, scales[name], style)
        axes.set_title(name, fontsize=9)
        colour_bar = _add_axes(figure, left + 0.1 * width, _MARGIN + bar_space - 0.25, 0.8 * width, 0.1)
        _label_colour_bar(figure.colorbar(artists[0].image, cax=colour_bar, orientation="horizontal"), scales[name].label(colorbar_label), width)
    return figure


@dataclass(frozen=True)
class MapFrame:
    """Maps as logged (one frame of an evolution), kept so that they can be redrawn on another colour scale.

    :meth:`save` writes ``<name>.npz`` (``coords``, ``values`` and JSON ``metadata``: panels, title, quantity, style)
    beside a logged map's PNG; the report page redraws the frames of every run on one scale (:meth:`load`, :meth:`plot`).
    """

    maps: RenderedMaps
    panels: Panels
    title: str
    colorbar_label: str
    style: MapStyle = MapStyle()

    def plot(self, limit: float | ColourScale | None = None, title: str | None = None) -> Figure:
        """The frame's :func:`plot_rendered` figure, on ``limit`` (default the frame's own robust scale)."""
        return plot_rendered(
            self.maps, self.panels.labels, colorbar_label=self.colorbar_label, panels=self.panels.order, sections=self.panels.sections,
            style=self.style, title=self.title if title is None else title, limit=limit,
        )  # fmt: skip

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        metadata = {"panels": asdict(self.panels), "title": self.title, "colorbar_label": self.colorbar_label, "style": asdict(self.style)}
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, coords=self.maps.coords, values=self.maps.values, metadata=json.dumps(metadata))
        return path

    @classmethod
    def load(cls, path: str | Path) -> MapFrame:
        """A saved frame, rendered again; a file that is not one raises ``ValueError`` naming it."""
        try:
            with np.load(path) as stored:
                coords, values, metadata = stored["coords"], stored["values"], json.loads(str(stored["metadata"]))
            style = MapStyle(**metadata["style"])
            return cls(style.render(coords, values), Panels(**metadata["panels"]), metadata["title"], metadata["colorbar_label"], style)
        except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path} is not a saved map frame (coords, values, metadata): {error}") from None


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
