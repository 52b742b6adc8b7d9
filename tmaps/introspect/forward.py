"""How a model runs on a batch: the forward rule, its outputs, eval mode and the batch's device.

Shared by the profiler (``tmaps.introspect.nap``), the attributions
(``tmaps.introspect.attribution``) and forced alignment (``tmaps.introspect.alignment``).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from tmaps.introspect.frames import FrameMap

ForwardFn = Callable[[nn.Module, Mapping], "Tensor | tuple[Tensor, Tensor]"]


def default_forward(model: nn.Module, batch: Mapping) -> Tensor | tuple[Tensor, Tensor]:
    """Run ``model`` on a batch: the rule used when no ``forward`` is given.

    A model whose ``forward`` takes two or more positional arguments (or ``*args``) is called
    as ``model(features, feature_lengths)`` and must return ``(log_probs (B, T', C),
    output_lengths (B,))`` like ``tmaps.models.Wav2Letter``. Any other model is called as
    ``model(features)`` and must return scores ``(B, C, T')`` like
    ``torchaudio.models.Wav2Letter``; they are log-softmaxed over ``C`` (a no-op on log
    probabilities) and transposed to ``(B, T', C)``.
    """
    parameters = inspect.signature(model.forward).parameters.values()
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    if len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional):
        return model(batch["features"], batch["feature_lengths"])
    return model(batch["features"]).log_softmax(dim=1).transpose(1, 2)


def model_outputs(result: Tensor | tuple[Tensor, Tensor], batch: Mapping, output_map: FrameMap) -> tuple[Tensor, Tensor]:
    """``log_probs (B, T', C)`` and ``output_lengths (B,)`` of a forward result.

    Results without lengths get them from the output's frame map and the feature lengths.
    """
    if isinstance(result, tuple):
        return result[0], result[1]
    return result, output_map.lengths(batch["feature_lengths"], result.shape[1])


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode (no dropout, BatchNorm statistics untouched), its mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def to_model_device(model: nn.Module, batch: Mapping) -> dict:
    """The batch with its tensors on the device of the model's parameters."""
    device = next(model.parameters(), torch.empty(0)).device
    return {key: value.to(device) if isinstance(value, Tensor) else value for key, value in batch.items()}

