"""Where a layer's frames lie in time.

Feature frame ``n`` is centred at ``n / frame_rate`` seconds (``frame_rate = 100`` for the
10 ms hop of docs/design.md). A layer's frame ``m`` is centred at input frame
``m * stride + offset``, where ``stride`` is the layer's cumulative stride and ``offset`` the
centre of its receptive field relative to input frame 0 (convolutions padded on both sides by
``(kernel - 1) // 2`` have ``offset = 0`` for odd kernels and ``stride / 2``-ish for even ones).

``TimeAxisProbe`` records the time-axis geometry (kernel, stride, padding, dilation of the last
axis) of every ``Conv1d``, ``Conv2d`` and 1-d/2-d max or average pooling that a forward pass
runs, in call order. The calls chain from the input as long as each call's input length is the
previous call's output length. A layer of ``n`` frames takes the longest such chain that ends
in ``n`` frames; calls after it are side branches whose output does not become the layer's
time axis, such as the positional convolution of wav2vec 2.0, whose output is one frame
longer and trimmed before it is added. Then the layer's ``FrameMap`` is exact: stride and
offset follow from the chain, and each utterance's number of valid frames follows from its
input length by the convolution length formula. When no chain ends in ``n`` frames
(reshapes, other length-changing modules) the map is estimated
from the padded lengths alone: ``stride = round(T_in / T_layer)``, the frames spread evenly over
the input (``offset = (T_in - 1 - (T_layer - 1) * stride) / 2``), and an utterance of ``n``
input frames has ``ceil(n / stride)`` valid frames.

A segment ``[start_s, end_s)`` covers the frames whose centres fall inside it; a segment too
short to contain a frame centre covers the one frame nearest its midpoint, so that no segment
vanishes at strided layers. A segment's onset frame is the frame nearest ``start_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

# Frame positions within this many frames of an integer count as that integer; it absorbs the
# rounding of times such as 0.05 s * 100 = 5.000000000000001.
_TOLERANCE = 1e-6
_TIME_MODULES = (nn.Conv1d, nn.Conv2d, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)


@dataclass(frozen=True)
class Window:
    """Geometry of one convolution or pooling along the time (last) axis."""

    kernel: int
    stride: int
    dilation: int
    pad_left: int
    pad_right: int

    def output_lengths(self, lengths: Tensor) -> Tensor:
        span = self.dilation * (self.kernel - 1) + 1
        return torch.div(lengths + self.pad_left + self.pad_right - span, self.stride, rounding_mode="floor") + 1


def window_of(module: nn.Module) -> Window | None:
    """The time-axis ``Window`` of a convolution or pooling module; ``None`` if it has none we can read."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        kernel, stride, dilation = module.kernel_size[-1], module.stride[-1], module.dilation[-1]
        if module.padding == "valid":
            pad_left = pad_right = 0
        elif module.padding == "same":
            total = dilation * (kernel - 1)
            pad_left, pad_right = total // 2, total - total // 2
        else:
            pad_left = pad_right = module.padding[-1]
        return Window(kernel, stride, dilation, pad_left, pad_right)
    if isinstance(module, _TIME_MODULES) and not module.ceil_mode:
        kernel, stride, padding = (_last(module.kernel_size), _last(module.stride), _last(module.padding))
        dilation = _last(getattr(module, "dilation", 1))
        return Window(kernel, stride, dilation, padding, padding)
    return None


