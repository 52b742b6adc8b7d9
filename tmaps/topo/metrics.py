"""How topographic is a layer: do neighbouring filters look alike more than any two filters?

All numbers come from the cosine similarity ``S[i, j]`` of the flattened incoming weights of
output channels ``i`` and ``j``, so they apply to any model and layer, trained with a
topographic loss or not.

- ``neighbour_cosine``: the mean of ``S`` over neighbouring pairs (weighted by the grid's
  neighbourhood weights).
- ``shuffled_cosine``: the same after a random permutation of the grid positions. Averaged
  over all permutations this is exactly the mean of ``S`` over all pairs ``i != j``, which is
  what is reported: no permutation noise, no seed.
- ``ratio``: ``(1 - shuffled_cosine) / (1 - neighbour_cosine)``, how many times less
  dissimilar neighbours are than random pairs. About 1 for a non-topographic layer, large for
  a smooth map. Dissimilarities rather than similarities are divided because at random
  initialization both mean similarities are about 0 and their ratio would be noise.
- ``smoothness``: the Spearman correlation between grid distance and ``S`` over all pairs
  ``i < j``, negated: about 0 without topography, positive when similarity falls with
  distance, 1 if it does so strictly monotonically. :func:`distance_profile` gives the whole
  curve of mean similarity against distance that it summarises.

Topography is cheap to get by collapse: a layer whose filters are all alike is smooth on any
grid. Two numbers say how diverse the filters stayed:

- ``centred_cosine``: the mean of ``S`` over all pairs after centring each filter on its own
  mean (the mean Pearson correlation of random filter pairs): about 0 for independent filters,
  1 for identical ones.
- ``participation_ratio``: ``(sum l)^2 / sum l^2`` over the eigenvalues ``l`` of the centred
  filters' correlation matrix, i.e. ``out_channels / (1 + (out_channels - 1) * mean squared
  correlation)``: the effective number of distinct filters, 1 for identical filters and about
  ``out_channels / (1 + out_channels / filter size)`` for independent random ones. Correlations
  rather than covariances, so that a few filters of large norm do not stand for the layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import scipy.stats
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tmaps.topo.grid import Grid
from tmaps.topo.layers import filter_vectors, get_layer


def cosine_similarities(weight: Tensor) -> Tensor:
    """``(out_channels, *)`` weight -> ``(out_channels, out_channels)`` cosine similarities (float64)."""
    vectors = F.normalize(weight.detach().reshape(weight.shape[0], -1).double(), dim=1)
    return vectors @ vectors.T


def filter_diversity(weight: Tensor) -> dict[str, float]:
    """``centred_cosine`` and ``participation_ratio`` (module docstring) of a ``(out_channels, *)`` weight."""
    vectors = weight.detach().reshape(weight.shape[0], -1).double()
    n_units = vectors.shape[0]
    correlation = cosine_similarities(vectors - vectors.mean(dim=1, keepdim=True))
    off_diagonal = correlation.sum() - correlation.diagonal().sum()
    # tr(C)^2 / tr(C^2) of the correlation matrix C: its eigenvalues are those of the normalised filters'
    # second-moment matrix, so filter norms (which weight decay shrinks unevenly) do not count.
    participation = correlation.diagonal().sum() ** 2 / (correlation**2).sum()
    return {
        "centred_cosine": float(off_diagonal / (n_units * (n_units - 1))),
        "participation_ratio": float(participation),
    }


def reduced_rank_filters(weight: Tensor, rank: int) -> Tensor:
    """The collapse control of a layer: ``weight`` with its centred filters projected on their top ``rank`` principal directions.

    Each filter keeps its own mean; what is left of it is the best rank-``rank`` approximation
    (truncated SVD) of the centred filters, so the participation ratio is at most ``rank``
    while no grid enters. Same shape and dtype as ``weight`` ``(out_channels, *)``.
    """
    if not 1 <= rank <= min(weight.shape[0], weight[0].numel()):
        raise ValueError(f"rank must be between 1 and {min(weight.shape[0], weight[0].numel())} for a weight of shape {tuple(weight.shape)}, got {rank}")
    vectors = weight.detach().reshape(weight.shape[0], -1).double()
    means = vectors.mean(dim=1, keepdim=True)
    left, singular, right = torch.linalg.svd(vectors - means, full_matrices=False)
    reduced = (left[:, :rank] * singular[:rank]) @ right[:rank] + means
    return reduced.reshape(weight.shape).to(weight.dtype)


def placement_by_similarity(weight: Tensor, grid: Grid) -> Tensor:
    """A placement of the filters on ``grid`` that puts similar ones near each other, from the weights alone.

    The centred, normalised filters' first principal component fills the grid row by row
    (``cols`` filters per row, in its order), and the second orders each row. Returns
    ``order`` ``(n_units,)``: ``order[k]`` is the filter placed at grid index ``k``, so
    ``values[..., order]`` lays per-filter values out on the grid. No training, no grid loss:
    the smoothest map a layer's weights give by arrangement only.
    """
    vectors = weight.detach().reshape(weight.shape[0], -1).double()
    if vectors.shape[0] != grid.n_units:
        raise ValueError(f"weight has {vectors.shape[0]} output channels but the grid is {grid!r}")
    centred = F.normalize(vectors - vectors.mean(dim=1, keepdim=True), dim=1)
    left, singular, _ = torch.linalg.svd(centred - centred.mean(dim=0), full_matrices=False)
    scores = left[:, :2] * singular[:2]
    by_first = torch.argsort(scores[:, 0], stable=True).reshape(grid.rows, grid.cols)
    within_row = torch.argsort(scores[by_first, 1], dim=1, stable=True)
    return torch.gather(by_first, 1, within_row).reshape(-1)


def layer_topography(weight: Tensor, grid: Grid) -> dict[str, float]:
    """The metrics of the module docstring for one ``(out_channels, *)`` weight laid out on ``grid``."""
    similarity = cosine_similarities(weight)
    n_units = similarity.shape[0]
    if n_units != grid.n_units:
        raise ValueError(f"weight has {n_units} output channels but the grid is {grid!r}")
    neighbour_weights = grid.neighbour_weights.double()
    neighbour = (neighbour_weights * similarity).sum() / neighbour_weights.sum()
    shuffled = (similarity.sum() - similarity.diagonal().sum()) / (n_units * (n_units - 1))
    upper = torch.triu_indices(n_units, n_units, offset=1)
    spearman = scipy.stats.spearmanr(
        grid.distances[upper[0], upper[1]].numpy(), similarity[upper[0], upper[1]].numpy()
    ).statistic
    return {
        "neighbour_cosine": float(neighbour),
        "shuffled_cosine": float(shuffled),
        "ratio": float((1 - shuffled) / (1 - neighbour)),
        "smoothness": -float(spearman),
        **filter_diversity(weight),
    }


def distance_profile(weight: Tensor, grid: Grid) -> tuple[Tensor, Tensor, Tensor]:
    """Mean cosine similarity of filter pairs against their grid distance.

    Returns ``(distances, mean_similarity, n_pairs)``, each ``(n_distances,)``: the distinct
    distances between pairs ``i < j`` in increasing order, the mean similarity at each and
    how many pairs it averages.
    """
    similarity = cosine_similarities(weight)
    upper = torch.triu_indices(grid.n_units, grid.n_units, offset=1)
    distances = grid.distances[upper[0], upper[1]].double()
    # Distances are square roots of integers; rounding merges float noise of equal ones.
    unique, which = torch.unique(distances.round(decimals=6), return_inverse=True)
    n_pairs = torch.bincount(which, minlength=len(unique))
    sums = torch.bincount(which, weights=similarity[upper[0], upper[1]], minlength=len(unique))
    return unique, sums / n_pairs, n_pairs


def topography_metrics(
    model: nn.Module, layers: Sequence[str], grids: Mapping[str, Grid] | None = None
) -> dict[str, float]:
    """``"<layer>/<metric>"`` -> value for each layer (metrics: see the module docstring).

    Args:
        model: any ``nn.Module``.
        layers: names of layers with a convolution or ``Linear`` weight.
        grids: a layer's grid; layers not in it get ``Grid(out_channels)`` (nearly square,
            flat, 4-neighbourhood).
    """
    grids = grids or {}
    metrics = {}
    for name in layers:
        weight = filter_vectors(get_layer(model, name))
        grid = grids.get(name) or Grid(weight.shape[0])
        metrics.update({f"{name}/{key}": value for key, value in layer_topography(weight, grid).items()})
    return metrics


def untouched_participation_ratio(model: nn.Module, layers: Sequence[str], untouched: Sequence[str]) -> dict[str, float]:
    """``"<layer>/participation_ratio_untouched"``: for each of ``layers``, the mean participation ratio of the
    ``untouched`` layers (trained without a topographic loss) with as many output channels; layers with no
    such reference are left out. The scale a topographic layer's diversity is judged against.
    """
    ratios: dict[int, list[float]] = {}
    for name in untouched:
        weight = filter_vectors(get_layer(model, name))
        ratios.setdefault(weight.shape[0], []).append(filter_diversity(weight)["participation_ratio"])
    references = {}
    for name in layers:
        width = filter_vectors(get_layer(model, name)).shape[0]
        if width in ratios:
            references[f"{name}/participation_ratio_untouched"] = sum(ratios[width]) / len(ratios[width])
    return references

