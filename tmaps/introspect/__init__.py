"""Looking inside trained networks (plain PyTorch/NumPy, any ``nn.Module``).

- profiles: ``Profiler(model, layers, attribution).compute(loader, groups)`` returns
  :class:`Profiles` (one ``(units, groups)`` matrix per layer) of any layer, for an attribution
  of :data:`ATTRIBUTIONS` (:class:`Activation` gives NAPs, :class:`GradientXActivation` GradNAPs;
  :class:`NAP` and :class:`GradNAP` are the profiler with each); an
  :class:`OutputAdapter` reads tuple outputs and ``(batch, time, units)`` or time-major ones;
  ``waveform_forward`` runs waveform-input models such as wav2vec 2.0;
- groups: phonemes, phoneme classes, characters, words, speakers, or any record key;
- clustering of profiles (:func:`cluster_summary`, :func:`plot_profile_heatmap`) and their
  agreement with phoneme classes (ARI);
- topography of maps (``tmaps.introspect.topography``): Moran's I on grids, map smoothness,
  a topographic model against its baseline;
- layouts: every method in :data:`LAYOUTS` is ``layout(profiles) -> coords``;
- maps: :func:`plot_map` (one map into your axes, like MNE's ``plot_topomap``), :func:`render_map`,
  :func:`plot_maps`, :func:`plot_layers`, :func:`save_gif`; panels of a grouping's groups (:class:`Panels`:
  phonemes in IPA by class);
- weight change between two models or checkpoints.
"""

from tmaps.introspect.adapters import FEATURES, WAVEFORM, ModelInput, OutputAdapter, waveform_forward
from tmaps.introspect.alignment import align, align_utterance
from tmaps.introspect.attribution import ATTRIBUTIONS, Activation, Attribution, GradientAttribution, GradientXActivation
from tmaps.introspect.clustering import (
    adjusted_rand,
    adjusted_rand_by_layer,
    cluster,
    cluster_summary,
    linkage,
    plot_adjusted_rand,
    plot_dendrogram,
    plot_profile_heatmap,
    profile_matrix,
    silhouette,
)
from tmaps.introspect.frames import FrameMap
from tmaps.introspect.groups import CharacterGrouping, Grouping, Panels, RecordGrouping, SegmentGrouping, phoneme_panels, resolve_grouping
from tmaps.introspect.layout import LAYOUTS, align_orientation, compute_layout, remove_overlaps, snap_to_grid
from tmaps.introspect.nap import NAP, GradNAP, Profiler
from tmaps.introspect.phonemes import PHONEME_CLASSES, ipa, ipa_label, phoneme_class, phonetic_order
from tmaps.introspect.profiles import LayerProfile, Profiles
from tmaps.introspect.quality import continuity, distance_correlation, layout_quality, trustworthiness
from tmaps.introspect.render import ColourScale, MapArtists, MapStyle, plot_layers, plot_map, plot_maps, render_map, robust_limit, save_figure, save_gif
from tmaps.introspect.topography import MoransI, grid_adjacency, map_smoothness, morans_i
from tmaps.introspect.weights import LayerChange, WeightMismatchError, change_table, layer_weights, weight_change

__all__ = [
    "ATTRIBUTIONS",
    "FEATURES",
    "LAYOUTS",
    "NAP",
    "PHONEME_CLASSES",
    "Activation",
    "Attribution",
    "CharacterGrouping",
    "ColourScale",
    "FrameMap",
    "GradNAP",
    "GradientAttribution",
    "GradientXActivation",
    "Grouping",
    "LayerChange",
    "LayerProfile",
    "MapArtists",
    "MapStyle",
    "ModelInput",
    "MoransI",
    "OutputAdapter",
    "Panels",
    "Profiler",
    "Profiles",
    "RecordGrouping",
    "SegmentGrouping",
    "WAVEFORM",
    "WeightMismatchError",
    "adjusted_rand",
    "adjusted_rand_by_layer",
    "align",
    "align_orientation",
    "align_utterance",
    "change_table",
    "cluster",
    "cluster_summary",
    "compute_layout",
    "continuity",
    "distance_correlation",
    "grid_adjacency",
    "layer_weights",
    "layout_quality",
    "linkage",
    "map_smoothness",
    "morans_i",
    "phoneme_class",
    "phoneme_panels",
    "phonetic_order",
    "ipa",
    "ipa_label",
    "profile_matrix",
    "plot_adjusted_rand",
    "plot_dendrogram",
    "plot_layers",
    "plot_map",
    "plot_maps",
    "plot_profile_heatmap",
    "remove_overlaps",
    "render_map",
    "resolve_grouping",
    "robust_limit",
    "save_figure",
    "save_gif",
    "silhouette",
    "snap_to_grid",
    "trustworthiness",
    "waveform_forward",
    "weight_change",
]
