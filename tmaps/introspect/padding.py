"""Padding and profiles: whether a model keeps padded frames out of valid ones, and batches without padding.

A model is padding-invariant when every valid frame of an utterance gets the same value alone
and inside a zero-padded batch of longer utterances. ``tmaps.models.Wav2Letter`` is (it masks
padding before each convolution and in BatchNorm). A plain stack of padded convolutions, such
as ``torchaudio.models.Wav2Letter``, is not: the last valid frames of a short utterance see the
batch's padding through their receptive field, so their activations, and the profiles made of
them, depend on how utterances are batched.

``PaddingCheck`` measures this on one padded batch; ``unpadded`` splits a batch into
utterances without padding, which is what ``NAP(..., exact=True)`` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

# Largest difference between an utterance's valid frames alone and batched, relative to the
# layer's largest activation there, that still counts as float noise: convolution algorithms
# differ with the input length, TF32 convolutions on GPUs keep 10 mantissa bits, 16-bit formats
# fewer. Measured on the tiny synthetic corpus: a masked model differs by < 1e-6 in fp32 on the
# CPU, torchaudio's Wav2Letter by 0.26-0.49 in its hidden layers and 0.04 at its output.
PADDING_TOLERANCE = {torch.float16: 1e-1, torch.bfloat16: 1e-1}
DEFAULT_PADDING_TOLERANCE = 1e-2


def is_padded(batch: Mapping) -> bool:
    """Whether the batch holds utterances of different lengths (so some are padded)."""
    return len(set(batch["feature_lengths"].tolist())) > 1


def unpadded(batch: Mapping) -> list[dict]:
    """Each utterance of ``batch`` as a batch of one, its features cut to its own length.

    Tensors and lists with one entry per utterance are split; ``features (B, n_mels, T_max)``
    become ``(1, n_mels, length)``; anything else is shared.
    """
    n_utterances = len(batch["records"])
    parts = []
    for b in range(n_utterances):
        part = {}
        for key, value in batch.items():
            if isinstance(value, (Tensor, list)) and getattr(value, "ndim", 1) > 0 and len(value) == n_utterances:
                part[key] = value[b : b + 1]
            else:
                part[key] = value
        part["features"] = part["features"][..., : int(batch["feature_lengths"][b])]
        parts.append(part)
    return parts


class PaddingCheck:
    """Compares the layers' outputs for a batch's shortest utterance alone and inside the padded batch.

    Use as a context manager around the batched forward pass (its hooks keep the shortest
    utterance's outputs, before any later module can change them in place), then call
    ``differences``, which runs the utterance alone.

    Args:
        model: the network.
        layers: module names (``model.get_submodule``) whose outputs have the batch first and,
            where they have one, time last.
        batch: the padded batch about to run.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], batch: Mapping) -> None:
        self.model = model
        self.layers = list(layers)
        self.batch = batch
        self.shortest = int(batch["feature_lengths"].argmin())
        self.batched: dict[str, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hooks(self, outputs: dict[str, Tensor], row: int) -> list[torch.utils.hooks.RemovableHandle]:
        """Hooks that keep a copy of row ``row`` of each layer's output in ``outputs``."""

        def keep(layer: str) -> Callable:
            def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
                if isinstance(output, Tensor):
                    outputs[layer] = output.detach()[row].clone()

            return hook

        return [self.model.get_submodule(layer).register_forward_hook(keep(layer)) for layer in self.layers]

    def __enter__(self) -> PaddingCheck:
        self._handles = self._hooks(self.batched, self.shortest)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def differences(self, forward: Callable[[nn.Module, Mapping], object]) -> dict[str, float]:
        """Per layer: the largest |alone - batched| over the utterance's valid frames, over the largest |batched| there."""
        alone: dict[str, Tensor] = {}
        handles = self._hooks(alone, 0)
        try:
            with torch.no_grad():
                forward(self.model, unpadded(self.batch)[self.shortest])
        finally:
            for handle in handles:
                handle.remove()
        differences = {}
        for layer in self.layers:
            if layer not in alone or layer not in self.batched:
                continue
            single, batched = alone[layer].float(), self.batched[layer].float()
            if single.ndim > 0 and batched.ndim > 0 and single.shape[-1] != batched.shape[-1]:
                batched = batched[..., : single.shape[-1]]
            scale = batched.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
            differences[layer] = float((single - batched).abs().max() / scale)
        return differences

    def tolerance(self) -> float:
        """The relative difference above which a layer counts as not padding-invariant, for its dtype."""
        dtypes = [output.dtype for output in self.batched.values()]
        return max((PADDING_TOLERANCE.get(dtype, DEFAULT_PADDING_TOLERANCE) for dtype in dtypes), default=DEFAULT_PADDING_TOLERANCE)
