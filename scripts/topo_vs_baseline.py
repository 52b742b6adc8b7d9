"""Are phoneme-responsive units grouped on the learned grid? A topographic model against its baseline.

    python scripts/topo_vs_baseline.py --baseline runs/quickstart_baseline/checkpoints/last.ckpt \\
        --topo runs/quickstart_topo/checkpoints/last.ckpt [--output-dir DIR] [--permutations 999] \\
        [overrides of conf/introspect.yaml: data=synth_en split=test max_utterances=200 kind=nap ...]

Both checkpoints get phoneme NAPs on the same split (:func:`tmaps.commands.introspect.checkpoint_profiles`).
Per layer the script reports

- ``ari_*``: the adjusted Rand index between clusters of the phonemes' profiles and the
  phoneme classes (:func:`tmaps.introspect.cluster_summary`);
- on the layers the topographic model was trained on, ``morans_i_*``: the mean over phonemes
  of Moran's I of the phoneme's NAP across units placed on the learned grid
  (:func:`tmaps.introspect.morans_i`, rook neighbours, no wrap-around even on a torus grid).
  The baseline's units sit on the same grid in channel order, so its Moran's I is what the
  arrangement gives without topographic training. ``p_below_05_*`` is the share of phonemes
  whose permutation p-value (units' values shuffled over the grid) is below 0.05, and
  ``morans_i_expected`` is I's expectation without spatial structure, ``-1 / (units - 1)``.

It writes ``topo_vs_baseline.csv``, ``.md`` and ``.png`` (ARI by layer; Moran's I per phoneme
on each topographic layer) and both profile files into the output folder, and prints the
Markdown table.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_module
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.introspect import checkpoint_profiles
from tmaps.introspect import Profiles, cluster_summary, morans_i, save_figure
from tmaps.topo import Grid

MODELS = ("topo", "baseline")
SIGNIFICANCE = 0.05


def phoneme_morans_i(profiles: Profiles, layer: str, grid: Grid, permutations: int, seed: int = 0) -> pd.DataFrame:
    """Moran's I and its permutation p-value of every phoneme's NAP ``(units,)`` on ``grid`` (columns phoneme, statistic, p_value)."""
    mean = profiles[layer].mean
    if mean.shape[1] != grid.n_units:
        raise ValueError(f"{profiles.info.get('checkpoint')}: layer {layer!r} has {mean.shape[1]} units, the grid {grid.n_units}")
    positions = grid.positions.numpy()
    rows = []
    for phoneme, values in zip(profiles.groups, mean):
        if np.ptp(values) == 0:
            continue  # a constant map has no Moran's I
        result = morans_i(values, positions, permutations=permutations, seed=seed)
        rows.append({"phoneme": phoneme, "statistic": result.statistic, "p_value": result.p_value})
    return pd.DataFrame(rows, columns=["phoneme", "statistic", "p_value"])


def comparison_table(profiles: dict[str, Profiles], permutations: int) -> tuple[pd.DataFrame, dict[str, dict[str, pd.DataFrame]]]:
    """One row per layer (ARI of both models; Moran's I on topographic layers) and the per-phoneme Moran's I behind it."""
    summaries = {model: cluster_summary(profiles[model]).set_index("layer") for model in MODELS}
    grid_shapes = profiles["topo"].info["grid_shapes"]
    if not grid_shapes:
        raise ValueError(f"checkpoint {profiles['topo'].info['checkpoint']} has no topographic layers (its topo config is {profiles['topo'].info['topo']})")
    per_phoneme: dict[str, dict[str, pd.DataFrame]] = {}
    rows = []
    for layer in profiles["topo"].layers:
        row = {"layer": layer, "units": int(summaries["topo"].loc[layer, "units"])}
        row |= {f"ari_{model}": summaries[model].loc[layer, "adjusted_rand"] for model in MODELS}
        if layer in grid_shapes:
            grid = Grid(row["units"], shape=grid_shapes[layer])
            per_phoneme[layer] = {model: phoneme_morans_i(profiles[model], layer, grid, permutations) for model in MODELS}
            row["grid"] = f"{grid.rows}x{grid.cols}"
            row["morans_i_expected"] = -1.0 / (grid.n_units - 1)
            for model, table in per_phoneme[layer].items():
                row[f"morans_i_{model}"] = table["statistic"].mean()
                row[f"p_below_05_{model}"] = (table["p_value"] < SIGNIFICANCE).mean()
        rows.append(row)
    columns = ["layer", "units", "ari_topo", "ari_baseline", "grid", "morans_i_expected"]
    columns += [f"{name}_{model}" for name in ("morans_i", "p_below_05") for model in MODELS]
    return pd.DataFrame(rows).reindex(columns=columns), per_phoneme


def plot_comparison(table: pd.DataFrame, per_phoneme: dict[str, dict[str, pd.DataFrame]]) -> Figure:
    """ARI by layer for both models, and each topographic layer's per-phoneme Moran's I as box plots."""
    figure = Figure(figsize=(11.0, 4.0), layout="constrained")
    ari_axes, moran_axes = figure.subplots(1, 2, width_ratios=[3, 2])
    for model in MODELS:
        ari_axes.plot(table["layer"], table[f"ari_{model}"], marker="o", label=model)
    ari_axes.axhline(0.0, color="grey", linewidth=0.8)
    ari_axes.tick_params(axis="x", rotation=45)
    ari_axes.set(xlabel="layer", ylabel="adjusted Rand index", title="phoneme NAP clusters vs phoneme classes")
    ari_axes.legend()
    boxes, labels = [], []
    for layer, tables in per_phoneme.items():
        boxes += [tables[model]["statistic"] for model in MODELS]
        labels += [f"{layer}\n{model}" for model in MODELS]
    moran_axes.boxplot(boxes, tick_labels=labels)
    expected = table["morans_i_expected"].dropna()
    moran_axes.axhline(expected.mean(), color="grey", linewidth=0.8, linestyle="--", label="no spatial structure")
    moran_axes.set(ylabel="Moran's I of a phoneme's NAP", title="phoneme maps on the learned grid")
    moran_axes.legend()
    return figure


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="checkpoint trained without a topographic loss")
    parser.add_argument("--topo", required=True, help="checkpoint trained with one (e.g. topo=weight_similarity)")
    parser.add_argument("--output-dir", default="topo_vs_baseline", help="folder for the table, figure and profiles")
    parser.add_argument("--permutations", type=int, default=999, help="random placements per Moran's I p-value")
    parser.add_argument("overrides", nargs="*", help="overrides of conf/introspect.yaml (data=..., split=..., max_utterances=...)")
    arguments = parser.parse_args(argv)
    output_dir = Path(arguments.output_dir)
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(config_name="introspect", overrides=[f"paths.output_dir={output_dir}", *arguments.overrides])
    options = OmegaConf.to_container(cfg, resolve=True)
    profile_options = {key: options[key] for key in ("split", "kind", "target", "normalize", "max_utterances", "align", "device")}
    profiles = {}
    for model in MODELS:
        checkpoint = load_checkpoint(getattr(arguments, model))
        profiles[model] = checkpoint_profiles(checkpoint, options["data"], groups="phoneme", **profile_options)
        output_dir.mkdir(parents=True, exist_ok=True)
        profiles[model].save(output_dir / f"profiles_{model}.npz")
    table, per_phoneme = comparison_table(profiles, arguments.permutations)
    table.to_csv(output_dir / "topo_vs_baseline.csv", index=False)
    markdown = table.astype(object).where(table.notna(), "").to_markdown(index=False, floatfmt=".3f")
    (output_dir / "topo_vs_baseline.md").write_text(markdown + "\n", encoding="utf-8")
    save_figure(plot_comparison(table, per_phoneme), output_dir / "topo_vs_baseline.png")
    utterances = profiles["topo"].info["utterances"]
    print(f"phoneme {profiles['topo'].info['kind']}s on {utterances} utterances of {options['split']}; {arguments.permutations} permutations")
    print(markdown)
    topographic = table.dropna(subset=["morans_i_topo"])
    gain = (topographic["morans_i_topo"] - topographic["morans_i_baseline"]).mean()
    print(f"mean Moran's I over topographic layers: topo {topographic['morans_i_topo'].mean():.3f}, "
          f"baseline {topographic['morans_i_baseline'].mean():.3f} (difference {gain:+.3f})")
    return table


if __name__ == "__main__":
    main()
