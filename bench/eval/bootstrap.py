"""Paired bootstrap intervals for the difference of two models' per-query metric values.

Two results on the same catalog score the same queries, so their per-query values (the
``.per_query.npz`` files beside results) can be compared query by query: the interval below
resamples *queries* (with replacement), keeping each query's pair of values together, which
removes the between-query variance both models share. The percentile interval of the resampled
mean differences is reported.

Everything is seeded (default seed 0) and the resampling blocks depend only on the number of
queries, so the same inputs always give the same interval, byte for byte -- tables that print
these intervals stay reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Number of bootstrap resamples.
RESAMPLES = 1000
#: Two-sided coverage of the percentile interval.
LEVEL = 0.95
#: Upper bound on the resampling indices held at once (int64 entries, so 8 bytes each): 2**24
#: entries is 128 MiB. Larger problems are resampled in blocks of whole resamples.
BLOCK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class Interval:
    """Mean of ``a - b`` over the queries scored in both, and its bootstrap percentile interval.

    ``diff``, ``low`` and ``high`` are in the arrays' units (fractions for the bench's metrics);
    ``n`` is the number of paired queries used.
    """

    diff: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (a difference the resampling supports)."""
        return self.low > 0.0 or self.high < 0.0


def seed_mean(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Each query's mean over seeds (same queries in every array); NaN where any seed is NaN.

    A query not scored in one seed is left out rather than averaged over the seeds that scored it,
    as the tables never average over a partial set of seeds.
    """
    if not len(arrays):
        raise ValueError("seed_mean needs at least one array")
    stack = np.stack([np.asarray(a, dtype=np.float64) for a in arrays])
    if stack.ndim != 2:
        raise ValueError("seed_mean takes one-dimensional per-query arrays of equal length")
    return stack.mean(axis=0)


def _block_rows(n: int, resamples: int, block_elements: int) -> int:
    """Resamples per block: a function of ``n`` only, so results never depend on the machine."""
    return max(1, min(resamples, block_elements // max(n, 1)))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = RESAMPLES, seed: int = 0,
                     level: float = LEVEL, block_elements: int = BLOCK_ELEMENTS) -> Interval | None:
    """Mean difference ``a - b`` and its ``level`` percentile interval over ``resamples`` query resamples.

    ``a`` and ``b`` are aligned per-query arrays (index ``i`` is the same query in both); a query
    is used only where both are finite (NaN marks a query not scored). Returns None when no query
    is scored in both. The resampling indices are drawn from ``numpy.random.default_rng(seed)`` in
    blocks of whole resamples, so memory stays below ``block_elements`` indices.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired arrays must be one-dimensional and aligned, got shapes {a.shape} and {b.shape}")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError("resamples must be >= 1 and level in (0, 1)")
    both = np.isfinite(a) & np.isfinite(b)
    d = (a - b)[both]
    n = int(len(d))
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    rows = _block_rows(n, resamples, block_elements)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int64)
        means[start:stop] = d[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(d.mean()), float(low), float(high), n)
