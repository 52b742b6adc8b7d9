"""Transfer learning between languages: alphabet swap, freezing, re-initialization (plain PyTorch)."""

from tmaps.transfer.alphabet import NEW_CHARS, map_head_rows, shared_classes, swap_alphabet
from tmaps.transfer.layers import (
    ALL_BUT_HEAD,
    discriminative_lr,
    first_layers,
    freeze_layers,
    is_frozen,
    matching_layers,
    reinitialize_layers,
    unfreeze_layers,
)
from tmaps.transfer.recipe import (
    TransferConfig,
    init_from_checkpoint,
    init_from_state_dict,
    layers_to_reinitialize,
    prepare_transfer,
)

__all__ = [
    "ALL_BUT_HEAD",
    "NEW_CHARS",
    "TransferConfig",
    "discriminative_lr",
    "first_layers",
    "freeze_layers",
    "init_from_checkpoint",
    "init_from_state_dict",
    "is_frozen",
    "layers_to_reinitialize",
    "map_head_rows",
    "matching_layers",
    "prepare_transfer",
    "reinitialize_layers",
    "shared_classes",
    "swap_alphabet",
    "unfreeze_layers",
]
