"""Neuron activation profiles (NAPs) and gradient profiles (GradNAPs), streamed in one pass.

A NAP is, for each group of inputs (phoneme, character, word, speaker, ...) and each unit of a
layer, the mean activation over the frames of that group, minus the mean over groups. GradNAPs
do the same on activation x gradient. Profiles are sufficient statistics (sums, sums of
squares, counts in float64) accumulated batch by batch: memory is O(groups x units x window),
activations are never stored, all layers come from one pass, and partial results merge
(``Profiles.merge``, ``Profiles.all_reduce`` across DDP ranks).

Plain PyTorch/NumPy: works on any ``nn.Module``. ``layers`` are module names
(``model.get_submodule``); a layer's output is read by an ``OutputAdapter``
(``tmaps.introspect.adapters``): the tensor of a tuple or dataclass output, its batch and time
axes (probed on the first batch, or declared), the other axes as units. ``(batch, units,
time)`` convolution outputs, ``(batch, time, units)`` and ``(time, batch, units)`` transformer
outputs all work; 2-d ``(batch, units)`` outputs give one frame per utterance
(utterance-level groupings only).

Frames are matched to segments as described in ``tmaps.introspect.frames``; padded frames
beyond an utterance's valid length never count. Whether the padding reached the valid frames
depends on the model: the pass checks it on its first padded batch, and ``exact=True`` runs
utterances without padding (``tmaps.introspect.padding``).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

import tmaps
from tmaps.introspect.adapters import FEATURES, Axes, ModelInput, OutputAdapter, read_axes
from tmaps.introspect.frames import FrameMap, TimeAxisProbe
from tmaps.introspect.groups import Alignments, CharacterGrouping, Grouping, resolve_grouping
from tmaps.introspect.padding import PaddingCheck, is_padded, unpadded
from tmaps.progress import progress_bar

ForwardFn = Callable[[nn.Module, Mapping], "Tensor | tuple[Tensor, Tensor]"]
NORMALIZATIONS = ("center", "zscore", None)
TARGETS = ("aligned", "predicted")
FORMAT_VERSION = 1


def default_forward(model: nn.Module, batch: Mapping) -> Tensor | tuple[Tensor, Tensor]:
    """Run ``model`` on a batch: the rule used when no ``forward`` is given.

    A model whose ``forward`` takes two or more positional arguments (or ``*args``) is called
    as ``model(features, feature_lengths)`` and must return ``(log_probs (B, T', C),
    output_lengths (B,))`` like ``tmaps.models.Wav2Letter``. Any other model is called as
    ``model(features)`` and must return scores ``(B, C, T')`` like
    ``torchaudio.models.Wav2Letter``; they are log-softmaxed over ``C`` (a no-op on log
    probabilities) and transposed to ``(B, T', C)``.
    """
    parameters = inspect.signature(model.forward).parameters.values()
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    if len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional):
        return model(batch["features"], batch["feature_lengths"])
    return model(batch["features"]).log_softmax(dim=1).transpose(1, 2)


@dataclass
class LayerProfile:
    """One layer's profiles over ``Profiles.groups``.

    Time-independent profiles are plain arrays: ``mean``, ``raw_mean``, ``std`` ``(G, U)``,
    ``counts (G,)``. Time-resolved ones add an offset axis: ``(G, U, 2w+1)`` and
    ``counts (G, 2w+1)``, as masked arrays whose entries at offsets without frames are masked.

    Attributes:
        mean: normalized profile (see ``Profiles.normalize``).
        raw_mean: mean over each group's frames before normalization.
        std: standard deviation over each group's frames.
        counts: frames per group (per offset).
    """

    mean: np.ndarray
    raw_mean: np.ndarray
    std: np.ndarray
    counts: np.ndarray


class Profiles:
    """Streamed sufficient statistics of one or more layers, and the profiles they give.

    Args:
        groups: all group labels, in order, including groups that received no frames.
        sums, squares: per layer, float64 sums and sums of squares ``(G, U)``, or ``(G, U, 2w+1)``
            when time-resolved.
        counts: per layer, frame counts ``(G,)`` or ``(G, 2w+1)``.
        window: ``w`` of time-resolved profiles (offsets ``-w..w`` layer frames around each
            segment onset), ``None`` for time-independent ones.
        normalize: ``"center"`` subtracts the mean over groups (the published NAP),
            ``"zscore"`` also divides by each unit's standard deviation over all counted frames
            (units that never vary stay 0), ``None`` keeps the raw means.
        info: further metadata (model, grouping, kind, frame maps ...), JSON-serializable.

    A group without frames in some layer is listed in ``empty_groups`` and left out of
    ``groups`` and of every array; it never shows up as NaN.
    """

    def __init__(
        self,
        groups: Sequence[str],
        sums: Mapping[str, np.ndarray],
        squares: Mapping[str, np.ndarray],
        counts: Mapping[str, np.ndarray],
        window: int | None = None,
        normalize: str | None = "center",
        info: Mapping | None = None,
    ) -> None:
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        self.all_groups = list(groups)
        self.layers = list(sums)
        self.sums = {layer: np.asarray(sums[layer], dtype=np.float64) for layer in self.layers}
        self.squares = {layer: np.asarray(squares[layer], dtype=np.float64) for layer in self.layers}
        self.counts = {layer: np.asarray(counts[layer], dtype=np.int64) for layer in self.layers}
        self.window = window
        self.normalize = normalize
        self.info = dict(info or {})
        for layer in self.layers:
            if len(self.sums[layer]) != len(self.all_groups) or len(self.counts[layer]) != len(self.all_groups):
                raise ValueError(f"layer {layer!r}: arrays have {len(self.sums[layer])} rows for {len(self.all_groups)} groups")

    def _onset_counts(self, layer: str) -> np.ndarray:
        counts = self.counts[layer]
        return counts if self.window is None else counts[:, self.window]

    @property
    def _present(self) -> np.ndarray:
        present = np.ones(len(self.all_groups), dtype=bool)
        for layer in self.layers:
            present &= self._onset_counts(layer) > 0
        return present

    @property
    def groups(self) -> list[str]:
        """Labels of the groups with frames in every layer: the rows of all profiles."""
        return [group for group, present in zip(self.all_groups, self._present) if present]

    @property
    def empty_groups(self) -> list[str]:
        """Labels of the groups without frames in at least one layer."""
        return [group for group, present in zip(self.all_groups, self._present) if not present]

    @property
    def group_counts(self) -> dict[str, dict[str, int]]:
        """Frames (onsets, when time-resolved) per group and layer, empty groups included."""
        return {layer: dict(zip(self.all_groups, self._onset_counts(layer).tolist())) for layer in self.layers}

    @property
    def metadata(self) -> dict:
        return {
            **self.info,
            "layers": self.layers,
            "groups": self.all_groups,
            "window": self.window,
            "normalize": self.normalize,
            "group_counts": self.group_counts,
            "empty_groups": self.empty_groups,
        }

    def __getitem__(self, layer: str) -> LayerProfile:
        if layer not in self.sums:
            raise KeyError(f"no profiles of layer {layer!r}; layers: {self.layers}")
        present = self._present
        sums, squares, counts = self.sums[layer][present], self.squares[layer][present], self.counts[layer][present]
        frames = counts[:, None] if self.window is None else counts[:, None, :]
        mean = np.divide(sums, frames, out=np.zeros_like(sums), where=frames > 0)
        variance = np.divide(squares, frames, out=np.zeros_like(squares), where=frames > 0) - mean**2
        std = np.sqrt(np.clip(variance, 0.0, None))
        if self.window is not None:
            no_frames = np.broadcast_to(frames == 0, mean.shape)
            mean, std = np.ma.masked_array(mean, no_frames), np.ma.masked_array(std, no_frames)
        normalized = mean
        if self.normalize is not None:
            normalized = mean - mean.mean(axis=0, keepdims=True)
        if self.normalize == "zscore":
            group_axes = (0,) if self.window is None else (0, 2)
            total = max(int(counts.sum()), 1)
            unit_mean = sums.sum(axis=group_axes) / total
            unit_std = np.sqrt(np.clip(squares.sum(axis=group_axes) / total - unit_mean**2, 0.0, None))
            scale = np.divide(1.0, unit_std, out=np.zeros_like(unit_std), where=unit_std > 0)
            normalized = normalized * (scale if self.window is None else scale[:, None])
        return LayerProfile(mean=normalized, raw_mean=mean, std=std, counts=counts)

    def matrix(self, layer: str) -> np.ndarray:
        """Units x groups ``(U, G)``: the normalized time-independent profile, for layouts."""
        if self.window is not None:
            raise ValueError("matrix() is for time-independent profiles; time-resolved ones are in profiles[layer].mean")
        return self[layer].mean.T

    def _aligned(self, groups: Sequence[str]) -> tuple[dict, dict, dict]:
        """The statistics with rows for ``groups`` (a superset of ``all_groups``), zeros where new."""
        rows = [self.all_groups.index(group) if group in self.all_groups else -1 for group in groups]
        taken = np.array(rows) >= 0

        def expand(array: np.ndarray) -> np.ndarray:
            out = np.zeros((len(groups), *array.shape[1:]), dtype=array.dtype)
            out[taken] = array[np.array(rows)[taken]]
            return out

        return tuple({layer: expand(stats[layer]) for layer in self.layers} for stats in (self.sums, self.squares, self.counts))

    def merge(self, other: Profiles) -> Profiles:
        """Profiles of the data of both (e.g. two halves of a corpus); groups are matched by label."""
        if other.layers != self.layers or other.window != self.window:
            raise ValueError(
                f"cannot merge profiles of layers {other.layers} (window {other.window}) into layers {self.layers} (window {self.window})"
            )
        groups = self.all_groups + [group for group in other.all_groups if group not in self.all_groups]
        mine, theirs = self._aligned(groups), other._aligned(groups)
        summed = [{layer: a[layer] + b[layer] for layer in self.layers} for a, b in zip(mine, theirs)]
        return Profiles(groups, *summed, window=self.window, normalize=self.normalize, info=self.info)

    def all_reduce(self) -> Profiles:
        """Sum the statistics over all ranks of the initialized ``torch.distributed`` group.

        Every rank gets the same profiles: groups are first matched by label across ranks.
        Returns ``self`` when no process group is initialized. NCCL groups reduce on the
        current CUDA device, others on the CPU.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return self
        labels_per_rank: list[list[str]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(labels_per_rank, self.all_groups)
        groups = list(dict.fromkeys(label for labels in labels_per_rank for label in labels))
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        reduced = []
        for stats in self._aligned(groups):
            reduced.append({})
            for layer, array in stats.items():
                tensor = torch.from_numpy(array).to(device)
                dist.all_reduce(tensor)
                reduced[-1][layer] = tensor.cpu().numpy()
        return Profiles(groups, *reduced, window=self.window, normalize=self.normalize, info=self.info)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a versioned NPZ: the statistics per layer and the metadata as a JSON string."""
        path = Path(path)
        arrays = {}
        for i, layer in enumerate(self.layers):
            arrays |= {f"sums_{i}": self.sums[layer], f"squares_{i}": self.squares[layer], f"counts_{i}": self.counts[layer]}
        metadata = {**self.metadata, "format_version": FORMAT_VERSION}
        with path.open("wb") as out:
            np.savez(out, metadata=np.array(json.dumps(metadata)), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Profiles:
        """Profiles written by ``save`` (loaded with ``allow_pickle=False``).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: it is not a tmaps profiles file, or it cannot be read; the message names it.
        """
        if not Path(path).is_file():
            raise FileNotFoundError(f"profiles file {path} does not exist")
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is not a tmaps profiles file: profiles are NPZ (zip) archives, and this file is not one")
        try:
            return cls._read(path)
        except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as error:
            raise ValueError(f"profiles file {path} cannot be read: {error}") from error

    @classmethod
    def _read(cls, path: str | os.PathLike) -> Profiles:
        with np.load(path, allow_pickle=False) as stored:

            def entry(name: str) -> np.ndarray:
                try:
                    return stored[name]
                except ValueError:  # numpy's message suggests allow_pickle, which would run code from the file
                    raise ValueError(f"{path} is not a tmaps profiles file: its entry {name!r} holds Python objects, not numbers or text") from None

            if "metadata" not in stored:
                raise ValueError(f"{path} is not a tmaps profiles file: it has no 'metadata' entry")
            metadata = json.loads(str(entry("metadata")))
            if metadata.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"{path} has profiles format {metadata.get('format_version')!r}; this tmaps reads {FORMAT_VERSION}")
            layers = metadata["layers"]
            stats = [{layer: entry(f"{kind}_{i}") for i, layer in enumerate(layers)} for kind in ("sums", "squares", "counts")]
        derived = ("format_version", "layers", "groups", "window", "normalize", "group_counts", "empty_groups")
        info = {key: value for key, value in metadata.items() if key not in derived}
        return cls(metadata["groups"], *stats, window=metadata["window"], normalize=metadata["normalize"], info=info)


class _Accumulator:
    """Running sums for one pass: labels met so far and per-layer statistics on the model's device."""

    def __init__(self, grouping: Grouping, window: int | None, frame_rate: float) -> None:
        self.grouping = grouping
        self.window = window
        self.width = 1 if window is None else 2 * window + 1
        self.frame_rate = frame_rate
        self.labels = list(dict.fromkeys(grouping.labels))
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.stats: dict[str, list[Tensor]] = {}

    def start_batch(self, records: Sequence[Mapping], input_lengths: Tensor) -> None:
        """Read the batch's segments once; layers then map them to their own frames."""
        utterance, groups, starts, ends = [], [], [], []
        for position, record in enumerate(records):
            for label, start, end in self.grouping.segments(record):
                if label not in self.index:
                    self.index[label] = len(self.labels)
                    self.labels.append(label)
                utterance.append(position)
                groups.append(self.index[label])
                starts.append(start)
                ends.append(end)
        self.utterance = np.array(utterance, dtype=np.int64)
        self.group = np.array(groups, dtype=np.int64)
        self.starts, self.ends = np.array(starts, dtype=np.float64), np.array(ends, dtype=np.float64)
        self.input_lengths = input_lengths

    def _frames(self, frame_map: FrameMap, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Utterance, frame and statistics row of every (segment, frame) pair of the batch."""
        limit = valid[self.utterance]
        if self.grouping.frame_level:
            first, stop = frame_map.segment_frames(self.starts, self.ends, self.frame_rate)
            onset = frame_map.onset_frames(self.starts, self.frame_rate)
        else:
            first, stop, onset = np.zeros_like(limit), limit, np.zeros_like(limit)
        if self.window is None:
            first, stop = np.clip(first, 0, limit), np.clip(stop, 0, limit)
            n_frames = np.maximum(stop - first, 0)
            starts_in_flat = np.repeat(np.cumsum(n_frames) - n_frames, n_frames)
            frames = np.repeat(first, n_frames) + np.arange(n_frames.sum()) - starts_in_flat
            return np.repeat(self.utterance, n_frames), frames, np.repeat(self.group, n_frames)
        offsets = np.arange(-self.window, self.window + 1)
        frames = onset[:, None] + offsets
        inside = (frames >= 0) & (frames < limit[:, None]) & ((onset >= 0) & (onset < limit))[:, None]
        rows = self.group[:, None] * self.width + offsets + self.window
        return np.broadcast_to(self.utterance[:, None], frames.shape)[inside], frames[inside], rows[inside]

    def add(self, layer: str, values: Tensor, frame_map: FrameMap) -> None:
        """Add the frames of ``values (B, U, T)`` to the statistics of their groups."""
        valid = frame_map.lengths(self.input_lengths.cpu(), values.shape[-1]).numpy()
        utterance, frames, rows = (torch.from_numpy(a).to(values.device) for a in self._frames(frame_map, valid))
        n_rows = len(self.labels) * self.width
        if layer not in self.stats:
            units = values.shape[1]
            self.stats[layer] = [
                torch.zeros(0, units, dtype=torch.float64, device=values.device),
                torch.zeros(0, units, dtype=torch.float64, device=values.device),
                torch.zeros(0, dtype=torch.int64, device=values.device),
            ]
        self.stats[layer] = [_grow(stat, n_rows) for stat in self.stats[layer]]
        sums, squares, counts = self.stats[layer]
        selected = values.detach()[utterance, :, frames].to(torch.float64)
        sums.index_add_(0, rows, selected)
        squares.index_add_(0, rows, selected * selected)
        counts += torch.bincount(rows, minlength=n_rows)

    def profiles(self, layers: Sequence[str], normalize: str | None, info: Mapping) -> Profiles:
        missing = [layer for layer in layers if layer not in self.stats]
        if missing:
            raise ValueError(f"the loader gave no batches, or layers {missing} never ran in the forward pass")
        # Known labels keep their order; labels met in the data follow, sorted, so that runs
        # over the same data in another order give the same profiles.
        known = list(dict.fromkeys(self.grouping.labels))
        order = known + sorted(label for label in self.labels if label not in set(known))
        rows = [self.index[label] for label in order]
        stats = [{}, {}, {}]
        for layer in layers:
            for kind, stat in enumerate(self.stats[layer]):
                array = _grow(stat, len(self.labels) * self.width).cpu().numpy()
                if self.window is None:
                    stats[kind][layer] = array[rows]
                else:
                    by_group = array.reshape(len(self.labels), self.width, *array.shape[1:])[rows]
                    stats[kind][layer] = np.moveaxis(by_group, 1, -1) if by_group.ndim == 3 else by_group
        profiles = Profiles(order, *stats, window=self.window, normalize=normalize, info=info)
        if profiles.empty_groups:
            warnings.warn(f"groups without frames in some layer, left out of the profiles: {profiles.empty_groups}", stacklevel=3)
        return profiles


def _grow(stat: Tensor, n_rows: int) -> Tensor:
    """``stat`` with zero rows appended up to ``n_rows`` (new labels were met)."""
    if len(stat) == n_rows:
        return stat
    return torch.cat([stat, stat.new_zeros((n_rows - len(stat), *stat.shape[1:]))])


def model_outputs(result: Tensor | tuple[Tensor, Tensor], batch: Mapping, output_map: FrameMap) -> tuple[Tensor, Tensor]:
    """``log_probs (B, T', C)`` and ``output_lengths (B,)`` of a forward result.

    Results without lengths get them from the output's frame map and the feature lengths.
    """
    if isinstance(result, tuple):
        return result[0], result[1]
    return result, output_map.lengths(batch["feature_lengths"], result.shape[1])


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode (no dropout, BatchNorm statistics untouched), its mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def to_model_device(model: nn.Module, batch: Mapping) -> dict:
    """The batch with its tensors on the device of the model's parameters."""
    device = next(model.parameters(), torch.empty(0)).device
    return {key: value.to(device) if isinstance(value, Tensor) else value for key, value in batch.items()}


class NAP:
    """Neuron activation profiles of named layers of any ``nn.Module``.

    Args:
        model: the network; it runs in eval mode during ``compute`` (its mode is restored).
        layers: module names (``model.get_submodule``), e.g. ``["conv0", "conv5"]`` for
            ``tmaps.models.Wav2Letter`` or ``["acoustic_model.1"]`` (a ReLU) for torchaudio's.
        forward: ``(model, batch) -> log_probs (B, T', C)`` or ``(log_probs, output_lengths)``
            to run models that ``default_forward`` does not cover
            (``tmaps.introspect.adapters.waveform_forward`` for waveform models).
        frame_rate: input frames per second along the input's last axis
            (``tmaps.data.features.FRAME_RATE``, 100, for log-mel; 16000 for waveforms).
        exact: run every utterance alone, without padding (one forward pass per utterance:
            slower, by about the batch size on a GPU), for models that let padding reach valid
            frames. By default batches run as they come, and the first padded batch checks
            that the model is padding-invariant (``tmaps.introspect.padding``): its shortest
            utterance runs once more alone, and if any layer's valid frames differ by more
            than float noise, a warning says so. ``Profiles.info`` records ``exact``,
            ``padding_invariant`` (``None`` when no batch was padded, or in exact mode) and
            ``padding_differences`` (per layer, the largest difference relative to the layer's
            largest activation). ``tmaps.models.Wav2Letter`` masks its padding; a plain stack
            of padded convolutions such as torchaudio's ``Wav2Letter`` does not. The check runs
            on log-mel batches whose layers all have the batch first and time last.
        adapters: layer -> ``OutputAdapter`` for layers whose output is a tuple or dataclass,
            or whose axes must be declared; other layers are probed.
        inputs: the batch keys of the model input and its lengths (``FEATURES`` or ``WAVEFORM``).

    Example:
        >>> profiles = NAP(model, ["conv2", "conv5"]).compute(loader, "phoneme")
        >>> profiles["conv5"].mean.shape       # (groups, units)
    """

    kind = "NAP"

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | str,
        forward: ForwardFn | None = None,
        frame_rate: float = 100.0,
        exact: bool = False,
        adapters: Mapping[str, OutputAdapter] | None = None,
        inputs: ModelInput = FEATURES,
    ) -> None:
        self.model = model
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        names = [name for name, _ in model.named_modules() if name]
        unknown = [layer for layer in self.layers if layer not in names]
        if unknown:
            raise ValueError(f"layers {unknown} are not modules of {type(model).__name__}; its modules are {names}")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers are listed more than once: {self.layers}")
        undeclared = sorted(set(adapters or {}) - set(self.layers))
        if undeclared:
            raise ValueError(f"adapters are given for {undeclared}, which are not among the layers {self.layers}")
        if exact and inputs != FEATURES:
            raise ValueError(f"exact=True cuts log-mel batches to each utterance's length; inputs {inputs} are not supported")
        self.forward = forward or default_forward
        self.frame_rate = frame_rate
        self.exact = exact
        self.adapters = {layer: (adapters or {}).get(layer, OutputAdapter()) for layer in self.layers}
        self.inputs = inputs
        self._frame_maps: dict[str, FrameMap] = {}
        self._axes: dict[str, Axes] = {}

    def _info(self) -> dict:
        model = type(self.model)
        return {"kind": self.kind, "model": f"{model.__module__}.{model.__qualname__}", "tmaps_version": tmaps.__version__}

    def compute(
        self,
        loader: Iterable[Mapping],
        groups: str | Grouping,
        window: int | None = None,
        normalize: str | None = "center",
    ) -> Profiles:
        """Profiles of every layer over ``loader`` in one pass.

        Args:
            loader: batches as in docs/design.md (``features``, ``feature_lengths``,
                ``records``; ``targets`` and ``target_lengths`` for aligned GradNAPs).
            groups: a built-in grouping name, a record field, or a ``Grouping``
                (see ``tmaps.introspect.groups``).
            window: ``w`` for time-resolved profiles over offsets ``-w..w`` layer frames around
                each segment's onset (frames outside the utterance are not counted, so counts
                are per offset); ``None`` for the mean over all frames of the segments.
            normalize: ``"center"``, ``"zscore"`` or ``None`` (see ``Profiles``).
        """
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        if window is not None and window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        grouping = resolve_grouping(groups)
        accumulator = _Accumulator(grouping, window, self.frame_rate)
        self._frame_maps, self._axes = {}, {}
        padding: dict = {"exact": self.exact, "padding_invariant": None}
        with evaluating(self.model):
            for batch in progress_bar(loader, f"{self.kind} pass"):
                batch = to_model_device(self.model, batch)
                for part in unpadded(batch) if self.exact else [batch]:
                    accumulator.start_batch(part["records"], part[self.inputs.lengths_key])
                    # The frame maps come from the first batch; later batches skip the probe's hooks.
                    probe = TimeAxisProbe(self.model) if not self._frame_maps else None
                    checking = padding["padding_invariant"] is None and not self.exact and self.inputs == FEATURES and is_padded(part)
                    check = PaddingCheck(self.model, self.layers, part) if checking else None
                    with probe or contextlib.nullcontext(), check or contextlib.nullcontext():
                        self._run_batch(part, accumulator, probe)
                    if check is not None and self._readable_by_padding_check():
                        padding |= self._padding_invariance(check)
        info = {
            **self._info(),
            "grouping": grouping.name,
            "frame_level": grouping.frame_level,
            "frame_maps": {layer: frame_map.as_dict() for layer, frame_map in self._frame_maps.items()},
            **padding,
        }
        return accumulator.profiles(self.layers, normalize, info)

    def _padding_invariance(self, check: PaddingCheck) -> dict:
        """``padding_invariant`` and ``padding_differences`` from a padded batch; a warning when padding leaks."""
        differences = check.differences(self.forward)
        tolerance = check.tolerance()
        leaking = {layer: difference for layer, difference in differences.items() if difference > tolerance}
        if leaking:
            worst = max(leaking, key=leaking.get)
            warnings.warn(
                f"{type(self.model).__name__} is not padding-invariant: the shortest utterance of the first padded batch "
                f"gives other values alone than inside the batch in layers {sorted(leaking)} (up to {leaking[worst]:.1%} of "
                f"the largest activation, in {worst!r}), so these profiles depend on how utterances are batched. "
                f"{type(self).__name__}(..., exact=True) runs every utterance alone, without padding (slower).",
                stacklevel=3,
            )
        return {"padding_invariant": not leaking, "padding_differences": differences}

    def _frame_map(self, layer: str, n_input_frames: int, n_frames: int, probe: TimeAxisProbe | None) -> FrameMap:
        if layer not in self._frame_maps:
            if probe is None:
                raise RuntimeError(f"layer {layer!r} did not run in the first batch, so its frames cannot be placed in time")
            self._frame_maps[layer] = probe.frame_map(n_input_frames, n_frames)
        return self._frame_maps[layer]

    def _readable_by_padding_check(self) -> bool:
        """Whether ``PaddingCheck`` reads every layer right: batch first and time last."""
        return all(axes.conv_convention for axes in self._axes.values())

    def _n_input_frames(self, batch: Mapping) -> int:
        return batch[self.inputs.key].shape[-1]

    def _units_by_time(self, layer: str, activations: Tensor, batch: Mapping, probe: TimeAxisProbe | None) -> Tensor:
        """``(B, U, T)`` activations of ``layer`` (``T = 1`` without a time axis); the first batch fixes its axes."""
        if layer not in self._axes:
            if probe is None:
                raise RuntimeError(f"layer {layer!r} did not run in the first batch, so its axes cannot be probed")
            lengths = probe.lengths(self._n_input_frames(batch))
            module = self.model.get_submodule(layer)
            self._axes[layer] = read_axes(layer, module, activations, self.adapters[layer], len(batch["records"]), lengths)
        return self._axes[layer].units_by_time(activations)

    def _accumulate(self, layer: str, activations: Tensor, batch: Mapping, accumulator: _Accumulator, probe: TimeAxisProbe | None) -> None:
        values = self._units_by_time(layer, activations, batch, probe)
        if accumulator.grouping.frame_level and self._axes[layer].time is None:
            raise ValueError(f"layer {layer!r} has no time axis; use an utterance-level grouping (a record field) for it")
        frame_map = self._frame_map(layer, self._n_input_frames(batch), values.shape[-1], probe)
        accumulator.add(layer, values, frame_map)

    def _hook_layers(self, on_output: Callable[[str, Tensor], Tensor | None]) -> list[torch.utils.hooks.RemovableHandle]:
        """Forward hooks calling ``on_output(layer, output)``; a layer that runs twice in one pass is an error."""
        calls = dict.fromkeys(self.layers, 0)

        def hook(layer: str) -> Callable:
            def run(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
                calls[layer] += 1
                if calls[layer] > 1:
                    raise ValueError(f"layer {layer!r} runs more than once per forward pass; profile a module that runs once")
                return on_output(layer, output)

            return run

        return [self.model.get_submodule(layer).register_forward_hook(hook(layer)) for layer in self.layers]

    def _run_batch(self, batch: Mapping, accumulator: _Accumulator, probe: TimeAxisProbe | None) -> None:
        # Accumulating inside the hook reads each output before any later in-place operation
        # (torchaudio's ReLU(inplace=True)) can change it, and frees it right away.
        def accumulate(layer: str, output: Any) -> None:
            self._accumulate(layer, self.adapters[layer].select(layer, output), batch, accumulator, probe)

        handles = self._hook_layers(accumulate)
        try:
            with torch.no_grad():
                self.forward(self.model, batch)
        finally:
            for handle in handles:
                handle.remove()


class GradNAP(NAP):
    """Profiles of activation x gradient (or of the gradient) of named layers.

    For utterance ``b`` with per-frame targets ``y[b, t]`` the objective is the summed
    log-probability of the targets over its valid output frames,
    ``J_b = sum_{t < T'_b} log_probs[b, t, y[b, t]]``, and the profiled value of unit ``u`` at
    layer frame ``s`` is ``dJ_b / da[b, u, s] * a[b, u, s]`` (``multiply_by_activation``) or
    ``dJ_b / da[b, u, s]``. Because convolutions mix frames, ``dJ_b / da[b, u, s]`` collects
    the contributions of every output frame whose receptive field holds ``s``: it measures how
    the unit at that moment supports the transcription of the whole utterance, not only of
    the output frame above it. This is exactly Captum's ``LayerGradientXActivation`` (or
    ``LayerGradient``) with a forward function that returns ``J_b`` per example.
    Utterances do not interact in eval mode, so one backward pass of ``sum_b J_b`` serves
    the whole batch.

    Args:
        model, layers, forward, frame_rate, exact, adapters, inputs: as for ``NAP``.
        target: ``"aligned"``: the character aligned to each output frame, from the records'
            ``characters`` segments (forced alignment) or, without them, their ``words``
            spread evenly over the characters (``CharacterGrouping``); frames that no
            character covers target the blank. Characters become classes by pairing each
            record's ``text`` with the batch's ``targets``. ``"predicted"``: the most probable
            class of each frame (argmax).
        multiply_by_activation: profile activation x gradient (``True``) or the gradient.
        alignments: character segments by record id for ``"aligned"`` targets
            (``tmaps.introspect.alignment.align``), used instead of the records' own.
    """

    kind = "GradNAP"

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | str,
        target: str = "aligned",
        multiply_by_activation: bool = True,
        forward: ForwardFn | None = None,
        frame_rate: float = 100.0,
        alignments: Alignments | None = None,
        exact: bool = False,
        adapters: Mapping[str, OutputAdapter] | None = None,
        inputs: ModelInput = FEATURES,
    ) -> None:
        super().__init__(model, layers, forward, frame_rate, exact, adapters, inputs)
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.target = target
        self.multiply_by_activation = multiply_by_activation
        self.characters = CharacterGrouping(alignments=alignments)

    def _info(self) -> dict:
        return {**super()._info(), "target": self.target, "multiply_by_activation": self.multiply_by_activation}

    def frame_targets(self, batch: Mapping, log_probs: Tensor, output_lengths: Tensor, output_map: FrameMap) -> Tensor:
        """Target class of every output frame ``(B, T')`` (see ``target``)."""
        if self.target == "predicted":
            return log_probs.detach().argmax(dim=-1)
        targets = torch.zeros(log_probs.shape[:2], dtype=torch.long)
        for b, record in enumerate(batch["records"]):
            classes = batch["targets"][b, : batch["target_lengths"][b]].tolist()
            if len(classes) != len(record["text"]):
                raise ValueError(
                    f"record {record.get('id')!r}: its text has {len(record['text'])} characters but the batch has "
                    f"{len(classes)} targets for it, so characters cannot be paired with classes"
                )
            class_of = dict(zip(record["text"], classes))
            segments = self.characters.segments(record)
            first, stop = output_map.segment_frames([s[1] for s in segments], [s[2] for s in segments], self.frame_rate)
            length = int(output_lengths[b])
            for (char, _, _), start, end in zip(segments, np.clip(first, 0, length), np.clip(stop, 0, length)):
                if char not in class_of:
                    raise ValueError(f"record {record.get('id')!r}: aligned character {char!r} is not in its text {record['text']!r}")
                targets[b, start:end] = class_of[char]
        return targets.to(log_probs.device)

    def _run_batch(self, batch: Mapping, accumulator: _Accumulator, probe: TimeAxisProbe | None) -> None:
        for layer, values in self.attribute(batch, probe).items():
            self._accumulate(layer, values, batch, accumulator, probe)

    def attribute(self, batch: Mapping, probe: TimeAxisProbe | None = None) -> dict[str, Tensor]:
        """Per layer, the attribution of the objective to the layer's output, shaped like that output.

        Activation x gradient (``multiply_by_activation``) or the gradient; another attribution
        method (e.g. integrated gradients, with :meth:`layer_activations` and :meth:`objective`)
        replaces only this method, and the profiles aggregate its output the same way.
        """
        activations, result = self.layer_activations(batch, probe)
        objective = self.objective(batch, result, probe)
        gradients = torch.autograd.grad(objective, [activations[layer] for layer in self.layers], allow_unused=True)
        attributions = {}
        for layer, gradient in zip(self.layers, gradients):
            activation = activations[layer].detach()
            gradient = torch.zeros_like(activation) if gradient is None else gradient
            attributions[layer] = gradient * activation if self.multiply_by_activation else gradient
        return attributions

    def layer_activations(self, batch: Mapping, probe: TimeAxisProbe | None = None) -> tuple[dict[str, Tensor], Tensor | tuple]:
        """One forward pass with gradients: every layer's output (a tensor that gradients reach) and the model's result."""
        activations: dict[str, Tensor] = {}

        def keep(layer: str, output: Any) -> Any:
            activation = self.adapters[layer].select(layer, output)
            # The layer's frame map must come from the calls recorded up to this layer.
            n_frames = self._units_by_time(layer, activation, batch, probe).shape[-1]
            self._frame_map(layer, self._n_input_frames(batch), n_frames, probe)
            if not activation.requires_grad:  # frozen parameters: make the activation a leaf
                activation = activation.detach().requires_grad_()
            activations[layer] = activation
            # Like Captum, later layers get a copy, so that their in-place operations leave
            # the kept activation (and the gradient with respect to it) alone.
            return self.adapters[layer].replace(output, activation.clone())

        handles = self._hook_layers(keep)
        try:
            with torch.enable_grad():
                result = self.forward(self.model, batch)
        finally:
            for handle in handles:
                handle.remove()
        return activations, result

    def objective(self, batch: Mapping, result: Tensor | tuple, probe: TimeAxisProbe | None = None) -> Tensor:
        """``sum_b J_b``: the summed log-probability of every utterance's frame targets over its valid output frames."""
        n_output_frames = (result[0] if isinstance(result, tuple) else result).shape[1]
        output_map = self._frame_map("<output>", self._n_input_frames(batch), n_output_frames, probe)
        log_probs, output_lengths = model_outputs(result, batch, output_map)
        targets = self.frame_targets(batch, log_probs, output_lengths, output_map)
        valid = torch.arange(log_probs.shape[1], device=log_probs.device) < output_lengths[:, None].to(log_probs.device)
        selected = log_probs.gather(-1, targets[..., None]).squeeze(-1)
        return torch.where(valid, selected, torch.zeros_like(selected)).sum()
