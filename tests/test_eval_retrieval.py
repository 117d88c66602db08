"""Golden and invariant tests of bench.eval.retrieval (answers computed by hand in the comments)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.eval.knn import GallerySearcher
from bench.eval.labels import remap_labels
from bench.eval.retrieval import retrieval_metrics

# Golden setup: gallery = identity, so a query vector *is* its score row (score(q, g_j) = q[j]).
# Gallery labels: items 0,1,2 -> "a", 3,4 -> "b", 5 -> "c" (a one-listing category).
G_LABELS = np.array(["a", "a", "a", "b", "b", "c"])
GOLD_SCORES = np.array(
    [
        [9, 5, 1, 8, 7, 6],  # q0 = item 0. with self: 0,3,4,5 | 1,2  -> official list (max_topk=4) [3,4,5]
        [4, 3, 2, 5, 1, 0],  # q1 = item 1. with self: 3,0,1,2 -> list [3,0,2]
        [1, 2, 3, 4, 5, 10],  # q2 = item 5 (lone: only "c"). list [4,3,2]
        [9, 8, 7, 1, 6, 5],  # q3 = item 3. self ranks 6th -> not in top 4 -> list [0,1,2,4] (4 items)
        [5, 5, 5, 5, 5, 5],  # q4 = item 2. all tied: lower index first -> with self 0,1,2,3 -> list [0,1,3]
    ],
    dtype=np.float32,
)
GOLD_SELF = np.array([0, 1, 5, 3, 2])


def gold(backend: str = "torch", **kw):
    q_labels = G_LABELS[GOLD_SELF]
    return retrieval_metrics(GOLD_SCORES, np.eye(6, dtype=np.float32), {"x": (q_labels, G_LABELS)},
                             query_gallery_index=GOLD_SELF, ks=(1, 2, 3, 5), max_topk=4, backend=backend, **kw)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_golden_m5product(backend):
    m = gold(backend).metrics
    # per query (K=1,2,3,5): q0 all 0 (no positive in list [3,4,5]); q1 list [3,0,2], |P|=3:
    #   K=1 k'=1 -> 0; K=2 k'=2 -> P=1/2, AP=(1/2)/1; K=3,5 k'=3 -> P=2/3, AP=(1/2+2/3)/2=7/12;
    # q2 lone, |P|=1 (itself) -> k'=1 -> item 4 is "b" -> 0; q3 |P|=2, list [0,1,2,4]: k'<=2 -> 0
    #   (the hit at place 4 is beyond k'); q4 list [0,1,3], |P|=3: K=1,2 -> 1; K=3,5 -> P=2/3, AP=1.
    assert m["x/mAP@1[m5product]"] == pytest.approx(1 / 5)
    assert m["x/Prec@1[m5product]"] == pytest.approx(1 / 5)
    assert m["x/mAP@2[m5product]"] == pytest.approx((0.5 + 1) / 5)
    assert m["x/Prec@2[m5product]"] == pytest.approx((0.5 + 1) / 5)
    assert m["x/mAP@3[m5product]"] == pytest.approx((7 / 12 + 1) / 5)
    assert m["x/Prec@3[m5product]"] == pytest.approx((2 / 3 + 2 / 3) / 5)
    # K larger than |P| and than the list: k' caps at min(|P|, |list|)
    assert m["x/mAP@5[m5product]"] == pytest.approx((7 / 12 + 1) / 5)
    assert m["x/Prec@5[m5product]"] == pytest.approx((2 / 3 + 2 / 3) / 5)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_golden_standard_definitions(backend):
    res = gold(backend)
    m, c = res.metrics, res.counts
    # self-excluded rankings: q0 [3,4,5,1,2] rel 00011 R=2; q1 [3,0,2,4,5] rel 01100 R=2;
    # q3 [0,1,2,4,5] rel 00010 R=1; q4 [0,1,3,4,5] rel 11000 R=2; q2 lone -> excluded.
    assert c["x/queries"] == 5 and c["x/lone_queries"] == 1 and c["x/scored_queries"] == 4
    assert c["x/m5product_short_lists"] == 4  # every query but q3 ranked itself in its top 4
    assert m["x/Recall@1"] == pytest.approx(1 / 4)
    assert m["x/Recall@2"] == pytest.approx(2 / 4)
    assert m["x/Recall@3"] == pytest.approx(2 / 4)
    assert m["x/Recall@5"] == pytest.approx(1.0)
    assert m["x/mAP@R[pml]"] == pytest.approx((0 + 0.25 + 0 + 1) / 4)  # q1: S@2/2 = (1/2)/2
    assert m["x/R-precision[pml]"] == pytest.approx((0 + 0.5 + 0 + 1) / 4)
    # S@5/min(5,R): q0 (1/4+2/5)/2, q1 (1/2+2/3)/2, q3 (1/4)/1, q4 2/2
    assert m["x/mAP@5[min_k_r]"] == pytest.approx((0.325 + 7 / 12 + 0.25 + 1) / 4)
    assert m["x/Prec@5[std]"] == pytest.approx((0.4 + 0.4 + 0.2 + 0.4) / 4)


def test_m5product_map1_equals_prec1_and_ranges():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    cat = rng.integers(0, 7, 300)
    pid = rng.integers(0, 90, 300)
    res = retrieval_metrics(x, x, {"c": (cat, cat), "f": (pid, pid)}, query_gallery_index=np.arange(300), per_query=True)
    for s in ("c", "f"):
        np.testing.assert_array_equal(res.per_query[f"{s}/mAP@1[m5product]"], res.per_query[f"{s}/Prec@1[m5product]"])
        assert res.metrics[f"{s}/mAP@1[m5product]"] == res.metrics[f"{s}/Prec@1[m5product]"]
    for v in res.metrics.values():
        assert 0.0 <= v <= 1.0
    # hits-normalised AP is never below precision at the same k'
    assert res.metrics["c/mAP@10[m5product]"] >= res.metrics["c/Prec@10[m5product]"]


def test_max_topk_controls_official_list_length():
    # 12 identical items of one label, all scores tied -> gallery order. Query i ranks itself at place i+1,
    # so it is inside the official top max_topk (list shortened by one) only for i < max_topk.
    # Every list holds only positives, so Prec@10 = 1 whatever k' is.
    x = np.ones((12, 3), dtype=np.float32)
    lab = np.zeros(12)
    for topk, short in ((10, 10), (5, 5)):
        res = retrieval_metrics(x, x, {"x": (lab, lab)}, query_gallery_index=np.arange(12), max_topk=topk)
        assert res.metrics["x/Prec@10[m5product]"] == 1.0
        assert res.counts["x/m5product_short_lists"] == short


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_tie_rule_lower_gallery_index_wins_at_the_boundary(backend):
    g = torch.ones(40, 4)
    g[7] *= 2  # one clear winner, then 39 equal scores
    s = GallerySearcher(g, backend=backend)
    nb = s.search(torch.ones(3, 4), 5, torch.tensor([-1, 0, 8]))
    assert nb.index[0].tolist() == [7, 0, 1, 2, 3]
    assert nb.index[1].tolist() == [7, 1, 2, 3, 4]  # own row 0 removed
    assert nb.index[2].tolist() == [7, 0, 1, 2, 3]
    assert nb.self_score[1].item() == 4.0 and np.isnan(nb.self_score[0].item())


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_tie_rebuilt_rows_are_ordered_by_score(backend):
    # scores 1,5,1,1,3,1,1,1: top 3 = item 1 (5), item 4 (3), then the tie at 1 -> lowest index 0
    g = torch.eye(8)
    q = torch.tensor([[1.0, 5, 1, 1, 3, 1, 1, 1]])
    nb = GallerySearcher(g, backend=backend).search(q, 3, torch.tensor([-1]))
    assert nb.index[0].tolist() == [1, 4, 0]
    assert nb.score[0].tolist() == [5.0, 3.0, 1.0]


def test_query_with_no_positive_and_one_listing_category():
    # category "solo" has one listing: as a query it is lone (excluded from standard metrics, 0 under m5product)
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.5, 0.5]], dtype=np.float32)
    lab = np.array(["p", "p", "q", "q", "solo"])
    res = retrieval_metrics(x, x, {"x": (lab, lab)}, query_gallery_index=np.arange(5), per_query=True)
    assert res.counts["x/lone_queries"] == 1
    assert np.isnan(res.per_query["x/mAP@R[pml]"][4])
    assert res.per_query["x/mAP@10[m5product]"][4] == 0.0
    assert res.metrics["x/mAP@R[pml]"] == 1.0  # the other four find their partner first
    assert res.metrics["x/mAP@1[m5product]"] == pytest.approx(4 / 5)
    # a query outside the gallery whose label is absent: empty positive set under m5product -> 0, counted
    res2 = retrieval_metrics(x[:1], x[1:4], {"x": (["zzz"], lab[1:4])})
    assert res2.counts["x/m5product_empty_lists"] == 1 and res2.metrics["x/mAP@1[m5product]"] == 0.0
    assert np.isnan(res2.metrics["x/mAP@R[pml]"])


def test_multi_listing_products_fine_labels():
    # products with 3, 2 and 1 listings; embeddings put each product's listings together
    pid = np.array([10, 10, 10, 20, 20, 30])
    x = np.array([[1, 0, 0], [1, 0.05, 0], [1, 0, 0.05], [0, 1, 0], [0, 1, 0.05], [0, 0, 1]], dtype=np.float32)
    res = retrieval_metrics(x, x, {"fine": (pid, pid)}, query_gallery_index=np.arange(6), normalize=True)
    m = res.metrics
    assert res.counts["fine/lone_queries"] == 1
    assert m["fine/mAP@R[pml]"] == 1.0 and m["fine/R-precision[pml]"] == 1.0
    assert m["fine/Recall@1"] == 1.0
    # R < K: min_k_r normalises by R, so a perfect top-R scores 1; Prec@5[std] = R/5
    assert m["fine/mAP@5[min_k_r]"] == 1.0
    assert m["fine/Prec@5[std]"] == pytest.approx((2 / 5 * 3 + 1 / 5 * 2) / 5)
    # m5product: |P| includes the query: product 10 -> k'=min(5, 3, 5)=3 but only 2 others exist -> 2/3
    assert m["fine/Prec@5[m5product]"] == pytest.approx((2 / 3 * 3 + 1 / 2 * 2 + 0) / 6)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_oracle_embedding_scores_one_and_constant_scores_chance(backend):
    rng = np.random.default_rng(0)
    cat = rng.integers(0, 6, 240)
    onehot = np.eye(6, dtype=np.float32)[cat]
    res = retrieval_metrics(onehot, onehot, {"c": (cat, cat)}, query_gallery_index=np.arange(240), backend=backend)
    for key in ("mAP@R[pml]", "R-precision[pml]", "mAP@10[m5product]", "Prec@10[m5product]",
                "mAP@10[min_k_r]", "Recall@1", "Prec@5[std]"):
        assert res.metrics[f"c/{key}"] == 1.0, key
    # constant embedding: all ties, ranking = gallery order; with labels independent of order the
    # R-precision equals the positive rate in expectation
    const = np.ones((240, 4), dtype=np.float32)
    res = retrieval_metrics(const, const, {"c": (cat, cat)}, query_gallery_index=np.arange(240), backend=backend)
    exact = retrieval_metrics(const, const, {"c": (cat, cat)}, query_gallery_index=np.arange(240), backend="torch")
    assert res.metrics == exact.metrics  # all ties: both backends give the gallery order
    counts = np.bincount(cat)
    chance = float(np.mean((counts[cat] - 1) / 239))
    assert abs(res.metrics["c/R-precision[pml]"] - chance) < 0.05
    assert abs(res.metrics["c/Prec@10[std]"] - chance) < 0.05


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_shuffling_the_gallery_changes_nothing(backend):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    cat = rng.integers(0, 5, 200)
    pid = rng.integers(0, 60, 200)
    base = retrieval_metrics(x, x, {"c": (cat, cat), "f": (pid, pid)}, query_gallery_index=np.arange(200),
                             backend=backend)
    perm = rng.permutation(200)
    inv = np.argsort(perm)
    shuf = retrieval_metrics(x, x[perm], {"c": (cat, cat[perm]), "f": (pid, pid[perm])}, query_gallery_index=inv,
                             backend=backend)
    for k, v in base.metrics.items():
        assert shuf.metrics[k] == pytest.approx(v, abs=1e-12), k


def test_chunking_and_label_types_do_not_change_results():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(150, 8)).astype(np.float32)
    cat = rng.integers(0, 4, 150)
    big = cat.astype(np.int64) + 10**12  # ids that collide in float32
    a = retrieval_metrics(x, x, {"c": (cat, cat)}, query_gallery_index=np.arange(150))
    b = retrieval_metrics(torch.from_numpy(x), x, {"c": (big, big)}, query_gallery_index=np.arange(150),
                          mem_budget_bytes=2000)
    c = retrieval_metrics(x, x, {"c": (cat.astype(str), cat.astype(str))}, query_gallery_index=np.arange(150))
    assert a.metrics == b.metrics == c.metrics


def test_normalize_switch_and_record():
    x = np.array([[10, 1], [0.2, 1], [0, 1]], dtype=np.float32)
    lab = np.array([0, 1, 1])
    dot = retrieval_metrics(x, x, {"c": (lab, lab)}, query_gallery_index=np.arange(3))
    cos = retrieval_metrics(x, x, {"c": (lab, lab)}, query_gallery_index=np.arange(3), normalize=True)
    # raw dot: items 1 and 2 both rank the long item 0 first (3 > 1; 1 == 1 tie -> lower index); cosine pairs them
    assert dot.metrics["c/Recall@1"] == 0.0 and cos.metrics["c/Recall@1"] == 1.0
    assert dot.definitions["_settings"]["similarity"] == "raw dot product"
    assert "cosine" in cos.definitions["_settings"]["similarity"]


def test_faiss_backend_matches_torch_on_random_data():
    rng = np.random.default_rng(4)
    cc = rng.normal(size=(10, 32))
    cat = rng.integers(0, 10, 500)
    x = (cc[cat] + rng.normal(size=(500, 32))).astype(np.float32)
    a = retrieval_metrics(x, x, {"c": (cat, cat)}, query_gallery_index=np.arange(500), backend="torch")
    b = retrieval_metrics(x, x, {"c": (cat, cat)}, query_gallery_index=np.arange(500), backend="faiss")
    for k, v in a.metrics.items():
        assert b.metrics[k] == pytest.approx(v, abs=1e-3), k  # near-ties only


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(query=np.zeros((2, 3)), gallery=np.zeros((4, 2))), "dim"),
        (dict(query=np.full((2, 3), np.nan), gallery=np.zeros((4, 3))), "non-finite"),
        (dict(query=np.zeros((2, 3)), gallery=np.zeros((4, 3)), query_gallery_index=np.array([0, 9])), "out of range"),
        (dict(query=np.zeros(3), gallery=np.zeros((4, 3))), "2-d"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, message):
    q = kwargs.pop("query")
    g = kwargs.pop("gallery")
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(q, g, {"c": (np.zeros(len(q) if q.ndim == 2 else 1), np.zeros(len(g)))}, **kwargs)


def test_self_row_label_mismatch_is_an_error():
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="different label"):
        retrieval_metrics(x, x, {"c": ([0, 0, 1], [0, 1, 1])}, query_gallery_index=np.arange(3))


def test_remap_labels_joint_and_missing():
    a, b = remap_labels(np.array(["x", "y"]), np.array(["y", "z"]))
    assert a.tolist() == [0, 1] and b.tolist() == [1, 2]
    with pytest.raises(ValueError, match="missing label"):
        remap_labels(np.array(["x", None], dtype=object))


def test_empty_query_set_keeps_every_key_as_nan():
    x = np.eye(4, dtype=np.float32)
    lab = np.array([0, 0, 1, 1])
    res = retrieval_metrics(x, x, {"c": (lab, lab), "f": (lab, lab, np.zeros(4, bool))},
                            query_gallery_index=np.arange(4))
    c_keys = {k.split("/", 1)[1] for k in res.metrics if k.startswith("c/")}
    f_keys = {k.split("/", 1)[1] for k in res.metrics if k.startswith("f/")}
    assert c_keys == f_keys and len(c_keys) == 2 + 5 * 3
    assert all(np.isnan(v) for k, v in res.metrics.items() if k.startswith("f/"))
    assert res.counts["f/queries"] == 0


def test_faiss_repairs_exact_ties_straddling_k_on_duplicates():
    # many exact duplicates around the k-th place, in scrambled gallery order: faiss must return
    # the same lists as the exact torch path (lower gallery index first among equal scores)
    rng = np.random.default_rng(7)
    base = rng.normal(size=(30, 8)).astype(np.float32)
    g = torch.from_numpy(base[rng.integers(0, 30, 600)])
    q = torch.from_numpy(base[:12])
    self_idx = torch.full((12,), -1)
    for k in (1, 5, 17, 40):
        a = GallerySearcher(g, backend="torch").search(q, k, self_idx)
        b = GallerySearcher(g, backend="faiss").search(q, k, self_idx)
        assert torch.equal(a.index, b.index), k


def test_faiss_tie_repair_respects_the_memory_budget(monkeypatch):
    # every row ties (constant gallery): the exact redo must go in row blocks whose score block fits
    g = torch.ones(500, 4)
    s = GallerySearcher(g, backend="faiss", mem_budget_bytes=4 * 500 * 7)  # 7 rows per block
    seen: list[int] = []
    real = s._search_torch

    def spy(q, k, self_index):
        seen.append(q.shape[0])
        return real(q, k, self_index)

    monkeypatch.setattr(s, "_search_torch", spy)
    nb = s.search(torch.ones(30, 4), 5, torch.full((30,), -1))
    assert max(seen) <= 7 and sum(seen) == 30
    assert nb.index.tolist() == [[0, 1, 2, 3, 4]] * 30
