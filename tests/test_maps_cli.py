"""``tmaps-maps`` on a profiles file of a tiny model run over real synthetic speech."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from tmaps.commands.maps import maps_from_config
from tmaps.data import SpeechDataModule
from tmaps.introspect.layout_comparison import QUALITY_COLUMNS
from tmaps.introspect.nap import NAP
from tmaps.introspect.profiles import Profiles
from tmaps.models import Wav2Letter
from tmaps.text import Alphabet
from tmaps.topo import Grid

LAYERS = ("conv1", "conv2")
CHANNELS = [24, 36, 40]
GRID_SHAPES = {"conv1": [6, 6], "conv2": [5, 8]}
EVERY_METHOD = ["grid", "som", "pca", "umap", "tsne", "force", "random"]


@pytest.fixture(scope="module")
def profiles_file(synth_corpus_en, tmp_path_factory) -> Path:
    """Phoneme-class NAPs of an untrained tiny Wav2Letter over the English test corpus, saved as NPZ."""
    data = SpeechDataModule(
        source={"kind": "manifest", "path": str(synth_corpus_en), "splits": {"train": "train.jsonl"}},
        root=str(tmp_path_factory.mktemp("cache")),
        batching={"max_batch_seconds": 30, "num_workers": 0},
    )
    data.prepare_data()
    torch.manual_seed(0)
    alphabet = Alphabet.for_language("en")
    model = Wav2Letter(n_features=40, n_classes=alphabet.n_classes, channels=CHANNELS, kernel_sizes=[11, 7, 7], strides=[2, 1, 1])
    profiles = NAP(model, list(LAYERS)).compute(data.loader("train", shuffle=False), "phoneme_class")
    profiles.info["grids"] = {layer: Grid(rows * cols, shape=(rows, cols)).to_dict() for layer, (rows, cols) in GRID_SHAPES.items()}
    return profiles.save(tmp_path_factory.mktemp("profiles") / "naps.npz")


def maps_config(profiles: Path, output_dir: Path, *overrides: str) -> dict:
    """``conf/maps.yaml`` composed as ``tmaps-maps`` composes it, as a plain dict."""
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(config_name="maps", overrides=[f"profiles={profiles}", f"paths.output_dir={output_dir}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="module")
def every_method(profiles_file, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    output_dir = tmp_path_factory.mktemp("maps")
    config = maps_config(profiles_file, output_dir, f"layouts=[{','.join(EVERY_METHOD)}]", "formats=[png,svg]")
    return output_dir, maps_from_config(config)


def test_the_quality_table_scores_every_method_on_every_layer(every_method):
    output_dir, table = every_method
    assert list(table.columns) == list(QUALITY_COLUMNS)
    assert sorted(zip(table.layer, table.method)) == sorted((layer, method) for layer in LAYERS for method in EVERY_METHOD)
    assert dict(zip(table.layer, table.units)) == {"conv1": CHANNELS[1], "conv2": CHANNELS[2]}
    assert table[["trustworthiness", "continuity"]].apply(lambda column: column.between(0, 1)).all().all()
    written = pd.read_csv(output_dir / "quality.csv")
    pd.testing.assert_frame_equal(written, table, check_dtype=False)
    markdown = (output_dir / "quality.md").read_text()
    assert all(f"| {method} " in markdown for method in EVERY_METHOD)


def test_data_driven_layouts_keep_neighbourhoods_better_than_random(every_method):
    _, table = every_method
    trust = table.pivot(index="layer", columns="method", values="trustworthiness")
    for method in ("som", "pca", "umap", "tsne"):
        assert (trust[method] > trust["random"]).all(), trust


def test_coordinates_are_written_as_npz_and_csv(every_method, profiles_file):
    output_dir, _ = every_method
    profiles = Profiles.load(profiles_file)
    with np.load(output_dir / "coords.npz") as stored:
        assert sorted(stored.files) == sorted(f"{layer}__{method}" for layer in LAYERS for method in EVERY_METHOD)
        for layer in LAYERS:
            assert stored[f"{layer}__pca"].shape == (profiles.matrix(layer).shape[0], 2)
        grid = stored["conv1__grid"]
    rows = pd.read_csv(output_dir / "coords.csv")
    conv1_grid = rows[(rows.layer == "conv1") & (rows.method == "grid")].sort_values("unit")
    np.testing.assert_array_equal(conv1_grid[["x", "y"]].to_numpy(), grid)
    # The recorded 6 x 6 grid: channel 7 sits in row 1, column 1, with row 0 on top (y = 5).
    assert tuple(grid[7]) == (1.0, 4.0)


def test_maps_are_drawn_per_layer_and_method_and_side_by_side_per_method(every_method):
    output_dir, _ = every_method
    for suffix in ("png", "svg"):
        for method in EVERY_METHOD:
            assert (output_dir / f"layers__{method}.{suffix}").stat().st_size > 1000
            for layer in LAYERS:
                assert (output_dir / "maps" / f"{layer}__{method}.{suffix}").stat().st_size > 1000


def run_maps(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TMAPS_ROOT": str(cwd), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "tmaps.commands.maps", *arguments, "hydra.run.dir=out"],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_command_prints_the_quality_table_as_markdown(profiles_file, tmp_path):
    result = run_maps(f"profiles={profiles_file}", "layouts=[pca,random]", "layers=[conv2]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table_lines = [line for line in result.stdout.splitlines() if line.startswith("| conv2")]
    assert [line.split("|")[2].strip() for line in table_lines] == ["pca", "random"]
    assert (tmp_path / "out" / "maps" / "conv2__pca.png").is_file()


def nan_profiles_file(folder: Path) -> Path:
    sums = np.ones((3, 20))
    sums[1, 4] = np.nan
    profiles = Profiles(["a", "b", "c"], {"conv0": sums}, {"conv0": sums**2}, {"conv0": np.full(3, 5)})
    return profiles.save(folder / "with_nan.npz")


def test_the_command_names_the_file_holding_nan_profiles(tmp_path):
    path = nan_profiles_file(tmp_path)
    result = run_maps(f"profiles={path}", "layouts=[pca]", cwd=tmp_path)
    assert result.returncode != 0
    assert str(path) in result.stderr and "conv0" in result.stderr and "NaN" in result.stderr


def test_too_few_units_for_a_method_are_named_with_file_layer_and_method(tmp_path):
    rng = np.random.default_rng(0)
    sums = rng.normal(size=(6, 8))
    path = Profiles(list("abcdef"), {"conv3": sums}, {"conv3": sums**2}, {"conv3": np.full(6, 2)}).save(tmp_path / "small.npz")
    with pytest.raises(ValueError, match=rf"{path}: layer 'conv3', layout 'umap': .*needs at least 16 units"):
        maps_from_config(maps_config(path, tmp_path / "out", "layouts=[pca,umap]"))


def test_a_grid_layout_without_a_grid_shape_is_refused(tmp_path):
    sums = np.random.default_rng(0).normal(size=(3, 12))
    path = Profiles(["a", "b", "c"], {"conv0": sums}, {"conv0": sums**2}, {"conv0": np.ones(3)}).save(tmp_path / "p.npz")
    with pytest.raises(ValueError, match=r"layer 'conv0' has no recorded grid .*grid_shape=\[rows,cols\]"):
        maps_from_config(maps_config(path, tmp_path / "out", "layouts=[grid]"))
    table = maps_from_config(maps_config(path, tmp_path / "out", "layouts=[grid]", "grid_shape=[3,4]"))
    assert list(table.method) == ["grid"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["layouts=[spiral]"], r"unknown layout methods \['spiral'\]"),
        (["layers=[conv7]"], r"has no layer 'conv7'; its layers are \['conv1', 'conv2'\]"),
        (["formats=[jpg]"], r"figure formats must be png or svg; got \['jpg'\]"),
    ],
)
def test_bad_options_are_named(profiles_file, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        maps_from_config(maps_config(profiles_file, tmp_path, *overrides))


def test_a_missing_or_foreign_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz does not exist"):
        maps_from_config(maps_config(tmp_path / "missing.npz", tmp_path))
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, values=np.zeros(3))
    with pytest.raises(ValueError, match=rf"{re.escape(str(foreign))} is not a tmaps profiles file: it has no 'metadata' entry"):
        maps_from_config(maps_config(foreign, tmp_path))

