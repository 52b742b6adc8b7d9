"""A bias audit of one model: do two groups of inputs (female and male voices, a noise condition, two characters) differ in its maps?

:func:`audit_bias` takes profiles of a :class:`~tmaps.introspect.bias.PerUtterance` grouping of
any model (a tmaps checkpoint through :func:`~tmaps.studies.profiles.checkpoint_profiles`, or any
``nn.Module`` through :class:`~tmaps.introspect.Profiler` with its forward and adapters, e.g.
wav2vec 2.0), and gives per layer:

- the two groups' maps (mean activation of each unit) and their difference, on one layout (PCA of
  the units' per-utterance means) and one symmetric colour limit;
- the split-half noise floor: each group's map from one half of the utterances minus that from the
  other half, on the same layout and limit;
- the frames of each group;
- the separation ratio (:func:`~tmaps.introspect.bias.separation`) and its permutation p: the
  groups relabelled across utterances (utterance-level groups) or swapped within each utterance
  (frame-level groups), one-sided (a larger separation than chance).

:func:`write_audit` writes ``audit.json`` and ``audit.png``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tmaps.introspect import MapStyle, Profiles, compute_layout, plot_layers, save_figure
from tmaps.introspect.bias import SPLITS, GroupSums, half_maps, relabelling, separation
from tmaps.studies import stats

MAP_QUANTITY = "mean activation of the group's frames, or a difference of two such maps"


@dataclass
class LayerAudit:
    """One layer's audit: statistic, p, frames, and the maps on ``coords`` ``(units, 2)``."""

    layer: str
    ratio: float
    between: float
    within: float
    p: float
    frames: dict[str, int]
    coords: np.ndarray
    maps: np.ndarray  # (2, units): each group's mean activation
    halves: np.ndarray  # (2, 2, units): each group's maps of two halves of the utterances


@dataclass
class BiasAudit:
    """:func:`audit_bias`'s result: the two groups, the grouping, the utterances and one :class:`LayerAudit` per layer."""

    grouping: str
    groups: tuple[str, str]
    utterances: int
    permutations: int
    layers: list[LayerAudit]


def audit_bias(
    profiles: Profiles, groups: Sequence[str] | None = None, splits: int = SPLITS, permutations: int = 999, layout: str = "pca", seed: int = 0
) -> BiasAudit:
    """The audit of two groups in every layer of ``profiles`` (profiled with ``PerUtterance(grouping)`` and ``normalize=None``).

    Args:
        groups: the two groups to compare; ``None``: the grouping's groups, which must be two.
        splits: random halvings per separation (:func:`~tmaps.introspect.bias.separation`).
        permutations: random relabellings for each layer's p (its floor is ``1 / (permutations + 1)``).
        layout: a :data:`~tmaps.introspect.LAYOUTS` method for each layer's units.

    Raises:
        ValueError: not two groups (the groups found are named), or a group without frames.
    """
    sums = GroupSums.from_profiles(profiles)
    chosen = list(sums.groups if groups is None else groups)
    if len(chosen) != 2:
        raise ValueError(f"an audit compares two groups; the grouping has {list(sums.groups)}: choose two (compare=[a,b])")
    sums = sums.select(chosen)
    layers = []
    for layer in sums.layers:
        table = sums.table(layer)
        result = separation(table, sums.members(layer), splits, seed)
        statistic, a, b, paired = relabelling(sums, layer)
        p = stats.relabelling_p(statistic, a, b, paired, alternative="greater", resamples=permutations, seed=seed)
        with_frames = table.counts > 0
        per_utterance = table.sums[with_frames] / table.counts[with_frames, None]
        coords = compute_layout(layout, per_utterance.T, seed=seed)
        layers.append(
            LayerAudit(layer, result.ratio, result.between, result.within, p, sums.frames(layer), coords, sums.maps(layer), half_maps(sums, layer, seed))
        )
    grouping = str(profiles.info.get("grouping", "groups")).removesuffix(" per utterance")
    return BiasAudit(grouping, (chosen[0], chosen[1]), len(sums.utterances), permutations, layers)


def audit_figure(audit: BiasAudit, title: str | None = None):
    """One column per layer (its layout and symmetric colour limit): both groups' maps, their difference and each group's split-half difference."""
    a, b = audit.groups
    labels = [a, b, f"{a} − {b}", f"{a}: half 1 − half 2", f"{b}: half 1 − half 2"]
    columns = {}
    for layer in audit.layers:
        rows = np.stack([layer.maps[0], layer.maps[1], layer.maps[0] - layer.maps[1], *(layer.halves[:, 0] - layer.halves[:, 1])])
        heading = f"{layer.layer}\nratio {layer.ratio:.2f}, p {layer.p:.2g}\nframes {layer.frames[a]:,} / {layer.frames[b]:,}"
        columns[heading] = (layer.coords, np.nan_to_num(rows))
    title = title or (
        f"{audit.grouping}: {a} against {b}, {audit.utterances} utterances\nratio: distance between the groups' maps over that between halves of one group's"
    )
    style = MapStyle(show_units=False, panel_size=2.0)
    return plot_layers(columns, labels, order=False, style=style, title=title, colorbar_label=MAP_QUANTITY, share_scale=False)


def write_audit(audit: BiasAudit, folder: str | Path) -> tuple[Path, Path]:
    """``audit.json`` (grouping, groups, utterances, per layer the statistic, p and frames) and ``audit.png``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = {
        "grouping": audit.grouping,
        "groups": list(audit.groups),
        "utterances": audit.utterances,
        "statistic": "separation ratio: distance between the groups' maps over the distance between two halves of one group's data",
        "p": f"one-sided permutation test, {audit.permutations} relabellings",
        "layers": {
            layer.layer: {"ratio": layer.ratio, "between": layer.between, "within": layer.within, "p": layer.p, "frames": layer.frames}
            for layer in audit.layers
        },
    }
    json_path = folder / "audit.json"
    json_path.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return json_path, save_figure(audit_figure(audit), folder / "audit.png")
