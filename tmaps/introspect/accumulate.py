"""The streaming accumulator: per-group sums, sums of squares and counts of one pass, on the model's device.

Memory is O(groups x units x window): activations are never stored. Frames are matched to
segments as described in ``tmaps.introspect.frames``; padded frames beyond an utterance's
valid length never count.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from tmaps.introspect.frames import FrameMap
from tmaps.introspect.groups import Grouping
from tmaps.introspect.profiles import Profiles


class Accumulator:
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

