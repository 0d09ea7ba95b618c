# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The report's statistics against published values and hand computations: Wilson intervals, Newcombe's intervals
of a difference (paired and unpaired), the exact McNemar and Fisher tests, and the bootstrap intervals of an AUROC."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from trl_presafety.evaluation.stats import (
    PAIRED_TEST,
    UNPAIRED_TEST,
    _resampled_aurocs,
    bootstrap_auroc_difference,
    bootstrap_auroc_interval,
    compare_outcomes,
    fisher_exact_p,
    mcnemar_exact_p,
    newcombe_interval,
    newcombe_paired_interval,
    rate_figures,
    wilson_interval,
)


@pytest.mark.parametrize(
    "k, n, expected",
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (Wilson)
    [(81, 263, (0.2553, 0.3662)), (15, 148, (0.0624, 0.1605)), (0, 20, (0.0, 0.1611)), (1, 29, (0.0061, 0.1718))],
)
def test_wilson_interval_matches_published_values(k, n, expected):
    assert wilson_interval(k, n) == pytest.approx(expected, abs=5e-5)


def test_rate_figures_count_only_known_outcomes():
    figures = rate_figures("harmful_rate", [True, False, None, True])
    assert figures["harmful_rate"] == 2 / 3 and figures["harmful_rate_n"] == 3
    assert figures["harmful_rate_ci"] == pytest.approx(list(wilson_interval(2, 3)))
    assert rate_figures("x", [None]) == {"x": None, "x_n": 0, "x_ci": None}


@pytest.mark.parametrize(
    "only_before, only_after, expected",
    [
        (1, 6, 2 * (1 + 7) / 2**7),  # 2 * P(X <= 1), X ~ Binomial(7, 1/2)
        (0, 5, 2 / 2**5),  # 5 of 5 prompts changed the same way: still p > 0.05
        (0, 6, 2 / 2**6),
        (3, 3, 1.0),
        (0, 0, 1.0),
    ],
)
def test_mcnemar_exact_p_by_hand(only_before, only_after, expected):
    assert mcnemar_exact_p(only_before, only_after) == pytest.approx(expected)


def test_fisher_exact_p_by_hand():
    # 0/5 vs 5/5: the observed table and its mirror are the two tables as extreme, each C(5,0)C(5,5)/C(10,5) = 1/252
    assert fisher_exact_p(0, 5, 5, 5) == pytest.approx(2 / 252)
    assert fisher_exact_p(2, 5, 2, 5) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "k1, n1, k2, n2, expected",
    [
        # Newcombe (1998), "Interval estimation for the difference between independent proportions", method 10
        (48, 80, 56, 70, (0.0524, 0.3339)),
        # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables", ch. 4: Perondi et al. (2004)
        (1, 34, 7, 34, (0.0189, 0.3404)),
    ],
)
def test_newcombe_interval_matches_published_values(k1, n1, k2, n2, expected):
    assert newcombe_interval(k1, n1, k2, n2) == pytest.approx(expected, abs=5e-5)


def test_newcombe_paired_interval_matches_published_values():
    # Fagerland, Lydersen & Laake, ch. 8, Cavo et al. (2012): table [[59, 6], [16, 80]], square-and-add interval of
    # p_row - p_col = -0.0621 (-0.1186 to -0.0046); here after - before, so the sign flips
    assert newcombe_paired_interval(59, 6, 16, 80) == pytest.approx((0.0046, 0.1186), abs=5e-5)


def test_compare_outcomes_pairs_the_same_prompts_and_marks_only_beyond_noise():
    # The case of the issue: 5 prompts, all harmful before, none after. +1.0 looks large; it is not significant
    before = {f"p{i}": False for i in range(5)}
    after = {f"p{i}": True for i in range(5)}
    result = compare_outcomes(before, after)
    assert result["paired"] and result["test"] == PAIRED_TEST and result["discordant"] == [0, 5]
    assert result["difference"] == 1.0 and result["p_value"] == pytest.approx(1 / 16)
    assert result["significant"] is False
    # The same change on 40 prompts (8 changed) is beyond noise
    before = {f"p{i}": False for i in range(40)}
    after = {f"p{i}": i < 8 for i in range(40)}
    result = compare_outcomes(before, after)
    assert result["p_value"] == pytest.approx(2 / 2**8) and result["significant"] is True
    assert result["ci"] == pytest.approx(list(newcombe_paired_interval(0, 0, 8, 32)))
    # Different prompts: unpaired
    result = compare_outcomes({"a": False, "b": False}, {"c": True, "d": True, "e": False})
    assert not result["paired"] and result["test"] == UNPAIRED_TEST
    assert result["p_value"] == pytest.approx(fisher_exact_p(0, 2, 2, 3))
    assert result["ci"] == pytest.approx(list(newcombe_interval(0, 2, 2, 3)))
    assert compare_outcomes({}, {"a": True}) is None


def test_resampled_aurocs_equal_roc_auc_score_on_each_resample():
    rng = np.random.default_rng(0)
    positives, negatives = np.round(rng.random(7), 1), np.round(rng.random(9), 1)  # rounded: ties
    values = _resampled_aurocs(positives, negatives, 50, np.random.default_rng(3))
    draws = np.random.default_rng(3)  # the same draws, in the same order
    pos = positives[draws.integers(0, 7, (50, 7))]
    neg = negatives[draws.integers(0, 9, (50, 9))]
    expected = [roc_auc_score([1] * 7 + [0] * 9, np.concatenate([p, q])) for p, q in zip(pos, neg)]
    assert values == pytest.approx(expected)


def test_bootstrap_auroc_interval():
    rng = np.random.default_rng(1)
    labels = [1] * 20 + [0] * 30
    scores = list(rng.normal(1.0, 1.0, 20)) + list(rng.normal(0.0, 1.0, 30))
    low, high = bootstrap_auroc_interval(labels, scores, seed=0)
    assert low < roc_auc_score(labels, scores) < high and 0.1 < high - low < 0.5
    assert bootstrap_auroc_interval(labels, scores, seed=0) == (low, high)  # seeded
    assert bootstrap_auroc_interval(labels, scores, seed=1) != (low, high)
    assert bootstrap_auroc_interval([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.2]) == (1.0, 1.0)
    assert bootstrap_auroc_interval([1, 1], [0.2, 0.3]) is None


def test_bootstrap_auroc_difference_pairs_the_prompts():
    rng = np.random.default_rng(2)
    labels = [1] * 15 + [0] * 15
    scores = list(rng.random(30))
    # The same scores twice: paired resampling cancels exactly, independent resampling does not
    assert bootstrap_auroc_difference((labels, scores), (labels, scores), paired=True) == (0.0, 0.0)
    low, high = bootstrap_auroc_difference((labels, scores), (labels, scores), paired=False)
    assert low < -0.1 and high > 0.1
    with pytest.raises(ValueError, match="Paired runs must score the same prompts"):
        bootstrap_auroc_difference((labels, scores), (labels[:-1], scores[:-1]), paired=True)
