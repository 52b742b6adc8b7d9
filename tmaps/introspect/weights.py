"""How far each layer's weights moved from a starting point (e.g. the English source model).

For a layer with weight ``W`` of shape ``(out_channels, ...)``, the change from ``W_0`` to
``W_t`` is summarised by

- the relative change ``||W_t - W_0|| / ||W_0||`` (Frobenius norms over the whole layer), and
- per filter (output channel ``c``): the relative change ``||w_t[c] - w_0[c]|| / ||w_0[c]||``
  and the cosine similarity of ``w_t[c]`` to ``w_0[c]``.

A filter whose starting weights are all zero (a new character's row of a transferred output
layer, for instance) has no direction to compare with: its relative change and cosine are NaN.
Only the weight of the layer's convolution (or linear map) counts; biases and norm parameters
do not.

Everything works on models (layer names as in docs/design.md) and on plain state dicts alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from tmaps.checkpoint import mismatched_tensors
from tmaps.topo.layers import WEIGHT_MODULES, get_layer, weight_module

Weights = nn.Module | Mapping[str, Tensor]


class WeightMismatchError(ValueError):
    """Two sets of weights do not have the same tensors (names or shapes)."""


@dataclass(frozen=True)
class LayerChange:
    """The change of one layer's weight.

    Attributes:
        relative_change: ``||W_t - W_0|| / ||W_0||`` over the whole weight.
        filter_change: ``(out_channels,)`` relative change of each filter.
        filter_cosine: ``(out_channels,)`` cosine similarity of each filter to its start.
        initial_norm: ``||W_0||``.
        shape: the weight's shape.
    """

    relative_change: float
    filter_change: Tensor
    filter_cosine: Tensor
    initial_norm: float
    shape: tuple[int, ...]


def layer_weights(weights: Weights, layer_names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """The weight tensor of each layer, by layer name.

    In a model, a layer's weight is that of the layer or of its first ``Conv/Linear`` submodule
    (docs/design.md). In a state dict, it is the first tensor of two or more dimensions whose key
    is ``<layer>.weight`` or ``<layer>.<...>.weight``. With no ``layer_names``, a model's
    ``layer_names`` attribute is used; failing that, every ``Conv/Linear`` of a model, or every
    weight of two or more dimensions in a state dict, is its own layer.

    Raises:
        ValueError: a layer name that has no such weight; the message lists the valid ones.
    """
    if isinstance(weights, nn.Module):
        if layer_names is None:
            layer_names = getattr(weights, "layer_names", None) or [
                name for name, module in weights.named_modules() if isinstance(module, WEIGHT_MODULES)
            ]
        return {name: weight_module(get_layer(weights, name)).weight for name in layer_names}

    matrices = {key.removesuffix(".weight"): value for key, value in weights.items() if key.endswith(".weight") and value.dim() >= 2}
    if layer_names is None:
        return matrices
    found = {}
    for layer in layer_names:
        inside = [name for name in matrices if name == layer or name.startswith(f"{layer}.")]
        if not inside:
            raise ValueError(f"the state dict has no weight of two or more dimensions for layer {layer!r}; it has {list(matrices)}")
        found[layer] = matrices[inside[0]]
    return found


def filter_change(initial: Tensor, current: Tensor) -> LayerChange:
    """The change from the ``initial`` to the ``current`` weight, both ``(out_channels, ...)``."""
    if initial.shape != current.shape:
        raise WeightMismatchError(f"weights of shapes {tuple(initial.shape)} and {tuple(current.shape)} cannot be compared")
    start = initial.detach().double().flatten(1)
    end = current.detach().double().flatten(1)
    start_norms = start.norm(dim=1)
    undefined = start_norms == 0
    filter_relative = ((end - start).norm(dim=1) / start_norms).masked_fill(undefined, float("nan"))
    cosine = torch.nn.functional.cosine_similarity(end, start, dim=1, eps=1e-12).masked_fill(undefined, float("nan"))
    initial_norm = start.norm().item()
    return LayerChange(
        relative_change=(end - start).norm().item() / initial_norm if initial_norm > 0 else float("nan"),
        filter_change=filter_relative.float(),
        filter_cosine=cosine.float(),
        initial_norm=initial_norm,
        shape=tuple(initial.shape),
    )


def weight_change(initial: Weights, current: Weights, layer_names: Sequence[str] | None = None) -> dict[str, LayerChange]:
    """Per layer, how far ``current`` moved from ``initial``.

    Args:
        initial: the starting model or state dict.
        current: the model or state dict after training; its layers must match ``initial``'s.
        layer_names: the layers to compare, in order (see :func:`layer_weights`); by default
            those of ``initial``.

    Raises:
        WeightMismatchError: layers whose weight has another shape in ``current``, all listed.
        ValueError: a layer that ``current`` lacks.
    """
    start = layer_weights(initial, layer_names)
    end = layer_weights(current, list(start))
    problems = mismatched_tensors(start, end, expected_as="initial weights", found_as="current weights")
    if problems:
        raise WeightMismatchError("the weights cannot be compared layer by layer:\n  " + "\n  ".join(problems))
    return {layer: filter_change(start[layer], end[layer]) for layer in start}


CHANGE_COLUMNS = ["layer", "shape", "initial norm", "relative change", "cosine median", "cosine min"]


def change_table(changes: Mapping[str, LayerChange]) -> pd.DataFrame:
    """One row per layer with :data:`CHANGE_COLUMNS`; NaN filters are left out of the cosine figures."""
    rows = []
    for layer, change in changes.items():
        cosine = change.filter_cosine[~change.filter_cosine.isnan()]
        median, minimum = (cosine.median().item(), cosine.min().item()) if cosine.numel() else (float("nan"),) * 2
        rows.append([layer, "x".join(map(str, change.shape)), change.initial_norm, change.relative_change, median, minimum])
    return pd.DataFrame(rows, columns=CHANGE_COLUMNS)
