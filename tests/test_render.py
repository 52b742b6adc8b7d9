from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tmaps.introspect.layout import compute_layout
from tmaps.introspect.planted import make_planted_profiles
from tmaps.introspect.render import (
    MapStyle,
    figure_image,
    group_order,
    map_points,
    plot_layers,
    plot_maps,
    render_map,
    save_figure,
    save_gif,
)
from tmaps.introspect.topography import map_smoothness


@pytest.fixture(scope="module")
def planted():
    profiles, positions, _ = make_planted_profiles(150, n_groups=8, seed=5)
    return profiles, positions


@pytest.fixture(scope="module")
def som_coords(planted):
    return compute_layout("som", planted[0])


def test_linear_interpolation_reproduces_a_linear_map_inside_the_hull(planted):
    _, positions = planted
    points = map_points(positions)
    image = render_map(positions, 2 * points[:, 0] - points[:, 1], resolution=40)
    centres = (np.arange(40) + 0.5) / 40
    expected = 2 * centres[None, :] - centres[:, None]
    inside = np.isfinite(image)
    assert 0.6 < inside.mean() < 0.95
    np.testing.assert_allclose(image[inside], expected[inside], atol=1e-9)


def test_pixels_outside_the_hull_or_the_disc_are_nan(planted):
    profiles, positions = planted
    hull = render_map(positions, profiles[:, 0], resolution=64)
    assert np.isnan(hull[0, 0]) and np.isnan(hull[-1, -1])
    disc = render_map(positions, profiles[:, 0], resolution=64, mask="disc")
    centres = (np.arange(64) + 0.5) / 64
    in_disc = np.hypot(centres[None, :] - 0.5, centres[:, None] - 0.5) <= 0.5
    np.testing.assert_array_equal(np.isfinite(disc), in_disc)


@pytest.mark.parametrize("interpolation", ["linear", "cubic", "rbf"])
def test_every_interpolation_renders_each_group(planted, interpolation):
    profiles, positions = planted
    images = render_map(positions, profiles.T, resolution=32, interpolation=interpolation)
    assert images.shape == (8, 32, 32)
    single = render_map(positions, profiles[:, 3], resolution=32, interpolation=interpolation)
    np.testing.assert_allclose(single, images[3], atol=1e-10)
    inside = np.isfinite(single)
    assert np.corrcoef(single[inside], render_map(positions, profiles[:, 3], resolution=32)[inside])[0, 1] > 0.95


def test_bad_values_are_named(planted):
    profiles, positions = planted
    values = profiles[:, 0].copy()
    values[[3, 8]] = np.nan
    with pytest.raises(ValueError, match=r"values are NaN or infinite for 2 units \(units 3, 8\)"):
        render_map(positions, values)
    with pytest.raises(ValueError, match=r"values must have shape \(150,\) or \(n_groups, 150\); got \(149,\)"):
        render_map(positions, values[:-1])
    with pytest.raises(ValueError, match=r"mask must be one of \('hull', 'disc'\); got 'square'"):
        render_map(positions, profiles[:, 0], mask="square")
    with pytest.raises(ValueError, match=r"interpolation must be one of \('linear', 'cubic', 'rbf'\); got 'nearest'"):
        MapStyle(interpolation="nearest")
    with pytest.raises(ValueError, match="cannot triangulate the layout of 3 units"):
        render_map([[0, 0], [1, 1], [2, 2]], [1.0, 2.0, 3.0])


def test_a_smooth_map_scores_smoother_than_the_same_values_shuffled(planted, som_coords):
    profiles, _ = planted
    values = profiles[:, :4].T
    shuffled = np.random.default_rng(0).permuted(values, axis=1)
    smooth = map_smoothness(render_map(som_coords, values, resolution=64))
    rough = map_smoothness(render_map(som_coords, shuffled, resolution=64))
    assert (smooth["downscale_auc"] < 0.5 * rough["downscale_auc"]).all()
    assert (smooth["blur_auc"] < 0.5 * rough["blur_auc"]).all()
    assert (np.diff(smooth["blur_mse"], axis=-1) >= 0).all()


def test_smoothness_ignores_the_amplitude_and_offset_of_a_map(planted, som_coords):
    image = render_map(som_coords, planted[0][:, 0], resolution=48)
    reference = map_smoothness(image)
    scaled = map_smoothness(7 * image - 3)
    for key in reference:
        np.testing.assert_allclose(scaled[key], reference[key], rtol=1e-9)
    constant = map_smoothness(np.where(np.isfinite(image), 2.5, np.nan))
    np.testing.assert_array_equal(constant["blur_auc"], 0.0)


def test_similar_groups_end_up_next_to_each_other():
    rng = np.random.default_rng(1)
    first, second = rng.normal(size=(2, 50))
    interleaved = np.stack([first, second, first * 2, second * 3, first + 0.05 * rng.normal(size=50)])
    order = group_order(interleaved).tolist()
    firsts = sorted(order.index(group) for group in (0, 2, 4))
    assert firsts in ([0, 1, 2], [2, 3, 4])


