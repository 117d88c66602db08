"""The linear probe above its cap: stratified sample, minibatch softmax regression, chunked reads."""

from __future__ import annotations

import numpy as np
import pytest

from bench.eval import probe_scale
from bench.eval.classification import linear_probe


def _blobs(n: int, n_classes: int = 12, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = 3 * rng.standard_normal((n_classes, dim)).astype(np.float32)
    y = rng.integers(0, n_classes, n)
    return centres[y] + rng.standard_normal((n, dim)).astype(np.float32), y


def test_stratified_sample_quota_and_seed():
    codes = np.repeat(np.arange(4), [5, 50, 200, 1000])
    rows, quota = probe_scale.stratified_sample(codes, 300, seed=3)
    kept = np.bincount(codes[rows], minlength=4)
    assert quota == 122 and kept.tolist() == [5, 50, 122, 122]  # the largest quota within the cap
    assert kept.sum() <= 300 and np.all(np.diff(rows) > 0)
    again, _ = probe_scale.stratified_sample(codes, 300, seed=3)
    other, _ = probe_scale.stratified_sample(codes, 300, seed=4)
    assert np.array_equal(rows, again) and not np.array_equal(rows, other)
    tiny, q = probe_scale.stratified_sample(codes, 2, seed=0)  # fewer rows than classes: one per class
    assert q == 1 and np.bincount(codes[tiny]).tolist() == [1, 1, 1, 1]


def test_at_or_below_cap_the_probe_is_unchanged(monkeypatch):
    x, y = _blobs(700)
    ref = linear_probe(x[:500], y[:500], x[500:], y[500:], seed=0)
    monkeypatch.setattr(probe_scale, "PROBE_CAP", 500)
    same = linear_probe(x[:500], y[:500], x[500:], y[500:], seed=0)
    assert same["protocol"] == ref["protocol"] and same["protocol"]["solver"] == "lbfgs"
    assert same["accuracy"] == ref["accuracy"] and np.array_equal(same["correct"], ref["correct"])


def test_above_cap_samples_records_and_matches_lbfgs(tmp_path, monkeypatch):
    x, y = _blobs(6000, seed=1)
    ref = linear_probe(x[:5000], y[:5000], x[5000:], y[5000:], seed=0)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")  # a memory-mapped pool is read in chunks
    monkeypatch.setattr(probe_scale, "PROBE_CAP", 2400)
    monkeypatch.setattr(probe_scale, "_READ_ROWS", 700)
    got = linear_probe(mm[:5000], y[:5000], mm[5000:], y[5000:], seed=0)
    proto = got["protocol"]
    assert proto["cap"] == 2400 and proto["n_train_sampled"] <= 2400 and proto["quota_per_class"] == 200
    assert proto["solver"].startswith("minibatch Adam") and got["n_train"] == 5000 and got["n_test"] == 1000
    assert got["n_classes"] == 12 and len(got["correct"]) == 1000
    assert got["accuracy"] == pytest.approx(ref["accuracy"], abs=0.03)
    assert ref["accuracy"] > 0.8  # separable enough that a broken fit would show
    again = linear_probe(mm[:5000], y[:5000], mm[5000:], y[5000:], seed=0)
    assert np.array_equal(again["correct"], got["correct"]) and again["epoch_losses"] == got["epoch_losses"]


def test_above_cap_unseen_test_class_and_bad_values(monkeypatch):
    monkeypatch.setattr(probe_scale, "PROBE_CAP", 100)
    x, y = _blobs(400)
    yt = y[300:].copy()
    yt[:7] = 99  # a class with no train row can never be right
    got = linear_probe(x[:300], y[:300], x[300:], yt, seed=0)
    assert got["test_unseen_class"] == 7 and not got["correct"][:7].any()
    bad = x.copy()
    bad[310, 3] = np.inf  # every test row is read (and checked), sampled or not
    with pytest.raises(ValueError, match="NaN/inf"):
        linear_probe(bad[:300], y[:300], bad[300:], y[300:], seed=0)
