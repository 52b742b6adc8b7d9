"""Layout methods compared: time, trustworthiness and map smoothness for a small and a large layer.

Usage:
    python benchmarks/layout_quality.py [--profiles NAPS.npz] [--layers conv1 conv8] [--grid-shape ROWS COLS]

With ``--profiles`` (a file written by ``tmaps.introspect.profiles.Profiles.save``) the layers are
real NAPs: by default the first layer with 250 units and the first with 2000, else all
layers. Without it, profiles with planted structure (units generated from hidden 2D
positions, ``tmaps.introspect.planted.make_planted_profiles``) stand in, 250 and 2000 units;
the output says which input was used.

Rows: every method of ``LAYOUTS``, SOM followed by snapping to a grid, and MiniSom's online
SOM as the baseline the batch SOM replaced (same map size, PCA initialization, 10 epochs).
The ``random`` layout is the quality baseline. Time is wall-clock for the layout alone;
UMAP's import and numba compilation are paid on a small warm-up run first and reported on
their own line. The last line checks the 2000-unit times of PCA, UMAP and SOM + snap
against the 10 s target. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np

from tmaps.extras import require
from tmaps.introspect.layout import LAYOUTS, check_profiles, compute_layout, profile_features
from tmaps.introspect.planted import make_planted_profiles
from tmaps.introspect.quality import layout_quality

MiniSom = require("minisom", extra="bench", feature="benchmarks/layout_quality.py").MiniSom

SIZES = (250, 2000)
TIME_TARGET_S = 10.0
TARGET_METHODS = ("pca", "umap", "som+snap")


def minisom_layout(profiles: np.ndarray, epochs: int = 10) -> np.ndarray:
    """Baseline: MiniSom's online SOM on the same square map, units at their best-matching cells."""
    features = profile_features(profiles)
    side = math.ceil(math.sqrt(len(features)))
    som = MiniSom(
        side, side, features.shape[1], sigma=side / 2, sigma_decay_function="linear_decay_to_one", random_seed=0
    )
    som.pca_weights_init(features)
    som.train(features, epochs, random_order=True, use_epochs=True)
    return np.array([som.winner(feature) for feature in features], dtype=np.float64)


def planted_layers() -> list[tuple[str, np.ndarray, tuple[int, int]]]:
    layers = []
    for n_units in SIZES:
        profiles, _, shape = make_planted_profiles(n_units, seed=n_units)
        layers.append((f"planted-{n_units}", profiles, shape))
    return layers


def nap_layers(
    path: str, names: list[str] | None, grid_shape: tuple[int, int] | None
) -> list[tuple[str, np.ndarray, tuple[int, int]]]:
    from tmaps.introspect.profiles import Profiles  # needs torch; the planted input does not

    stored = Profiles.load(path)
    matrices = {layer: check_profiles(stored.matrix(layer)) for layer in (names or stored.layers)}
    if not names:
        by_size = {len(matrix): layer for layer, matrix in reversed(matrices.items())}
        chosen = [by_size[size] for size in SIZES if size in by_size] or list(matrices)
        matrices = {layer: matrices[layer] for layer in chosen}
    layers = []
    for layer, matrix in matrices.items():
        side = math.ceil(math.sqrt(len(matrix)))
        layers.append((layer, matrix, grid_shape or (math.ceil(len(matrix) / side), side)))
    return layers


def method_options(method: str, grid_shape: tuple[int, int]) -> dict:
    return {"shape": grid_shape} if method == "grid" else {}


def timed(make_layout: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    coords = make_layout()
    return coords, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", help="NPZ written by tmaps.introspect.profiles.Profiles.save")
    parser.add_argument("--layers", nargs="+", help="layers of --profiles to lay out")
    parser.add_argument(
        "--grid-shape",
        nargs=2,
        type=int,
        metavar=("ROWS", "COLS"),
        help="grid of topographically trained layers (default: channels row by row, near-square)",
    )
    args = parser.parse_args()

    if args.profiles:
        layers = nap_layers(args.profiles, args.layers, tuple(args.grid_shape) if args.grid_shape else None)
        print(f"input: real NAPs from {args.profiles}, layers {[name for name, _, _ in layers]}")
    else:
        layers = planted_layers()
        print(
            "input: PLANTED-STRUCTURE profiles (units generated from hidden 2D positions, 40 groups), "
            "not real NAPs; pass --profiles for real ones"
        )

    warm_up = make_planted_profiles(60, seed=1)[0]
    _, umap_compile_s = timed(lambda: compute_layout("umap", warm_up))
    print(f"umap import + numba compilation (60-unit warm-up run): {umap_compile_s:.1f} s")

    header = (
        f"{'layer':<14}{'units':>6}  {'method':<10}{'time s':>8}{'trust':>8}{'contin':>8}"
        f"{'spearman':>9}{'down AUC':>9}{'blur AUC':>9}"
    )
    print(header)
    print("-" * len(header))
    times: dict[tuple[int, str], float] = {}
    for name, profiles, grid_shape in layers:
        runs: dict[str, Callable[[], np.ndarray]] = {
            method: lambda method=method: compute_layout(method, profiles, **method_options(method, grid_shape))
            for method in LAYOUTS
        }
        runs["som+snap"] = lambda: compute_layout("som", profiles, snap=True)
        runs["minisom"] = lambda: minisom_layout(profiles)
        for method, run in runs.items():
            coords, seconds = timed(run)
            times[len(profiles), method] = seconds
            quality = layout_quality(profiles, coords)
            print(
                f"{name:<14}{len(profiles):>6}  {method:<10}{seconds:>8.2f}{quality['trustworthiness']:>8.3f}"
                f"{quality['continuity']:>8.3f}{quality['spearman']:>9.3f}"
                f"{quality['smoothness_downscale_auc']:>9.3f}{quality['smoothness_blur_auc']:>9.3f}"
            )
    largest = max(len(profiles) for _, profiles, _ in layers)
    checked = ", ".join(
        f"{method} {times[largest, method]:.1f} s" + ("" if times[largest, method] <= TIME_TARGET_S else " (OVER)")
        for method in TARGET_METHODS
    )
    met = all(times[largest, method] <= TIME_TARGET_S for method in TARGET_METHODS)
    print(f"{largest} units: {checked}; target <= {TIME_TARGET_S:.0f} s each: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
