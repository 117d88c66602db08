"""Cross-checks of bench.eval against the field's libraries and the official M5Product formula.

Data: random clustered embeddings (category centres, product centres, noise) with mid-range scores.
Where the definitions match, values must agree to 1e-6 (1e-12 when PML is handed our own ranking).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.eval.knn import GallerySearcher
from bench.eval.retrieval import retrieval_metrics

N, D, N_CAT, N_PROD = 400, 16, 8, 120


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    cat_c = rng.normal(size=(N_CAT, D)) * 1.2
    prod_cat = rng.integers(0, N_CAT, N_PROD)
    prod_c = cat_c[prod_cat] + rng.normal(size=(N_PROD, D)) * 0.8
    pid = rng.integers(0, N_PROD, N)
    x = (prod_c[pid] + rng.normal(size=(N, D))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pid_big = pid.astype(np.int64) * 7919 + 10**11  # raw product ids far beyond float32's exact range
    return x, prod_cat[pid], pid_big


@pytest.fixture(scope="module")
def ours(data):
    x, cat, pid = data
    return retrieval_metrics(x, x, {"coarse": (cat, cat), "fine": (pid, pid)}, query_gallery_index=np.arange(N),
                             per_query=True)


# --- official M5Product script, transcribed (retrieval_unit_id_list_v2.py + evaluate_unit_v2.py) ----------
def official_rank_lists(x: np.ndarray, max_topk: int = 10) -> list[list[int]]:
    score = x @ x.T  # raw dot product; query set == gallery set
    lists = []
    for qi in range(len(x)):
        # heapq.nlargest(max_topk, ...) == sorted(..., reverse=True)[:max_topk], stable: lower index first on ties
        top = sorted(range(len(x)), key=lambda j: score[qi, j], reverse=True)[:max_topk]
        lists.append([j for j in top if j != qi])  # the query's own id is removed afterwards
    return lists


def compute_p(rank_list, pos_set, topk):
    intersect = 0
    for i in range(topk):
        if rank_list[i] in pos_set:
            intersect += 1
    return intersect / topk


def compute_ap(rank_list, pos_set, topk):
    intersect, ap = 0, 0.0
    for i in range(topk):
        if rank_list[i] in pos_set:
            intersect += 1
            ap += intersect / (i + 1)
    if intersect == 0:
        return 0.0
    return ap / intersect


def official_metrics(x, labels, ks=(1, 5, 10)):
    lists = official_rank_lists(x)
    out = {}
    for k in ks:
        ap_sum = p_sum = 0.0
        for qi, rl in enumerate(lists):
            pos = {j for j in range(len(x)) if labels[j] == labels[qi]}  # includes the query itself
            kk = min(k, len(pos), len(rl))
            ap_sum += compute_ap(rl, pos, kk)
            p_sum += compute_p(rl, pos, kk)
        out[f"mAP@{k}"] = ap_sum / len(lists)
        out[f"Prec@{k}"] = p_sum / len(lists)
    return out


@pytest.mark.parametrize("level", ["coarse", "fine"])
def test_m5product_equals_official_transcription(data, ours, level):
    x, cat, pid = data
    labels = cat if level == "coarse" else pid
    ref = official_metrics(x, labels)
    for name, val in ref.items():
        assert ours.metrics[f"{level}/{name}[m5product]"] == pytest.approx(val, abs=1e-12), name


def test_m5product_official_with_raw_unnormalised_scores(data):
    # raw dot product on unnormalised features: the query may not rank itself first, lists may hold 10 ids
    x, cat, _ = data
    rng = np.random.default_rng(0)
    xr = (x * rng.uniform(0.5, 2.0, size=(N, 1))).astype(np.float32)
    ours = retrieval_metrics(xr, xr, {"c": (cat, cat)}, query_gallery_index=np.arange(N))
    assert ours.counts["c/m5product_short_lists"] < N  # some queries were outranked in their own top 10
    for name, val in official_metrics(xr, cat).items():
        assert ours.metrics[f"c/{name}[m5product]"] == pytest.approx(val, abs=1e-12), name


# --- pytorch-metric-learning ---------------------------------------------------------------------------
def _our_knn(query, k, reference, ref_includes_query):
    s = GallerySearcher(reference.float().cpu(), backend="torch")
    self_idx = torch.arange(len(query)) if ref_includes_query else torch.full((len(query),), -1)
    nb = s.search(query.float().cpu(), k, self_idx)
    return -nb.score, nb.index


@pytest.mark.parametrize("level", ["coarse", "fine"])
def test_pml_with_shared_ranking_is_exact(data, ours, level):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    x, cat, pid = data
    labels = cat if level == "coarse" else pid
    from bench.eval.labels import remap_labels

    (codes,) = remap_labels(labels)  # PML casts labels to float32
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
                              k="max_bin_count", knn_func=_our_knn)
    acc = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(codes))
    m = ours.metrics
    assert m[f"{level}/Recall@1"] == pytest.approx(acc["precision_at_1"], abs=1e-12)
    assert m[f"{level}/Prec@1[std]"] == pytest.approx(acc["precision_at_1"], abs=1e-12)
    assert m[f"{level}/mAP@R[pml]"] == pytest.approx(acc["mean_average_precision_at_r"], abs=1e-12)
    assert m[f"{level}/R-precision[pml]"] == pytest.approx(acc["r_precision"], abs=1e-12)


def test_pml_default_faiss_knn_within_tolerance(data, ours):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    x, cat, _ = data
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
                              k="max_bin_count")
    acc = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(cat))
    # faiss L2 vs our dot-product ranking differ only on float32 near-ties: one swap moves a value by 1/(R*Q)
    assert ours.metrics["coarse/mAP@R[pml]"] == pytest.approx(acc["mean_average_precision_at_r"], abs=1e-6)
    assert ours.metrics["coarse/R-precision[pml]"] == pytest.approx(acc["r_precision"], abs=1e-6)
    assert ours.metrics["coarse/Recall@1"] == pytest.approx(acc["precision_at_1"], abs=1e-6)


# --- torchmetrics --------------------------------------------------------------------------------------
TM_QUERIES = 150  # torchmetrics loops over queries in Python: score a subset, compare per-query means


@pytest.mark.parametrize("level", ["coarse", "fine"])
def test_torchmetrics_retrieval(data, ours, level):
    from torchmetrics.retrieval import RetrievalHitRate, RetrievalPrecision, RetrievalRPrecision

    x, cat, pid = data
    labels = cat if level == "coarse" else pid
    nq = TM_QUERIES
    sim = torch.from_numpy(x[:nq] @ x.T).double()
    not_self = torch.ones(nq, N, dtype=torch.bool)
    not_self[torch.arange(nq), torch.arange(nq)] = False  # torchmetrics has no self-exclusion: drop self pairs
    preds = ((sim + 1) / 2)[not_self]  # > 0, so torchmetrics' preds>0 mask keeps every pair
    target = torch.from_numpy(labels[:nq, None] == labels[None, :])[not_self]
    indexes = torch.arange(nq).unsqueeze(1).expand(nq, N)[not_self]

    def ours_mean(key):
        v = ours.per_query[f"{level}/{key}"][:nq]
        return float(np.nanmean(v))

    for k in (1, 5, 10):
        hr = RetrievalHitRate(top_k=k, empty_target_action="skip")(preds, target, indexes=indexes)
        pr = RetrievalPrecision(top_k=k, empty_target_action="skip")(preds, target, indexes=indexes)
        assert ours_mean(f"Recall@{k}") == pytest.approx(hr.item(), abs=1e-6)
        assert ours_mean(f"Prec@{k}[std]") == pytest.approx(pr.item(), abs=1e-6)
    rp = RetrievalRPrecision(empty_target_action="skip")(preds, target, indexes=indexes)
    assert ours_mean("R-precision[pml]") == pytest.approx(rp.item(), abs=1e-6)


# --- classic AP@k (ml_metrics.apk definition, transcribed) ---------------------------------------------
def apk(actual, predicted, k):
    predicted = predicted[:k]
    score, hits = 0.0, 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            hits += 1.0
            score += hits / (i + 1.0)
    return score / min(len(actual), k)


def test_min_k_r_equals_classic_apk(data, ours):
    x, cat, pid = data
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")
    for level, labels in (("coarse", cat), ("fine", pid)):
        for k in (5, 10):
            vals = []
            for q in range(N):
                actual = {j for j in range(N) if j != q and labels[j] == labels[q]}
                if actual:
                    vals.append(apk(actual, list(order[q]), k))
            assert ours.metrics[f"{level}/mAP@{k}[min_k_r]"] == pytest.approx(np.mean(vals), abs=1e-9)
