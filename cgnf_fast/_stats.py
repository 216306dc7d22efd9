"""Small statistics shared by training and evaluation."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["bootstrap_ci", "bootstrap_diff_ci", "permutation_greater", "rank", "spearman", "wilcoxon_greater"]


def rank(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``x`` (float64), ties sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.arange(len(x), dtype=np.float64)
    # average ties
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    return sums[inv] / counts[inv]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (NaN when either is constant)."""
    ra, rb = rank(np.asarray(a, dtype=np.float64)), rank(np.asarray(b, dtype=np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def bootstrap_ci(x: np.ndarray, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``x`` (NaN, NaN when ``x`` is empty; the
    value itself when it has one entry). Deterministic for a seed."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def wilcoxon_greater(d: np.ndarray) -> float:
    """One-sided Wilcoxon signed-rank p-value for "median of d > 0" (zeros dropped, non-finite
    values too; exact for up to 25 pairs without ties, else the normal approximation with tie
    and continuity corrections)."""
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    n = len(d)
    if n == 0:
        return 1.0
    absd = np.abs(d)
    order = np.argsort(absd, kind="stable")
    ranks = np.empty(n)
    sorted_abs = absd[order]
    i = 0
    while i < n:  # average ranks of ties
        j = i
        while j + 1 < n and sorted_abs[j + 1] == sorted_abs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    w = float(ranks[d > 0].sum())
    _, tie = np.unique(absd, return_counts=True)
    if n <= 25 and (tie == 1).all():
        # exact: the distribution of the sum of a random subset of the ranks 1..n
        counts = np.zeros(n * (n + 1) // 2 + 1)
        counts[0] = 1
        for r in range(1, n + 1):
            counts[r:] = counts[r:] + counts[:-r].copy()
        return float(counts[int(w):].sum() / counts.sum())
    mu = n * (n + 1) / 4
    sigma = math.sqrt(n * (n + 1) * (2 * n + 1) / 24 - (tie ** 3 - tie).sum() / 48)
    z = (w - 0.5 - mu) / sigma
    return float(0.5 * math.erfc(z / math.sqrt(2)))


def bootstrap_diff_ci(a: np.ndarray, b: np.ndarray, level: float = 0.95, resamples: int = 10_000,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) - mean(b)`` for two independent samples (each
    resampled on its own; NaN, NaN when either is empty)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    d = (a[rng.integers(0, a.size, size=(resamples, a.size))].mean(1)
         - b[rng.integers(0, b.size, size=(resamples, b.size))].mean(1))
    lo, hi = np.percentile(d, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def permutation_greater(a: np.ndarray, b: np.ndarray, resamples: int = 20_000, seed: int = 0) -> float:
    """One-sided permutation p-value for "mean(a) > mean(b)" (two independent samples; labels
    shuffled ``resamples`` times, seeded; the observed split counts once, so p >= 1/(resamples+1))."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return 1.0
    pooled = np.concatenate([a, b])
    obs = a.mean() - b.mean()
    rng = np.random.default_rng(seed)
    perm = rng.permuted(np.broadcast_to(pooled, (resamples, pooled.size)), axis=1)
    d = perm[:, :a.size].mean(1) - perm[:, a.size:].mean(1)
    return float((1 + np.count_nonzero(d >= obs - 1e-12 * max(1.0, abs(obs)))) / (resamples + 1))
