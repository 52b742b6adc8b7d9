from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from tmaps.introspect import Panels, phoneme_panels, resolve_grouping
from tmaps.introspect.layout import compute_layout
from tmaps.introspect.planted import make_planted_profiles
from tmaps.introspect.render import (
    FONT_SIZE,
    ColourScale,
    MapStyle,
    figure_image,
    group_order,
    map_points,
    plot_layers,
    plot_map,
    plot_maps,
    render_map,
    robust_limit,
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
            save_figure(plot_maps(som_coords, profiles.T, labels, colorbar_label=NAP, title="conv3"), tmp_path / f"{attempt}{suffix}")
            for attempt in range(2)
        ]
        assert paths[0].read_bytes() == paths[1].read_bytes()
    assert b"Software" not in (tmp_path / "0.png").read_bytes()
    assert b"<dc:date>" not in (tmp_path / "0.svg").read_bytes()
    with pytest.raises(ValueError, match=r"figure file suffix must be one of \('.png', '.svg'\); got '.jpg'"):
        save_figure(plot_maps(som_coords, profiles.T, colorbar_label=NAP), tmp_path / "map.jpg")


NAP = "NAP (activation minus the mean over groups)"


def words(label: str) -> str:
    """A label with its line breaks (wrapping) read as spaces."""
    return " ".join(label.split())


def panel_titles(axes) -> list[str]:
    return [text.get_text() for text in axes.texts if text.get_text()]


def small_texts(figure) -> list[tuple[str, float]]:
    """Every visible text of the figure (tick labels included) smaller than the renderer's minimum."""
    figure.canvas.draw()
    texts = [text for text in figure.findobj(Text) if text.get_visible() and text.get_text()]
    return [(text.get_text(), text.get_fontsize()) for text in texts if text.get_fontsize() < FONT_SIZE]


def test_plot_map_draws_one_map_into_the_callers_axes_and_returns_its_artists(planted, som_coords):
    profiles, _ = planted
    values = profiles[:, 2]
    figure = Figure()
    beside, target = figure.subplots(1, 2)
    artists = plot_map(values, som_coords, target, title="g2", style=MapStyle(contours=4))
    assert not beside.images and not beside.collections and not beside.texts
    assert list(target.images) == [artists.image] and list(artists.image.get_extent()) == [0, 1, 0, 1]
    limit = robust_limit(values)
    assert (artists.image.norm.vmin, artists.image.norm.vmax) == pytest.approx((-limit, limit))
    assert artists.scale == ColourScale(limit, "99th percentile of |values|")
    np.testing.assert_allclose(artists.contours.levels, np.linspace(-limit, limit, 6)[1:-1])
    assert len(artists.units.get_offsets()) == len(som_coords)
    assert artists.title.get_text() == "g2" and artists.colorbar is None
    image = np.asarray(artists.image.get_array())
    assert image.shape == (96, 96, 4) and (image[..., 3] == 0).any()
    moved = plot_map(values, som_coords, target, corner=(2.0, 0.5), image=render_map(som_coords, values, resolution=96, interpolation="cubic"))
    assert list(moved.image.get_extent()) == [2, 3, 0.5, 1.5]
    np.testing.assert_array_equal(np.asarray(moved.image.get_array()), image)


def test_plot_map_takes_an_asymmetric_range_and_labels_its_own_colour_bar(planted, som_coords):
    profiles, _ = planted
    alone = plot_map(profiles[:, 0], som_coords, colorbar_label=NAP)
    assert words(alone.colorbar.ax.get_ylabel()) == f"{NAP} colour limit ±{alone.scale.limit:.3g}: 99th percentile of |values|"
    assert not small_texts(alone.image.figure)
    ranged = plot_map(np.abs(profiles[:, 0]), som_coords, vmin=0.0, vmax=2.0, cmap="viridis", colorbar_label="mean activation")
    assert (ranged.image.norm.vmin, ranged.image.norm.vmax, ranged.image.cmap.name) == (0.0, 2.0, "viridis")
    assert ranged.scale is None and ranged.colorbar.ax.get_ylabel() == "mean activation"
    with pytest.raises(ValueError, match="give either limit or both vmin and vmax; got limit=1.0, vmin=0.0"):
        plot_map(profiles[:, 0], som_coords, limit=1.0, vmin=0.0, vmax=2.0)


def test_a_few_outlying_units_do_not_set_the_default_colour_limit(planted, som_coords):
    profiles, _ = planted
    values = profiles.T.copy()
    values[0, :1] = 50 * np.abs(values).max()
    figure = plot_maps(som_coords, values, colorbar_label=NAP)
    maps, colour_bar = figure.axes
    limit = float(np.percentile(np.abs(values), 99))
    assert limit < 0.1 * values.max()
    assert [image.norm.vmax for image in maps.images] == [pytest.approx(limit)] * 8
    assert colour_bar.get_ylim() == pytest.approx((-limit, limit))
    assert "99th percentile of |values|" in words(colour_bar.get_ylabel())
    assert robust_limit(np.zeros(5)) == 1.0


def test_plot_maps_draws_a_panel_per_group_in_clustered_order(planted, som_coords):
    profiles, _ = planted
    labels = [f"g{group}" for group in range(8)]
    figure = plot_maps(som_coords, profiles.T, labels, ncols=4, style=MapStyle(mask="disc"), colorbar_label=NAP)
    maps, colour_bar = figure.axes
    assert panel_titles(maps) == [labels[group] for group in group_order(profiles.T)]
    assert len(maps.images) == 8 and words(colour_bar.get_ylabel()).startswith(NAP)
    assert not small_texts(figure)
    with pytest.raises(ValueError, match="7 group labels for 8 groups"):
        plot_maps(som_coords, profiles.T, labels[:7], colorbar_label=NAP)
    with pytest.raises(TypeError, match="colorbar_label"):
        plot_maps(som_coords, profiles.T, labels)  # a colour bar always names its quantity
    bare = plot_maps(som_coords, profiles.T, style=MapStyle(contours=0, show_units=False, outline=False), colorbar_label=NAP).axes[0]
    assert not bare.collections and not bare.lines


