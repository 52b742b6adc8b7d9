"""Pictures of a layer's filters laid out on its grid (activation maps are drawn by ``tmaps.introspect.render``).

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no GUI backend, nothing
shown); save them with ``figure.savefig`` or hand them to a logger.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from torch import Tensor, nn

from tmaps.topo.grid import Grid
from tmaps.topo.layers import WEIGHT_MODULES, get_layer, weight_module

COLOURINGS = ("auto", "mel", "pca")


def mel_centre_of_mass(weight: Tensor) -> Tensor:
    """Where along the input channels (mel bands) each filter puts its positive weight.

    The energy of filter ``c`` in band ``b`` is ``sum_k relu(w[c, b, k])**2``; the result is
    the energy-weighted mean band index. A filter without positive weights gets NaN.

    Shapes:
        ``weight (out_channels, in_channels, *kernel)`` -> ``(out_channels,)`` in
        ``[0, in_channels - 1]``.
    """
    energy = weight.detach().clamp(min=0).pow(2).reshape(weight.shape[0], weight.shape[1], -1).sum(-1)
    bands = torch.arange(weight.shape[1], dtype=energy.dtype)
    return (energy * bands).sum(1) / energy.sum(1)


def principal_component_colours(weight: Tensor) -> np.ndarray:
    """Each filter's first three principal-component scores as an RGB colour.

    PCA (sklearn) over the flattened filters; the sign of each component is fixed so that
    its largest loading is positive, and each score is min-max scaled to ``[0, 1]``. With
    fewer than three components available the missing channels are 0.

    Shapes:
        ``weight (out_channels, *)`` -> ``(out_channels, 3)`` floats in ``[0, 1]``.
    """
    vectors = weight.detach().reshape(weight.shape[0], -1).double().cpu().numpy()
    n_components = min(3, *vectors.shape)
    pca = PCA(n_components=n_components).fit(vectors)
    largest = np.abs(pca.components_).argmax(axis=1)
    signs = np.sign(pca.components_[np.arange(n_components), largest])
    scores = pca.transform(vectors) * signs
    spread = scores.max(axis=0) - scores.min(axis=0)
    colours = np.zeros((len(vectors), 3))
    colours[:, :n_components] = (scores - scores.min(axis=0)) / np.where(spread > 0, spread, 1)
    return colours


def _grid_axes(grid: Grid, title: str) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(min(12.0, 2.5 + 0.35 * grid.cols), min(10.0, 1.0 + 0.35 * grid.rows)), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel("grid column")
    axes.set_ylabel("grid row")
    return figure, axes


def filter_map(model: nn.Module, layer: str, grid: Grid | None = None, colour: str = "auto") -> Figure:
    """Topographic filter map: each filter of ``layer`` drawn at its grid cell.

    ``colour="mel"`` colours a filter by :func:`mel_centre_of_mass` (for the layer that reads
    the mel bands), ``"pca"`` by :func:`principal_component_colours`; ``"auto"`` takes
    ``"mel"`` for the model's first convolution or ``Linear`` and ``"pca"`` for the others.
    Filters without positive weights are drawn grey on the mel map.
    """
    if colour not in COLOURINGS:
        raise ValueError(f"filter_map colour must be one of {COLOURINGS}, got {colour!r}")
    module = weight_module(get_layer(model, layer))
    weight = module.weight.detach().cpu()
    grid = grid or Grid(weight.shape[0])
    if colour == "auto":
        first = next(candidate for candidate in model.modules() if isinstance(candidate, WEIGHT_MODULES))
        colour = "mel" if module is first else "pca"
    if colour == "mel":
        figure, axes = _grid_axes(grid, f"{layer}: mel centre of mass")
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
        image = axes.imshow(grid.sheet(mel_centre_of_mass(weight)).numpy(), cmap=cmap, vmin=0, vmax=weight.shape[1] - 1)
        figure.colorbar(image, ax=axes, label="mel band")
    else:
        figure, axes = _grid_axes(grid, f"{layer}: filter PCs 1-3 as RGB")
        axes.imshow(grid.sheet(torch.from_numpy(principal_component_colours(weight))).numpy())
    return figure
