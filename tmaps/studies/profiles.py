"""A checkpoint's activation profiles on one split of a corpus: what ``tmaps-introspect`` and the studies measure.

:func:`checkpoint_profiles` rebuilds the model of a tmaps checkpoint, reads one split of a
corpus through :class:`~tmaps.data.SpeechDataModule` with the checkpoint's features, and
computes NAPs or GradNAPs (:class:`tmaps.introspect.Profiler`). Corpora without segments
(LibriSpeech, Common Voice) get character and word segments by CTC forced alignment with the
same checkpoint (:func:`tmaps.introspect.align`); phoneme groups need the synthetic corpus'
ground-truth segments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from tmaps.checkpoint import LoadedCheckpoint
from tmaps.data import Utterances, checkpoint_datamodule
from tmaps.introspect import ATTRIBUTIONS, Activation, GradientXActivation, Grouping, Profiler, Profiles, resolve_grouping
from tmaps.introspect.alignment import align as force_align

ALIGN_MODES = ("auto", "always", "never")
# The keyword arguments of checkpoint_profiles that tmaps-introspect's config sets.
PROFILE_OPTIONS = ("split", "layers", "groups", "kind", "target", "normalize", "window", "max_utterances", "align", "device")


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
        target: GradNAP target, ``"aligned"`` or ``"predicted"`` (see :class:`~tmaps.introspect.GradientXActivation`).
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
    if kind not in ATTRIBUTIONS:
        raise ValueError(f"kind must be one of {tuple(ATTRIBUTIONS)}, got {kind!r}")
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
    attribution = Activation() if kind == "nap" else GradientXActivation(target=target, alignments=alignments)
    profiles = Profiler(model, layers, attribution).compute(utterances, grouping, window=window, normalize=normalize)
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
