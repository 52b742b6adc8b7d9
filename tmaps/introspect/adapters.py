"""Reading any layer's output as ``(batch, units, time)``, and running waveform-input models.

Convolutional models return ``(batch, units, time)`` tensors; transformers and conformers
return ``(batch, time, units)`` or time-major ``(time, batch, units)`` tensors, often inside a
tuple (torchaudio's wav2vec 2.0 layers return ``(x, position_bias)``) or a dataclass. An
:class:`OutputAdapter` says how to read one layer:

- ``element``: which entry of a tuple, list, mapping or dataclass output holds the
  activations (index, key or attribute name). Required when the output is not a tensor.
- ``time_axis`` and ``batch_axis``: declared, or found by probing the first batch
  (:func:`read_axes`): the batch axis has the batch's size, the time axis a length of the
  input's *length family* (the input's length and the lengths that the convolutions and
  poolings of the pass produced, see ``TimeAxisProbe.lengths``). A layer whose weight module is
  a convolution keeps the Conv convention (batch first, time last); for a ``Linear`` the last
  axis holds the units and is never the time axis. Every other axis is a unit axis: units
  are their flattened product (``channels * height`` for ``Conv2d`` outputs).

A 2-d output without a declared time axis is ``(batch, units)``: one frame per utterance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from tmaps.topo.layers import weight_module


@dataclass(frozen=True)
class ModelInput:
    """Where a batch holds the model input and its lengths, e.g. log-mel frames or waveform samples.

    The input's last axis is its time axis; ``NAP(frame_rate=...)`` is its rate (100 for
    log-mel frames, 16000 for samples).
    """

    key: str = "features"
    lengths_key: str = "feature_lengths"


FEATURES = ModelInput("features", "feature_lengths")
WAVEFORM = ModelInput("audio", "audio_lengths")


def waveform_forward(model: nn.Module, batch: Mapping) -> tuple[Tensor, Tensor]:
    """Run a waveform-input CTC model such as torchaudio's ``Wav2Vec2Model`` on ``batch["audio"]``.

    The model is called as ``model(audio (B, samples), audio_lengths (B,))``, so that it builds
    its own padding mask from the lengths, and must return ``(logits (B, T', C), output_lengths
    (B,))``; the logits are log-softmaxed over ``C``. Use with ``NAP(..., inputs=WAVEFORM,
    frame_rate=16000)``.
    """
    logits, output_lengths = model(batch[WAVEFORM.key], batch[WAVEFORM.lengths_key])
    if output_lengths is None:
        raise ValueError(f"{type(model).__name__} returned no output lengths; pass audio_lengths in the batch")
    return logits.log_softmax(dim=-1), output_lengths


@dataclass(frozen=True)
class OutputAdapter:
    """How to read one layer's output (see the module docstring).

    Args:
        element: index, key or attribute of the activations in a tuple, list, mapping or
            dataclass output; ``None`` for tensor outputs.
        time_axis: the time axis, or ``None`` to probe it (2-d outputs: no time axis).
        batch_axis: the batch axis, or ``None`` to probe it.
    """

    element: int | str | None = None
    time_axis: int | None = None
    batch_axis: int | None = None

    def select(self, layer: str, output: Any) -> Tensor:
        """The activation tensor of ``output``."""
        if isinstance(output, Tensor) and self.element is None:
            return output
        if self.element is None:
            raise ValueError(
                f"layer {layer!r} returns a {type(output).__name__} of {describe(output)}, not a tensor; "
                f"declare which element holds its activations, e.g. adapters={{{layer!r}: OutputAdapter(element=0)}}"
            )
        try:
            if dataclasses.is_dataclass(output):
                selected = getattr(output, self.element)
            else:
                selected = output[self.element]
        except (AttributeError, IndexError, KeyError, TypeError):
            raise ValueError(f"layer {layer!r} returns {describe(output)}, which has no element {self.element!r}") from None
        if not isinstance(selected, Tensor):
            raise ValueError(f"element {self.element!r} of the output of layer {layer!r} is a {type(selected).__name__}, not a tensor")
        return selected

    def replace(self, output: Any, tensor: Tensor) -> Any:
        """``output`` with its activations replaced by ``tensor`` (what a forward hook returns)."""
        if self.element is None:
            return tensor
        if dataclasses.is_dataclass(output):
            return dataclasses.replace(output, **{self.element: tensor})
        if isinstance(output, Mapping):
            return {**output, self.element: tensor}
        replaced = list(output)
        replaced[self.element] = tensor
        return type(output)(replaced) if isinstance(output, tuple) and not hasattr(output, "_fields") else type(output)(*replaced)


def describe(output: Any) -> str:
    """Shapes of a layer output for error messages, e.g. ``(tensor (2, 49, 64), None)``."""
    if isinstance(output, Tensor):
        return f"tensor {tuple(output.shape)}"
    if dataclasses.is_dataclass(output):
        fields = ", ".join(f"{field.name}={describe(getattr(output, field.name))}" for field in dataclasses.fields(output))
        return f"{type(output).__name__}({fields})"
    if isinstance(output, Mapping):
        return "{" + ", ".join(f"{key!r}: {describe(value)}" for key, value in output.items()) + "}"
    if isinstance(output, (tuple, list)):
        return "(" + ", ".join(describe(value) for value in output) + ")"
    return type(output).__name__


@dataclass(frozen=True)
class Axes:
    """The batch and time axis of a layer's activations (``time`` is ``None`` without one)."""

    batch: int
    time: int | None
    ndim: int

    @property
    def conv_convention(self) -> bool:
        """Batch first and time (if any) last, as ``(batch, units, time)`` convolution outputs."""
        return self.batch == 0 and self.time in (None, self.ndim - 1)

    def units_by_time(self, tensor: Tensor) -> Tensor:
        """``(batch, units, time)``; units are the other axes flattened, time 1 when there is none."""
        if self.time is None:
            return tensor.movedim(self.batch, 0).reshape(tensor.shape[self.batch], -1, 1)
        moved = tensor.movedim((self.batch, self.time), (0, -1))
        return moved.reshape(moved.shape[0], -1, moved.shape[-1])


def read_axes(layer: str, module: nn.Module, tensor: Tensor, adapter: OutputAdapter, batch_size: int, lengths: Iterable[int]) -> Axes:
    """The batch and time axis of ``layer``'s activations ``tensor`` in a batch of ``batch_size``.

    Args:
        layer, module: the layer's name and module.
        tensor: its activations in the probed batch.
        adapter: declared axes (``None`` entries are probed).
        lengths: the input's length family (the input's time length and every length the
            convolutions of the pass produced).

    Raises:
        ValueError: no axis of the length family, or more than one reading fits; the message
            names the layer and the shapes seen.
    """
    ndim, shape = tensor.ndim, tuple(tensor.shape)
    family = sorted(set(int(length) for length in lengths))

    def axis(value: int | None) -> int | None:
        return None if value is None else value % ndim

    if ndim == 2 and adapter.time_axis is None:
        batch = axis(adapter.batch_axis) if adapter.batch_axis is not None else 0
        if shape[batch] != batch_size:
            raise ValueError(f"layer {layer!r}: a 2-d output {shape} whose batch axis {batch} does not have the batch size {batch_size}")
        return Axes(batch, None, ndim)
    units_last, time_last = _conventions(module)
    batch_candidates = [axis(adapter.batch_axis)] if adapter.batch_axis is not None else [a for a in range(ndim) if shape[a] == batch_size]
    if adapter.time_axis is not None:
        time_candidates = [axis(adapter.time_axis)]
    elif time_last:
        time_candidates = [ndim - 1] if shape[-1] in family else []
    else:
        time_candidates = [a for a in range(ndim - 1 if units_last else ndim) if shape[a] in family]
    if time_last and adapter.batch_axis is None:
        batch_candidates = [a for a in batch_candidates if a == 0]
    readings = [Axes(b, t, ndim) for b in batch_candidates for t in time_candidates if b != t]
    if len(readings) == 1:
        return readings[0]
    declare = f"declare them with adapters={{{layer!r}: OutputAdapter(time_axis=..., batch_axis=...)}}"
    if not time_candidates:
        raise ValueError(
            f"layer {layer!r} returns a tensor {shape} with no time axis of the input's length family {family} "
            f"(batch size {batch_size}); profile a layer with a time axis, or {declare}"
        )
    raise ValueError(
        f"layer {layer!r} returns a tensor {shape} that reads in {len(readings)} ways with batch size {batch_size} and "
        f"the input's length family {family}: (batch, time) axes {[(r.batch, r.time) for r in readings]}; {declare}"
    )


def _conventions(module: nn.Module) -> tuple[bool, bool]:
    """``(units_last, time_last)``: what a layer's weight module says about its output layout."""
    weights = weight_module(module)
    return isinstance(weights, nn.Linear), isinstance(weights, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
