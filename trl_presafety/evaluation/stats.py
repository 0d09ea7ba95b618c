# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The statistics of the evaluation report: 95% intervals for rates (Wilson) and AUROCs (bootstrap), and the tests
that decide whether a difference between two runs is beyond noise.

- A rate `k/n` gets the Wilson score interval (Newcombe 1998, "Two-sided confidence intervals for the single
  proportion", method 3): it stays inside [0, 1] and keeps its coverage at small n and at 0 or n successes.
- Two rates on the same prompts (paired) are compared with the exact McNemar test (a two-sided binomial test on the
  discordant prompts), their difference with Newcombe's square-and-add interval for paired data (Newcombe 1998,
  Statistics in Medicine 17:2635). On different prompts (unpaired): Fisher's exact test and Newcombe's hybrid score
  interval (Newcombe 1998, Statistics in Medicine 17:873, method 10).
- An AUROC gets a percentile bootstrap interval, resampling positives and negatives separately (stratified, so every
  resample has both classes), seeded.

Every function takes plain counts or lists and returns plain floats: they move to another module unchanged.
"""

from collections.abc import Hashable, Mapping, Sequence
from math import sqrt
from typing import Any


CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
# Below this many prompts, one prompt moves a rate by more than 3 points and only large differences can be detected
SMALL_N = 30
BOOTSTRAP_RESAMPLES = 1000

PAIRED_TEST = "exact McNemar test (two-sided binomial test on the discordant prompts)"
UNPAIRED_TEST = "Fisher's exact test (two-sided)"
PAIRED_INTERVAL = "Newcombe's square-and-add interval for paired proportions"
UNPAIRED_INTERVAL = "Newcombe's hybrid score interval"


# --- one rate ------------------------------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Wilson score interval of `successes / n` (`None` for `n == 0`), from `scipy.stats.binomtest`."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    interval = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def rate_figures(name: str, values: Sequence[bool | None]) -> dict[str, Any]:
    """`{name: rate, name_n: n, name_ci: [low, high]}` over the known (not `None`) outcomes of `values`."""
    kept = [bool(v) for v in values if v is not None]
    interval = wilson_interval(sum(kept), len(kept))
    return {
        name: sum(kept) / len(kept) if kept else None,
        f"{name}_n": len(kept),
        f"{name}_ci": list(interval) if interval is not None else None,
    }


# --- two rates -----------------------------------------------------------------------------------------------------


def mcnemar_exact_p(only_before: int, only_after: int) -> float:
    """Two-sided exact McNemar p-value: under no change, each discordant prompt goes either way with probability 1/2."""
    discordant = only_before + only_after
    if discordant == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(only_after, discordant, 0.5).pvalue)


def fisher_exact_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test on `k1/n1` vs `k2/n2`."""
    from scipy.stats import fisher_exact

    return float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Interval of `k2/n2 - k1/n1` for independent samples: Newcombe's hybrid score method (Wilson limits combined)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, confidence)
    l2, u2 = wilson_interval(k2, n2, confidence)
    difference = p2 - p1
    return difference - sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), difference + sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)


