"""Lightning callbacks that log maps, profiles, weight change and training time during training."""

from tmaps.callbacks.activation_profiles import ActivationProfiles
from tmaps.callbacks.topographic_maps import TopographicMaps
from tmaps.callbacks.train_time import TrainTime
from tmaps.callbacks.transfer import TransferLearning, setup_transfer
from tmaps.callbacks.weight_change import WeightChange

__all__ = ["ActivationProfiles", "TopographicMaps", "TrainTime", "TransferLearning", "WeightChange", "setup_transfer"]
