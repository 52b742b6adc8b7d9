"""Lightning callbacks that log maps, profiles and weight change during training."""

from tmaps.callbacks.activation_profiles import ActivationProfiles
from tmaps.callbacks.topographic_maps import TopographicMaps
from tmaps.callbacks.transfer import TransferLearning, setup_transfer
from tmaps.callbacks.weight_change import WeightChange

__all__ = ["ActivationProfiles", "TopographicMaps", "TransferLearning", "WeightChange", "setup_transfer"]
