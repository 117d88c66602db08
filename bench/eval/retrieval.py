"""Retrieval metrics (coarse = same category, fine = same product) from one chunked kNN pass.

Every metric key names its definition; :data:`DEFINITIONS` describes each tag. All values are
fractions in [0, 1] (tables multiply by 100 for the paper's percentages). Notation per query:
ranked list = gallery by descending score, the query's own gallery row removed, ties by lower
gallery index; ``rel_i`` = rank-i item has the query's label; ``R`` = gallery items with the
query's label, the query's own row not counted; ``H@i`` = hits in the first i; ``S@i`` = sum of
``H@j / j`` over the hit ranks j <= i.

* ``[m5product]`` -- the official M5Product/SCALE script (``retrieval_unit_id_list_v2.py`` +
  ``evaluate_unit_v2.py``), exactly: the ranked list is the top ``max_topk`` (10) of the whole
  gallery *including* the query, then the query is removed (so 9 items when the query ranks itself
  in its top 10); the positive set P includes the query itself (|P| = R + 1 when the query is a
  gallery row); ``k' = min(K, |P|, |list|)``; ``Prec@K = H@k'/k'``; ``mAP@K = S@k'/H@k'`` (0 with
  no hit). Averaged over *all* queries (a lone query scores 0, as in the official loop). mAP@1 == Prec@1.
* ``[pml]`` -- pytorch-metric-learning AccuracyCalculator: ``mAP@R = S@R/R``, ``R-precision = H@R/R``.
* ``[min_k_r]`` -- classic AP@K: ``S@K / min(K, R)``; 1.0 only for a perfect top-min(K, R).
* ``[std]`` -- ``Prec@K = H@K / K``.
* ``Recall@K`` -- 1 if ``H@K > 0`` (at least one positive in the top K), else 0.

Lone queries (R == 0) are excluded from every non-m5product metric (the PML policy) and counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.eval import metrics as metric_families
from bench.eval.gallery_stream import StreamedGallerySearcher
from bench.eval.knn import GallerySearcher, choose_chunk_size, first_nonfinite_row
from bench.eval.knn_choice import auto_choice
from bench.eval.labels import as_label_array, remap_labels
from bench.eval.retrieval_families import RankedBlock
from bench.eval.select import rescoring

SCALE = "fraction"

#: The definition text of each built-in retrieval family (the registry, :mod:`bench.eval.metrics`, holds them).
DEFINITIONS: dict[str, str] = {f.name: f.definition for f in metric_families.retrieval_families()}


def _to_float_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
    else:
        arr = np.ascontiguousarray(np.asarray(x))
        if not arr.flags.writeable:  # e.g. memory-mapped or npz-backed arrays; torch wants writable memory
            arr = arr.copy()
        t = torch.from_numpy(arr)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (rows x dim) array, got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise ValueError(f"{name} must be numeric, got dtype {t.dtype}")
    t = t.to(torch.float32).contiguous()
    bad = first_nonfinite_row(t)
    if bad is not None:
        raise ValueError(f"{name} has a non-finite value (NaN/inf) in row {bad}")
    return t


@dataclass
class RetrievalResult:
    """Means (``metrics``), query counts, the definitions used, and optional per-query values."""

    metrics: dict[str, float]
    counts: dict[str, int]
    definitions: dict[str, Any]
    per_query: dict[str, np.ndarray] = field(default_factory=dict)


def retrieval_metrics(
    query: Any,
    gallery: Any,
    label_sets: Mapping[str, tuple[Any, Any] | tuple[Any, Any, Any]],
    *,
    query_gallery_index: Any | None = None,
    ks: Sequence[int] = (1, 5, 10),
    max_topk: int = 10,
    normalize: bool = False,
    backend: str = "auto",
    mem_budget_bytes: int = 256 << 20,
    per_query: bool = False,
    positive_counts: Mapping[str, Any] | None = None,
    stream_gallery: bool | None = None,
) -> RetrievalResult:
    """Score query embeddings against a gallery under every registered retrieval metric family
    (:func:`bench.eval.metrics.retrieval_families`; the built-ins are :data:`DEFINITIONS`): one kNN
    pass ranks each query once, and each family's function reads the same ranked lists.

    Args:
        query: (Q, d) numpy or torch float embeddings.
        gallery: (G, d) embeddings.
        label_sets: name -> ``(query_labels, gallery_labels)`` or ``(query_labels, gallery_labels,
            query_mask)``; labels are any hashables (remapped jointly), ``query_mask`` (bool, length Q)
            selects the queries scored under that name (default all). One kNN pass serves all sets.
        query_gallery_index: (Q,) int, the gallery row of each query or -1; that row is never
            retrieved for the query (leave-one-out). The row's label must equal the query's label.
        ks: cut-offs K.
        max_topk: length of the official script's ranked list before the query is removed.
        normalize: L2-normalise both sides (cosine) instead of the raw dot product.
        backend: kNN search: ``"auto"`` (select, bf16 or faiss, whichever a cached timing found
            fastest on this machine), ``"select"``, ``"bf16"``, ``"torch"`` or ``"faiss"``; all apply
            the tie rule to exact ties, select and torch give identical lists, bf16 and faiss may
            differ on last-bit near-ties (:mod:`bench.eval.knn`). The resolved name and how it was chosen are recorded in the
            definitions.
        mem_budget_bytes: bound on the chunk x gallery score block.
        per_query: also return per-query values (NaN where a query is not scored).
        positive_counts: name -> (Q,) ints, the size of each query's positive set P under
            ``[m5product]`` where it is counted in a ground-truth file rather than in the gallery
            (the official code counts every listing with the query's label there, the query
            included); default: gallery positives plus the query's own row.
        stream_gallery: read the gallery in row blocks (:mod:`bench.eval.gallery_stream`) instead of
            holding a float32 copy; default: when the gallery is a ``np.memmap``. Same lists either way.

    Returns:
        :class:`RetrievalResult` with keys like ``coarse/mAP@10[m5product]``, ``fine/mAP@R[pml]``,
        ``coarse/Recall@5``; counts ``<set>/queries``, ``<set>/lone_queries``, ``<set>/scored_queries``.

    Raises:
        ValueError: on shape, dtype, non-finite values, bad indices or inconsistent labels.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if max_topk < 1:
        raise ValueError("max_topk must be >= 1")
    q = _to_float_tensor(query, "query embeddings")
    # a memory-mapped gallery is read in row blocks from its file, never copied whole (gallery_stream)
    streamed = isinstance(gallery, np.memmap) if stream_gallery is None else bool(stream_gallery)
    if streamed:  # np.asarray would turn a memmap into a plain view of its mapping: keep the memmap
        g = gallery if isinstance(gallery, np.ndarray) else np.asarray(gallery)
    else:
        g = _to_float_tensor(gallery, "gallery embeddings")
    if g.ndim != 2:
        raise ValueError(f"gallery embeddings must be a 2-d (rows x dim) array, got shape {tuple(g.shape)}")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} != gallery dim {g.shape[1]}")
    n_q, n_g = q.shape[0], g.shape[0]
    if n_g == 0:
        raise ValueError("the gallery is empty")
    if normalize:
        q = torch.nn.functional.normalize(q, dim=1)
        if not streamed:
            g = torch.nn.functional.normalize(g, dim=1)

    if query_gallery_index is None:
        qgi = np.full(n_q, -1, dtype=np.int64)
    else:
        qgi = as_label_array(query_gallery_index, "query_gallery_index")
        if len(qgi) != n_q or not np.issubdtype(qgi.dtype, np.integer):
            raise ValueError(f"query_gallery_index must be {n_q} integers (gallery row or -1)")
        qgi = qgi.astype(np.int64)
        if (qgi < -1).any() or (qgi >= n_g).any():
            raise ValueError(f"query_gallery_index out of range [-1, {n_g})")
    has_self = qgi >= 0

    # --- labels: codes, R, |P| and the per-query work K -------------------------------------------
    sets: list[dict[str, Any]] = []
    for name, spec in label_sets.items():
        if len(spec) not in (2, 3):
            raise ValueError(f"label set {name!r} must be (query_labels, gallery_labels[, query_mask])")
        q_lab, g_lab = remap_labels(spec[0], spec[1], names=[f"{name} query labels", f"{name} gallery labels"])
        if len(q_lab) != n_q or len(g_lab) != n_g:
            raise ValueError(f"{name}: got {len(q_lab)} query / {len(g_lab)} gallery labels for {n_q} / {n_g} rows")
        mask = np.ones(n_q, dtype=bool) if len(spec) == 2 or spec[2] is None else np.asarray(spec[2], dtype=bool)
        if mask.shape != (n_q,):
            raise ValueError(f"{name}: query_mask must have {n_q} booleans")
        if (has_self & (g_lab[np.maximum(qgi, 0)] != q_lab)).any():
            bad = int(np.flatnonzero(has_self & (g_lab[np.maximum(qgi, 0)] != q_lab))[0])
            raise ValueError(f"{name}: query {bad} has a different label from its own gallery row {qgi[bad]}")
        counts = np.bincount(g_lab, minlength=int(max(q_lab.max(initial=0), g_lab.max(initial=0))) + 1)
        r = counts[q_lab] - has_self.astype(np.int64)
        p_size = r + has_self
        if positive_counts is not None and positive_counts.get(name) is not None:
            p_size = np.asarray(positive_counts[name]).astype(np.int64)
            if p_size.shape != (n_q,) or (p_size < 0).any():
                raise ValueError(f"{name}: positive_counts must be {n_q} non-negative integers")
        sets.append({"name": name, "q": torch.from_numpy(q_lab), "g": torch.from_numpy(g_lab), "mask": mask,
                     "R": r, "P": p_size})
    base_k = max(max(ks), max_topk)
    active = np.zeros(n_q, dtype=bool)
    need = np.full(n_q, base_k, dtype=np.int64)
    for s in sets:
        active |= s["mask"]
        need = np.where(s["mask"], np.maximum(need, s["R"]), need)
    n_avail = n_g - has_self.astype(np.int64)  # candidates left once the query's own row is removed
    need = np.minimum(need, np.maximum(n_avail, 1))

    width = base_k  # padded list width: cut-offs beyond the gallery size read the last cumulative value
    families = metric_families.retrieval_families()
    names = [n for f in families for n in f.names()] + [n for k in ks for f in families for n in f.names(k)]
    vals: dict[str, np.ndarray] = {}
    for s in sets:  # every key exists even when a set has no scored query (its mean is then NaN)
        for key in [f"{s['name']}/{m}" for m in names]:
            vals[key] = np.full(n_q, np.nan)
    tallies = {s["name"]: {t: 0 for f in families for t in f.tallies} for s in sets}

    order = np.flatnonzero(active)
    order = order[np.argsort(need[order], kind="stable")]  # chunks of similar K keep topk cheap
    choice = auto_choice() if backend == "auto" else {"backend": backend, "reason": "requested"}
    if streamed:
        searcher: Any = StreamedGallerySearcher(g, backend=backend, mem_budget_bytes=mem_budget_bytes,
                                                normalize=normalize)
    else:
        searcher = GallerySearcher(g, backend=backend, mem_budget_bytes=mem_budget_bytes)
    backend = searcher.backend
    block = searcher.block_rows if streamed else n_g  # the score block is query chunk x (gallery block)
    chunk = choose_chunk_size(block, int(need[order].max()) if len(order) else base_k, mem_budget_bytes,
                              score_block=searcher.needs_score_block)
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        nb = searcher.search(q[torch.from_numpy(rows)], int(need[rows].max()), torch.from_numpy(qgi[rows]))
        list_len = _official_list_length(nb, qgi[rows], has_self[rows], n_avail[rows], max_topk)
        for s in sets:
            in_set = s["mask"][rows]
            if not in_set.any():
                continue
            rows_s = rows[in_set]
            block = _ranked_block(nb, s, rows_s, torch.from_numpy(np.flatnonzero(in_set)), list_len, width, max_topk)

            def put(metric: str, values: np.ndarray, name: str = s["name"], rows_s: np.ndarray = rows_s) -> None:
                vals.setdefault(f"{name}/{metric}", np.full(n_q, np.nan))[rows_s] = values

            for fam in families:
                for t, n in fam.compute()(block, ks, put).items():
                    tallies[s["name"]][t] += n

    metrics: dict[str, float] = {}
    counts: dict[str, int] = {}
    for s in sets:
        name, mask = s["name"], s["mask"]
        lone = mask & (s["R"] == 0)
        counts[f"{name}/queries"] = int(mask.sum())
        counts[f"{name}/lone_queries"] = int(lone.sum())
        counts[f"{name}/scored_queries"] = int((mask & ~lone).sum())
        counts.update({f"{name}/{t}": n for t, n in tallies[name].items()})
        keys = sorted(k for k in vals if k.startswith(name + "/"))
        for key in _ordered(keys, ks):
            v = vals[key][mask]
            v = v[~np.isnan(v)]
            metrics[key] = float(v.mean()) if len(v) else float("nan")
    definitions: dict[str, Any] = {f.name: f.definition for f in families}
    definitions["_settings"] = {
        "scale": SCALE,
        "similarity": "cosine (L2-normalised dot product)" if normalize else "raw dot product",
        "ks": list(ks),
        "max_topk": max_topk,
        "ties": "descending score, then lower gallery index",
        "self_exclusion": "a query never retrieves its own gallery row (query_gallery_index)",
        "lone_queries": "R == 0: excluded from pml/min_k_r/std/Recall, counted; scored 0 under m5product",
        "knn_backend": backend,
        "knn_backend_choice": choice,
        "dtype": "float32 scores, float64 sums",
    }
    if backend == "bf16":  # what its float32 re-scoring is (pair by pair with faiss, the matmul without)
        definitions["_settings"]["knn_rescoring"] = rescoring()
    if streamed:  # recorded only when used: in-memory results keep their settings unchanged
        how = "file reads" if searcher.blocks.reads_file else "slices of the array"
        definitions["_settings"]["gallery_read"] = f"row blocks of {searcher.block_rows} ({how})"
    per = {k: v for k, v in vals.items()} if per_query else {}
    return RetrievalResult(metrics=metrics, counts=counts, definitions=definitions, per_query=per)


