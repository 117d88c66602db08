"""Both scoring rules in every evaluation, the hubness diagnostic, and per-query values."""

from __future__ import annotations

import numpy as np
import pytest

from bench.eval import evaluate
from bench.eval.scoring import cos_name, hubness, top1_neighbours


def _data(n: int = 120, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    cat = np.arange(n) % 4
    centres = rng.standard_normal((4, d)) * 3
    x = (centres[cat] + rng.standard_normal((n, d))).astype(np.float32)
    return x, cat, np.arange(n) // 2


def test_cos_names():
    assert cos_name("coarse/mAP@1[m5product]") == "coarse/mAP@1[m5product/cos]"
    assert cos_name("fine/mAP@R[pml]") == "fine/mAP@R[pml/cos]"
    assert cos_name("coarse/Recall@5") == "coarse/Recall@5[cos]"


def test_every_retrieval_metric_has_a_cosine_twin_equal_to_normalised_scoring():
    x, cat, prod = _data()
    q = np.ones(len(x), dtype=bool)
    both = evaluate(x, category=cat, product=prod, coarse_query=q, fine_query=q, tasks=("retrieval",))
    cos_only = evaluate(x, category=cat, product=prod, coarse_query=q, fine_query=q, tasks=("retrieval",),
                        normalize=True)
    raw_names = [k for k in both["metrics"] if "/cos]" not in k and not k.endswith("[cos]")]
    assert raw_names
    for k in raw_names:
        assert both["metrics"][cos_name(k)] == cos_only["metrics"][k]
    assert "m5product/cos" in both["definitions"] and "cos" in both["definitions"]


def test_hubness_flags_one_long_vector_under_raw_scores_only():
    """A gallery vector 100x longer than the rest is every query's raw top-1, not its cosine top-1."""
    x, cat, prod = _data()
    x[7] *= 100.0
    q = np.ones(len(x), dtype=bool)
    out = evaluate(x, category=cat, product=prod, coarse_query=q, fine_query=q, tasks=("retrieval",))
    raw, cos = out["hubness"]["raw"], out["hubness"]["cos"]
    assert raw["degenerate"] and raw["top10_share"] > 0.5
    assert not cos["degenerate"] and cos["distinct_top1"] > raw["distinct_top1"]


def test_hubness_counts_top1_items():
    h = hubness(np.array([3] * 8 + list(range(100, 112))))
    assert h["queries"] == 20 and h["distinct_top1"] == 13
    assert h["top10_share"] == pytest.approx((8 + 9) / 20) and h["degenerate"]
    spread = hubness(np.arange(40))
    assert spread["top10_share"] == pytest.approx(0.25) and not spread["degenerate"]


def test_top1_neighbours_exclude_self_and_break_ties_by_lower_index():
    g = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    top = top1_neighbours(g, g, np.array([0, 1, 2]), normalize=False)
    assert top.tolist() == [1, 0, 0]


def test_per_query_values_match_the_means():
    x, cat, prod = _data()
    q = np.ones(len(x), dtype=bool)
    names = ("coarse/mAP@1[m5product]", "coarse/mAP@1[m5product/cos]", "cls/correct[linear_probe]")
    train = np.arange(len(x)) % 3 == 0
    out = evaluate(x, category=cat, product=prod, coarse_query=q, fine_query=q, cls_train=train, cls_test=~train,
                   gallery=~train, tasks=("retrieval", "classification"), per_query=names)
    pq = out["per_query"]
    assert len(pq["_query_rows"]) == len(pq["coarse/mAP@1[m5product]"])
    for name in names[:2]:
        assert float(np.nanmean(pq[name])) == pytest.approx(out["metrics"][name])
    assert float(pq["cls/correct[linear_probe]"].mean()) == pytest.approx(out["metrics"]["cls/accuracy[linear_probe]"])
