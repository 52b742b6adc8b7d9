"""Statistics behind the claims: spread over seeds, confidence intervals, paired comparisons,
permutation tests for small groups (of a mean difference or of any statistic), effect sizes and steps to a CER target (plain NumPy/SciPy).

Error rates are pooled, as the records' CER and WER are: total edits over total reference
length. Per-utterance counts come from a record's ``test[<split>]["utterances"]`` (rows with
``id``, ``char_edits``, ``chars``, ``word_edits``, ``words``; :mod:`tmaps.studies.runs`).

Three kinds of 95% interval, for three questions:

- :func:`utterance_ci`: how much one model's error rate depends on which test utterances were
  drawn (bootstrap over utterances, one seed);
- :func:`seed_ci`: how much a per-seed number (a Moran's I, a steps ratio) depends on the seed
  (percentile bootstrap over seeds). With two or three seeds this interval is the range of the
  seeds (a resample of three copies of the lowest seed has chance 1/27 > 2.5%), so a criterion
  on it asks every seed to lie beyond the threshold; it is still narrower than a t-interval,
  and it says nothing about seeds not yet drawn;
- :func:`hierarchical_ci`: both at once, for an error rate (or a paired difference of two) over
  seeds and utterances. Each replicate draws the seeds with replacement, then for every drawn
  seed the utterances with replacement, independently for a seed drawn twice; the statistic is
  the mean over the drawn seeds of the pooled rate. Resampling both levels keeps the
  between-seed spread that a bootstrap over pooled utterances alone would hide, and the
  utterance noise that a bootstrap over seed means alone ignores. The utterances of a paired
  comparison are drawn once for both conditions, so the noise that they share cancels.
  ``scipy.stats.bootstrap`` resamples one level only, hence the hand-written two-level draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 9999
MAX_EXACT_PERMUTATIONS = 100_000
UNITS = {"char": ("char_edits", "chars"), "word": ("word_edits", "words")}
_CHUNK = 256  # hierarchical replicates drawn at once: bounds the index array to 256 x utterances


@dataclass(frozen=True)
class Interval:
    """An estimate and its confidence interval."""

    estimate: float
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]


@dataclass(frozen=True)
class Crossing:
    """Where a curve first reaches a target: the interpolated ``step`` and the validation steps ``(before, at)`` around it."""

    step: float
    interval: tuple[int, int]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) over seeds; the deviation of a single value is NaN."""
    values = _as_1d(values, "values")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


def error_counts(utterances: Sequence[Mapping], unit: str = "char", ids: Sequence[str] | None = None) -> np.ndarray:
    """``(utterances, 2)`` edits and reference lengths, in the order of ``ids`` (default: sorted by utterance id).

    Raises:
        ValueError: ``unit`` is not ``char`` or ``word``; the utterances are not those of ``ids`` (a missing id is named).
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {tuple(UNITS)}, got {unit!r}")
    edits, lengths = UNITS[unit]
    by_id = {row["id"]: (row[edits], row[lengths]) for row in utterances}
    if not by_id:
        raise ValueError("no utterances to count errors over")
    if len(by_id) != len(utterances):
        raise ValueError(f"{len(utterances) - len(by_id)} utterance ids occur more than once: a test set counts each utterance once")
    wanted = sorted(by_id) if ids is None else list(ids)
    if len(wanted) != len(by_id) or (missing := [i for i in wanted if i not in by_id]):
        extra = sorted(set(by_id) - set(wanted))
        raise ValueError(
            f"the utterances are not the asked-for test set ({len(by_id)} utterances against {len(wanted)} ids): "
            f"first id missing {missing[0] if missing else None!r}, first id not asked for {extra[0] if extra else None!r}"
        )
    return np.array([by_id[i] for i in wanted], dtype=float)


def pooled_rate(counts: np.ndarray) -> np.ndarray:
    """Total edits over total length of ``(..., utterances, 2)`` counts."""
    totals = counts.sum(axis=-2)
    return totals[..., 0] / np.maximum(totals[..., 1], 1)


def utterance_ci(utterances: Sequence[Mapping], unit: str = "char", confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """A model's pooled error rate on a test split, with a BCa bootstrap interval over its utterances."""
    counts = error_counts(utterances, unit)
    estimate = float(pooled_rate(counts))
    if np.ptp(counts[:, 0] / np.maximum(counts[:, 1], 1)) == 0:  # every utterance has the same rate: nothing to resample
        return Interval(estimate, estimate, estimate)

    def ratio(edits: np.ndarray, lengths: np.ndarray, axis: int = -1) -> np.ndarray:
        return edits.sum(axis=axis) / np.maximum(lengths.sum(axis=axis), 1)

    result = stats.bootstrap(
        (counts[:, 0], counts[:, 1]), ratio, paired=True, vectorized=True, confidence_level=confidence, n_resamples=resamples, method="BCa", rng=seed
    )
    return Interval(estimate, float(result.confidence_interval.low), float(result.confidence_interval.high))