def test_saved_png_and_svg_files_are_byte_identical_for_identical_inputs(planted, som_coords, tmp_path):
    profiles, _ = planted
    labels = [f"g{group}" for group in range(8)]
    for suffix in (".png", ".svg"):
        paths = [
            save_figure(plot_maps(som_coords, profiles.T, labels, title="conv3"), tmp_path / f"{attempt}{suffix}")
            for attempt in range(2)
        ]
        assert paths[0].read_bytes() == paths[1].read_bytes()
    assert b"Software" not in (tmp_path / "0.png").read_bytes()
    assert b"<dc:date>" not in (tmp_path / "0.svg").read_bytes()
    with pytest.raises(ValueError, match=r"figure file suffix must be one of \('.png', '.svg'\); got '.jpg'"):
        save_figure(plot_maps(som_coords, profiles.T), tmp_path / "map.jpg")


def panel_titles(axes) -> list[str]:
    return [text.get_text() for text in axes.texts if text.get_text()]


def test_plot_maps_draws_a_panel_per_group_in_clustered_order_with_a_few_artists(planted, som_coords):
    profiles, _ = planted
    labels = [f"g{group}" for group in range(8)]
    figure = plot_maps(som_coords, profiles.T, labels, ncols=4, style=MapStyle(mask="disc"), value_label="NAP")
    maps, colour_bar = figure.axes
    assert panel_titles(maps) == [labels[group] for group in group_order(profiles.T)]
    assert len(maps.images) == 1 and colour_bar.get_ylabel() == "NAP"
    assert maps.images[0].get_array().shape[:2] == (2 * 96 + round(0.22 * 96), 4 * 96 + 3 * round(0.08 * 96))
    with pytest.raises(ValueError, match="7 group labels for 8 groups"):
        plot_maps(som_coords, profiles.T, labels[:7])


def test_contours_units_and_outlines_are_drawn_once_for_all_panels(planted, som_coords):
    profiles, _ = planted
    figure = plot_maps(som_coords, profiles.T, style=MapStyle(contours=4))
    maps = figure.axes[0]
    (contours,) = [artist for artist in maps.collections if hasattr(artist, "levels")]
    limit = figure.axes[1].get_ylim()[1]
    np.testing.assert_allclose(contours.levels, np.linspace(-limit, limit, 6)[1:-1])
    (dots,) = [artist for artist in maps.collections if artist.get_offsets().shape[0] > 1 and not hasattr(artist, "levels")]
    assert len(dots.get_offsets()) == 8 * len(som_coords)
    bare = plot_maps(som_coords, profiles.T, style=MapStyle(contours=0, show_units=False, outline=False)).axes[0]
    assert not bare.collections


def test_a_given_limit_is_the_colour_scale_so_that_frames_compare(planted, som_coords):
    profiles, _ = planted
    own = plot_maps(som_coords, profiles.T).axes[1].get_ylim()
    largest = np.nanmax(np.abs(render_map(som_coords, profiles.T, resolution=96, interpolation="cubic")))
    assert own == pytest.approx((-largest, largest))
    shared = plot_maps(som_coords, 0.5 * profiles.T, limit=own[1]).axes[1].get_ylim()
    assert shared == own


def test_the_default_maps_are_smooth_where_linear_ones_are_faceted(planted):
    _, positions = planted
    points = map_points(positions)
    bowl = (points[:, 0] - 0.5) ** 2 + (points[:, 1] - 0.5) ** 2
    centres = (np.arange(64) + 0.5) / 64
    expected = (centres[None, :] - 0.5) ** 2 + (centres[:, None] - 0.5) ** 2
    errors = {}
    for interpolation in ("linear", MapStyle().interpolation):
        image = render_map(positions, bowl, resolution=64, interpolation=interpolation)
        inside = np.isfinite(image)
        errors[interpolation] = np.abs(image - expected)[inside].max()
    assert MapStyle().interpolation == "cubic"
    assert errors["cubic"] < 0.25 * errors["linear"], errors


def test_plot_layers_puts_layers_side_by_side(planted, som_coords):
    profiles, positions = planted
    other = make_planted_profiles(90, n_groups=8, seed=6)
    figure = plot_layers({"conv1": (som_coords, profiles.T), "conv5": (other[1], other[0].T)})
    layer_axes = [axes for axes in figure.axes if axes.images]
    assert [axes.get_title() for axes in layer_axes] == ["conv1", "conv5"]
    assert len(panel_titles(layer_axes[0])) == 8 and not panel_titles(layer_axes[1])
    with pytest.raises(ValueError, match=r"the same groups; group counts per layer: \{'a': 8, 'b': 7\}"):
        plot_layers({"a": (positions, profiles.T), "b": (positions, profiles.T[:7])})


def test_a_gif_holds_one_frame_per_epoch(planted, tmp_path):
    profiles, positions = planted
    style = MapStyle(show_units=False, resolution=48)
    frames = [plot_maps(positions, profiles.T * scale, ncols=8, style=style) for scale in (1.0, -1.0, 0.5)]
    path = save_gif(frames, tmp_path / "epochs.gif", fps=4)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
        assert gif.info["duration"] == 250
        assert gif.size == figure_image(frames[0]).shape[1::-1]
    small = np.zeros((10, 12, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"frame 1 is 12x10 pixels, frame 0 is"):
        save_gif([frames[0], small], tmp_path / "bad.gif")
