"""What ``tmaps-introspect`` does: a checkpoint's activation profiles on a corpus split, clustered and drawn.

:func:`checkpoint_profiles` rebuilds the model of a tmaps checkpoint, reads one split of a
corpus through :class:`~tmaps.data.SpeechDataModule` with the checkpoint's features, and
computes NAPs or GradNAPs (:mod:`tmaps.introspect.nap`). Corpora without segments
(LibriSpeech, Common Voice) get character and word segments by CTC forced alignment with the
same checkpoint (:func:`tmaps.introspect.align`); phoneme groups need the synthetic corpus'
ground-truth segments.

:func:`introspect`, the command, also clusters every layer's groups by their profiles
(:func:`tmaps.introspect.cluster_summary`) and writes

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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from tmaps.checkpoint import LoadedCheckpoint, load_checkpoint
from tmaps.commands.eval import checkpoint_datamodule
from tmaps.introspect import (
    NAP,
    PROFILERS,
    GradNAP,
    Grouping,
    Profiles,
    cluster_summary,
    plot_adjusted_rand,
    plot_dendrogram,
    plot_profile_heatmap,
    profile_matrix,
    resolve_grouping,
    save_figure,
)
from tmaps.introspect.alignment import align as force_align

log = logging.getLogger(__name__)

ALIGN_MODES = ("auto", "always", "never")
PROFILE_OPTIONS = ("split", "layers", "groups", "kind", "target", "normalize", "window", "max_utterances", "align", "device")


class Utterances:
    """Re-iterable batches of ``loader``, at most ``max_utterances`` utterances, the same on every pass.

    The loader's batch sampler is reset to epoch 0 before each pass, so a shuffled loader
    serves the same batches to forced alignment and to profiling. The last batch is cut to fit.

    Attributes:
        count: utterances served by the last complete pass.
    """

    def __init__(self, loader: DataLoader, max_utterances: int | None = None) -> None:
        if max_utterances is not None and max_utterances < 1:
            raise ValueError(f"max_utterances must be at least 1 or null, got {max_utterances}")
        self.loader = loader
        self.max_utterances = max_utterances
        self.count = 0

    def __iter__(self) -> Iterator[dict]:
        self.loader.batch_sampler.set_epoch(0)
        served = 0
        for batch in self.loader:
            room = len(batch["records"]) if self.max_utterances is None else self.max_utterances - served
            batch = {key: value[:room] for key, value in batch.items()}
            served += len(batch["records"])
            yield batch
            if served == self.max_utterances:
                break
        self.count = served


def check_layers(model: nn.Module, layers: Sequence[str], source: str | Path) -> None:
    """Raise ``ValueError`` listing the model's layers when one of ``layers`` is not a module of it."""
    modules = dict(model.named_modules())
    unknown = [layer for layer in layers if layer not in modules]
    if unknown:
        names = list(getattr(model, "layer_names", [name for name in modules if name]))
        raise ValueError(
            f"layers {unknown} are not layers of the model in {source}; its layers are {names} "
            f"(or their submodules, such as {names[0]}.conv)"
        )


