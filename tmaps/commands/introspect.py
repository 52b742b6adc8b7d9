"""What ``tmaps-introspect`` does: a checkpoint's activation profiles on a corpus split, clustered and drawn.

The profiles come from :func:`tmaps.studies.profiles.checkpoint_profiles`. :func:`introspect`
also clusters every layer's groups by their profiles (:func:`tmaps.introspect.cluster_summary`)
and writes

- ``output`` (``Profiles.save``): the statistics and metadata: checkpoint, model, layers,
  groups, frames per group, normalization, split, utterances, the topographic layers' grids
  (``Grid.to_dict``);
- ``output`` with suffix ``.csv``: per layer units, groups, clusters, silhouette and, for
  phoneme groups, the adjusted Rand index (ARI) against phoneme classes;
- ``<figures_dir>/heatmap_<layer>.png``: group x unit profiles, both axes in dendrogram leaf order;
- ``<figures_dir>/dendrogram_<layer>.png``: the groups' tree (average linkage, cosine distance);
- ``<figures_dir>/adjusted_rand.png`` (phoneme groups): ARI against phoneme classes by layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.wrapper import task_wrapper
from tmaps.introspect import (
    Profiles,
    cluster_summary,
    plot_adjusted_rand,
    plot_dendrogram,
    plot_profile_heatmap,
    profile_matrix,
    resolve_grouping,
    save_figure,
)
from tmaps.studies.profiles import PROFILE_OPTIONS, checkpoint_profiles

log = logging.getLogger(__name__)


def write_figures(profiles: Profiles, summary: pd.DataFrame, figures_dir: str | Path) -> list[Path]:
    """The heatmap and dendrogram of every layer and, for groups with reference classes (phonemes), the ARI-by-layer plot (PNG)."""
    figures_dir = Path(figures_dir)
    grouping, kind = profiles.info.get("grouping"), profiles.info.get("kind", "profile")
    reference = resolve_grouping(grouping).reference if grouping else None
    columns = "unit" if profiles.window is None else f"unit x offset (-{profiles.window}..{profiles.window})"
    paths = []
    for layer in profiles.layers:
        matrix = profile_matrix(profiles, layer)
        heatmap = plot_profile_heatmap(matrix, profiles.panels().labels, f"{layer}: {kind}s by {grouping}", columns, profiles.quantity)
        paths.append(save_figure(heatmap, figures_dir / f"heatmap_{layer}.png"))
        try:
            dendrogram = plot_dendrogram(matrix, profiles.groups, reference, title=f"{layer}: {grouping} groups by {kind}")
        except ValueError as error:
            log.warning("no dendrogram of layer %s: %s", layer, error)
            continue
        paths.append(save_figure(dendrogram, figures_dir / f"dendrogram_{layer}.png"))
    if reference is not None:
        scores = dict(zip(summary["layer"], summary["adjusted_rand"]))
        figure = plot_adjusted_rand(scores, title=f"{kind} clusters vs the reference classes of {grouping}s")
        paths.append(save_figure(figure, figures_dir / "adjusted_rand.png"))
    return paths


@dataclass
class Introspection:
    """What :func:`introspect` wrote: the profiles, their file, the summary table and the figure files."""

    profiles: Profiles
    profiles_path: Path
    summary: pd.DataFrame
    figures: list[Path]


def introspect(cfg: DictConfig) -> Introspection:
    """Profiles, summary table and figures of ``cfg.ckpt_path`` on ``cfg.split`` of ``cfg.data``."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ValueError("ckpt_path is not set: name the checkpoint to profile, ckpt_path=<file.ckpt>")
    options = OmegaConf.to_container(cfg, resolve=True)
    checkpoint = load_checkpoint(options["ckpt_path"])
    profiles = checkpoint_profiles(checkpoint, options["data"], **{key: options[key] for key in PROFILE_OPTIONS})
    output = Path(options["output"])
    output.parent.mkdir(parents=True, exist_ok=True)
    profiles.save(output)
    summary = cluster_summary(profiles, options["n_clusters"])
    summary.to_csv(output.with_suffix(".csv"), index=False)
    figures = write_figures(profiles, summary, options["figures_dir"])
    return Introspection(profiles, output, summary, figures)


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="introspect")
@task_wrapper("tmaps-introspect")
def main(cfg: DictConfig) -> None:
    """``tmaps-introspect ckpt_path=... data=... layers=[...] groups=phoneme``: activation profiles of a checkpoint, clustered and drawn."""
    result = introspect(cfg)
    profiles = result.profiles
    print(f"{profiles.info['kind']}s of {profiles.info['checkpoint']} by {profiles.info['grouping']}: {len(profiles.groups)} groups, "
          f"{profiles.info['utterances']} utterances of {profiles.info['split']}")
    if profiles.empty_groups:
        print(f"groups without frames (left out): {profiles.empty_groups}")
    print(f"profiles: {result.profiles_path}; figures: {cfg.figures_dir}")
    print(result.summary.to_string(index=False, float_format=lambda value: f"{value:.3f}"))


if __name__ == "__main__":
    main()
