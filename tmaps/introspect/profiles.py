"""Profiles: the container of streamed per-group statistics, its versioned NPZ format, merge and DDP all-reduce.

Profiles are sufficient statistics (sums, sums of squares, counts in float64) per layer and
group, as ``tmaps.introspect.accumulate`` gathers them in one pass; the profiles (means,
normalized means, standard deviations) are derived on reading. Partial results merge
(``Profiles.merge``, ``Profiles.all_reduce`` across DDP ranks).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from tmaps.introspect.groups import Panels, resolve_grouping

NORMALIZATIONS = ("center", "zscore", None)
FORMAT_VERSION = 1


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

    @property
    def quantity(self) -> str:
        """What ``self[layer].mean`` holds, in words for a colour bar, e.g. ``"NAP (activation minus the mean over groups)"``."""
        kind = self.info.get("kind", "profile")
        measured = "gradient × activation" if kind == "GradNAP" else "activation"
        if self.normalize is None:
            return f"{kind} (mean {measured})"
        centred = f"{measured} minus the mean over groups"
        return f"{kind} ({centred})" if self.normalize == "center" else f"{kind} ({centred}, over the unit's standard deviation)"

    def panels(self, language: str = "en") -> Panels:
        """How map panels of :attr:`groups` are titled and ordered, as the profiles' grouping says (``Grouping.panels``)."""
        grouping = self.info.get("grouping")
        return resolve_grouping(grouping).panels(self.groups, language) if grouping else Panels(list(self.groups))

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