def _official_list_length(nb: Any, qgi: np.ndarray, has_self: np.ndarray, n_avail: np.ndarray,
                          max_topk: int) -> torch.Tensor:
    """The official script's list length: top ``max_topk`` incl. the query, minus the query if it made the cut."""
    idx, score = nb.index, nb.score
    valid = idx >= 0
    t = min(max_topk, idx.shape[1])
    s_self = nb.self_score.unsqueeze(1)
    self_idx = torch.from_numpy(qgi).unsqueeze(1)
    before = ((score[:, :t] > s_self) | ((score[:, :t] == s_self) & (idx[:, :t] < self_idx))) & valid[:, :t]
    self_in_top = torch.from_numpy(has_self) & (before.sum(dim=1) < max_topk)
    list_len = torch.where(self_in_top, max_topk - 1, max_topk)
    return torch.minimum(list_len, torch.from_numpy(n_avail))


def _ranked_block(nb: Any, s: dict[str, Any], rows_s: np.ndarray, sel: torch.Tensor, list_len: torch.Tensor,
                  width: int, max_topk: int) -> RankedBlock:
    """The ranked lists of label set ``s`` for the chunk's queries ``rows_s`` (chunk positions ``sel``)."""
    idx, valid = nb.index, nb.index >= 0
    kk = idx.shape[1]
    w = max(width, kk)
    qi = s["q"][torch.from_numpy(rows_s)]
    rel = (s["g"][idx[sel].clamp(min=0)] == qi.unsqueeze(1)) & valid[sel]
    if w > kk:
        rel = torch.cat([rel, torch.zeros(len(sel), w - kk, dtype=torch.bool)], dim=1)
    hits = rel.cumsum(dim=1).to(torch.float64)
    ranks = torch.arange(1, w + 1, dtype=torch.float64)
    sap = (hits / ranks * rel).cumsum(dim=1)  # S@i
    return RankedBlock(rel, hits, sap, torch.from_numpy(s["R"][rows_s]), torch.from_numpy(s["P"][rows_s]),
                       list_len[sel], max_topk)


def _ordered(keys: list[str], ks: Sequence[int]) -> list[str]:
    """A readable key order: m5product first, then the standard definitions, each by K."""
    def rank(key: str) -> tuple:
        metric = key.split("/", 1)[1]
        fam = 0 if "[m5product]" in metric else 1 if "[pml]" in metric else 2
        base, _, rest = metric.partition("@")
        cut = rest.split("[")[0]
        return (fam, base, int(cut) if cut.isdigit() else 10**9, metric)
    return sorted(keys, key=rank)
