"""Cross-modal (text -> image, ...) and per-modality (image -> image, ...) retrieval between the
per-modality vectors of the evaluation listings.

For an ordered pair Q -> G, every listing holding both modalities is a query (its Q vector) and a
gallery item (its G vector). Scores are cosine similarities (L2-normalised dot products), the
field's norm for cross-modal retrieval, so metric names carry ``cos``. Ranking: descending score,
then lower gallery index (the rest of the evaluator's rule, :mod:`bench.eval.knn`).

Positives, two levels:

* ``instance``: the same product. For Q != G the query's own listing IS a positive (its G vector is in
  the gallery, as the paired image is for a caption in text-to-image retrieval), and so are the other
  listings of the same product.
* ``category``: the same category (own listing included likewise).

For Q == G (per-modality retrieval) the query's own row is its own vector and is removed from its
ranking (leave-one-out, as in :mod:`bench.eval.retrieval`); a query left without positives (a lone
query) is excluded from the means and counted.

Metric keys: ``xmodal/<Q>-><G>/<level>/<metric>``, e.g. ``xmodal/T->I/instance/Recall@1[cos]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from bench.eval import retrieval
from bench.eval.labels import as_label_array, remap_labels
from bench.eval.retrieval import SCALE

LEVELS = ("instance", "category")

DEFINITIONS: dict[str, str] = {
    "xmodal": (
        "retrieval from the query modality's vectors to the gallery modality's vectors of the evaluation "
        "listings holding both; cosine similarity (L2-normalised dot product); ranked by descending score, "
        "then lower gallery index; instance = same product, category = same category; for Q != G the "
        "query's own listing is a positive (R counts it), for Q == G the query's own row is removed and "
        "lone queries (R == 0) are excluded and counted"
    ),
    "xmodal/Recall@K[cos]": "1 if at least one positive is in the top K, else 0 (torchmetrics RetrievalHitRate, "
                            "not RetrievalRecall, which is the share of positives found)",
    "xmodal/MRR[cos]": "1 / rank of the first positive in the full ranking (torchmetrics RetrievalMRR)",
    "xmodal/mAP@R[pml/cos]": "(1/R) sum_{hit i<=R} hits@i/i, R = positives in the gallery (pytorch-metric-learning)",
    "xmodal/R-precision[pml/cos]": "hits@R / R (torchmetrics RetrievalRPrecision)",
}


def default_pairs(modalities: Iterable[str]) -> list[tuple[str, str]]:
    """Every ordered pair of the given modality codes, the same-modality pairs included."""
    mods = list(modalities)
    return [(q, g) for q in mods for g in mods]


def _first_positive_rank(q: torch.Tensor, g: torch.Tensor, q_lab: np.ndarray, g_lab: np.ndarray,
                         self_index: np.ndarray, mem_budget_bytes: int) -> np.ndarray:
    """Rank (1-based) of each query's first positive under the tie rule; 0 where it has none.

    Counting, not sorting: rank = 1 + items scoring above the best positive + equal-scoring items at a
    lower gallery index; O(chunk x gallery) memory, one matmul per chunk."""
    n_q, n_g = len(q), len(g)
    out = np.zeros(n_q, dtype=np.int64)
    chunk = max(1, min(n_q, mem_budget_bytes // max(1, 12 * n_g)))
    gl = torch.from_numpy(g_lab)
    cols = torch.arange(n_g)
    for s in range(0, n_q, chunk):
        sc = q[s:s + chunk] @ g.T
        own = torch.from_numpy(self_index[s:s + chunk])
        rows = torch.nonzero(own >= 0).flatten()
        sc[rows, own[rows]] = -torch.inf  # leave-one-out: the own row ranks nowhere
        pos = gl.unsqueeze(0) == torch.from_numpy(q_lab[s:s + chunk]).unsqueeze(1)
        pos[rows, own[rows]] = False
        best = torch.where(pos, sc, torch.tensor(-torch.inf)).max(dim=1).values
        at_best = pos & (sc == best.unsqueeze(1))
        first = torch.where(at_best, cols, n_g).min(dim=1).values  # lowest index among the best positives
        above = (sc > best.unsqueeze(1)) | ((sc == best.unsqueeze(1)) & (cols.unsqueeze(0) < first.unsqueeze(1)))
        rank = above.sum(dim=1) + 1
        out[s:s + chunk] = torch.where(pos.any(dim=1), rank, 0).numpy()
    return out


def crossmodal_metrics(
    per_modality: Mapping[str, Any],
    present: Mapping[str, Any],
    category: Any,
    product: Any,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    knn_backend: str = "auto",
    mem_budget_bytes: int = 256 << 20,
) -> dict[str, Any]:
    """Instance- and category-level retrieval for every ordered modality pair.

    Args:
        per_modality: modality code -> (N, d) vectors of the N evaluation listings (rows of an absent
            modality may hold anything; they are never read into a score).
        present: modality code -> (N,) bool, whether the listing has that modality.
        category, product: (N,) labels, any hashables.
        pairs: ordered (query, gallery) codes; default :func:`default_pairs` of ``per_modality``.
        ks: Recall@K cut-offs.
        knn_backend, mem_budget_bytes: as in :func:`bench.eval.retrieval.retrieval_metrics`.

    Returns:
        ``{"metrics": {name: float}, "counts": {name: int}, "definitions": {...}, "skipped": {pair: why}}``.
        Counts per direction: ``.../listings`` (holding both), ``.../missing_query`` and
        ``.../missing_gallery`` (listings left out for lack of the query / gallery modality), and per
        level ``queries``, ``lone_queries``, ``scored_queries``.

    Raises:
        ValueError: unknown modality in ``pairs``, a mask or label of the wrong length.
    """
    cat = as_label_array(category, "category")
    pid = as_label_array(product, "product")
    n = len(cat)
    if len(pid) != n:
        raise ValueError(f"product has {len(pid)} entries, category {n}")
    pairs = list(pairs) if pairs is not None else default_pairs(per_modality)
    vecs: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for m in sorted({c for p in pairs for c in p}):
        if m not in per_modality:
            raise ValueError(f"no vectors for modality {m!r} (have: {', '.join(per_modality) or 'none'})")
        v = np.asarray(per_modality[m])
        mask = np.asarray(present[m], dtype=bool) if m in present else np.ones(n, dtype=bool)
        if v.ndim != 2 or len(v) != n or mask.shape != (n,):
            raise ValueError(f"modality {m!r}: vectors {v.shape} and mask {mask.shape} need {n} rows")
        vecs[m], masks[m] = v, mask

    metrics: dict[str, float] = {}
    counts: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for qm, gm in pairs:
        name = f"xmodal/{qm}->{gm}"
        rows = np.flatnonzero(masks[qm] & masks[gm])
        counts[f"{name}/listings"] = len(rows)
        counts[f"{name}/missing_query"] = int((~masks[qm]).sum())
        counts[f"{name}/missing_gallery"] = int((~masks[gm]).sum())
        if vecs[qm].shape[1] != vecs[gm].shape[1]:
            skipped[name] = f"vector widths differ ({vecs[qm].shape[1]} vs {vecs[gm].shape[1]}): not one space"
            continue
        if not len(rows):
            skipped[name] = "no listing holds both modalities"
            continue
        res = _direction(vecs[qm][rows], vecs[gm][rows], cat[rows], pid[rows], same=qm == gm, ks=ks,
                         knn_backend=knn_backend, mem_budget_bytes=mem_budget_bytes)
        metrics.update({f"{name}/{k}": v for k, v in res["metrics"].items()})
        counts.update({f"{name}/{k}": v for k, v in res["counts"].items()})
    definitions: dict[str, Any] = dict(DEFINITIONS, scale=SCALE, ks=sorted({int(k) for k in ks}))
    return {"metrics": metrics, "counts": counts, "definitions": definitions, "skipped": skipped}


def _direction(qx: np.ndarray, gx: np.ndarray, cat: np.ndarray, pid: np.ndarray, *, same: bool,
               ks: Sequence[int], knn_backend: str, mem_budget_bytes: int) -> dict[str, Any]:
    """One Q -> G direction over listings holding both modalities (row i of both is listing i)."""
    q = torch.nn.functional.normalize(retrieval._to_float_tensor(qx, "query vectors"), dim=1)
    g = torch.nn.functional.normalize(retrieval._to_float_tensor(gx, "gallery vectors"), dim=1)
    n = len(q)
    self_index = np.arange(n, dtype=np.int64) if same else np.full(n, -1, dtype=np.int64)
    labels = {"instance": pid, "category": cat}
    # One kNN pass (the evaluator's core) gives Recall@K, mAP@R and R-precision for both levels;
    # normalize=False because q and g are normalised above.
    res = retrieval.retrieval_metrics(q, g, {lvl: (lab, lab) for lvl, lab in labels.items()},
                                      query_gallery_index=self_index, ks=ks, normalize=False,
                                      backend=knn_backend, mem_budget_bytes=mem_budget_bytes)
    metrics: dict[str, float] = {}
    counts: dict[str, int] = {}
    for lvl, lab in labels.items():
        for k in sorted({int(k) for k in ks}):
            metrics[f"{lvl}/Recall@{k}[cos]"] = res.metrics[f"{lvl}/Recall@{k}"]
        codes = remap_labels(lab, names=[f"{lvl} labels"])[0]
        first = _first_positive_rank(q, g, codes, codes, self_index, mem_budget_bytes)
        scored = first > 0
        metrics[f"{lvl}/MRR[cos]"] = float((1.0 / first[scored]).mean()) if scored.any() else float("nan")
        metrics[f"{lvl}/mAP@R[pml/cos]"] = res.metrics[f"{lvl}/mAP@R[pml]"]
        metrics[f"{lvl}/R-precision[pml/cos]"] = res.metrics[f"{lvl}/R-precision[pml]"]
        for c in ("queries", "lone_queries", "scored_queries"):
            counts[f"{lvl}/{c}"] = res.counts[f"{lvl}/{c}"]
    return {"metrics": metrics, "counts": counts}
