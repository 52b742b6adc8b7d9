"""Conformer CTC: a convolutional subsampling front end on log-mel, conformer blocks, a CTC head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchaudio.models.conformer import ConformerLayer

from tmaps.models.wav2letter import ConvBlock, valid_frames, zero_padding


class MaskedConformerLayer(ConformerLayer):
    """torchaudio's ``ConformerLayer`` whose depthwise convolution sees zeros at padded frames.

    torchaudio masks padded frames only as attention keys; its convolution module mixes their
    (non-zero) values into the valid frames near the end of each utterance, so an utterance's
    output would depend on how much padding its batch adds.

    Args: those of ``ConformerLayer``.

    Shapes:
        ``forward(input, key_padding_mask)``: ``input (time, batch, d_model)``,
        ``key_padding_mask (batch, time)`` (``True`` at padded frames); output like ``input``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._padded_frames: Tensor | None = None
        depthwise = self.conv_module.sequential[2]
        depthwise.register_forward_pre_hook(lambda module, inputs: self._zero_padded_frames(*inputs))

    def _zero_padded_frames(self, hidden: Tensor) -> tuple[Tensor] | None:
        """The depthwise convolution's input ``(batch, channels, time)`` with zeros at padded frames."""
        return None if self._padded_frames is None else (hidden.masked_fill(self._padded_frames[:, None, :], 0.0),)

    def forward(self, input: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        self._padded_frames = key_padding_mask
        try:
            return super().forward(input, key_padding_mask)
        finally:
            self._padded_frames = None


class ConformerCTC(nn.Module):
    """Conformer encoder (Gulati et al., 2020) with CTC character outputs.

    The front end is a stack of strided ``ConvBlock``\\ s on log-mel (``conv0`` ...), the
    encoder is torchaudio's ``ConformerLayer``\\ s (``MaskedConformerLayer``), named ``block0`` ...
    ``block{n-1}``, and the
    output layer ``head`` is a ``Conv1d`` of kernel 1 (as in ``Wav2Letter``, so alphabet swaps
    apply unchanged). Inside block ``i``, the units of the two feed-forward modules are the
    outputs of ``block{i}.ffn1.sequential.1`` and ``block{i}.ffn2.sequential.1`` (the
    ``Linear`` into the hidden layer, before its SiLU); topographic losses and profiles take
    these names.

    Args:
        n_features: input feature channels (mel bands).
        n_classes: output classes, blank included.
        subsample_channels: output channels of each front-end convolution.
        subsample_kernel_sizes: kernel width of each front-end convolution.
        subsample_strides: stride of each front-end convolution; their product is ``stride``.
        d_model: width of the conformer blocks (the last front-end convolution's channels are
            projected to it by a kernel-1 convolution when they differ).
        n_blocks: conformer blocks.
        n_heads: attention heads per block.
        ffn_dim: hidden units of each feed-forward module.
        conv_kernel_size: depthwise convolution kernel of each block (odd).
        dropout: dropout inside the blocks.

    Shapes:
        ``forward(features, lengths)`` takes ``features (batch, n_features, time)`` and
        ``lengths (batch,)`` in frames, and returns ``log_probs (batch, time', n_classes)`` and
        ``output_lengths (batch,)`` with ``time'`` given by the front end's convolutions.
        Block outputs and feed-forward units are time-major: ``(time', batch, d_model)`` and
        ``(time', batch, ffn_dim)``.
    """

    def __init__(
        self,
        n_features: int = 40,
        n_classes: int = 29,
        subsample_channels: Sequence[int] = (144, 144),
        subsample_kernel_sizes: Sequence[int] = (3, 3),
        subsample_strides: Sequence[int] = (2, 2),
        d_model: int = 144,
        n_blocks: int = 4,
        n_heads: int = 4,
        ffn_dim: int = 576,
        conv_kernel_size: int = 15,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not (len(subsample_channels) == len(subsample_kernel_sizes) == len(subsample_strides)) or not subsample_channels:
            raise ValueError(
                "subsample_channels, subsample_kernel_sizes and subsample_strides need one entry per front-end "
                f"convolution; got {len(subsample_channels)}, {len(subsample_kernel_sizes)} and {len(subsample_strides)}"
            )
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.n_features = n_features
        self.n_classes = n_classes
        self.frontend_names = [f"conv{i}" for i in range(len(subsample_channels))]
        self.block_names = [f"block{i}" for i in range(n_blocks)]
        in_channels = n_features
        for name, channels, kernel, stride in zip(self.frontend_names, subsample_channels, subsample_kernel_sizes, subsample_strides):
            self.add_module(name, ConvBlock(in_channels, channels, kernel, stride))
            in_channels = channels
        self.projection = nn.Conv1d(in_channels, d_model, kernel_size=1) if in_channels != d_model else nn.Identity()
        for name in self.block_names:
            self.add_module(name, MaskedConformerLayer(d_model, ffn_dim, n_heads, conv_kernel_size, dropout=dropout))
        self.head = nn.Conv1d(d_model, n_classes, kernel_size=1)

    @property
    def layer_names(self) -> list[str]:
        """The front end, the blocks and the output layer, in order."""
        return [*self.frontend_names, *self.block_names, "head"]

    @property
    def ffn_unit_names(self) -> list[str]:
        """The hidden ``Linear`` of both feed-forward modules of every block."""
        return [f"{block}.{ffn}.sequential.1" for block in self.block_names for ffn in ("ffn1", "ffn2")]

    @property
    def stride(self) -> int:
        """Input frames per output frame."""
        total = 1
        for name in self.frontend_names:
            total *= getattr(self, name).conv.stride[0]
        return total

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for name in self.frontend_names:
            lengths = getattr(self, name).output_length(lengths)
        return lengths

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        # Padded frames are zero before every layer that mixes frames, so that each utterance's
        # output is what it would be alone: the padding of its batch never leaks in.
        x = zero_padding(features, lengths)
        for name in self.frontend_names:
            block = getattr(self, name)
            x = block(x, lengths)  # zero at padded frames
            lengths = block.output_length(lengths)
        output_lengths = lengths
        padding_mask = ~valid_frames(output_lengths, x.shape[-1])
        x = self.projection(x).permute(2, 0, 1)  # (time, batch, d_model), as ConformerLayer takes it
        for name in self.block_names:
            x = getattr(self, name)(x, padding_mask)
        logits = self.head(x.permute(1, 2, 0))
        return logits.transpose(1, 2).log_softmax(dim=-1), output_lengths

