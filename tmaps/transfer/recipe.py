"""A transfer recipe: start from a checkpoint, swap the alphabet, re-initialize and freeze layers.

The recipes of Kunze et al. (2017) are, for a German model started from an English one:

- ``freeze_first: k`` for k in 0, 6, 8, 9, 10 of the 11 layers (0 fine-tunes everything);
- ``freeze_first: 8, reinit_unfrozen: true``: keep the first 8 layers, train the rest anew.

``unfreeze_every_n_steps`` (or ``_epochs``) adds gradual unfreezing (Howard & Ruder, 2018) on top; that part
runs in the training loop (``tmaps.callbacks.transfer.TransferLearning``).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from tmaps.checkpoint import CheckpointMismatchError, describe_differences, mismatched_tensors, model_state_dict, read_checkpoint
from tmaps.config_types import check_config
from tmaps.text import Alphabet
from tmaps.transfer.alphabet import NEW_CHARS, map_head_rows
from tmaps.transfer.layers import ALL_BUT_HEAD, first_layers, freeze_layers, matching_layers, reinitialize_layers

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TransferConfig:
    """The ``transfer`` config group.

    Attributes:
        init_from: a tmaps checkpoint to start from; ``None`` keeps the model's own weights.
        new_chars: ``"zero"`` or ``"mean"``: how output rows of characters the checkpoint's
            alphabet lacks start (see :func:`tmaps.transfer.alphabet.map_head_rows`).
        freeze_first: freeze the first k layers (``0`` to ``n_layers - 1``) or
            ``"all_but_head"``.
        freeze_patterns: ``fnmatch`` patterns of further layers to freeze (e.g. ``"conv[0-3]"``).
        reinit_unfrozen: ``True`` re-initializes every layer that is not frozen; a list of
            ``fnmatch`` patterns re-initializes only the unfrozen layers that match.
        unfreeze_every_n_epochs: unfreeze one more frozen layer, the top-most first, every N
            epochs; ``None`` keeps them frozen.
        unfreeze_every_n_steps: the same every N optimizer steps (a schedule that means the
            same at any data size); at most one of the two.
    """

    init_from: str | None = None
    new_chars: str = "zero"
    freeze_first: int | str | None = 0
    freeze_patterns: tuple[str, ...] = ()
    reinit_unfrozen: bool | tuple[str, ...] = False
    unfreeze_every_n_epochs: int | None = None
    unfreeze_every_n_steps: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "freeze_patterns", tuple(self.freeze_patterns or ()))
        if not isinstance(self.reinit_unfrozen, bool):
            object.__setattr__(self, "reinit_unfrozen", tuple(self.reinit_unfrozen or ()))
        if self.init_from is not None and not str(self.init_from).strip():
            raise ValueError(
                "transfer.init_from is empty (an unset shell variable?): give the path of a tmaps checkpoint, "
                "or choose transfer=none to train from random weights"
            )
        if self.init_from is not None and not Path(self.init_from).is_file():
            raise FileNotFoundError(f"transfer.init_from: checkpoint {self.init_from} does not exist")
        if self.new_chars not in NEW_CHARS:
            raise ValueError(f"transfer.new_chars must be one of {NEW_CHARS}, got {self.new_chars!r}")
        if isinstance(self.freeze_first, str) and self.freeze_first != ALL_BUT_HEAD:
            raise ValueError(f"transfer.freeze_first must be an integer or {ALL_BUT_HEAD!r}, got {self.freeze_first!r}")
        for name in ("unfreeze_every_n_epochs", "unfreeze_every_n_steps"):
            every = getattr(self, name)
            if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
                raise ValueError(f"transfer.{name} must be a positive integer or null, got {every!r}")
        if self.unfreeze_every_n_epochs is not None and self.unfreeze_every_n_steps is not None:
            raise ValueError("transfer.unfreeze_every_n_epochs and transfer.unfreeze_every_n_steps are both set; keep one")

    @classmethod
    def from_dict(cls, config: Mapping) -> TransferConfig:
        """Build from a plain mapping; a key it does not take, or a value of the wrong type, is a ``ConfigTypeError`` naming it."""
        return cls(**check_config(config, cls, "transfer"))


def init_from_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    source: Alphabet,
    target: Alphabet,
    new_chars: str = "zero",
    head: str = "head",
    origin: str = "checkpoint",
) -> None:
    """Load ``state_dict`` (a model for ``source``) into ``model`` (for ``target``).

    The output layer's rows are moved to the new alphabet with
    :func:`~tmaps.transfer.alphabet.map_head_rows`; every other tensor must match exactly.

    Args:
        model: the model to initialize, built for ``target``.
        state_dict: the weights to start from.
        source: the alphabet of ``state_dict``'s output layer.
        target: the alphabet of ``model``'s output layer.
        new_chars: ``"zero"`` or ``"mean"``.
        head: the name of the output layer.
        origin: what ``state_dict`` is called in errors (e.g. the checkpoint's path).

    Raises:
        CheckpointMismatchError: tensors that are missing, unexpected or of another shape
            (other widths, kernel sizes or layer names), all of them listed.
    """
    weights = dict(state_dict)
    weight_key, bias_key = f"{head}.weight", f"{head}.bias"
    if source != target and weight_key in weights:
        weights[weight_key], bias = map_head_rows(weights[weight_key], weights.get(bias_key), source, target, new_chars)
        if bias is not None:
            weights[bias_key] = bias
    problems = mismatched_tensors(model.state_dict(), weights, found_as=origin)
    if problems:
        raise CheckpointMismatchError(
            f"{origin} does not fit the model ({len(problems)} tensors differ):\n  " + "\n  ".join(problems)
        )
    model.load_state_dict(weights)


def init_from_checkpoint(
    model: nn.Module, path: str | os.PathLike, target: Alphabet, new_chars: str = "zero", features: Mapping | None = None
) -> None:
    """Initialize ``model`` (for alphabet ``target``) from a tmaps checkpoint.

    ``features``, the current run's feature config, is compared with the checkpoint's: weights
    that fit but were trained on other features (another normalization, say) are a warning.
    """
    checkpoint = read_checkpoint(path)
    stored = checkpoint["hyper_parameters"]
    if features is not None:
        differences = describe_differences(dict(features), dict(stored["features"]))
        if differences:
            warnings.warn(
                f"checkpoint {path} was trained on other features than this run's:\n  " + "\n  ".join(differences), stacklevel=2
            )
    init_from_state_dict(
        model, model_state_dict(checkpoint), Alphabet(stored["alphabet"]), target, new_chars, origin=f"checkpoint {path}"
    )


def layers_to_reinitialize(layer_names: Sequence[str], frozen: Sequence[str], reinit_unfrozen: bool | Sequence[str]) -> list[str]:
    """The layers that ``reinit_unfrozen`` asks for, frozen ones never included."""
    unfrozen = [name for name in layer_names if name not in frozen]
    if reinit_unfrozen is True:
        return unfrozen
    if not reinit_unfrozen:
        return []
    return [name for name in matching_layers(layer_names, reinit_unfrozen) if name in unfrozen]


def prepare_transfer(model: nn.Module, alphabet: Alphabet, config: TransferConfig, features: Mapping | None = None) -> list[str]:
    """Apply a recipe to ``model`` now: initialize, re-initialize, freeze.

    Args:
        model: a model with ``layer_names`` (input side first, output layer ``head`` last),
            built for ``alphabet``.
        alphabet: the alphabet ``model`` predicts.
        config: the recipe.
        features: this run's feature config, checked against the checkpoint's.

    Returns:
        The frozen layers, input side first.
    """
    layer_names = list(model.layer_names)
    if config.init_from:
        init_from_checkpoint(model, config.init_from, alphabet, config.new_chars, features)
        log.info("initialized from %s", config.init_from)
    frozen_names = set(first_layers(layer_names, config.freeze_first)) | set(matching_layers(layer_names, config.freeze_patterns))
    frozen = [name for name in layer_names if name in frozen_names]
    if frozen and not config.init_from:
        warnings.warn(f"freezing {frozen} although transfer.init_from is not set: these layers keep their random weights", stacklevel=2)
    reinitialized = layers_to_reinitialize(layer_names, frozen, config.reinit_unfrozen)
    reinitialize_layers(model, reinitialized)
    freeze_layers(model, frozen)
    log.info("transfer: frozen %s, re-initialized %s", frozen or "none", reinitialized or "none")
    return frozen
