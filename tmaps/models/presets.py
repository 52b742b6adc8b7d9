"""The model presets, as builder functions in the manner of torchaudio's ``models/``.

Each preset's one source is its Hydra config, ``conf/model/<name>.yaml`` (shipped as
``tmaps.conf``): the config has to hold every argument so that ``model.dropout=0`` and the like
override it, and checkpoints store those full arguments. The builders read it.
"""

from __future__ import annotations

from importlib import resources

import yaml

from tmaps.models.conformer import ConformerCTC
from tmaps.models.wav2letter import Wav2Letter


def preset_config(name: str) -> dict:
    """The model config of ``conf/model/<name>.yaml``: ``arch`` and the constructor arguments but ``n_features``, ``n_classes``."""
    folder = resources.files("tmaps.conf").joinpath("model")
    path = folder.joinpath(f"{name}.yaml")
    if not path.is_file():
        presets = sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))
        raise ValueError(f"model preset {name!r} does not exist; presets are {presets}")
    return yaml.safe_load(path.read_text())


def _preset_arguments(name: str, arch: str) -> dict:
    arguments = preset_config(name)
    if arguments.pop("arch") != arch:
        raise ValueError(f"conf/model/{name}.yaml is not a {arch} model")
    return arguments


def wav2letter_paper(n_features: int = 128, n_classes: int = 29) -> Wav2Letter:
    """The paper's architecture (``model=wav2letter``): 250-channel conv0..conv7 (kernels 48, 7, ...),
    conv8 (kernel 32, 2000 channels), conv9 (kernel 1, 2000 channels) and the head; no norm, no dropout.

    The same as ``torchaudio.models.Wav2Letter(num_classes, "mfcc", n_features)``, about 23 M
    parameters on 40 mel bands.

    Args:
        n_features: input feature channels (mel bands).
        n_classes: output classes, blank included.

    Returns:
        Wav2Letter: ``model(features (B, n_features, T), lengths (B,))`` gives
        ``log_probs (B, T', n_classes)`` and ``output_lengths (B,)``, ``T'`` about ``T / 2``.
    """
    return Wav2Letter(n_features=n_features, n_classes=n_classes, **_preset_arguments("wav2letter", "wav2letter"))


def wav2letter_small(n_features: int = 40, n_classes: int = 29) -> Wav2Letter:
    """The paper's 11 layers at CPU size (``model=small``), about 2.3 M parameters on 40 mel bands.

    192-channel conv0..conv7 (kernels 11, 7, ...), 512-channel conv8 and conv9 (kernel 1),
    BatchNorm and dropout 0.1: layer names and counts match the paper's, so that transfer
    recipes such as "freeze the first 8 layers" mean the same on both. Arguments and shapes as
    :func:`wav2letter_paper`'s.
    """
    return Wav2Letter(n_features=n_features, n_classes=n_classes, **_preset_arguments("small", "wav2letter"))


def wav2letter_small_s4(n_features: int = 40, n_classes: int = 29) -> Wav2Letter:
    """``small`` with a 4x front end (``model=small_s4``: strides 2 and 2 in conv0 and conv1), about half a step's compute.

    Arguments as :func:`wav2letter_small`'s; ``T'`` about ``T / 4`` (25 output frames a second).
    """
    return Wav2Letter(n_features=n_features, n_classes=n_classes, **_preset_arguments("small_s4", "wav2letter"))


def wav2letter_small_s3(n_features: int = 40, n_classes: int = 29) -> Wav2Letter:
    """``small`` with a 3x front end (``model=small_s3``: stride 3 in conv0), which keeps more frames per character than ``small_s4``.

    Arguments as :func:`wav2letter_small`'s; ``T'`` about ``T / 3``.
    """
    return Wav2Letter(n_features=n_features, n_classes=n_classes, **_preset_arguments("small_s3", "wav2letter"))


def conformer_small(n_features: int = 40, n_classes: int = 29) -> ConformerCTC:
    """A CPU-size conformer CTC model (``model=conformer_small``), about 1.3 M parameters on 40 mel bands.

    Two strided convolutions (conv0, conv1: 4x subsampling, 40 ms frames), four conformer blocks
    of width 144 with 4 heads and 256 feed-forward units (block0..block3), a kernel-1 head.

    Args:
        n_features: input feature channels (mel bands).
        n_classes: output classes, blank included.

    Returns:
        ConformerCTC: ``model(features (B, n_features, T), lengths (B,))`` gives
        ``log_probs (B, T', n_classes)`` and ``output_lengths (B,)``, ``T'`` about ``T / 4``; block
        outputs are time-major ``(T', B, 144)``, the feed-forward units ``(T', B, 256)``.
    """
    return ConformerCTC(n_features=n_features, n_classes=n_classes, **_preset_arguments("conformer_small", "conformer"))
