"""Moving an output layer from one alphabet to another (Kunze et al., 2017, section 3).

Row ``i`` of the output layer scores class ``i`` of its alphabet (row 0 the CTC blank). When a
model changes language, the rows of the blank and of every character that both alphabets have
are kept; rows of characters only the new alphabet has start from zero or from the mean of
the kept character rows.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from tmaps.text import BLANK, Alphabet

NEW_CHARS = ("zero", "mean")


def shared_classes(source: Alphabet, target: Alphabet) -> tuple[list[int], list[int]]:
    """Class indices of the blank and of the characters in both alphabets.

    Returns:
        ``(source_rows, target_rows)``: class ``source_rows[i]`` of ``source`` is the same
        symbol as class ``target_rows[i]`` of ``target``; the blank comes first.
    """
    common = [char for char in target.chars if char in source.chars]
    return [BLANK] + [source.index(char) for char in common], [BLANK] + [target.index(char) for char in common]


def map_head_rows(
    weight: Tensor, bias: Tensor | None, source: Alphabet, target: Alphabet, new_chars: str = "zero"
) -> tuple[Tensor, Tensor | None]:
    """Output-layer parameters for ``target`` made from those for ``source``.

    Args:
        weight: ``(source.n_classes, ...)``, e.g. a ``Conv1d`` weight ``(n_classes, channels, 1)``.
        bias: ``(source.n_classes,)`` or ``None``.
        source: the alphabet the rows belong to.
        target: the alphabet of the new rows.
        new_chars: ``"zero"`` starts the rows of characters that ``source`` lacks from zero;
            ``"mean"`` from the mean of the kept character rows (the blank is left out of the
            mean: its bias is usually far above a character's, and a new character should start
            as an average character, not as a second blank).

    Returns:
        ``(weight, bias)`` with ``target.n_classes`` rows; shared rows are exact copies.

    Warns:
        UserWarning: the alphabets have no character in common (only the blank is kept).
    """
    if new_chars not in NEW_CHARS:
        raise ValueError(f"transfer.new_chars must be one of {NEW_CHARS}, got {new_chars!r}")
    if weight.shape[0] != source.n_classes:
        raise ValueError(
            f"the output layer has {weight.shape[0]} rows but the alphabet {source.chars!r} has {source.n_classes} classes"
        )
    source_rows, target_rows = shared_classes(source, target)
    if len(source_rows) == 1:
        warnings.warn(
            f"the alphabets {source.chars!r} and {target.chars!r} have no character in common; "
            "only the blank's output row is kept",
            stacklevel=2,
        )

    def remap(rows: Tensor) -> Tensor:
        mapped = rows.new_zeros((target.n_classes, *rows.shape[1:]))
        if new_chars == "mean" and len(source_rows) > 1:
            mapped[:] = rows[source_rows[1:]].mean(dim=0)
        mapped[target_rows] = rows[source_rows]
        return mapped

    with torch.no_grad():
        return remap(weight), None if bias is None else remap(bias)


def swap_alphabet(model: nn.Module, source: Alphabet, target: Alphabet, new_chars: str = "zero", head: str = "head") -> nn.Module:
    """Give ``model`` a new output layer for ``target``, made with :func:`map_head_rows`.

    Args:
        model: a model whose submodule ``head`` is a ``Conv1d`` with one output channel per
            class of ``source`` (as :class:`~tmaps.models.Wav2Letter`).
        source, target, new_chars: as in :func:`map_head_rows`.
        head: the name of the output layer.

    Returns:
        ``model``, changed in place (its ``n_classes`` attribute too, if it has one).
    """
    old = model.get_submodule(head)
    if not isinstance(old, nn.Conv1d):
        raise TypeError(f"layer {head!r} of {type(model).__name__} is a {type(old).__name__}, not a Conv1d")
    weight, bias = map_head_rows(old.weight, old.bias, source, target, new_chars)
    new = nn.Conv1d(
        old.in_channels,
        target.n_classes,
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        bias=bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    new.load_state_dict({"weight": weight} | ({} if bias is None else {"bias": bias}))
    model.set_submodule(head, new)
    if hasattr(model, "n_classes"):
        model.n_classes = target.n_classes
    return model
