from __future__ import annotations

import numpy as np
import pytest

from tmaps.introspect.layout import (
    LAYOUTS,
    align_orientation,
    compute_layout,
    remove_overlaps,
    snap_to_grid,
)
from tmaps.introspect.planted import make_planted_profiles
from tmaps.introspect.quality import (
    continuity,
    distance_correlation,
    layout_quality,
    trustworthiness,
)

N_UNITS = 200
DATA_DRIVEN = ["grid", "som", "pca", "tsne", "umap", "force"]


@pytest.fixture(scope="module")
def planted():
    profiles, positions, shape = make_planted_profiles(N_UNITS, n_groups=30, seed=3)
    return profiles, positions, shape


def _options(method: str, shape: tuple[int, int]) -> dict:
    return {"shape": shape} if method == "grid" else {}


@pytest.fixture(scope="module")
def layouts(planted):
    """Every method once on the planted profiles (UMAP's numba compilation is paid here, once)."""
    profiles, _, shape = planted
    return {method: compute_layout(method, profiles, **_options(method, shape)) for method in LAYOUTS}


def test_the_registry_holds_every_method():
    assert set(LAYOUTS) == {"grid", "som", "pca", "tsne", "umap", "force", "random"}


def test_the_planted_positions_themselves_are_trustworthy(planted):
    profiles, positions, _ = planted
    assert trustworthiness(profiles, positions) > 0.95
    assert continuity(profiles, positions) > 0.95
    assert distance_correlation(profiles, positions) > 0.8


@pytest.mark.parametrize("method", DATA_DRIVEN)
def test_every_method_recovers_the_planted_neighbourhoods(planted, layouts, method):
    profiles, _, _ = planted
    coords = layouts[method]
    assert coords.shape == (N_UNITS, 2)
    assert np.isfinite(coords).all()
    assert trustworthiness(profiles, coords) >= 0.9


def test_a_random_layout_keeps_no_neighbourhood(planted, layouts):
    profiles, _, _ = planted
    quality = layout_quality(profiles, layouts["random"])
    assert quality["trustworthiness"] <= 0.6
    assert abs(quality["spearman"]) < 0.1
    assert quality["smoothness_blur_auc"] > 2 * layout_quality(profiles, layouts["som"])["smoothness_blur_auc"]


def test_euclidean_distance_also_recovers_the_planted_neighbourhoods(planted):
    profiles, _, _ = planted
    coords = compute_layout("pca", profiles, metric="euclidean")
    assert trustworthiness(profiles, coords, metric="euclidean") >= 0.9


@pytest.mark.parametrize("method", ["som", "pca", "tsne", "umap", "force", "random"])
def test_equal_inputs_and_seed_give_equal_coordinates(planted, layouts, method):
    profiles, _, _ = planted
    np.testing.assert_array_equal(compute_layout(method, profiles), layouts[method])


def test_another_seed_gives_another_random_layout(planted, layouts):
    profiles, _, _ = planted
    assert not np.allclose(compute_layout("random", profiles, seed=1), layouts["random"])


def test_the_grid_layout_places_channels_row_by_row_with_row_zero_on_top(planted):
    profiles, _, _ = planted
    coords = compute_layout("grid", profiles[:6], shape=(2, 3))
    np.testing.assert_array_equal(coords, [[0, 1], [1, 1], [2, 1], [0, 0], [1, 0], [2, 0]])


@pytest.mark.parametrize("method", ["som", "tsne", "umap", "force"])
def test_snapping_gives_every_unit_its_own_cell_and_keeps_neighbourhoods(planted, layouts, method):
    profiles, _, _ = planted
    snapped = snap_to_grid(layouts[method])
    assert len(np.unique(snapped, axis=0)) == N_UNITS
    np.testing.assert_array_equal(snapped, np.round(snapped))
    assert trustworthiness(profiles, snapped) >= 0.9


def test_snapping_onto_a_given_grid_uses_only_its_cells(layouts):
    snapped = snap_to_grid(layouts["pca"], shape=(10, 25))
    assert len(np.unique(snapped, axis=0)) == N_UNITS
    assert snapped[:, 0].min() >= 0 and snapped[:, 0].max() <= 24
    assert snapped[:, 1].min() >= 0 and snapped[:, 1].max() <= 9
    with pytest.raises(ValueError, match=r"grid shape \(10, 19\) has fewer cells than the layout's 200 units"):
        snap_to_grid(layouts["pca"], shape=(10, 19))


def test_a_layout_already_on_its_grid_does_not_move_when_snapped(planted, layouts):
    _, _, shape = planted
    np.testing.assert_array_equal(snap_to_grid(layouts["grid"], shape=shape), layouts["grid"])


