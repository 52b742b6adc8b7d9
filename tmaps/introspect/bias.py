"""Group maps and how far apart they lie beyond their own noise: the map-level statistic of bias audits and the bias study.

A bias shows in a layer when the maps of two groups of inputs (female and male voices, a noise
condition and the rest, spoken ``s`` and ``z``) differ by more than two maps of the *same* group
differ between halves of the data. Both sides of that comparison are measured alike:

1. the utterances are split at random into two halves, each group's utterances as evenly as they go;
2. each group gets one map per half: the mean activation of the layer's units over the group's
   frames in that half's utterances;
3. ``between``: the root-mean-square distance (Euclidean, over units) between the maps of two
   different groups taken from different halves, over both such pairs and all pairs of groups;
   ``within``: the root-mean-square distance between the two half maps of the same group, over groups;
4. the separation ratio is ``between / within``, averaged over several random splits.

Every distance is between maps of disjoint halves of the utterances, so frames of one utterance
never fall on both sides. With no difference between the groups, the expected squares of both
distances are the same sum of the two halves' noise, even for groups of very different sizes (a
rare error against its correct frames), so the ratio is about 1.

The statistic needs each group's sums per utterance: :class:`PerUtterance` turns any grouping
into one whose groups are ``<group>␟<utterance id>``, so that one profiling pass
(:class:`~tmaps.introspect.Profiler` with ``normalize=None``) gives them, and
:meth:`GroupSums.from_profiles` reads them back. Any subset of utterances (a subsample of the
test split, a random half, a relabelling for a permutation test) is then a sum over rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from numpy.typing import NDArray

from tmaps.introspect.groups import Grouping, RecordGrouping, Segment, resolve_grouping
from tmaps.introspect.profiles import Profiles

SEPARATOR = "\u241f"  # ␟: joins a group's label and an utterance id; no manifest value holds it
SPLITS = 10


class PerUtterance(Grouping):
    """``base`` with every group split by utterance: the group ``g`` of record ``r`` becomes ``g␟<r["id"]>``."""

    def __init__(self, base: str | Grouping) -> None:
        self.base = resolve_grouping(base)
        self.name = f"{self.base.name} per utterance"
        self.frame_level = self.base.frame_level
        self.fields = self.base.fields
        self.alignable = self.base.alignable

    def segments(self, record: Mapping) -> list[Segment]:
        return [(f"{label}{SEPARATOR}{record['id']}", start, end) for label, start, end in self.base.segments(record)]


def binned_grouping(field: str, edges: Sequence[float]) -> RecordGrouping:
    """Utterance-level groups of a numeric record field cut at ``edges``: ``"[a, b)"``; values outside the edges are left out.

    Raises:
        ValueError: fewer than two edges, or edges that do not increase; on grouping, a record
            without the field or with a value that is not a number (the record is named).
    """
    edges = [float(edge) for edge in edges]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bins of {field!r} must be two or more increasing edges, got {edges}")
    names = [f"[{a:g}, {b:g})" for a, b in zip(edges, edges[1:])]

    def label(record: Mapping) -> str | None:
        if field not in record:
            raise ValueError(f"record {record.get('id')!r} has no field {field!r} to bin; its fields are {sorted(record)}")
        try:
            value = float(record[field])
        except (TypeError, ValueError):
            raise ValueError(f"record {record.get('id')!r}: {field}={record[field]!r} is not a number, so it cannot be binned") from None
        bin_index = int(np.searchsorted(edges, value, side="right")) - 1
        return names[bin_index] if 0 <= bin_index < len(names) else None

    return RecordGrouping(label=label, labels=names, name=f"{field} binned")


@dataclass(frozen=True)
class GroupSums:
    """Per layer, each group's activation sums and frame counts per utterance.

    Attributes:
        groups: the base grouping's labels, sorted.
        utterances: the record ids, sorted.
        sums: layer -> ``(groups, utterances, units)`` float64 sums of activations.
        counts: layer -> ``(groups, utterances)`` frame counts.
    """

    groups: tuple[str, ...]
    utterances: tuple[str, ...]
    sums: Mapping[str, NDArray[np.float64]]
    counts: Mapping[str, NDArray[np.int64]]

    @classmethod
    def from_profiles(cls, profiles: Profiles) -> GroupSums:
        """Read the time-independent profiles of a :class:`PerUtterance` grouping (groups ``<group>␟<id>``).

        Raises:
            ValueError: the profiles are time-resolved, or a group label lacks the separator (not a :class:`PerUtterance` grouping).
        """
        if profiles.window is not None:
            raise ValueError("group sums need time-independent profiles (window=None)")
        pairs = []
        for label in profiles.all_groups:
            group, separator, utterance = label.rpartition(SEPARATOR)
            if not separator:
                raise ValueError(f"profile group {label!r} is not '<group>{SEPARATOR}<utterance id>': profile with PerUtterance(grouping)")
            pairs.append((group, utterance))
        groups, utterances = sorted({group for group, _ in pairs}), sorted({utterance for _, utterance in pairs})
        rows = np.array([groups.index(group) for group, _ in pairs], dtype=np.int64)
        columns = np.array([utterances.index(utterance) for _, utterance in pairs], dtype=np.int64)
        sums, counts = {}, {}
        for layer in profiles.layers:
            layer_sums = np.zeros((len(groups), len(utterances), profiles.sums[layer].shape[1]))
            layer_counts = np.zeros((len(groups), len(utterances)), dtype=np.int64)
            layer_sums[rows, columns] = profiles.sums[layer]
            layer_counts[rows, columns] = profiles.counts[layer]
            sums[layer], counts[layer] = layer_sums, layer_counts
        return cls(tuple(groups), tuple(utterances), sums, counts)

    @property
    def layers(self) -> list[str]:
        return list(self.sums)

    def select(self, groups: Sequence[str]) -> GroupSums:
        """Only ``groups``, in this order.

        Raises:
            ValueError: a group has no frames here (the groups present are named).
        """
        missing = [group for group in groups if group not in self.groups]
        if missing:
            raise ValueError(f"groups {missing} have no frames; the groups present are {list(self.groups)}")
        rows = [self.groups.index(group) for group in groups]
        return GroupSums(tuple(groups), self.utterances, {k: v[rows] for k, v in self.sums.items()}, {k: v[rows] for k, v in self.counts.items()})

    def frames(self, layer: str) -> dict[str, int]:
        """Frames per group at ``layer``."""
        return dict(zip(self.groups, self.counts[layer].sum(axis=1).tolist()))

    def utterance_indices(self, ids: Sequence[str]) -> NDArray[np.int64]:
        """Positions among :attr:`utterances` of those record ids that have frames here (the others add nothing to any group)."""
        return np.flatnonzero(np.isin(self.utterances, list(ids)))

    @property
    def utterance_level(self) -> bool:
        """Whether each utterance has frames in one group only (speaker, gender, a noise condition), as against frame-level groups."""
        counts = next(iter(self.counts.values()))
        return bool(np.all((counts > 0).sum(axis=0) <= 1))

    def maps(self, layer: str, utterances: NDArray[np.int64] | None = None) -> NDArray[np.float64]:
        """``(groups, units)`` mean activation of each group over its frames (of ``utterances`` only, when given); NaN without frames."""
        sums, counts = self.sums[layer], self.counts[layer]
        if utterances is not None:
            sums, counts = sums[:, utterances], counts[:, utterances]
        return _means(sums.sum(axis=1), counts.sum(axis=1))

    def table(self, layer: str) -> SumTable:
        """The layer's sums as one row per (group, utterance): the form :func:`separation` relabels."""
        sums, counts = self.sums[layer], self.counts[layer]
        n_groups, n_utterances = counts.shape
        return SumTable(sums.reshape(n_groups * n_utterances, -1), counts.reshape(-1), np.tile(np.arange(n_utterances), n_groups), n_utterances)

    def members(self, layer: str, utterances: NDArray[np.int64] | None = None) -> list[NDArray[np.int64]]:
        """Per group, its rows of :meth:`table` that have frames (of ``utterances`` only, when given)."""
        counts = self.counts[layer]
        n_utterances = counts.shape[1]
        chosen = np.ones(n_utterances, dtype=bool) if utterances is None else np.isin(np.arange(n_utterances), utterances)
        return [group * n_utterances + np.flatnonzero((counts[group] > 0) & chosen) for group in range(len(self.groups))]


