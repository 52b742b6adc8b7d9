"""Lightning callbacks that log maps, profiles and weight change during training."""

from tmaps.callbacks.transfer import TransferLearning, setup_transfer
from tmaps.callbacks.weight_change import WeightChange

__all__ = ["TransferLearning", "WeightChange", "setup_transfer"]
