"""Wav2Letter: a fully convolutional CTC acoustic model on log-mel features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from tmaps.models.masked_batchnorm import masked_batch_norm

# The architecture of Collobert et al. (2016) as used by Kunze et al. (2017) and torchaudio:
# 10 convolutions plus the output layer, 11 layers in all.
PAPER_CHANNELS = (250,) * 8 + (2000, 2000)
PAPER_KERNEL_SIZES = (48,) + (7,) * 7 + (32, 1)
PAPER_STRIDES = (2,) + (1,) * 9


class ConvBlock(nn.Module):
    """``Conv1d`` -> optional norm -> ReLU -> optional dropout, blind to padded frames.

    Padding never reaches a valid frame: the input's padded frames must be 0 (the masked
    convolution of NeMo's Jasper/QuartzNet encoders), as a ``ConvBlock``'s output is and the
    models make their input features once (:func:`zero_padding`), and the norm sees the valid
    output frames only, so BatchNorm's batch statistics (and the running
    statistics it updates, with ``nn.BatchNorm1d``'s momentum and unbiased variance) are those
    of the speech, not of the batch's padding (``masked_batch_norm``; pooled over processes for a
    ``SyncBatchNorm`` under DDP). Padded output frames are 0. An utterance thus gives the same
    output alone and inside any padded batch.

    Args:
        in_channels: input channels.
        out_channels: output channels (the units that topographic maps lay out).
        kernel_size: width of the kernel in frames.
        stride: hop in frames.
        norm: ``"none"``, ``"batch"`` (``BatchNorm1d``) or ``"layer"`` (``LayerNorm`` over the
            channels of each frame).
        dropout: dropout probability after the activation.

    Shapes:
        ``forward(x, lengths)`` takes ``x (batch, in_channels, time)`` and the valid frames
        ``lengths (batch,)``, and returns ``(batch, out_channels, time')`` with
        ``time' = floor((time + 2 * padding - kernel_size) / stride) + 1`` and
        ``padding = (kernel_size - 1) // 2``; ``output_length(lengths)`` gives the valid
        output frames.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        norm: str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if norm not in ("none", "batch", "layer"):
            raise ValueError(f"norm must be 'none', 'batch' or 'layer', got {norm!r}")
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, bias=norm == "none"
        )
        self.norm = {"none": nn.Identity(), "batch": nn.BatchNorm1d(out_channels), "layer": _ChannelLayerNorm(out_channels)}[norm]
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        padded = has_padding(lengths, x.shape[-1])
        x = self.conv(x)
        valid = valid_frames(self.output_length(lengths), x.shape[-1]) if padded else None
        if isinstance(self.norm, _BatchNorm):
            # Zero at padded frames, where ReLU and dropout keep it 0.
            return self.dropout(self.act(masked_batch_norm(self.norm, x, valid)))
        # LayerNorm never mixes frames.
        x = self.dropout(self.act(self.norm(x)))
        return x if valid is None else x.masked_fill(~valid[:, None], 0.0)

    def output_length(self, length: Tensor) -> Tensor:
        return _conv_output_length(self.conv, length)


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a ``(batch, channels, time)`` tensor."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def zero_padding(x: Tensor, lengths: Tensor) -> Tensor:
    """``x (batch, channels, time)`` with the frames past each utterance's ``lengths (batch,)`` set to 0."""
    return x.masked_fill(~valid_frames(lengths, x.shape[-1])[:, None], 0.0) if has_padding(lengths, x.shape[-1]) else x


def has_padding(lengths: Tensor, n_frames: int) -> bool:
    """Whether any utterance is shorter than ``n_frames`` (else there is nothing to mask).

    Always true while compiling or exporting: ``torch.export`` and the ONNX exporter cannot branch
    on the values of ``lengths``, and the masked path is exact for unpadded batches too.
    """
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return True
    return bool((lengths < n_frames).any())


def valid_frames(lengths: Tensor, n_frames: int) -> Tensor:
    """``(batch, n_frames)``: whether each frame lies within its utterance's ``lengths (batch,)``."""
    return torch.arange(n_frames, device=lengths.device) < lengths[:, None]


def _conv_output_length(conv: nn.Conv1d, length: Tensor) -> Tensor:
    (kernel,), (stride,), (padding,), (dilation,) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    return torch.div(length + 2 * padding - dilation * (kernel - 1) - 1, stride, rounding_mode="floor") + 1


class Wav2Letter(nn.Module):
    """Wav2Letter acoustic model (Collobert et al., 2016) with CTC character outputs.

    The hidden layers are named ``conv0`` ... ``conv{n-1}`` and the output layer ``head``;
    topographic losses, transfer recipes and introspection refer to layers by these names.
    The defaults are the paper's architecture (the same as ``torchaudio.models.Wav2Letter``
    on mel features).

    Args:
        n_features: input feature channels (mel bands).
        n_classes: output classes, blank included (``Alphabet.n_classes``).
        channels: output channels of each hidden layer.
        kernel_sizes: kernel width of each hidden layer.
        strides: stride of each hidden layer.
        norm: normalization after each hidden convolution: ``"none"``, ``"batch"`` or ``"layer"``.
        dropout: dropout after each hidden activation.

    Shapes:
        ``forward(features, lengths)`` takes ``features (batch, n_features, time)`` and
        ``lengths (batch,)`` in frames, and returns ``log_probs (batch, time', n_classes)``
        (log-softmax over classes) and ``output_lengths (batch,)``.
    """

    def __init__(
        self,
        n_features: int = 128,
        n_classes: int = 29,
        channels: Sequence[int] = PAPER_CHANNELS,
        kernel_sizes: Sequence[int] = PAPER_KERNEL_SIZES,
        strides: Sequence[int] = PAPER_STRIDES,
        norm: str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not (len(channels) == len(kernel_sizes) == len(strides)) or not channels:
            raise ValueError(
                "channels, kernel_sizes and strides need one entry per hidden layer; got "
                f"{len(channels)}, {len(kernel_sizes)} and {len(strides)}"
            )
        self.n_features = n_features
        self.n_classes = n_classes
        self.hidden_names = [f"conv{i}" for i in range(len(channels))]
        in_channels = n_features
        for name, out_channels, kernel, stride in zip(self.hidden_names, channels, kernel_sizes, strides):
            self.add_module(name, ConvBlock(in_channels, out_channels, kernel, stride, norm, dropout))
            in_channels = out_channels
        self.head = nn.Conv1d(in_channels, n_classes, kernel_size=1)

    @property
    def layer_names(self) -> list[str]:
        """All layers in order, output layer last."""
        return [*self.hidden_names, "head"]

    @property
    def stride(self) -> int:
        """Input frames per output frame."""
        total = 1
        for name in self.hidden_names:
            total *= getattr(self, name).conv.stride[0]
        return total

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for name in self.hidden_names:
            lengths = getattr(self, name).output_length(lengths)
        return lengths

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = zero_padding(features, lengths)
        for name in self.hidden_names:
            block = getattr(self, name)
            x = block(x, lengths)
            lengths = block.output_length(lengths)
        logits = self.head(x)
        # CPU autocast keeps log_softmax in bf16; CTC needs the normalizer in fp32.
        return logits.transpose(1, 2).float().log_softmax(dim=-1), lengths