@dataclass(frozen=True)
class SumTable:
    """Rows of activation sums ``(rows, units)``, their frame counts, and the utterance each row comes from."""

    sums: NDArray[np.float64]
    counts: NDArray[np.int64]
    utterance: NDArray[np.int64]
    n_utterances: int


@dataclass(frozen=True)
class Separation:
    """:func:`separation`: ``ratio = between / within``, each averaged over the random splits."""

    ratio: float
    between: float
    within: float


def separation(table: SumTable, members: Sequence[NDArray[np.int64]], splits: int = SPLITS, seed: int = 0) -> Separation:
    """How far the maps of groups lie apart over how far two halves of one group's data lie apart (module docstring).

    Args:
        table: rows of sums (:meth:`GroupSums.table`).
        members: per group, the rows that belong to it (:meth:`GroupSums.members`, or a relabelling of them).
        splits: random halvings of the utterances to average over; the same ``seed`` gives the
            same halvings, so that relabelled members are measured on the same splits.

    Returns:
        NaN ratio when some group has no frames in some half.

    Raises:
        ValueError: fewer than two groups, or fewer than 2 utterances.
    """
    if len(members) < 2:
        raise ValueError(f"a separation needs at least two groups, got {len(members)}")
    used = np.unique(table.utterance[np.concatenate(members)])
    if len(used) < 2:
        raise ValueError(f"a split-half separation needs at least 2 utterances, got {len(used)}")
    first_half = _halvings(_strata(table, members), splits, seed)
    in_first = first_half[:, table.utterance]  # (splits, rows)
    halves = []
    for rows in members:
        half_sums = np.stack([in_first[:, rows] @ table.sums[rows], ~in_first[:, rows] @ table.sums[rows]])  # (2, splits, units)
        half_counts = np.stack([in_first[:, rows] @ table.counts[rows], ~in_first[:, rows] @ table.counts[rows]])  # (2, splits)
        halves.append(_means(half_sums, half_counts))
    # Root-mean-square distances: under no difference E[between**2] = E[within**2] (each a sum of the two halves' noise), whatever the groups' sizes.
    within = np.sqrt(np.mean([np.sum((first - second) ** 2, axis=-1) for first, second in halves], axis=0))
    cross = [np.sum((a[h] - b[1 - h]) ** 2, axis=-1) for a, b in combinations(halves, 2) for h in (0, 1)]
    between = np.sqrt(np.mean(cross, axis=0))
    return Separation(float(np.mean(between / within)), float(between.mean()), float(within.mean()))


