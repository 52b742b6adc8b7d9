"""Finding a named layer's weight and channel axis (docs/design.md, "Model")."""

from __future__ import annotations

from torch import Tensor, nn

WEIGHT_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def weight_module(layer: nn.Module) -> nn.Module | None:
    """The layer itself if it is a convolution or ``Linear``, else its first such submodule."""
    return next((module for module in layer.modules() if isinstance(module, WEIGHT_MODULES)), None)


def layer_names(model: nn.Module) -> list[str]:
    """Names of the submodules of ``model`` that have a weight a topographic loss can use."""
    return [name for name, module in model.named_modules() if name and weight_module(module) is not None]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)``, with an error that lists the valid names."""
    try:
        layer = model.get_submodule(name)
    except AttributeError:
        layer = None
    if layer is None or weight_module(layer) is None:
        raise ValueError(
            f"{type(model).__name__} has no layer {name!r} with a convolution or Linear weight; "
            f"valid layer names: {layer_names(model)}"
        )
    return layer


def channel_axis(layer: nn.Module) -> int:
    """Axis of the output channels in the layer's output: 1 for convolutions, -1 for ``Linear``."""
    return -1 if isinstance(weight_module(layer), nn.Linear) else 1


def filter_vectors(layer: nn.Module) -> Tensor:
    """``(out_channels, in_channels * prod(kernel))``: each output channel's incoming weights, flattened."""
    weight = weight_module(layer).weight
    return weight.reshape(weight.shape[0], -1)