def seed_ci(values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The mean of a per-seed number with a percentile bootstrap interval over the seeds (see the module's note on few seeds).

    Raises:
        ValueError: fewer than two seeds, which give no spread.
    """
    values = _as_1d(values, "values")
    if len(values) < 2:
        raise ValueError(f"an interval over seeds needs at least 2 seeds, got {len(values)}")
    estimate = float(values.mean())
    if np.ptp(values) == 0:
        return Interval(estimate, estimate, estimate)
    result = stats.bootstrap((values,), np.mean, vectorized=True, confidence_level=confidence, n_resamples=resamples, method="percentile", rng=seed)
    return Interval(estimate, float(result.confidence_interval.low), float(result.confidence_interval.high))


def paired_difference(
    values: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
) -> Interval:
    """Mean over seeds of ``values - baseline`` (same seeds, in the same order), with its interval over seeds."""
    values, baseline = _as_1d(values, "values"), _as_1d(baseline, "baseline")
    if len(values) != len(baseline):
        raise ValueError(f"a paired comparison needs the same seeds: {len(values)} values against {len(baseline)} baseline values")
    return seed_ci(values - baseline, confidence, resamples, seed)


def hierarchical_ci(
    runs: Sequence[Sequence[Mapping]],
    baseline: Sequence[Sequence[Mapping]] | None = None,
    unit: str = "char",
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Mean over seeds of the pooled error rate, or of its paired difference to ``baseline``, with a two-level bootstrap interval.

    Args:
        runs: per seed, the test utterances of a run (``record["test"][split]["utterances"]``).
        baseline: per seed, in the same order, the same test utterances under another condition;
            the estimate is then ``rate(runs) - rate(baseline)``.

    Raises:
        ValueError: ``baseline`` has other seeds or utterances than ``runs``.
    """
    counts = [error_counts(utterances, unit) for utterances in runs]
    if baseline is not None:
        if len(baseline) != len(runs):
            raise ValueError(f"a paired comparison needs the same seeds: {len(runs)} runs against {len(baseline)} baseline runs")
        ids = [sorted(row["id"] for row in utterances) for utterances in runs]
        counts = [np.stack([own, error_counts(other, unit, seed_ids)]) for own, other, seed_ids in zip(counts, baseline, ids)]
    else:
        counts = [own[None] for own in counts]
    # counts[seed]: (conditions, utterances, 2); a paired difference is the first condition's rate minus the second's.

    def contrast(rates: np.ndarray) -> np.ndarray:
        return rates[0] - rates[1] if len(rates) == 2 else rates[0]

    per_seed = np.array([contrast(pooled_rate(seed_counts)) for seed_counts in counts])
    rng = np.random.default_rng(seed)
    n_seeds = len(counts)
    drawn_seeds = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    replicate_rates = np.empty((resamples, n_seeds))
    for index, seed_counts in enumerate(counts):
        slots = np.flatnonzero(drawn_seeds == index)
        utterances = seed_counts.shape[1]
        for start in range(0, len(slots), _CHUNK):
            chunk = slots[start : start + _CHUNK]
            draws = rng.integers(0, utterances, size=(len(chunk), utterances))
            replicate_rates.flat[chunk] = contrast(pooled_rate(seed_counts[:, draws]))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicate_rates.mean(axis=1), [alpha, 1 - alpha])
    return Interval(float(per_seed.mean()), float(low), float(high))


def distinct_permutations(n_a: int, n_b: int, paired: bool = False) -> int:
    """How many distinct relabellings a permutation test of two groups has: ``C(n_a + n_b, n_a)``, or ``2**n`` sign flips when paired."""
    if paired:
        if n_a != n_b:
            raise ValueError(f"paired groups need the same size, got {n_a} and {n_b}")
        return 2**n_a
    return math.comb(n_a + n_b, n_a)


def smallest_p(n_a: int, n_b: int, alternative: str = "greater", paired: bool = False, resamples: int = RESAMPLES) -> float:
    """The smallest p-value :func:`permutation_p` can give for groups of these sizes (2 against 2, one-sided: 1/6).

    A criterion that asks for a smaller p cannot be met by the design, whatever the data.
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    count = distinct_permutations(n_a, n_b, paired)
    one_sided = 1 / count if count <= MAX_EXACT_PERMUTATIONS else 1 / (resamples + 1)
    return min(1.0, 2 * one_sided) if alternative == "two-sided" else one_sided


def permutation_p(
    values: Sequence[float], other: Sequence[float], alternative: str = "greater", paired: bool = False, resamples: int = RESAMPLES, seed: int = 0
) -> float:
    """p-value of a permutation test of the mean difference ``mean(values) - mean(other)``.

    Exact (every distinct relabelling, ``scipy.stats.permutation_test`` with ``n_resamples=inf``)
    when there are at most :data:`MAX_EXACT_PERMUTATIONS` of them, else ``resamples`` random ones.
    ``paired``: the groups are the same seeds under two conditions; the test flips the sign of
    each seed's difference. :func:`smallest_p` states the floor the design puts on the result.
    """
    values, other = _as_1d(values, "values"), _as_1d(other, "other")
    if paired:

        def statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
            return np.mean(x - y, axis=axis)
    else:

        def statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
            return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    return _permutation_test_p((values, other), statistic, paired, True, alternative, resamples, seed)


def relabelling_p(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    a: Sequence,
    b: Sequence,
    paired: bool = False,
    alternative: str = "greater",
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> float:
    """p-value of a permutation test of any ``statistic(a, b)`` of two samples (not only a mean difference).

    Independent samples are relabelled across the groups, paired ones swapped within each pair;
    exact over every distinct relabelling when there are at most :data:`MAX_EXACT_PERMUTATIONS`,
    else ``resamples`` random ones (``scipy.stats.permutation_test``, not vectorized).
    """
    return _permutation_test_p((np.asarray(a), np.asarray(b)), statistic, paired, False, alternative, resamples, seed)


def _permutation_test_p(
    samples: tuple[np.ndarray, np.ndarray], statistic: Callable, paired: bool, vectorized: bool, alternative: str, resamples: int, seed: int
) -> float:
    """``scipy.stats.permutation_test``'s p: exact over every distinct relabelling up to :data:`MAX_EXACT_PERMUTATIONS`, else ``resamples``."""
    count = distinct_permutations(len(samples[0]), len(samples[1]), paired)
    result = stats.permutation_test(
        samples,
        statistic,
        permutation_type="samples" if paired else "independent",
        vectorized=vectorized,
        n_resamples=np.inf if count <= MAX_EXACT_PERMUTATIONS else resamples,
        alternative=alternative,
        rng=seed,
    )
    return float(result.pvalue)


def cohens_d(values: Sequence[float], other: Sequence[float]) -> float:
    """Effect size of ``mean(values) - mean(other)`` in pooled standard deviations (``ddof=1``); ±inf or NaN when both groups are constant."""
    values, other = _as_1d(values, "values"), _as_1d(other, "other")
    if len(values) + len(other) < 3:
        raise ValueError(f"an effect size needs at least 3 values in all, got {len(values)} and {len(other)}")
    pooled = ((len(values) - 1) * values.var(ddof=1 if len(values) > 1 else 0) + (len(other) - 1) * other.var(ddof=1 if len(other) > 1 else 0)) / (
        len(values) + len(other) - 2
    )
    difference = values.mean() - other.mean()
    if pooled == 0:
        return math.copysign(math.inf, difference) if difference else math.nan
    return float(difference / math.sqrt(pooled))


def difference_ci(
    values: Sequence[float], other: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
) -> Interval:
    """``mean(values) - mean(other)`` of two independent groups of seeds, with a percentile bootstrap interval (each group resampled on its own)."""
    values, other = _as_1d(values, "values"), _as_1d(other, "other")
    if min(len(values), len(other)) < 2:
        raise ValueError(f"an interval of a difference needs at least 2 seeds per group, got {len(values)} and {len(other)}")
    estimate = float(values.mean() - other.mean())
    if np.ptp(values) == 0 and np.ptp(other) == 0:
        return Interval(estimate, estimate, estimate)

    def difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    result = stats.bootstrap(
        (values, other), difference, vectorized=True, confidence_level=confidence, n_resamples=resamples, method="percentile", rng=seed
    )
    return Interval(estimate, float(result.confidence_interval.low), float(result.confidence_interval.high))


def steps_to_target(steps: Sequence[int], values: Sequence[float], target: float) -> Crossing | None:
    """The first step at which a curve of validations reaches ``target`` (a value at or below it), or ``None`` if it never does.

    The crossing is interpolated linearly between the last validation above the target and the
    first at or below it; ``interval`` holds those two steps. A curve that starts at or below the
    target crossed it before its first validation: its step is that validation's (an upper bound)
    and its interval starts at 0. A curve that rises again after the crossing keeps the first one.
    """
    steps, values = _as_1d(steps, "steps"), _as_1d(values, "values")
    if len(steps) != len(values):
        raise ValueError(f"a curve needs one value per step, got {len(steps)} steps and {len(values)} values")
    if np.any(np.diff(steps) <= 0):
        raise ValueError("the steps of a curve must increase")
    reached = np.flatnonzero(values <= target)
    if not len(reached):
        return None
    at = int(reached[0])
    if at == 0:
        return Crossing(float(steps[0]), (0, int(steps[0])))
    (step_before, step_at), (value_before, value_at) = steps[at - 1 : at + 1], values[at - 1 : at + 1]
    step = step_before + (value_before - target) / (value_before - value_at) * (step_at - step_before)
    return Crossing(float(step), (int(step_before), int(step_at)))


def _as_1d(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or not len(array):
        raise ValueError(f"{name} must be a non-empty sequence of numbers, got shape {array.shape}")
    return array
