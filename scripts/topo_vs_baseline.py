"""Are phoneme-responsive units grouped on the learned grid? A topographic model against its baseline.

    python scripts/topo_vs_baseline.py --baseline runs/quickstart_baseline/checkpoints/last.ckpt \\
        --topo runs/quickstart_topo/checkpoints/last.ckpt [--output-dir DIR] [--permutations 999] \\
        [overrides of conf/introspect.yaml: data=synth_en split=test max_utterances=200 kind=nap ...]

Both checkpoints get phoneme NAPs on the same split (:func:`tmaps.studies.profiles.checkpoint_profiles`);
:func:`tmaps.introspect.topography.topography_comparison` reports per layer

- ``ari_*``: the adjusted Rand index between clusters of the phonemes' profiles and the
  phoneme classes (:func:`tmaps.introspect.cluster_summary`);
- on the layers the topographic model was trained on, ``morans_i_*``: the mean over phonemes
  of Moran's I of the phoneme's NAP across units placed on the learned grid
  (:func:`tmaps.introspect.topography.morans_i`, rook neighbours, no wrap-around even on a torus grid).
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

import pandas as pd
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from tmaps.checkpoint import load_checkpoint
from tmaps.introspect import save_figure
from tmaps.introspect.layout_comparison import recorded_grids
from tmaps.introspect.topography import MODELS, plot_topography_comparison, topography_comparison
from tmaps.studies.profiles import checkpoint_profiles
from tmaps.training.resolvers import register_resolvers


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="checkpoint trained without a topographic loss")
    parser.add_argument("--topo", required=True, help="checkpoint trained with one (e.g. topo=weight_similarity)")
    parser.add_argument("--output-dir", default="topo_vs_baseline", help="folder for the table, figure and profiles")
    parser.add_argument("--permutations", type=int, default=999, help="random placements per Moran's I p-value")
    parser.add_argument("overrides", nargs="*", help="overrides of conf/introspect.yaml (data=..., split=..., max_utterances=...)")
    arguments = parser.parse_args(argv)
    output_dir = Path(arguments.output_dir)
    register_resolvers()
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(config_name="introspect", overrides=[f"paths.output_dir={output_dir}", *arguments.overrides])
    options = OmegaConf.to_container(cfg, resolve=True)
    profile_options = {key: options[key] for key in ("split", "kind", "target", "normalize", "max_utterances", "align", "device")}
    profiles = {}
    for model in MODELS:
        checkpoint = load_checkpoint(getattr(arguments, model))
        # The baseline is profiled on the topographic model's layers, which may lie inside blocks.
        layers = profiles["topo"].layers if model == "baseline" else None
        profiles[model] = checkpoint_profiles(checkpoint, options["data"], groups="phoneme", layers=layers, **profile_options)
        output_dir.mkdir(parents=True, exist_ok=True)
        profiles[model].save(output_dir / f"profiles_{model}.npz")
    table, per_phoneme = topography_comparison(profiles["topo"], profiles["baseline"], recorded_grids(profiles["topo"]), arguments.permutations)
    table.to_csv(output_dir / "topo_vs_baseline.csv", index=False)
    markdown = table.astype(object).where(table.notna(), "").to_markdown(index=False, floatfmt=".3f")
    (output_dir / "topo_vs_baseline.md").write_text(markdown + "\n", encoding="utf-8")
    save_figure(plot_topography_comparison(table, per_phoneme), output_dir / "topo_vs_baseline.png")
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
