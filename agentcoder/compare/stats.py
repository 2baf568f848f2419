"""Intervals and tests over test examples: how far a score could move on another draw of examples.

Every share is a ratio of per-example sums (the (hits, count) terms of `metrics.METRICS`: exact
match correct / 1, function selection function_match / expects_call, ...), so one bootstrap serves
all of them: resample the examples, recompute each seed's ratio, average over seeds.  Seeds of one
configuration share the examples, so the same resample is applied to every seed (a paired bootstrap).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from agentcoder.evaluation.metrics import METRICS

DEFAULT_RESAMPLES = 2000


def example_terms(runs_predictions: Sequence[Sequence[dict]], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(hits, counts), each seeds x examples, rows aligned by example id; None when some row does
    not record METRIC (predictions written before it existed)."""
    spec = METRICS[metric]
    ids = sorted({str(r["id"]) for r in runs_predictions[0]})
    num = np.zeros((len(runs_predictions), len(ids)))
    den = np.zeros_like(num)
    col = {i: j for j, i in enumerate(ids)}
    for s, rows in enumerate(runs_predictions):
        for r in rows:
            j = col.get(str(r["id"]))
            if j is None:
                continue
            terms = spec.terms(r)
            if terms is None:
                return None
            num[s, j], den[s, j] = terms
    return num, den


def _seed_mean_ratio(num: np.ndarray, den: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean over seeds of sum(w * num) / sum(w * den), one value per row of WEIGHTS (resamples x examples).

    A resample is the count of times each example was drawn, so its sums are one matrix product:
    far cheaper than gathering (seeds x resamples x examples) arrays.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (num @ weights.T) / (den @ weights.T)  # seeds x resamples
    defined = ~np.isnan(ratio).all(axis=0)
    # A resample with no eligible example for any seed is undefined (nan), not an error.
    out = np.full(ratio.shape[1], np.nan)
    out[defined] = np.nanmean(ratio[:, defined], axis=0)
    return out


@functools.lru_cache(maxsize=8)
def bootstrap_weights(n_examples: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """RESAMPLES x N_EXAMPLES draw counts: row b says how often each example is in resample b.

    Fixed by SEED, so every configuration with N_EXAMPLES examples is resampled alike (and the
    table is reproducible); cached, read-only.
    """
    draws = np.random.default_rng(seed).integers(0, n_examples, size=(resamples, n_examples))
    flat = (draws + n_examples * np.arange(resamples)[:, None]).ravel()
    weights = np.bincount(flat, minlength=resamples * n_examples).reshape(resamples, n_examples).astype(float)
    weights.flags.writeable = False
    return weights


def bootstrap_interval(num: np.ndarray, den: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of the seed-averaged ratio over the resamples in WEIGHTS."""
    if num.size == 0 or den.sum() == 0:
        return math.nan, math.nan
    stats = _seed_mean_ratio(num, den, weights)
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def paired_difference(
    a: Sequence[Sequence[dict]], b: Sequence[Sequence[dict]], metric: str = "exact_match",
    resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
) -> dict[str, Any]:
    """B minus A on the same examples: the difference and its paired-bootstrap 95% interval.

    A and B are lists of runs (seeds), each a list of prediction rows over the same example ids.
    """
    if {str(r["id"]) for r in a[0]} != {str(r["id"]) for r in b[0]}:
        raise ValueError("paired_difference needs both sides evaluated on the same examples")
    terms_a, terms_b = example_terms(a, metric), example_terms(b, metric)
    if terms_a is None or terms_b is None:
        raise ValueError(f"paired_difference: some prediction rows do not record {metric}")
    (na, da), (nb, db) = terms_a, terms_b
    full = np.ones((1, na.shape[1]))
    diff = float((_seed_mean_ratio(nb, db, full) - _seed_mean_ratio(na, da, full))[0])
    w = bootstrap_weights(na.shape[1], resamples, seed)
    boot = _seed_mean_ratio(nb, db, w) - _seed_mean_ratio(na, da, w)
    boot = boot[~np.isnan(boot)]
    lo, hi = (np.percentile(boot, [2.5, 97.5]) if boot.size else (math.nan, math.nan))
    return {"diff": diff, "lo": float(lo), "hi": float(hi), "n": na.shape[1],
            "beyond": bool(lo > 0 or hi < 0)}


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs against 1/2."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(only_a, only_b), n, 0.5).pvalue)