def test_compute_layout_snaps_after_aligning(planted):
    profiles, _, _ = planted
    snapped = compute_layout("som", profiles, snap=True)
    assert len(np.unique(snapped, axis=0)) == N_UNITS
    np.testing.assert_array_equal(snapped, np.round(snapped))


def test_removing_overlaps_separates_close_units_and_leaves_distant_ones():
    coords = np.array([[0.0, 0.0], [0.0, 0.0], [0.01, 0.0], [5.0, 5.0], [10.0, 0.0]])
    separated = remove_overlaps(coords, min_distance=1.0)
    crowded = separated[:3]
    gaps = np.linalg.norm(crowded[:, None] - crowded[None], axis=-1)[np.triu_indices(3, 1)]
    assert gaps.min() >= 0.99
    np.testing.assert_array_equal(separated[3:], coords[3:])


def test_compute_layout_deoverlaps_the_som_units_sharing_a_cell(planted):
    profiles, _, _ = planted
    coords = compute_layout("som", profiles, deoverlap=True)
    gaps = np.linalg.norm(coords[:, None] - coords[None], axis=-1)[np.triu_indices(N_UNITS, 1)]
    spacing = np.ptp(coords, axis=0).max() / np.sqrt(N_UNITS)
    assert gaps.min() >= 0.4 * spacing
    assert trustworthiness(profiles, coords) >= 0.9


def _rotated_and_mirrored(coords: np.ndarray) -> np.ndarray:
    angle = 1.1
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (coords * [-1.0, 1.0]) @ rotation.T + [3.0, -7.0]


def test_aligning_a_rotated_mirrored_copy_onto_the_reference_recovers_it(layouts):
    reference = layouts["tsne"]
    np.testing.assert_allclose(align_orientation(_rotated_and_mirrored(reference), reference), reference, atol=1e-8)


def test_the_canonical_orientation_is_the_same_for_rotated_mirrored_copies(layouts):
    coords = layouts["umap"]
    np.testing.assert_allclose(align_orientation(_rotated_and_mirrored(coords)), align_orientation(coords), atol=1e-8)


def test_compute_layout_aligns_onto_a_reference_layout(planted, layouts):
    profiles, _, _ = planted
    reference = _rotated_and_mirrored(layouts["pca"])
    np.testing.assert_allclose(compute_layout("pca", profiles, reference=reference), reference, atol=1e-8)


def test_profiles_with_nan_are_refused_naming_the_units(planted):
    profiles = planted[0].copy()
    profiles[[4, 17], 2] = np.nan
    profiles[99, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinite values in 3 of 200 units \(units 4, 17, 99\)"):
        compute_layout("pca", profiles)


@pytest.mark.parametrize("bad_shape", [(200,), (200, 30, 2), (1, 30), (200, 0)])
def test_profiles_of_the_wrong_shape_are_refused(bad_shape):
    with pytest.raises(ValueError, match=r"profiles must be a matrix \(n_units, n_groups\).*got shape"):
        compute_layout("pca", np.ones(bad_shape))


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("tsne", {}, r"the tsne layout needs at least 31 units \(more than perplexity=30.0\); got 20"),
        ("umap", {"n_neighbors": 25}, r"the umap layout needs at least 26 units \(more than n_neighbors=25\); got 20"),
        ("force", {"n_neighbors": 20}, r"the force layout needs at least 21 units"),
    ],
)
def test_too_few_units_for_a_method_are_refused(planted, method, options, message):
    with pytest.raises(ValueError, match=message):
        compute_layout(method, planted[0][:20], **options)


def test_a_som_needs_a_map_and_profiles_it_can_organize(planted):
    profiles = planted[0]
    with pytest.raises(ValueError, match="the som layout needs at least 4 units"):
        compute_layout("som", profiles[:3])
    with pytest.raises(ValueError, match="the som layout needs at least 2 groups"):
        compute_layout("som", profiles[:, :1])


def test_bad_choices_are_named(planted):
    profiles = planted[0]
    with pytest.raises(ValueError, match=r"unknown layout method 'mds'; known: \['force', 'grid'"):
        compute_layout("mds", profiles)
    with pytest.raises(ValueError, match=r"metric must be one of \('cosine', 'euclidean'\); got 'manhattan'"):
        compute_layout("tsne", profiles, metric="manhattan")
    with pytest.raises(ValueError, match=r"grid layout needs shape=\(rows, cols\)"):
        compute_layout("grid", profiles)
    with pytest.raises(ValueError, match=r"grid shape \(10, 10\) has fewer cells than the layer's 200 units"):
        compute_layout("grid", profiles, shape=(10, 10))
    with pytest.raises(ValueError, match="choose snap or deoverlap, not both"):
        compute_layout("pca", profiles, snap=True, deoverlap=True)
    with pytest.raises(ValueError, match=r"coordinates are given for 199 units, the profiles have 200"):
        trustworthiness(profiles, np.zeros((199, 2)))
