"""Per-task query and gallery sets in the evaluator (bench/eval/by_task.py, evaluate's task_galleries)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.eval import evaluate
from bench.eval.retrieval import retrieval_metrics

PER_QUERY = ("coarse/mAP@10[m5product]", "fine/mAP@10[m5product]", "coarse/mAP@R[pml]/cos")


def _data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, 8, n)
    prod = cat * 100 + rng.integers(0, 30, n)
    x = (rng.normal(size=(8, 12))[cat] * 2 + rng.normal(size=(n, 12))).astype(np.float32)
    cq = rng.random(n) < 0.4
    fq = rng.random(n) < 0.3
    return x, cat, prod, cq, fq


def test_one_shared_gallery_gives_the_single_pass_numbers():
    x, cat, prod, cq, fq = _data()
    kw = dict(category=cat, product=prod, coarse_query=cq, fine_query=fq, tasks=("retrieval",), per_query=PER_QUERY)
    old = evaluate(x, **kw)
    every = np.ones(len(x), dtype=bool)
    new = evaluate(x, task_galleries={"coarse": every, "fine": every}, **kw)
    assert new["metrics"] == old["metrics"]
    assert new["counts"] == old["counts"]
    assert new["hubness"] == old["hubness"]
    assert sorted(new["per_query"]) == sorted(old["per_query"])
    for k, v in old["per_query"].items():
        np.testing.assert_array_equal(new["per_query"][k], v)


@pytest.mark.parametrize("idle", ["coarse", "fine"])
def test_a_task_with_no_query_keeps_its_metric_names_as_the_single_pass_does(idle):
    x, cat, prod, cq, fq = _data()
    none = np.zeros(len(x), dtype=bool)
    cq, fq = (none, fq) if idle == "coarse" else (cq, none)
    kw = dict(category=cat, product=prod, coarse_query=cq, fine_query=fq, tasks=("retrieval",), per_query=PER_QUERY)
    old = evaluate(x, **kw)
    every = np.ones(len(x), dtype=bool)
    for galleries in ({"coarse": every, "fine": every}, {"coarse": ~cq, "fine": fq | cq}):
        new = evaluate(x, task_galleries=galleries, **kw)
        assert sorted(new["metrics"]) == sorted(old["metrics"])
        assert all(np.isnan(v) for k, v in new["metrics"].items() if k.startswith(idle + "/"))
        assert new["counts"][f"{idle}/queries"] == 0
    np.testing.assert_equal(evaluate(x, task_galleries={"coarse": every, "fine": every}, **kw)["metrics"],
                            old["metrics"])


def test_each_task_ranks_its_own_gallery():
    x, cat, prod, cq, fq = _data()
    rng = np.random.default_rng(1)
    coarse_gal = ~cq & (rng.random(len(x)) < 0.8)  # a separate gallery: no query is a member
    res = evaluate(x, category=cat, product=prod, coarse_query=cq, fine_query=fq, tasks=("retrieval",),
                   cosine_too=False, task_galleries={"coarse": coarse_gal, "fine": fq},
                   protocol={"coarse": {"leave_one_out": False}, "fine": {"leave_one_out": True}})
    # the same numbers straight from retrieval_metrics on each task's own sets
    c = retrieval_metrics(x[cq], x[coarse_gal], {"coarse": (cat[cq], cat[coarse_gal])})
    f_rows = np.flatnonzero(fq)
    f = retrieval_metrics(x[fq], x[fq], {"fine": (prod[fq], prod[fq])}, query_gallery_index=np.arange(len(f_rows)))
    for k, v in {**c.metrics, **f.metrics}.items():
        assert res["metrics"][k] == pytest.approx(v, nan_ok=True), k
    assert res["definitions"]["retrieval_protocol"]["fine"]["leave_one_out"] is True


def test_positive_counts_from_ground_truth_change_only_m5product():
    x, cat, prod, cq, fq = _data()
    every = np.ones(len(x), dtype=bool)
    base = evaluate(x, category=cat, product=prod, coarse_query=cq, fine_query=fq, tasks=("retrieval",),
                    cosine_too=False, task_galleries={"coarse": every, "fine": every})
    # every query's label has many more listings in the ground truth than in the gallery: k' = K
    big = np.full(len(x), 1000)
    gt = evaluate(x, category=cat, product=prod, coarse_query=cq, fine_query=fq, tasks=("retrieval",),
                  cosine_too=False, task_galleries={"coarse": every, "fine": every},
                  positive_counts={"fine": big})
    for k, v in base["metrics"].items():
        if k.startswith("fine/Prec@10[m5product]"):
            assert gt["metrics"][k] < v  # small products: hits / 10 instead of hits / |P|
        elif "[m5product]" not in k or k.startswith("coarse/"):
            assert gt["metrics"][k] == pytest.approx(v, nan_ok=True), k


def test_lone_queries_score_zero_under_m5product_and_are_excluded_elsewhere():
    # three queries; query 2's label has no other gallery listing (it is "lone")
    q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    g = np.array([[1.0, 0.1], [0.1, 1.0], [0.9, 0.0]], dtype=np.float32)
    res = retrieval_metrics(q, g, {"t": (np.array([0, 1, 5]), np.array([0, 1, 0]))}, ks=(1,),
                            positive_counts={"t": np.array([3, 2, 1])})
    assert res.counts["t/lone_queries"] == 1 and res.counts["t/scored_queries"] == 2
    assert res.metrics["t/mAP@1[m5product]"] == pytest.approx(2 / 3)  # the lone query counts as 0
    assert res.metrics["t/Prec@1[std]"] == pytest.approx(1.0)  # and is left out here
    with pytest.raises(ValueError, match="positive_counts"):
        retrieval_metrics(q, g, {"t": (np.array([0, 1, 5]), np.array([0, 1, 0]))}, positive_counts={"t": [1, 2]})