def needs_alignment(records: Sequence[Mapping], grouping: Grouping, kind: str, target: str, align_mode: str, source: str | Path) -> bool:
    """Whether forced alignment must give the records character and word segments.

    They are needed for alignable groupings (characters, words), and for GradNAPs of aligned
    characters, when a record has no segments to take them from (``align="auto"``), or
    always (``"always"``).

    Raises:
        ValueError: a record lacks the field an utterance-level grouping reads, a grouping
            that alignment cannot serve (phonemes) meets records without its segments, or
            segments are missing and ``align="never"``.
    """
    if align_mode not in ALIGN_MODES:
        raise ValueError(f"align must be one of {ALIGN_MODES}, got {align_mode!r}")
    if not grouping.frame_level:
        lacking = [record for record in records if any(field not in record for field in grouping.fields)]
        if lacking:
            raise ValueError(
                f"group field {grouping.fields[0]!r} is not in the records of {source} (e.g. {lacking[0].get('id')!r}); "
                f"their fields are {sorted(lacking[0])}"
            )
    fields = grouping.fields if grouping.frame_level else ()
    unsegmented = [record for record in records if fields and not any(record.get(field) for field in fields)]
    if unsegmented and not grouping.alignable:
        raise ValueError(
            f"records of {source} have no {fields[0]!r} segments (e.g. {unsegmented[0].get('id')!r}), which "
            f"groups={grouping.name} needs; forced alignment gives characters and words only: use groups=character or groups=word"
        )
    aligned_targets = kind == "gradnap" and target == "aligned"
    if aligned_targets and not unsegmented:
        unsegmented = [record for record in records if not (record.get("characters") or record.get("words"))]
    uses_characters = grouping.alignable or aligned_targets
    if unsegmented and uses_characters and align_mode == "never":
        raise ValueError(
            f"records of {source} have no character or word segments (e.g. {unsegmented[0].get('id')!r}) and "
            "align=never; use align=auto to segment them by forced alignment"
        )
    return uses_characters and (align_mode == "always" or (align_mode == "auto" and bool(unsegmented)))


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; any other value is a torch device name."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def checkpoint_profiles(
    checkpoint: LoadedCheckpoint,
    data: Mapping,
    split: str = "test",
    layers: Sequence[str] | None = None,
    groups: str | Grouping = "phoneme",
    kind: str = "nap",
    target: str = "aligned",
    normalize: str | None = "center",
    window: int | None = None,
    max_utterances: int | None = None,
    align: str = "auto",
    device: str = "auto",
) -> Profiles:
    """NAPs or GradNAPs of a checkpoint's layers on one split of a corpus.

    Args:
        checkpoint: from :func:`~tmaps.checkpoint.load_checkpoint`.
        data: the ``data`` config group as a plain mapping (``SpeechDataModule`` arguments);
            its features are replaced by the checkpoint's.
        split: ``train``, ``dev``, ``test`` or ``test_unseen``.
        layers: module names; ``None`` takes ``model.layer_names`` and the topographic layers
            (which may lie inside them, e.g. a conformer's feed-forward units).
        groups: ``phoneme``, ``phoneme_class``, ``character``, ``word``, a record field
            (``speaker``, ``language``, ...) or a :class:`~tmaps.introspect.Grouping`.
        kind: ``"nap"`` or ``"gradnap"``.
        target: GradNAP target, ``"aligned"`` or ``"predicted"`` (see :class:`~tmaps.introspect.GradNAP`).
        normalize: ``"center"``, ``"zscore"`` or ``None`` (see :class:`~tmaps.introspect.Profiles`).
        window: ``w`` for time-resolved profiles, ``None`` for time-independent ones.
        max_utterances: profile this many utterances from seeded random batches; ``None``: all.
        align: ``"auto"``, ``"always"`` or ``"never"`` (see :func:`needs_alignment`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...

    Returns:
        Profiles whose ``info`` also records ``checkpoint``, ``global_step``, ``model_config``,
        ``alphabet``, ``topo``, ``grids`` (``{layer: Grid.to_dict()}`` of the profiled
        topographic layers), ``data``, ``split``, ``utterances`` and ``segments``
        (``"manifest"`` or ``"forced alignment"``).
    """
    if kind not in PROFILERS:
        raise ValueError(f"kind must be one of {tuple(PROFILERS)}, got {kind!r}")
    model = checkpoint.model
    if layers is None:
        layers = list(model.layer_names)
        layers += [layer for layer in checkpoint.grids if layer not in layers]
    check_layers(model, layers, checkpoint.path)
    datamodule = checkpoint_datamodule(data, checkpoint.alphabet, checkpoint.features, checkpoint.path)
    datamodule.prepare_data()
    manifest = datamodule.manifest_path(split)
    if not manifest.is_file():
        raise FileNotFoundError(f"the corpus in {manifest.parent} has no split {split!r} (no {manifest.name})")
    forced = needs_alignment(datamodule.dataset(split).records, resolve_grouping(groups), kind, target, align, manifest)
    model.to(resolve_device(device))
    utterances = Utterances(datamodule.loader(split, shuffle=max_utterances is not None), max_utterances)
    alignments = force_align(model, utterances, checkpoint.alphabet) if forced else None
    grouping = resolve_grouping(groups, alignments)
    if kind == "nap":
        profiler = NAP(model, layers)
    else:
        profiler = GradNAP(model, layers, target=target, alignments=alignments)
    profiles = profiler.compute(utterances, grouping, window=window, normalize=normalize)
    profiles.info.update(
        checkpoint=str(checkpoint.path),
        global_step=checkpoint.global_step,
        model_config=checkpoint.hyper_parameters["model"],
        alphabet=checkpoint.alphabet.chars,
        topo=checkpoint.hyper_parameters.get("topo"),
        grids={layer: grid.to_dict() for layer, grid in checkpoint.grids.items() if layer in layers},
        data={"source": dict(data["source"]), "language": datamodule.language},
        split=split,
        utterances=utterances.count,
        segments="forced alignment" if forced else "manifest",
    )
    return profiles


def write_figures(profiles: Profiles, summary: pd.DataFrame, figures_dir: str | Path) -> list[Path]:
    """The heatmap and dendrogram of every layer and, for groups with reference classes (phonemes), the ARI-by-layer plot (PNG)."""
    figures_dir = Path(figures_dir)
    grouping, kind = profiles.info.get("grouping"), profiles.info.get("kind", "profile")
    reference = resolve_grouping(grouping).reference if grouping else None
    columns = "unit" if profiles.window is None else f"unit x offset (-{profiles.window}..{profiles.window})"
    value = f"{kind} ({profiles.normalize or 'raw'})"
    paths = []
    for layer in profiles.layers:
        matrix = profile_matrix(profiles, layer)
        heatmap = plot_profile_heatmap(matrix, profiles.groups, f"{layer}: {kind}s by {grouping}", columns, value)
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
        raise ValueError("tmaps-introspect needs ckpt_path=<file.ckpt>")
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