def _last(value: int | tuple[int, ...]) -> int:
    return value[-1] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class FrameMap:
    """Frame ``m`` of a layer is centred at input frame ``m * stride + offset``.

    Args:
        stride: cumulative stride in input frames.
        offset: centre of frame 0 in input frames.
        windows: the chain of convolutions and poolings that produced the layer when it is
            known (the map is exact), ``None`` when the map was estimated from lengths.
    """

    stride: int
    offset: float
    windows: tuple[Window, ...] | None = None

    @classmethod
    def from_windows(cls, windows: tuple[Window, ...]) -> FrameMap:
        stride, offset = 1, 0.0
        for window in windows:
            offset += stride * (window.dilation * (window.kernel - 1) / 2 - window.pad_left)
            stride *= window.stride
        return cls(stride, offset, windows)

    @classmethod
    def estimate(cls, n_input_frames: int, n_frames: int) -> FrameMap:
        if n_frames > n_input_frames:
            raise ValueError(f"a layer with {n_frames} frames for {n_input_frames} input frames upsamples; only strided layers are supported")
        stride = max(1, round(n_input_frames / n_frames))
        return cls(stride, (n_input_frames - 1 - (n_frames - 1) * stride) / 2)

    @property
    def exact(self) -> bool:
        return self.windows is not None

    def lengths(self, input_lengths: Tensor, n_frames: int) -> Tensor:
        """Valid frames ``(batch,)`` of utterances with ``input_lengths (batch,)``, at most ``n_frames``."""
        if self.windows is None:
            lengths = torch.div(input_lengths + self.stride - 1, self.stride, rounding_mode="floor")
        else:
            lengths = input_lengths
            for window in self.windows:
                lengths = window.output_lengths(lengths)
        return lengths.clamp(0, n_frames)

    def position(self, seconds: np.ndarray, frame_rate: float) -> np.ndarray:
        """Fractional frame index of times in seconds."""
        return (np.asarray(seconds, dtype=np.float64) * frame_rate - self.offset) / self.stride

    def seconds(self, frames: np.ndarray, frame_rate: float) -> np.ndarray:
        """Time in seconds of (fractional) frame indices."""
        return (np.asarray(frames, dtype=np.float64) * self.stride + self.offset) / frame_rate

    def span_seconds(self, first: np.ndarray, stop: np.ndarray, frame_rate: float) -> tuple[np.ndarray, np.ndarray]:
        """Start and end times of frame spans ``[first, stop)``: half a frame around their centres.

        ``segment_frames`` of these times gives the spans back.
        """
        return self.seconds(np.asarray(first) - 0.5, frame_rate), self.seconds(np.asarray(stop) - 0.5, frame_rate)

    def segment_frames(self, starts_s: np.ndarray, ends_s: np.ndarray, frame_rate: float) -> tuple[np.ndarray, np.ndarray]:
        """First and one-past-last frame ``(n_segments,)`` of each segment, not clipped to the utterance."""
        first = np.ceil(self.position(starts_s, frame_rate) - _TOLERANCE)
        stop = np.ceil(self.position(ends_s, frame_rate) - _TOLERANCE)
        nearest = self.onset_frames((np.asarray(starts_s) + np.asarray(ends_s)) / 2, frame_rate)
        short = stop <= first
        first[short], stop[short] = nearest[short], nearest[short] + 1
        return first.astype(np.int64), stop.astype(np.int64)

    def onset_frames(self, starts_s: np.ndarray, frame_rate: float) -> np.ndarray:
        """Frame nearest each time, ``(n_segments,)``, not clipped to the utterance."""
        return np.floor(self.position(starts_s, frame_rate) + 0.5 + _TOLERANCE).astype(np.int64)

    def as_dict(self) -> dict[str, float | int | bool]:
        return {"stride": self.stride, "offset": self.offset, "exact": self.exact}


class TimeAxisProbe:
    """Records the time-axis geometry of the convolutions and poolings a forward pass runs.

    Use as a context manager around one forward pass, then ask ``frame_map`` for any tensor
    that pass produced (layer activations, the output). Calls recorded so far count, so a
    forward hook may ask for its own layer's map while the pass is still running.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.calls: list[tuple[Window | None, int, int]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> TimeAxisProbe:
        for module in self.model.modules():
            if isinstance(module, _TIME_MODULES):
                self._handles.append(module.register_forward_hook(self._record))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _record(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.calls.append((window_of(module), inputs[0].shape[-1], output.shape[-1]))

    def _chain(self, n_input_frames: int) -> list[tuple[Window, int]]:
        """The recorded calls that chain from the input, with each one's output length."""
        chain, length = [], n_input_frames
        for window, n_in, n_out in self.calls:
            if window is None or n_in != length:
                break
            chain.append((window, n_out))
            length = n_out
        return chain

    def lengths(self, n_input_frames: int) -> set[int]:
        """The input's length family: its length and every length the recorded calls produced from it."""
        return {n_input_frames, *(n_out for _, n_out in self._chain(n_input_frames))}

    def frame_map(self, n_input_frames: int, n_frames: int) -> FrameMap:
        """Exact map from the longest chain of recorded calls that ends in ``n_frames`` frames, else the estimate."""
        chain = self._chain(n_input_frames)
        ends = [i + 1 for i, (_, n_out) in enumerate(chain) if n_out == n_frames]
        if ends:
            return FrameMap.from_windows(tuple(window for window, _ in chain[: ends[-1]]))
        if n_frames == n_input_frames:
            return FrameMap.from_windows(())
        return FrameMap.estimate(n_input_frames, n_frames)
