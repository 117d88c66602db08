"""Paired bootstrap intervals (bench.eval.bootstrap): known differences, NaN pairing, seeding, seed means."""

from __future__ import annotations

import numpy as np
import pytest

from bench.eval.bootstrap import Interval, paired_bootstrap, seed_mean


def test_known_difference_lies_inside_the_interval():
    rng = np.random.default_rng(1)
    b = rng.random(2000)
    a = b + 0.05 + rng.normal(scale=0.1, size=2000)  # true mean difference 0.05
    iv = paired_bootstrap(a, b)
    assert iv is not None and iv.n == 2000
    assert iv.low < 0.05 < iv.high and iv.low < iv.diff < iv.high
    assert iv.diff == pytest.approx(float(np.mean(a - b)))
    assert iv.excludes_zero() and iv.low > 0
    # the interval's width is close to the normal approximation (4 standard errors of the mean)
    assert (iv.high - iv.low) == pytest.approx(2 * 1.96 * np.std(a - b) / np.sqrt(2000), rel=0.15)


def test_identical_arrays_give_a_zero_interval():
    a = np.random.default_rng(0).random(300)
    iv = paired_bootstrap(a, a.copy())
    assert iv == Interval(0.0, 0.0, 0.0, 300)
    assert not iv.excludes_zero()


def test_no_difference_interval_contains_zero():
    rng = np.random.default_rng(2)
    a, b = rng.random(500), rng.random(500)
    iv = paired_bootstrap(a, b)
    assert iv.low < 0 < iv.high and not iv.excludes_zero()


def test_nan_marks_queries_left_out_of_the_pairing():
    a = np.array([1.0, np.nan, 0.0, 1.0, 0.5])
    b = np.array([0.0, 0.0, np.nan, 1.0, 0.5])
    iv = paired_bootstrap(a, b)
    assert iv.n == 3 and iv.diff == pytest.approx(1 / 3)  # queries 0, 3, 4
    assert 0.0 <= iv.low <= iv.diff <= iv.high <= 1.0
    assert paired_bootstrap(np.array([np.nan, 1.0]), np.array([1.0, np.nan])) is None
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap(np.zeros(3), np.zeros(4))


def test_seeded_and_independent_of_the_block_size():
    rng = np.random.default_rng(3)
    a, b = rng.random(257), rng.random(257)
    first = paired_bootstrap(a, b)
    assert paired_bootstrap(a, b) == first  # byte-stable tables
    assert paired_bootstrap(a, b, seed=1) != first
    # a tiny memory bound resamples in many blocks: same seed, a close (not bit-identical) answer
    small = paired_bootstrap(a, b, block_elements=257 * 7)
    assert small.diff == first.diff
    assert small.low == pytest.approx(first.low, abs=0.02) and small.high == pytest.approx(first.high, abs=0.02)
    assert paired_bootstrap(a, b, block_elements=257 * 7) == small


def test_seed_mean_averages_each_query_over_seeds_first():
    s0 = np.array([1.0, 0.0, np.nan, 0.5], dtype=np.float32)
    s1 = np.array([0.0, 0.0, 1.0, 0.5], dtype=np.float32)
    m = seed_mean([s0, s1])
    assert m[0] == 0.5 and m[1] == 0.0 and np.isnan(m[2]) and m[3] == 0.5  # NaN in one seed: left out
    # the bootstrap of seed means is the difference of the per-query means, queries paired
    iv = paired_bootstrap(seed_mean([s0, s1]), seed_mean([s1, s1]))
    assert iv.n == 3 and iv.diff == pytest.approx((0.5 + 0 + 0) / 3)
    with pytest.raises(ValueError):
        seed_mean([])
