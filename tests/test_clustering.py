"""Clustering, adjusted Rand index and Moran's I recover planted structure and reject its absence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tmaps.introspect.clustering import (
    adjusted_rand,
    adjusted_rand_by_layer,
    cluster,
    linkage,
    plot_adjusted_rand,
    plot_dendrogram,
    plot_profile_heatmap,
    silhouette,
)
from tmaps.introspect.nap import NAP
from tmaps.introspect.phonemes import phoneme_class
from tmaps.introspect.profiles import Profiles
from tmaps.introspect.topography import grid_adjacency, morans_i

# Espeak symbols of four classes, four each.
SYMBOLS = ["a", "E", "I", "0", "p", "t", "k", "b", "s", "S", "f", "D", "m", "n", "N", "n-"]


def planted(groups, noise, seed=0, units=40):
    """Profiles whose direction is set by each group's phoneme class, plus noise."""
    rng = np.random.default_rng(seed)
    classes = sorted({phoneme_class(g) for g in groups})
    prototypes = dict(zip(classes, rng.normal(size=(len(classes), units))))
    return np.stack([prototypes[phoneme_class(g)] for g in groups]) + noise * rng.normal(size=(len(groups), units))


@pytest.mark.parametrize("method", ["hierarchical", "kmeans"])
def test_clusterings_recover_planted_classes(method):
    profiles = planted(SYMBOLS, noise=0.3)
    clusters = cluster(profiles, 4, method=method)
    assert adjusted_rand(profiles, SYMBOLS, method=method) == 1.0
    assert len(set(clusters)) == 4
    shuffled = np.random.default_rng(1).permutation(clusters)
    assert silhouette(profiles, clusters) > 0.5 > silhouette(profiles, shuffled)


def test_no_structure_gives_a_low_adjusted_rand():
    noise = np.random.default_rng(2).normal(size=(len(SYMBOLS), 40))
    assert abs(adjusted_rand(noise, SYMBOLS)) < 0.3


def test_adjusted_rand_across_layers_of_profiles():
    counts = np.full(len(SYMBOLS), 10)
    structured, random = planted(SYMBOLS, noise=0.2), np.random.default_rng(3).normal(size=(len(SYMBOLS), 40))
    sums = {"early": random * 10, "late": structured * 10}
    profiles = Profiles(SYMBOLS, sums, {k: v**2 for k, v in sums.items()}, {"early": counts, "late": counts})
    scores = adjusted_rand_by_layer(profiles)
    assert list(scores) == ["early", "late"]
    assert scores["late"] == 1.0 and scores["early"] < 0.3
    figure = plot_adjusted_rand(scores, title="ARI")
    assert list(figure.axes[0].lines[0].get_ydata()) == [scores["early"], scores["late"]]


def test_dendrogram_orders_leaves_by_class():
    profiles = planted(SYMBOLS, noise=0.2)
    figure = plot_dendrogram(profiles, SYMBOLS, reference=phoneme_class, title="conv3")
    leaves = [tick.get_text() for tick in figure.axes[0].get_xticklabels()]
    assert sorted(leaves) == sorted(SYMBOLS)
    runs = [phoneme_class(leaf) for leaf in leaves]
    assert sum(a != b for a, b in zip(runs, runs[1:])) == 3  # each class is one contiguous run of leaves
    assert len({tick.get_color() for tick in figure.axes[0].get_xticklabels()}) == 4
    assert linkage(profiles).shape == (len(SYMBOLS) - 1, 4)


def test_zero_profile_is_named():
    profiles = planted(SYMBOLS, noise=0.1)
    profiles[5] = 0
    with pytest.raises(ValueError, match=r"groups \['t'\] are all zero"):
        linkage(profiles, SYMBOLS)


def test_grid_adjacency_counts_rook_and_queen_neighbours():
    positions = np.array([(r, c) for r in range(3) for c in range(4)])
    rook, queen = grid_adjacency(positions, "rook"), grid_adjacency(positions, "queen")
    assert rook.sum() == 2 * (3 * 3 + 2 * 4)
    assert queen.sum() == rook.sum() + 2 * (2 * 2 * 3)
    assert (rook.toarray() == rook.toarray().T).all()


def test_morans_i_on_planted_maps():
    positions = np.array([(r, c) for r in range(8) for c in range(8)])
    smooth = morans_i(positions[:, 0].astype(float), positions)
    assert smooth.statistic > 0.8 and smooth.p_value <= 0.01
    checkerboard = morans_i(((positions[:, 0] + positions[:, 1]) % 2).astype(float), positions)
    assert checkerboard.statistic == pytest.approx(-1.0) and checkerboard.p_value == 1.0
    scattered = morans_i(np.random.default_rng(0).normal(size=64), positions, neighbourhood="queen")
    assert abs(scattered.statistic - scattered.expected) < 0.15 and scattered.p_value > 0.05
    with pytest.raises(ValueError, match="constant"):
        morans_i(np.ones(64), positions)


def test_adjusted_rand_of_real_profiles(synth_corpus_en):
    from tmaps.data.dataset import load_audio
    from tmaps.data.features import LogMel
    from tmaps.data.manifest import read_manifest
    from tmaps.models import Wav2Letter

    records = read_manifest(synth_corpus_en / "train.jsonl")[:4]
    features = [LogMel(n_mels=40)(load_audio(r["audio"]))[None] for r in records]
    batches = [{"features": f, "feature_lengths": torch.tensor([f.shape[-1]]), "records": [r]} for f, r in zip(features, records)]
    torch.manual_seed(0)
    model = Wav2Letter(n_features=40, n_classes=29, channels=[16, 16], kernel_sizes=[5, 5], strides=[2, 1])
    profiles = NAP(model, ["conv0", "conv1"]).compute(batches, "phoneme")
    scores = adjusted_rand_by_layer(profiles, method="kmeans")
    assert list(scores) == ["conv0", "conv1"] and all(-1 <= s <= 1 for s in scores.values())


def test_the_profile_heatmap_names_its_quantity_on_a_robust_scale_in_legible_type():
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(45, 30))
    matrix[0, 0] = 40.0  # one outlying unit does not set the scale
    figure = plot_profile_heatmap(matrix, [f"g{group}" for group in range(45)], value="NAP (activation minus the mean over groups)")
    (image,) = figure.axes[0].images
    assert image.norm.vmax == pytest.approx(np.percentile(np.abs(matrix), 99)) and image.norm.vmin == -image.norm.vmax
    assert figure.axes[1].get_ylabel().startswith("NAP (activation minus the mean over groups)\ncolour limit ±")
    assert min(label.get_fontsize() for label in figure.axes[0].get_yticklabels()) >= 8
