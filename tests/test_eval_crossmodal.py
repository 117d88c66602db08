"""Cross-modal and per-modality retrieval (bench.eval.crossmodal), cross-checked against torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.eval.crossmodal import crossmodal_metrics


def _data(n=120, d=8, seed=0):
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, 4, n)
    prod = cat * 100 + rng.integers(0, 30, n)  # some products have several listings, some one
    base = rng.normal(size=(n, d))
    per = {"T": (base + rng.normal(size=(n, d))).astype(np.float32),
           "I": (base + rng.normal(size=(n, d))).astype(np.float32)}
    present = {"T": np.ones(n, bool), "I": rng.random(n) > 0.2}
    return per, present, cat, prod


def _reference(q, g, q_lab, g_lab, same):
    """torchmetrics on the full score matrix (one row per query), plus mAP@R by its formula."""
    from torchmetrics.retrieval import (
        RetrievalHitRate,
        RetrievalMRR,
        RetrievalRPrecision,
    )

    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    s = qn.astype(np.float64) @ gn.astype(np.float64).T + 2.0  # torchmetrics drops targets with score <= 0
    target = q_lab[:, None] == g_lab[None, :]
    keep = np.ones_like(target)
    if same:
        np.fill_diagonal(keep, False)  # leave-one-out
    has_pos = (target & keep).any(axis=1)
    out = {}
    rows = np.flatnonzero(has_pos)
    preds = torch.cat([torch.from_numpy(s[i][keep[i]]) for i in rows])
    tgt = torch.cat([torch.from_numpy(target[i][keep[i]]) for i in rows])
    idx = torch.cat([torch.full((int(keep[i].sum()),), j) for j, i in enumerate(rows)])
    for k in (1, 5, 10):
        out[f"Recall@{k}[cos]"] = float(RetrievalHitRate(top_k=k)(preds, tgt, indexes=idx))
    out["MRR[cos]"] = float(RetrievalMRR()(preds, tgt, indexes=idx))
    out["R-precision[pml/cos]"] = float(RetrievalRPrecision()(preds, tgt, indexes=idx))
    aps = []
    for i in rows:
        order = np.argsort(-s[i][keep[i]], kind="stable")
        rel = target[i][keep[i]][order]
        r = int(rel.sum())
        hits = np.cumsum(rel[:r])
        aps.append(float((hits / np.arange(1, r + 1) * rel[:r]).sum() / r))
    out["mAP@R[pml/cos]"] = float(np.mean(aps))
    return out, int((~has_pos).sum())


@pytest.mark.parametrize("qm, gm", [("T", "I"), ("I", "T"), ("T", "T"), ("I", "I")])
def test_matches_torchmetrics(qm, gm):
    per, present, cat, prod = _data()
    res = crossmodal_metrics(per, present, cat, prod, knn_backend="select")
    both = present[qm] & present[gm]
    for level, lab in (("instance", prod), ("category", cat)):
        want, lone = _reference(per[qm][both], per[gm][both], lab[both], lab[both], qm == gm)
        for name, v in want.items():
            got = res["metrics"][f"xmodal/{qm}->{gm}/{level}/{name}"]
            assert got == pytest.approx(v, abs=1e-6), (level, name)
        assert res["counts"][f"xmodal/{qm}->{gm}/{level}/lone_queries"] == lone
    assert res["counts"][f"xmodal/{qm}->{gm}/listings"] == int(both.sum())
    assert res["counts"][f"xmodal/{qm}->{gm}/missing_gallery"] == int((~present[gm]).sum())


def test_own_listing_is_a_positive_and_ties_break_by_index():
    # identical T and I vectors: each caption's own image scores 1.0 -> perfect instance retrieval
    x = np.eye(4, dtype=np.float32)
    res = crossmodal_metrics({"T": x, "I": x}, {}, [0, 0, 1, 1], [0, 1, 2, 3], pairs=[("T", "I")], knn_backend="select")
    m = res["metrics"]
    assert m["xmodal/T->I/instance/Recall@1[cos]"] == 1.0 and m["xmodal/T->I/instance/MRR[cos]"] == 1.0
    # constant vectors: every score ties, so the ranking is gallery order and query i finds itself at rank i+1
    c = np.ones((4, 2), dtype=np.float32)
    m = crossmodal_metrics({"T": c, "I": c}, {}, [0, 0, 1, 1], [0, 1, 2, 3], pairs=[("T", "I")], knn_backend="select")["metrics"]
    assert m["xmodal/T->I/instance/MRR[cos]"] == pytest.approx(np.mean([1, 1 / 2, 1 / 3, 1 / 4]))
    assert m["xmodal/T->I/instance/Recall@1[cos]"] == 0.25


def test_missing_modality_and_width_mismatch_are_counted():
    per, present, cat, prod = _data(n=40)
    per["A"] = np.zeros((40, 3), dtype=np.float32)
    res = crossmodal_metrics(per, present, cat, prod, pairs=[("T", "I"), ("T", "A")], knn_backend="select")
    assert "xmodal/T->A" in res["skipped"] and "widths differ" in res["skipped"]["xmodal/T->A"]
    assert res["counts"]["xmodal/T->I/missing_gallery"] == int((~present["I"]).sum())
    assert not any(k.startswith("xmodal/T->A/instance") for k in res["metrics"])
    with pytest.raises(ValueError, match="no vectors for modality 'V'"):
        crossmodal_metrics(per, present, cat, prod, pairs=[("T", "V")])