def half_maps(sums: GroupSums, layer: str, seed: int = 0) -> NDArray[np.float64]:
    """``(groups, 2, units)``: each group's maps of one random halving of the utterances (the first of :func:`separation`'s)."""
    first = _halvings(_strata(sums.table(layer), sums.members(layer)), 1, seed)[0]
    return np.stack([sums.maps(layer, np.flatnonzero(first)), sums.maps(layer, np.flatnonzero(~first))], axis=1)


def relabelling(sums: GroupSums, layer: str) -> tuple[Callable[[NDArray[np.int64], NDArray[np.int64]], float], NDArray, NDArray, bool]:
    """The two groups' rows as the samples of a permutation test of their separation, and whether they are paired.

    Utterance-level groups (every utterance in one group) are tested by moving utterances between
    the groups (independent samples); frame-level groups (``s`` and ``z`` frames within the same
    utterances) by swapping the two groups' frames within each utterance (paired samples).

    Returns:
        ``(statistic, a, b, paired)``: ``statistic(a, b)`` is the separation ratio of rows ``a``
        against rows ``b``; pass it with ``a`` and ``b`` to :func:`tmaps.studies.stats.relabelling_p`.

    Raises:
        ValueError: not exactly two groups.
    """
    if len(sums.groups) != 2:
        raise ValueError(f"a permutation test compares two groups, got {len(sums.groups)}: {list(sums.groups)}")
    table = sums.table(layer)
    paired = not sums.utterance_level
    if paired:
        n_utterances = table.n_utterances
        a, b = np.arange(n_utterances), n_utterances + np.arange(n_utterances)
    else:
        a, b = sums.members(layer)

    def statistic(rows_a: NDArray[np.int64], rows_b: NDArray[np.int64]) -> float:
        return separation(table, [np.asarray(rows_a), np.asarray(rows_b)]).ratio

    return statistic, a, b, paired


def _strata(table: SumTable, members: Sequence[NDArray[np.int64]]) -> NDArray[np.int64]:
    """Per utterance, the set of groups it has frames in, as bits (0: none)."""
    strata = np.zeros(table.n_utterances, dtype=np.int64)
    for group, rows in enumerate(members):
        strata[table.utterance[rows[table.counts[rows] > 0]]] |= 1 << group
    return strata


def _halvings(strata: NDArray[np.int64], splits: int, seed: int) -> NDArray[np.bool_]:
    """``(splits, utterances)``: for each split, the first half of the utterances with frames.

    The utterances are shuffled within their stratum (:func:`_strata`), the strata laid end to
    end, and the halves dealt alternately, so that every group's utterances, even a rare
    group's, fall into both halves as evenly as they can.
    """
    rng = np.random.default_rng(seed)
    used = np.flatnonzero(strata > 0)
    first_half = np.zeros((splits, len(strata)), dtype=bool)
    for split in range(splits):
        order = np.lexsort((rng.random(len(used)), strata[used]))
        first_half[split, used[order[0::2]]] = True
    return first_half


def _means(sums: NDArray[np.float64], counts: NDArray) -> NDArray[np.float64]:
    frames = np.asarray(counts, dtype=np.float64)[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(frames > 0, sums / np.where(frames > 0, frames, 1), math.nan)
