"""Acoustic models, and the registry that builds one from its config (``arch`` plus constructor arguments)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from tmaps.models.conformer import ConformerCTC
from tmaps.models.presets import conformer_small, preset_config, wav2letter_paper, wav2letter_small, wav2letter_small_s3, wav2letter_small_s4
from tmaps.models.wav2letter import ConvBlock, Wav2Letter

ARCHITECTURES: dict[str, type[nn.Module]] = {"wav2letter": Wav2Letter, "conformer": ConformerCTC}
# Checkpoints written before models were a config choice hold Wav2Letter arguments without ``arch``.
DEFAULT_ARCH = "wav2letter"


def model_config(config: Mapping) -> dict:
    """``config`` with its ``arch`` filled in (``DEFAULT_ARCH`` when absent)."""
    return {"arch": DEFAULT_ARCH, **config}


def build_model(config: Mapping) -> nn.Module:
    """The model of a ``model`` config: ``arch`` (a key of ``ARCHITECTURES``) and its constructor arguments.

    Every architecture takes ``n_features`` and ``n_classes``, exposes ``layer_names`` (input
    side first, output layer ``head`` last), ``stride`` (input frames per output frame) and
    ``output_lengths(lengths)``, and maps ``(features (B, n_features, T), lengths (B,))`` to
    ``(log_probs (B, T', n_classes), output_lengths (B,))``.
    """
    arguments = model_config(config)
    arch = arguments.pop("arch")
    if arch not in ARCHITECTURES:
        raise ValueError(f"model.arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
    return ARCHITECTURES[arch](**arguments)


__all__ = [
    "ARCHITECTURES",
    "ConformerCTC",
    "ConvBlock",
    "Wav2Letter",
    "build_model",
    "conformer_small",
    "model_config",
    "preset_config",
    "wav2letter_paper",
    "wav2letter_small",
    "wav2letter_small_s3",
    "wav2letter_small_s4",
]
