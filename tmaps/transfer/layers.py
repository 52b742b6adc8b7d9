"""Choosing, freezing, unfreezing and re-initializing layers by name.

A frozen layer is really frozen: its parameters have ``requires_grad=False`` (so
``ASRModule.parameter_groups`` leaves them out of the optimizer) and its BatchNorm modules
stay in eval mode, normalizing with the source model's running statistics and never updating
them, even after ``model.train()``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from weakref import WeakKeyDictionary

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.hooks import RemovableHandle

ALL_BUT_HEAD = "all_but_head"

_eval_hooks: WeakKeyDictionary[nn.Module, RemovableHandle] = WeakKeyDictionary()


def first_layers(layer_names: Sequence[str], freeze_first: int | str | None) -> list[str]:
    """The first ``freeze_first`` of ``layer_names`` (the output layer last).

    Args:
        layer_names: every layer of the model, input side first, output layer last.
        freeze_first: a count from ``0`` to ``len(layer_names) - 1``, ``"all_but_head"`` (the
            same as ``len(layer_names) - 1``) or ``None`` (0).

    Raises:
        ValueError: a count out of range; the message names the valid range.
    """
    last = len(layer_names) - 1
    if freeze_first is None:
        return []
    if freeze_first == ALL_BUT_HEAD:
        return list(layer_names[:last])
    if isinstance(freeze_first, bool) or not isinstance(freeze_first, int) or not 0 <= freeze_first <= last:
        raise ValueError(
            f"transfer.freeze_first must be an integer from 0 to {last} or {ALL_BUT_HEAD!r}: the model has "
            f"{len(layer_names)} layers ({', '.join(layer_names)}); got {freeze_first!r}"
        )
    return list(layer_names[:freeze_first])


def matching_layers(layer_names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The layers, in model order, whose name matches one of the ``fnmatch`` patterns.

    Raises:
        ValueError: a pattern that matches no layer (a typo would otherwise go unnoticed).
    """
    unmatched = [pattern for pattern in patterns if not fnmatch.filter(layer_names, pattern)]
    if unmatched:
        raise ValueError(f"layer patterns {unmatched} match none of the layers {list(layer_names)}")
    return [name for name in layer_names if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]


def freeze_layers(model: nn.Module, layer_names: Sequence[str]) -> None:
    """Stop training the named layers: no gradients, BatchNorm in eval mode for good."""
    for name in layer_names:
        layer = model.get_submodule(name)
        layer.requires_grad_(False)
        for module in layer.modules():
            if isinstance(module, _BatchNorm) and module not in _eval_hooks:
                module.eval()
                _eval_hooks[module] = module.register_forward_pre_hook(_stay_in_eval)


def _stay_in_eval(module: nn.Module, inputs: tuple) -> None:
    module.eval()


def unfreeze_layers(model: nn.Module, layer_names: Sequence[str]) -> None:
    """Train the named layers again; their BatchNorm modules follow the model's mode again."""
    for name in layer_names:
        layer = model.get_submodule(name)
        layer.requires_grad_(True)
        for module in layer.modules():
            handle = _eval_hooks.pop(module, None)
            if handle is not None:
                handle.remove()
                module.train(model.training)


def is_frozen(model: nn.Module, layer_name: str) -> bool:
    """Whether the layer has parameters and none of them is trained."""
    parameters = list(model.get_submodule(layer_name).parameters())
    return bool(parameters) and not any(parameter.requires_grad for parameter in parameters)


def reinitialize_layers(model: nn.Module, layer_names: Sequence[str]) -> None:
    """Draw the named layers' parameters afresh (``reset_parameters`` of each submodule, which
    for BatchNorm also resets the running statistics)."""
    for name in layer_names:
        for module in model.get_submodule(name).modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


def discriminative_lr(base_lr: float, decay: float, depth: int, n_layers: int) -> float:
    """Learning rate of layer ``depth`` of ``n_layers``: ``base_lr * decay ** (n_layers - 1 - depth)``.

    The output layer (``depth == n_layers - 1``) gets ``base_lr``; each layer nearer the input
    gets ``decay`` times the rate of the one above (Howard & Ruder, 2018).
    """
    return base_lr * decay ** (n_layers - 1 - depth)
