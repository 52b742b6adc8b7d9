"""tmaps.topo: grids, the three topographic losses against brute force, the regularizer, metrics, maps."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
import yaml
from matplotlib.figure import Figure
from torch import nn

from tmaps.models import ConformerCTC, Wav2Letter, wav2letter_small
from tmaps.topo import (
    BlurSmoothness,
    Grid,
    ResponseCorrelation,
    TopoConfig,
    TopographicRegularizer,
    WeightSimilarity,
    build_regularizer,
    distance_profile,
    filter_diversity,
    filter_map,
    layer_topography,
    mel_centre_of_mass,
    placement_by_similarity,
    principal_component_colours,
    reduced_rank_filters,
    topography_metrics,
    untouched_participation_ratio,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
GRIDS = [
    pytest.param(boundary, neighbourhood, id=f"{boundary}-{neighbourhood}")
    for boundary, neighbourhood in itertools.product(["flat", "torus"], ["4", "8", "gaussian"])
]
SIGMA = 0.9  # Gaussian cut-off 2.7 cells: a 7 x 8 torus is just large enough.


def small_wav2letter() -> Wav2Letter:
    return Wav2Letter(n_features=40, n_classes=29, channels=[24, 30, 30], kernel_sizes=[11, 5, 5], strides=[2, 1, 1])


def brute_force_pairs(grid: Grid) -> list[tuple[int, int, float]]:
    """``(i, j, weight)`` for every neighbouring pair ``i < j``, from the definitions alone."""
    pairs = []
    for i, j in itertools.combinations(range(grid.n_units), 2):
        d_row, d_col = abs(i // grid.cols - j // grid.cols), abs(i % grid.cols - j % grid.cols)
        if grid.boundary == "torus":
            d_row, d_col = min(d_row, grid.rows - d_row), min(d_col, grid.cols - d_col)
        distance = math.hypot(d_row, d_col)
        if grid.neighbourhood == "4":
            weight = float(distance == 1)
        elif grid.neighbourhood == "8":
            weight = float(max(d_row, d_col) == 1)
        else:
            weight = math.exp(-(distance**2) / (2 * grid.sigma**2)) if distance <= 3 * grid.sigma else 0.0
        if weight:
            pairs.append((i, j, weight))
    return pairs


def brute_force_distance(grid: Grid, i: int, j: int) -> float:
    d_row, d_col = abs(i // grid.cols - j // grid.cols), abs(i % grid.cols - j % grid.cols)
    if grid.boundary == "torus":
        d_row, d_col = min(d_row, grid.rows - d_row), min(d_col, grid.cols - d_col)
    return math.hypot(d_row, d_col)


# ---------------------------------------------------------------- grid


@pytest.mark.parametrize("n_units, shape", [(250, (10, 25)), (2000, (40, 50)), (192, (12, 16)), (36, (6, 6)), (7, (1, 7))])
def test_default_shape_is_the_most_nearly_square_factorization(n_units, shape):
    grid = Grid(n_units)
    assert grid.shape == shape
    channel = n_units - 2
    assert grid.positions[channel].tolist() == [channel // shape[1], channel % shape[1]]


def test_bad_grids_are_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"shape \[10, 20\] does not hold 250 units: rows x cols must equal 250"):
        Grid(250, shape=(10, 20))
    with pytest.raises(ValueError, match="2x5 torus is too small"):
        Grid(10, shape=(2, 5), boundary="torus")
    with pytest.raises(ValueError, match="boundary must be one of"):
        Grid(10, boundary="sphere")
    with pytest.raises(ValueError, match="neighbourhood must be one of"):
        Grid(10, neighbourhood="6")


def test_distances_wrap_around_on_a_torus_only():
    flat, torus = Grid(30, (5, 6)), Grid(30, (5, 6), boundary="torus")
    last_column, last_row = 5, 24
    assert flat.distances[0, last_column] == 5 and torus.distances[0, last_column] == 1
    assert flat.distances[0, last_row] == 4 and torus.distances[0, last_row] == 1
    assert torus.distances[0, 29] == pytest.approx(math.sqrt(2))
    assert torch.equal(torus.distances, torus.distances.T)


@pytest.mark.parametrize("boundary, neighbourhood", GRIDS)
def test_neighbour_sum_by_shifts_equals_the_pair_weight_matrix(boundary, neighbourhood):
    grid = Grid(56, (7, 8), boundary, neighbourhood, sigma=SIGMA)
    expected = torch.zeros(56, 56, dtype=torch.float64)
    for i, j, weight in brute_force_pairs(grid):
        expected[i, j] = expected[j, i] = weight
    torch.testing.assert_close(grid.neighbour_weights.double(), expected)
    vectors = torch.randn(56, 3, dtype=torch.float64)
    torch.testing.assert_close(grid.neighbour_sum(vectors), expected @ vectors)
    assert grid.n_pairs == pytest.approx(sum(weight for _, _, weight in brute_force_pairs(grid)))


# ---------------------------------------------------------------- losses against brute force


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("boundary, neighbourhood", GRIDS)
def test_weight_similarity_equals_a_double_loop_over_pairs(boundary, neighbourhood, metric):
    grid = Grid(56, (7, 8), boundary, neighbourhood, sigma=SIGMA)
    weight = torch.randn(56, 3, 4, dtype=torch.float64)
    vectors = weight.reshape(56, -1)
    total = count = 0.0
    for i, j, pair_weight in brute_force_pairs(grid):
        if metric == "cosine":
            dissimilarity = 1 - F.cosine_similarity(vectors[i], vectors[j], dim=0)
        else:
            dissimilarity = (vectors[i] - vectors[j]).pow(2).mean()
        total += pair_weight * float(dissimilarity)
        count += pair_weight
    assert float(WeightSimilarity(grid, metric=metric)(weight)) == pytest.approx(total / count, rel=1e-10)


@pytest.mark.parametrize("samples", ["frames", "utterances"])
@pytest.mark.parametrize("boundary, neighbourhood", GRIDS[:2])
def test_response_correlation_equals_pearson_over_pairs(boundary, neighbourhood, samples):
    grid = Grid(56, (7, 8), boundary, neighbourhood)
    activations = torch.randn(6, 56, 20, dtype=torch.float64) + torch.linspace(0, 1, 56)[:, None]
    responses = activations.mean(2) if samples == "utterances" else activations.permute(0, 2, 1).reshape(-1, 56)
    correlation = np.corrcoef(responses.numpy(), rowvar=False)
    pairs = list(itertools.combinations(range(56), 2))
    expected = 1 - scipy.stats.pearsonr(
        [correlation[i, j] for i, j in pairs], [1 / (brute_force_distance(grid, i, j) + 1) for i, j in pairs]
    ).statistic
    loss = ResponseCorrelation(grid, samples=samples)
    assert float(loss(activations)) == pytest.approx(expected, rel=1e-6)
    # A Linear layer's output has its channels last; inside conformer blocks it is time-major.
    assert float(loss(activations.transpose(1, 2), channel_dim=-1)) == pytest.approx(expected, rel=1e-6)
    time_major = ResponseCorrelation(grid, samples=samples, batch_axis=1)
    assert float(time_major(activations.permute(2, 0, 1), channel_dim=-1)) == pytest.approx(expected, rel=1e-6)


def test_response_correlation_on_many_units_uses_a_seeded_random_subset():
    grid = Grid(60)
    activations = torch.randn(4, 60, 30, dtype=torch.float64)
    subset = torch.randperm(60, generator=torch.Generator().manual_seed(3))[:20]
    responses = activations[:, subset].permute(0, 2, 1).reshape(-1, 20).numpy()
    correlation = np.corrcoef(responses, rowvar=False)
    pairs = list(itertools.combinations(range(20), 2))
    distances = [brute_force_distance(grid, int(subset[i]), int(subset[j])) for i, j in pairs]
    expected = 1 - scipy.stats.pearsonr([correlation[i, j] for i, j in pairs], [1 / (d + 1) for d in distances]).statistic
    loss = ResponseCorrelation(grid, max_units=20, seed=3)
    assert float(loss(activations)) == pytest.approx(expected, rel=1e-6)
    assert float(loss(activations)) != pytest.approx(expected, rel=1e-6)  # the next call draws anew


@pytest.mark.parametrize("factor", [2.0, (2.0, 3.0), (1.5, 4.0)])
def test_blur_smoothness_equals_a_loop_over_filters_and_their_resampled_sheet(factor):
    grid = Grid(48, (6, 8))
    weight = torch.randn(48, 2, 3, dtype=torch.float64)
    loss = BlurSmoothness(grid, factor=factor)
    image = weight.reshape(6, 8, 6).permute(2, 0, 1).unsqueeze(0)
    blurred = F.interpolate(F.interpolate(image, size=loss.coarse_shape, mode="area"), size=(6, 8), mode="bilinear")
    blurred = blurred[0].permute(1, 2, 0).reshape(48, 6)
    expected = sum(1 - float(F.cosine_similarity(weight[i].flatten(), blurred[i], dim=0)) for i in range(48)) / 48
    assert float(loss(weight)) == pytest.approx(expected, rel=1e-10)
    torch.testing.assert_close(loss.blur(weight), blurred)


@pytest.mark.parametrize("make_loss", [
    lambda grid: WeightSimilarity(grid),
    lambda grid: WeightSimilarity(grid, metric="euclidean"),
    lambda grid: WeightSimilarity(Grid(56, (7, 8), "torus", "gaussian", sigma=SIGMA)),
    lambda grid: BlurSmoothness(grid, factor=(2, 3)),
], ids=["cosine", "euclidean", "torus-gaussian", "blur"])
def test_hand_written_gradients_match_autograd_numerics(make_loss):
    loss = make_loss(Grid(56, (7, 8)))
    weight = torch.randn(56, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (weight,))


def test_identical_filters_cost_nothing():
    grid = Grid(48, (6, 8))
    weight = torch.randn(1, 3, 5).expand(48, 3, 5)
    for loss in (WeightSimilarity(grid), WeightSimilarity(grid, metric="euclidean"), BlurSmoothness(grid)):
        assert float(loss(weight)) == pytest.approx(0, abs=1e-6)


def test_cosine_loss_ignores_positive_rescaling_of_filters():
    grid = Grid(48, (6, 8), neighbourhood="8")
    weight = torch.randn(48, 3, 5, dtype=torch.float64)
    scales = torch.rand(48, 1, 1, dtype=torch.float64) * 10 + 0.1
    loss = WeightSimilarity(grid)
    assert float(loss(weight * scales)) == pytest.approx(float(loss(weight)), rel=1e-12)
    assert float(WeightSimilarity(grid, metric="euclidean")(weight * scales)) != pytest.approx(
        float(WeightSimilarity(grid, metric="euclidean")(weight)), rel=1e-3
    )


@pytest.mark.parametrize("boundary", ["flat", "torus"])
def test_neighbours_wrap_around_on_a_torus(boundary):
    grid = Grid(30, (5, 6), boundary=boundary)
    weight = torch.randn(30, 4, dtype=torch.float64, requires_grad=True)
    WeightSimilarity(grid)(weight).backward()
    before = weight.grad.clone()
    changed = weight.detach().clone()
    changed[0] = torch.randn(4)
    changed.requires_grad_(True)
    WeightSimilarity(grid)(changed).backward()
    moved = (changed.grad - before).abs().sum(1) > 1e-9
    end_of_first_row, start_of_last_row = 5, 24
    assert moved[1] and moved[6]  # right and lower neighbours either way
    assert bool(moved[end_of_first_row]) == bool(moved[start_of_last_row]) == (boundary == "torus")
    assert not moved[14]


# ---------------------------------------------------------------- layers and the regularizer


def test_gradients_reach_only_the_layers_a_loss_is_on():
    model = small_wav2letter()
    grid = Grid(30)
    regularizer = TopographicRegularizer(model, {"conv1": [WeightSimilarity(grid)], "conv2": [BlurSmoothness(grid)]})
    total, terms = regularizer.loss(step=0)
    total.backward()
    with_gradient = {name for name, parameter in model.named_parameters() if parameter.grad is not None and parameter.grad.any()}
    assert with_gradient == {"conv1.conv.weight", "conv2.conv.weight"}
    assert set(terms) == {"conv1/weight_similarity", "conv2/blur_smoothness"}


def test_response_loss_uses_the_training_forward_and_reaches_earlier_layers_only():
    model = small_wav2letter()
    regularizer = TopographicRegularizer(model, {"conv1": [ResponseCorrelation(Grid(30))]})
    with pytest.raises(RuntimeError, match="conv1.*has no activations: call the model's forward"):
        regularizer.loss(step=0)
    features, lengths = torch.randn(2, 40, 120), torch.tensor([120, 100])
    with torch.no_grad():
        model(features, lengths)
    with pytest.raises(RuntimeError, match="has no activations"):
        regularizer.loss(step=0)
    model(features, lengths)
    total, terms = regularizer.loss(step=0)
    total.backward()
    with_gradient = {name.split(".")[0] for name, parameter in model.named_parameters() if parameter.grad is not None}
    assert with_gradient == {"conv0", "conv1"}
    assert 0 <= float(terms["conv1/response_correlation"]) <= 2
    regularizer.remove()
    model(features, lengths)
    with pytest.raises(RuntimeError, match="has no activations"):
        regularizer.loss(step=0)


@pytest.mark.parametrize("loss_name", ["weight_similarity", "response_correlation", "blur_smoothness"])
@pytest.mark.parametrize("layer, inputs", [
    (nn.Conv1d(5, 12, 3), torch.randn(4, 5, 16)),
    (nn.Conv2d(2, 12, 3), torch.randn(4, 2, 8, 8)),
    (nn.Linear(5, 12), torch.randn(4, 7, 5)),
], ids=["Conv1d", "Conv2d", "Linear"])
def test_each_loss_works_on_conv1d_conv2d_and_linear(loss_name, layer, inputs):
    model = nn.Sequential(layer, nn.ReLU())
    regularizer = build_regularizer(model, {"layers": ["0"], "loss": loss_name, "grid": {"shape": [3, 4]}})
    model(inputs)
    total, terms = regularizer.loss(step=0)
    total.backward()
    assert torch.isfinite(total) and float(total.detach()) > 0
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    if loss_name == "weight_similarity":
        expected = WeightSimilarity(Grid(12, (3, 4)))(layer.weight.detach().reshape(12, -1))
        assert float(terms[f"0/{loss_name}"]) == pytest.approx(float(expected))


def test_warm_up_scales_the_total_linearly_and_terms_stay_unweighted():
    model = small_wav2letter()
    grid = Grid(30)
    regularizer = TopographicRegularizer(
        model, {"conv1": [WeightSimilarity(grid, weight=2.0), BlurSmoothness(grid, weight=0.5)]}, warmup_steps=10
    )
    _, terms = regularizer.loss(step=10)
    full = 2.0 * terms["conv1/weight_similarity"] + 0.5 * terms["conv1/blur_smoothness"]
    for step, fraction in [(0, 0.0), (5, 0.5), (10, 1.0), (1000, 1.0)]:
        total, step_terms = regularizer.loss(step)
        assert float(total.detach()) == pytest.approx(fraction * float(full), rel=1e-6)
        assert step_terms.keys() == terms.keys()


def test_a_typed_config_builds_the_regularizer_its_mapping_builds():
    model = small_wav2letter()
    mapping = {"layers": ["conv1", "conv2"], "loss": "weight_similarity", "weight": 0.5, "grid": {"boundary": "torus", "neighbourhood": "8"}}
    config = TopoConfig(layers=["conv1", "conv2"], loss="weight_similarity", weight=0.5, grid={"boundary": "torus", "neighbourhood": "8"})
    typed = build_regularizer(model, config)
    from_mapping = build_regularizer(model, mapping)
    assert TopoConfig.from_dict(mapping) == TopoConfig(**mapping)
    assert {layer: grid.to_dict() for layer, grid in typed.grids.items()} == {layer: grid.to_dict() for layer, grid in from_mapping.grids.items()}
    assert typed.grids["conv1"].to_dict() == {"n_units": 30, "shape": [5, 6], "boundary": "torus", "neighbourhood": "8", "sigma": 1.0}
    torch.testing.assert_close(typed.loss(step=0)[0], from_mapping.loss(step=0)[0])
    assert build_regularizer(model, TopoConfig(layers=[], loss="weight_similarity")) is None


def test_a_grid_rebuilds_from_its_dict():
    grid = Grid(48, shape=(6, 8), boundary="torus", neighbourhood="gaussian", sigma=0.7)
    rebuilt = Grid.from_dict(grid.to_dict())
    assert rebuilt.to_dict() == grid.to_dict()
    torch.testing.assert_close(rebuilt.neighbour_weights, grid.neighbour_weights)


def test_layer_and_config_errors_name_what_is_wrong():
    model = small_wav2letter()
    with pytest.raises(ValueError, match=r"no layer 'conv7'.*valid layer names: \['conv0', 'conv0.conv', 'conv1'"):
        build_regularizer(model, {"layers": ["conv7"], "loss": "weight_similarity"})
    with pytest.raises(ValueError, match="topo.loss must be one of"):
        build_regularizer(model, {"layers": ["conv1"], "loss": "topo_magic"})
    with pytest.raises(ValueError, match=r"topo.wieght: TopoConfig has no such argument; it takes \['grid', 'layers'"):
        build_regularizer(model, {"layers": ["conv1"], "loss": "weight_similarity", "wieght": 1.0})
    with pytest.raises(ValueError, match=r"topo.options \['factor'\] are not options of weight_similarity"):
        build_regularizer(model, {"layers": ["conv1"], "loss": "weight_similarity", "options": {"factor": 2}})
    with pytest.raises(ValueError, match=r"topo.grid for layer 'conv0': grid shape \[5, 6\] does not hold 24 units"):
        build_regularizer(model, {"layers": ["conv0"], "loss": "weight_similarity", "grid": {"shape": [5, 6]}})
    with pytest.raises(ValueError, match="blurs a flat sheet"):
        build_regularizer(model, {"layers": ["conv1"], "loss": "blur_smoothness", "grid": {"boundary": "torus"}})
    with pytest.raises(ValueError, match="layer 'conv1' has 30 output channels but its weight_similarity grid is Grid\\(24"):
        TopographicRegularizer(model, {"conv1": [WeightSimilarity(Grid(24))]})


@pytest.mark.parametrize("name", ["none", "weight_similarity", "response_correlation", "blur_smoothness"])
def test_every_topo_config_builds_on_the_small_model(name):
    model = wav2letter_small(n_features=40, n_classes=29)
    config = yaml.safe_load((CONF / "topo" / f"{name}.yaml").read_text())
    regularizer = build_regularizer(model, config)
    if name == "none":
        assert regularizer is None
        return
    assert config["loss"] == name  # topo=<option> selects the loss of the same name
    assert regularizer.layer_names == config["layers"]
    model(torch.randn(2, 40, 60), torch.tensor([60, 50]))
    total, terms = regularizer.loss(step=10_000)
    assert torch.isfinite(total) and len(terms) == len(config["layers"])


# ---------------------------------------------------------------- metrics


def smooth_sheet(grid: Grid, features: int = 12, noise: float = 0.05) -> torch.Tensor:
    """Filters that turn slowly with grid position: a topographic layer made by hand."""
    generator = torch.Generator().manual_seed(0)
    rows, cols = grid.positions[:, :1].double() / grid.rows, grid.positions[:, 1:].double() / grid.cols
    directions = torch.randn(4, features, generator=generator, dtype=torch.float64)
    angles = torch.cat([torch.cos(math.pi * rows), torch.sin(math.pi * rows), torch.cos(math.pi * cols), torch.sin(math.pi * cols)], 1)
    return angles @ directions + noise * torch.randn(grid.n_units, features, generator=generator, dtype=torch.float64)


def test_metrics_are_neutral_at_random_initialization():
    model = Wav2Letter(n_features=40, n_classes=29, channels=[250, 250], kernel_sizes=[11, 7], strides=[2, 1])
    metrics = topography_metrics(model, ["conv0", "conv1"])
    keys = ("neighbour_cosine", "shuffled_cosine", "ratio", "smoothness", "centred_cosine", "participation_ratio")
    assert set(metrics) == {f"{layer}/{key}" for layer in ("conv0", "conv1") for key in keys}
    for layer in ("conv0", "conv1"):
        assert metrics[f"{layer}/ratio"] == pytest.approx(1, abs=0.02)
        assert abs(metrics[f"{layer}/smoothness"]) < 0.05


def test_metrics_are_high_for_a_smooth_sheet_and_vanish_when_it_is_shuffled():
    grid = Grid(250)
    weight = smooth_sheet(grid)
    metrics = layer_topography(weight, grid)
    assert metrics["ratio"] > 20 and metrics["smoothness"] > 0.5
    shuffled = layer_topography(weight[torch.randperm(250, generator=torch.Generator().manual_seed(1))], grid)
    assert shuffled["ratio"] == pytest.approx(1, abs=0.1) and abs(shuffled["smoothness"]) < 0.1
    assert shuffled["shuffled_cosine"] == pytest.approx(metrics["shuffled_cosine"])
    distances, similarity, n_pairs = distance_profile(weight, grid)
    assert distances[0] == 1 and int(n_pairs.sum()) == 250 * 249 // 2
    assert similarity[0] > similarity[len(similarity) // 2] > similarity[-1]


def test_untouched_reference_is_the_mean_over_layers_of_the_same_width():
    model = Wav2Letter(n_features=40, n_classes=29, channels=[64, 64, 64, 32], kernel_sizes=[5, 5, 5, 5], strides=[1, 1, 1, 1])
    with torch.no_grad():
        model.conv1.conv.weight.copy_(model.conv1.conv.weight[:1].expand_as(model.conv1.conv.weight))
    references = untouched_participation_ratio(model, ["conv0"], ["conv1", "conv2", "conv3"])
    expected = [filter_diversity(getattr(model, name).conv.weight)["participation_ratio"] for name in ("conv1", "conv2")]
    assert references == {"conv0/participation_ratio_untouched": pytest.approx(sum(expected) / 2)}
    assert expected[0] < 1.01 < expected[1]
    assert untouched_participation_ratio(model, ["conv3"], ["conv1", "conv2"]) == {}


def test_diversity_tells_identical_random_and_smooth_filters_apart():
    grid = Grid(192)
    generator = torch.Generator().manual_seed(2)
    identical = torch.randn(1, 240, generator=generator, dtype=torch.float64).repeat(192, 1)
    identical += 1e-6 * torch.randn(192, 240, generator=generator, dtype=torch.float64)
    random = torch.randn(192, 240, generator=generator, dtype=torch.float64)
    smooth = smooth_sheet(grid, features=240, noise=0.05)
    same, independent, field = (filter_diversity(weight) for weight in (identical, random, smooth))
    assert same["centred_cosine"] > 0.99 and same["participation_ratio"] < 1.01
    assert abs(independent["centred_cosine"]) < 0.01
    # Independent filters of 240 weights correlate by about 1 / sqrt(240): a PR near 192 / (1 + 191 / 240).
    assert independent["participation_ratio"] == pytest.approx(192 / (1 + 191 / 240), rel=0.1)
    # The smooth sheet of smooth_sheet has four directions plus small noise: few distinct filters, and smooth on its grid.
    assert 2 < field["participation_ratio"] < 6
    assert layer_topography(smooth, grid)["participation_ratio"] == pytest.approx(field["participation_ratio"])


def test_a_reduced_rank_keeps_each_filter_mean_and_bounds_the_participation_ratio():
    weight = torch.randn(64, 8, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ratios = []
    for rank in (1, 3, 10):
        reduced = reduced_rank_filters(weight, rank)
        assert reduced.shape == weight.shape and reduced.dtype == weight.dtype
        torch.testing.assert_close(reduced.reshape(64, -1).mean(1), weight.reshape(64, -1).mean(1))
        ratios.append(filter_diversity(reduced)["participation_ratio"])
        assert ratios[-1] <= rank + 1e-6
    assert ratios == sorted(ratios) and ratios[0] == pytest.approx(1)
    torch.testing.assert_close(reduced_rank_filters(weight, 40), weight)
    with pytest.raises(ValueError, match="rank must be between 1 and 40"):
        reduced_rank_filters(weight, 41)


def test_placement_by_similarity_recovers_a_shuffled_smooth_sheet():
    grid = Grid(192)
    smooth = smooth_sheet(grid, features=48, noise=0.05)
    shuffled = smooth[torch.randperm(192, generator=torch.Generator().manual_seed(4))]
    order = placement_by_similarity(shuffled, grid)
    assert sorted(order.tolist()) == list(range(192))
    assert layer_topography(shuffled, grid)["ratio"] < 1.1
    # Not the hand-made arrangement back (two components cannot hold four directions), but far smoother than chance.
    assert layer_topography(shuffled[order], grid)["ratio"] > 5
    with pytest.raises(ValueError, match="192 output channels but the grid is Grid\\(100"):
        placement_by_similarity(shuffled, Grid(100))


# ---------------------------------------------------------------- pictures


def test_filter_maps_colour_the_first_layer_by_mel_band_and_deeper_ones_by_pca():
    model = small_wav2letter()
    weight = torch.zeros(3, 40, 11)
    weight[0, 5] = 1.0
    weight[1, 10:21] = torch.rand(11, 11) + 0.1
    weight[2] = -1.0
    centres = mel_centre_of_mass(weight)
    assert centres[0] == pytest.approx(5) and 10 < centres[1] < 20 and torch.isnan(centres[2])
    first = filter_map(model, "conv0")
    deeper = filter_map(model, "conv1", grid=Grid(30, (3, 10)))
    assert isinstance(first, Figure) and "mel" in first.axes[0].get_title()
    image = deeper.axes[0].images[0].get_array()
    assert image.shape == (3, 10, 3) and image.min() >= 0 and image.max() <= 1
    colours = principal_component_colours(model.conv1.conv.weight)
    np.testing.assert_array_equal(colours, principal_component_colours(model.conv1.conv.weight))
    np.testing.assert_allclose(colours.min(0), 0)
    np.testing.assert_allclose(colours.max(0), 1)


# ---------------------------------------------------------------- training on real audio


def test_training_with_the_weight_loss_makes_a_small_wav2letter_topographic(synth_corpus_en):
    from tmaps.data.dataset import load_audio
    from tmaps.data.features import LogMel
    from tmaps.data.manifest import read_manifest
    from tmaps.text import Alphabet

    records = sorted(read_manifest(synth_corpus_en / "train.jsonl"), key=lambda record: record["duration"])[:8]
    alphabet = Alphabet.for_language("en")
    waveforms = [load_audio(record["audio"]) for record in records]
    samples = torch.tensor([len(waveform) for waveform in waveforms])
    features = LogMel(n_mels=40)(nn.utils.rnn.pad_sequence(waveforms, batch_first=True), samples)
    feature_lengths = samples // 160 + 1
    targets = nn.utils.rnn.pad_sequence([torch.tensor(alphabet.encode(record["text"])) for record in records], batch_first=True)
    target_lengths = torch.tensor([len(record["text"]) for record in records])

    def train(topo: dict | None) -> tuple[dict[str, float], list[float]]:
        torch.manual_seed(0)
        model = small_wav2letter()
        regularizer = build_regularizer(model, topo)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        ctc_losses = []
        for step in range(150):
            log_probs, output_lengths = model(features, feature_lengths)
            loss = F.ctc_loss(log_probs.transpose(0, 1), targets, output_lengths, target_lengths, zero_infinity=True)
            ctc_losses.append(loss.item())
            if regularizer is not None:
                loss = loss + regularizer.loss(step)[0]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return topography_metrics(model, ["conv1", "conv2"]), ctc_losses

    plain, plain_ctc = train(None)
    topographic, topo_ctc = train({"layers": ["conv1", "conv2"], "loss": "weight_similarity", "weight": 1.0, "warmup_steps": 20})
    for layer in ("conv1", "conv2"):
        assert plain[f"{layer}/ratio"] < 1.3
        assert topographic[f"{layer}/ratio"] > 2 * plain[f"{layer}/ratio"]
        assert topographic[f"{layer}/smoothness"] > plain[f"{layer}/smoothness"] + 0.1
    assert min(topo_ctc[-10:]) < 0.7 * topo_ctc[0]


@pytest.mark.parametrize("loss", ["weight_similarity", "response_correlation", "blur_smoothness"])
def test_topographic_losses_shape_the_feed_forward_units_inside_conformer_blocks(loss):
    """Layer names inside blocks, time-major (time, batch, units) outputs: the loss reaches the FFN's hidden Linear."""
    torch.manual_seed(0)
    model = ConformerCTC(n_features=40, n_classes=29, subsample_channels=[32, 32], d_model=32, n_blocks=2, ffn_dim=48, conv_kernel_size=7)
    layers = ["block0.ffn1.sequential.1", "block1.ffn2.sequential.1"]
    regularizer = build_regularizer(model, {"layers": layers, "loss": loss, "grid": {"shape": [6, 8]}})
    model(torch.randn(3, 40, 60), torch.tensor([60, 45, 30]))
    total, terms = regularizer.loss(step=0)
    total.backward()
    assert sorted(terms) == sorted(f"{layer}/{loss}" for layer in layers)
    for layer in layers:
        assert model.get_submodule(layer).weight.grad.abs().sum() > 0
    metrics = topography_metrics(model, regularizer.layer_names, regularizer.grids)
    assert metrics["block0.ffn1.sequential.1/ratio"] == pytest.approx(1.0, abs=0.3)  # random weights: no topography yet