def newcombe_paired_interval(
    both: int, only_before: int, only_after: int, neither: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Interval of `p_after - p_before` for paired outcomes: Newcombe's square-and-add method with the
    continuity-corrected correlation of the two proportions (his method 10)."""
    n = both + only_before + only_after + neither
    before, after = both + only_before, both + only_after
    p1, p2 = before / n, after / n
    l1, u1 = wilson_interval(before, n, confidence)
    l2, u2 = wilson_interval(after, n, confidence)
    margins = before * (n - before) * after * (n - after)
    cross = both * neither - only_before * only_after
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    else:
        phi = (cross - n / 2 if cross > 0 else cross) / sqrt(margins)
    difference = p2 - p1
    low = difference - sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1))
    high = difference + sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1))
    return max(-1.0, low), min(1.0, high)


def compare_outcomes(
    before: Mapping[Hashable, bool], after: Mapping[Hashable, bool], alpha: float = ALPHA
) -> dict[str, Any] | None:
    """Whether the rate of `after` differs from that of `before` beyond noise, from per-prompt outcomes keyed by prompt.

    Paired (exact McNemar, paired interval) when both runs judged the same prompts, unpaired (Fisher, hybrid score
    interval) otherwise. Returns `None` when either side is empty.
    """
    if not before or not after:
        return None
    n1, n2 = len(before), len(after)
    k1, k2 = sum(map(bool, before.values())), sum(map(bool, after.values()))
    result: dict[str, Any] = {"difference": k2 / n2 - k1 / n1, "n": [n1, n2], "paired": set(before) == set(after)}
    if result["paired"]:
        only_before = sum(before[key] and not after[key] for key in before)
        only_after = sum(after[key] and not before[key] for key in before)
        both = sum(before[key] and after[key] for key in before)
        result.update(
            test=PAIRED_TEST,
            interval_method=PAIRED_INTERVAL,
            discordant=[only_before, only_after],
            p_value=mcnemar_exact_p(only_before, only_after),
            ci=list(newcombe_paired_interval(both, only_before, only_after, n1 - both - only_before - only_after)),
        )
    else:
        result.update(
            test=UNPAIRED_TEST,
            interval_method=UNPAIRED_INTERVAL,
            p_value=fisher_exact_p(k1, n1, k2, n2),
            ci=list(newcombe_interval(k1, n1, k2, n2)),
        )
    result["significant"] = result["p_value"] < alpha
    return result


# --- AUROC ---------------------------------------------------------------------------------------------------------


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """`sklearn.metrics.roc_auc_score`, or `None` when one class is missing."""
    if len(set(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def _resampled_aurocs(positives: Any, negatives: Any, resamples: int, rng: Any) -> Any:
    import numpy as np
    from scipy.stats import rankdata

    # The Mann-Whitney form of the AUROC on all resamples at once (average ranks count ties as 1/2): equal to
    # roc_auc_score, which takes ~3 ms a call, i.e. seconds for 1,000 resamples
    pos = positives[rng.integers(0, len(positives), (resamples, len(positives)))]
    neg = negatives[rng.integers(0, len(negatives), (resamples, len(negatives)))]
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    n_pos, n_neg = len(positives), len(negatives)
    return (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _split_classes(labels: Sequence[int], scores: Sequence[float]) -> tuple[Any, Any]:
    import numpy as np

    scores_array, labels_array = np.asarray(scores, dtype=float), np.asarray(labels)
    return scores_array[labels_array == 1], scores_array[labels_array == 0]


def bootstrap_auroc_interval(
    labels: Sequence[int],
    scores: Sequence[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the AUROC (positives and negatives resampled separately); `None` when one
    class is missing."""
    import numpy as np

    positives, negatives = _split_classes(labels, scores)
    if len(positives) == 0 or len(negatives) == 0:
        return None
    values = _resampled_aurocs(positives, negatives, resamples, np.random.default_rng(seed))
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def bootstrap_auroc_difference(
    before: tuple[Sequence[int], Sequence[float]],
    after: tuple[Sequence[int], Sequence[float]],
    paired: bool,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `AUROC(after) - AUROC(before)`, each given as `(labels, scores)`.

    `paired=True` (the same prompts in the same order) resamples the same prompts for both runs, so the prompts'
    shared difficulty cancels; otherwise the two runs are resampled independently.
    """
    import numpy as np

    (pos1, neg1), (pos2, neg2) = _split_classes(*before), _split_classes(*after)
    if min(len(pos1), len(neg1), len(pos2), len(neg2)) == 0:
        return None
    if paired:
        if len(pos1) != len(pos2) or len(neg1) != len(neg2):
            raise ValueError(
                f"Invalid paired AUROC comparison: {len(pos1)}/{len(neg1)} vs {len(pos2)}/{len(neg2)} positives/"
                "negatives. Paired runs must score the same prompts; pass paired=False otherwise."
            )
        # One RNG state per run, started from the same seed: both draw the same prompt indices
        values = _resampled_aurocs(pos2, neg2, resamples, np.random.default_rng(seed)) - _resampled_aurocs(
            pos1, neg1, resamples, np.random.default_rng(seed)
        )
    else:
        rng = np.random.default_rng(seed)
        values = _resampled_aurocs(pos2, neg2, resamples, rng) - _resampled_aurocs(pos1, neg1, resamples, rng)
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))
