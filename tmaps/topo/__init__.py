"""Topographic regularisation: grids, losses, metrics and filter pictures (plain PyTorch, no Lightning or Hydra)."""

from tmaps.topo.filter_pictures import filter_map, mel_centre_of_mass, principal_component_colours
from tmaps.topo.grid import Grid, nearly_square_shape
from tmaps.topo.losses import (
    LOSSES,
    BlurSmoothness,
    ResponseCorrelation,
    TopoConfig,
    TopographicLoss,
    TopographicRegularizer,
    WeightSimilarity,
    build_regularizer,
    topographic_grids,
)
from tmaps.topo.metrics import (
    distance_profile,
    filter_diversity,
    layer_topography,
    placement_by_similarity,
    reduced_rank_filters,
    topography_metrics,
    untouched_participation_ratio,
)

__all__ = [
    "LOSSES",
    "BlurSmoothness",
    "Grid",
    "ResponseCorrelation",
    "TopoConfig",
    "TopographicLoss",
    "TopographicRegularizer",
    "WeightSimilarity",
    "build_regularizer",
    "distance_profile",
    "filter_diversity",
    "filter_map",
    "layer_topography",
    "mel_centre_of_mass",
    "nearly_square_shape",
    "placement_by_similarity",
    "principal_component_colours",
    "reduced_rank_filters",
    "topographic_grids",
    "topography_metrics",
    "untouched_participation_ratio",
]
