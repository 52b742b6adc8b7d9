"""Statistics of the studies against answers known in closed form or by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tmaps.studies.stats import (
    MAX_EXACT_PERMUTATIONS,
    cohens_d,
    difference_ci,
    hierarchical_ci,
    mean_sd,
    paired_difference,
    permutation_p,
    relabelling_p,
    seed_ci,
    smallest_p,
    steps_to_target,
    utterance_ci,
)


def utterances(char_error_rate: float, count: int = 300, seed: int = 0, prefix: str = "u") -> list[dict]:
    """Test utterances of 20-80 characters whose characters are wrong independently with ``char_error_rate``."""
    rng = np.random.default_rng(seed)
    rows = []
    for index, chars in enumerate(rng.integers(20, 81, count)):
        words = max(1, int(chars) // 5)
        rows.append({
            "id": f"{prefix}{index:04d}",
            "char_edits": int(rng.binomial(chars, char_error_rate)),
            "chars": int(chars),
            "word_edits": int(rng.binomial(words, min(1.0, 3 * char_error_rate))),
            "words": words,
        })
    return rows


def with_errors(rows: list[dict], char_error_rate: float, seed: int) -> list[dict]:
    """The same utterances (ids and lengths) decoded by another model: new character edits."""
    rng = np.random.default_rng(seed)
    return [row | {"char_edits": int(rng.binomial(row["chars"], char_error_rate))} for row in rows]


def test_mean_sd_over_seeds():
    assert mean_sd([0.5, 0.6, 0.7]) == (pytest.approx(0.6), pytest.approx(0.1))
    assert math.isnan(mean_sd([0.5])[1])
    with pytest.raises(ValueError, match="non-empty"):
        mean_sd([])


def test_permutation_p_of_perfectly_separated_groups_is_the_designs_smallest():
    high, low = [6.0, 7.0, 8.0, 9.0, 10.0], [1.0, 2.0, 3.0, 4.0, 5.0]
    assert permutation_p(high, low) == pytest.approx(1 / 252) == smallest_p(5, 5)
    assert permutation_p(low, high, alternative="less") == pytest.approx(1 / 252)
    assert permutation_p([3.0, 4.0], [1.0, 2.0]) == pytest.approx(1 / 6) == smallest_p(2, 2)
    assert permutation_p([3.0, 4.0], [1.0, 2.0], alternative="two-sided") == pytest.approx(1 / 3) == smallest_p(2, 2, "two-sided")
    # Paired seeds: every one of 3 differences positive; 2**3 sign flips.
    assert permutation_p([3.0, 4.0, 5.0], [1.0, 2.0, 3.5], paired=True) == pytest.approx(1 / 8) == smallest_p(3, 3, paired=True)


def test_permutation_p_of_overlapping_groups_counts_the_relabellings_at_least_as_extreme():
    # 3 vs 2 from 1..5: the difference of means falls as the pair's sum grows; of the C(5, 2) = 10 pairs, the
    # observed {1, 3} and {1, 2} have a sum <= 4 -> 2 / 10.
    assert permutation_p([2.0, 4.0, 5.0], [1.0, 3.0]) == pytest.approx(2 / 10)


def test_smallest_p_of_large_groups_is_that_of_random_permutations():
    assert smallest_p(12, 12, resamples=999) == pytest.approx(1 / 1000)  # C(24, 12) > MAX_EXACT_PERMUTATIONS
    assert math.comb(24, 12) > MAX_EXACT_PERMUTATIONS
    rng = np.random.default_rng(0)
    p = permutation_p(rng.normal(1.0, 1.0, 12), rng.normal(0.0, 1.0, 12), resamples=999)
    assert smallest_p(12, 12, resamples=999) <= p < 0.05
    with pytest.raises(ValueError, match="same size"):
        smallest_p(3, 2, paired=True)


def test_utterance_ci_covers_the_true_error_rate_and_narrows_with_more_utterances():
    few, many = utterance_ci(utterances(0.2, count=100)), utterance_ci(utterances(0.2, count=1000))
    for interval in (few, many):
        assert interval.low < 0.2 < interval.high
        assert interval.low <= interval.estimate <= interval.high
    assert many.high - many.low < few.high - few.low
    words = utterance_ci(utterances(0.2), unit="word")
    assert words.low < 0.6 < words.high


def test_utterance_ci_of_an_error_free_model_is_a_point():
    interval = utterance_ci(utterances(0.0))
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_seed_ci_of_three_seeds_is_their_range():
    interval = seed_ci([0.31, 0.27, 0.35])
    assert (interval.low, interval.high) == (pytest.approx(0.27), pytest.approx(0.35))


def test_seed_ci_covers_the_true_mean_and_needs_two_seeds():
    values = np.random.default_rng(3).normal(0.3, 0.02, 20)
    interval = seed_ci(values)
    assert interval.low < 0.3 < interval.high
    assert interval.estimate == pytest.approx(values.mean())
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_ci([0.3])


def test_paired_difference_over_seeds():
    interval = paired_difference([0.5, 0.52, 0.55, 0.49], [0.4, 0.41, 0.46, 0.40])
    assert interval.estimate == pytest.approx(0.0975)
    assert interval.low > 0
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([0.5, 0.6], [0.4])


def test_hierarchical_ci_keeps_the_spread_between_seeds():
    true_rates = [0.2, 0.25, 0.3]  # seeds that differ far more than their utterance noise
    runs = [utterances(rate, seed=seed) for seed, rate in enumerate(true_rates)]
    both_levels = hierarchical_ci(runs, resamples=2000)
    one_seed = utterance_ci(runs[1], resamples=2000)
    assert both_levels.low < np.mean(true_rates) < both_levels.high
    assert both_levels.high - both_levels.low > 2 * (one_seed.high - one_seed.low)


def test_paired_hierarchical_difference_cancels_shared_utterance_noise():
    runs = [utterances(0.3, seed=seed) for seed in range(3)]
    assert hierarchical_ci(runs, baseline=runs, resamples=500).as_list() == [0.0, 0.0]
    better = [with_errors(rows, 0.25, seed=10 + seed) for seed, rows in enumerate(runs)]
    difference = hierarchical_ci(better, baseline=runs, resamples=2000)
    assert difference.low < -0.05 < difference.high < 0
    shuffled = [list(reversed(rows)) for rows in better]  # pairing is by utterance id, not by position
    assert hierarchical_ci(shuffled, baseline=runs, resamples=2000) == difference


def test_paired_hierarchical_difference_needs_the_same_utterances_and_seeds():
    runs = [utterances(0.3, seed=seed) for seed in range(2)]
    other_set = [utterances(0.3, seed=seed, prefix="v") for seed in range(2)]
    with pytest.raises(ValueError, match="first id missing 'v0000'"):
        hierarchical_ci(other_set, baseline=runs)
    with pytest.raises(ValueError, match="same seeds"):
        hierarchical_ci(runs, baseline=runs[:1])
    with pytest.raises(ValueError, match="1 utterance ids occur more than once"):
        hierarchical_ci([[*runs[0], runs[0][0]]])


def test_steps_to_target_is_exact_on_a_linear_curve():
    steps = np.arange(100, 1001, 100)
    crossing = steps_to_target(steps, 1 - steps / 1000, target=0.55)
    assert crossing.step == pytest.approx(450)
    assert crossing.interval == (400, 500)
    assert steps_to_target(steps, 1 - steps / 1000, target=0.6).interval == (300, 400)  # reached exactly at a validation


def test_steps_to_target_first_crossing_before_the_first_validation_and_never():
    assert steps_to_target([100, 200, 300], [0.9, 0.8, 0.7], target=0.5) is None
    early = steps_to_target([100, 200], [0.4, 0.3], target=0.5)
    assert (early.step, early.interval) == (100, (0, 100))
    rising = steps_to_target([100, 200, 300, 400], [0.8, 0.4, 0.7, 0.3], target=0.6)
    assert rising.interval == (100, 200)
    with pytest.raises(ValueError, match="increase"):
        steps_to_target([200, 100], [0.5, 0.4], target=0.45)


def test_relabelling_p_of_a_mean_difference_is_the_permutation_p():
    values, other = [3.0, 4.5, 5.0, 6.0], [1.0, 2.0, 2.5, 3.5, 4.0]

    def mean_difference(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(x) - np.mean(y))

    assert relabelling_p(mean_difference, values, other) == pytest.approx(permutation_p(values, other))
    assert relabelling_p(mean_difference, values, other[:4], paired=True) == pytest.approx(permutation_p(values, other[:4], paired=True))


def test_cohens_d_and_the_interval_of_a_difference_of_two_groups_of_seeds():
    values, other = np.array([1.2, 1.4, 1.3, 1.5, 1.6]), np.array([1.0, 1.1, 0.9, 1.05, 0.95])
    pooled = np.sqrt((4 * values.var(ddof=1) + 4 * other.var(ddof=1)) / 8)
    assert cohens_d(values, other) == pytest.approx((values.mean() - other.mean()) / pooled)
    assert cohens_d([2.0, 2.0], [1.0, 1.0]) == np.inf
    interval = difference_ci(values, other)
    assert interval.estimate == pytest.approx(values.mean() - other.mean()) and 0 < interval.low < interval.estimate < interval.high
    with pytest.raises(ValueError, match="2 seeds per group"):
        difference_ci([1.0], other)