def test_a_given_limit_is_the_colour_scale_so_that_frames_compare(planted, som_coords):
    profiles, _ = planted
    own = plot_maps(som_coords, profiles.T, colorbar_label=NAP).axes[1].get_ylim()
    shared = plot_maps(som_coords, 0.5 * profiles.T, limit=own[1], colorbar_label=NAP).axes[1]
    assert shared.get_ylim() == own
    assert words(shared.get_ylabel()) == f"{NAP} colour limit ±{own[1]:.3g}"
    stated = plot_maps(som_coords, profiles.T, limit=ColourScale(0.5, "shared by every epoch"), colorbar_label=NAP).axes[1]
    assert words(stated.get_ylabel()).endswith("colour limit ±0.5: shared by every epoch")


def test_phoneme_panels_are_ipa_in_phonetic_class_order_with_a_row_and_heading_per_class(planted, som_coords):
    profiles, _ = planted
    symbols = ["s", "aI", "t", "@", "n", "I2", "D", "I"]
    panels = phoneme_panels(symbols)
    ordered = [panels.labels[group] for group in panels.order]
    assert ordered == ["ə", "ɪ (I2)", "ɪ (I)", "aɪ", "t", "s", "ð", "n"]
    figure = plot_maps(som_coords, profiles.T, panels.labels, order=panels.order, sections=panels.sections, ncols=4, colorbar_label=NAP)
    maps = figure.axes[0]
    classes = ["vowel", "diphthong", "plosive", "fricative", "nasal"]
    assert panel_titles(maps) == ordered + classes
    rows = sorted({round(image.get_extent()[2], 6) for image in maps.images}, reverse=True)
    assert len(rows) == len(classes)
    assert len(maps.lines) == 8 + len(classes) - 1  # an outline per panel, a line between classes
    assert not small_texts(figure)
    assert phoneme_panels(["s", "??"]) == Panels(["s", "??"])
    assert phoneme_panels(["_:", "s", "@"]) == Panels(["_:", "s", "ə"], [2, 1, 0], ["silence", "fricative", "vowel"])
    assert resolve_grouping("phoneme_class").panels(["nasal", "vowel", "plosive"]) == Panels(["nasal", "vowel", "plosive"], [1, 2, 0])


def test_plot_layers_puts_columns_side_by_side_on_one_scale_unless_told_otherwise(planted, som_coords):
    profiles, positions = planted
    other = make_planted_profiles(90, n_groups=8, seed=6)
    columns = {"clean model, conv1": (som_coords, profiles.T), "biased model, conv1": (other[1], 3 * other[0].T)}
    figure = plot_layers(columns, colorbar_label=NAP)
    layer_axes = [axes for axes in figure.axes if axes.images]
    assert [axes.get_title() for axes in layer_axes] == list(columns)
    assert len(panel_titles(layer_axes[0])) == 8 and not panel_titles(layer_axes[1])
    shared = robust_limit(np.concatenate([profiles.ravel(), 3 * other[0].ravel()]))
    assert [image.norm.vmax for axes in layer_axes for image in axes.images] == [pytest.approx(shared)] * 16
    bars = [axes for axes in figure.axes if not axes.images]
    assert all("one scale for every column" in words(bar.get_xlabel()) for bar in bars)
    assert not small_texts(figure)
    own = plot_layers(columns, colorbar_label=NAP, share_scale=False)
    limits = [[image.norm.vmax for image in axes.images] for axes in own.axes if axes.images]
    assert limits == [[pytest.approx(robust_limit(profiles))] * 8, [pytest.approx(robust_limit(3 * other[0]))] * 8]
    with pytest.raises(ValueError, match=r"the same groups; group counts per layer: \{'a': 8, 'b': 7\}"):
        plot_layers({"a": (positions, profiles.T), "b": (positions, profiles.T[:7])}, colorbar_label=NAP)


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


def test_a_gif_holds_one_frame_per_epoch(planted, tmp_path):
    profiles, positions = planted
    style = MapStyle(show_units=False, resolution=48)
    frames = [plot_maps(positions, profiles.T * scale, ncols=8, style=style, colorbar_label=NAP) for scale in (1.0, -1.0, 0.5)]
    path = save_gif(frames, tmp_path / "epochs.gif", fps=4)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
        assert gif.info["duration"] == 250
        assert gif.size == figure_image(frames[0]).shape[1::-1]
    small = np.zeros((10, 12, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"frame 1 is 12x10 pixels, frame 0 is"):
        save_gif([frames[0], small], tmp_path / "bad.gif")


def test_plot_maps_takes_panels_whole_and_clusters_where_they_set_no_order(planted, som_coords):
    profiles, _ = planted
    symbols = ["s", "aI", "t", "@", "n", "I2", "D", "I"]
    by_class = plot_maps(som_coords, profiles.T, phoneme_panels(symbols), colorbar_label=NAP).axes[0]
    panels = phoneme_panels(symbols)
    assert panel_titles(by_class)[:8] == [panels.labels[group] for group in panels.order]
    clustered = plot_maps(som_coords, profiles.T, Panels(symbols), colorbar_label=NAP).axes[0]
    assert panel_titles(clustered) == [symbols[group] for group in group_order(profiles.T)]
