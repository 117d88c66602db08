"""Retrieval where each task ranks its own query set against its own gallery.

The official protocol gives coarse and fine-grained retrieval different galleries (coarse: a
separate gallery list; fine: leave-one-out within the fine query set) and counts each task's
positive set P in a ground-truth file. :func:`score_tasks` runs one kNN pass per distinct gallery
(tasks that share a gallery share the pass, so with one gallery for both tasks it is exactly the
single pass :func:`bench.eval.suite.evaluate` makes) and returns what ``evaluate`` puts in its result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.eval import retrieval, scoring


def score_tasks(
    x: np.ndarray,
    labels: Mapping[str, np.ndarray],
    queries: Mapping[str, np.ndarray],
    galleries: Mapping[str, np.ndarray],
    positives: Mapping[str, np.ndarray | None],
    *,
    normalize: bool,
    cosine_too: bool,
    ks: Sequence[int],
    max_topk: int,
    backend: str,
    mem_budget_bytes: int,
    per_query: Sequence[str] = (),
) -> dict[str, Any]:
    """Score every task (``coarse``, ``fine``) on its own gallery, under both scoring rules.

    Args:
        x: (N, d) float32 embeddings.
        labels / queries / galleries: task -> (N,) labels, query mask, gallery mask. A query that
            is a gallery row never retrieves itself.
        positives: task -> (N,) |P| per row under ``[m5product]`` (read at the task's query rows),
            or None for the gallery's own count.
        per_query: metric names whose per-query values to return, over the union of query rows.

    Returns:
        ``{"metrics", "counts", "definitions", "hubness", "per_query"}`` (``per_query`` empty unless asked).
    """
    n = len(x)
    tasks = [t for t in labels if queries[t].any()]
    all_q = np.zeros(n, dtype=bool)
    for t in labels:
        all_q |= queries[t]
    q_all = np.flatnonzero(all_q)
    groups: dict[bytes, list[str]] = {}
    for t in tasks:
        groups.setdefault(np.packbits(galleries[t]).tobytes(), []).append(t)
    if groups:
        # A task with no query rides along in a pass that runs anyway (its mask selects nothing), so
        # its metric names exist with no value, as in the single shared pass, and the result says why.
        next(iter(groups.values())).extend(t for t in labels if t not in tasks)

    rules = [("cos" if normalize else "raw", normalize, lambda k: k)]
    if cosine_too and not normalize:
        rules.append(("cos", True, scoring.cos_name))
    out: dict[str, Any] = {"metrics": {}, "counts": {}, "definitions": {}, "hubness": {}, "per_query": {}}
    if per_query:
        out["per_query"]["_query_rows"] = q_all.astype(np.int64)
    for t in labels:  # a task with no query still reports its count
        if t not in tasks:
            out["counts"][f"{t}/queries"] = 0
    for members in groups.values():
        gal = galleries[members[0]]
        g_rows = np.flatnonzero(gal)
        if not len(g_rows):
            for t in members:
                out["counts"][f"{t}/queries"] = int(queries[t].sum())
            continue
        mask = np.zeros(n, dtype=bool)
        for t in members:
            mask |= queries[t]
        q_rows = np.flatnonzero(mask)
        pos_in_gallery = np.full(n, -1, dtype=np.int64)
        pos_in_gallery[g_rows] = np.arange(len(g_rows))
        sets = {t: (labels[t][q_rows], labels[t][g_rows], queries[t][q_rows]) for t in members}
        pc = {t: positives[t][q_rows] for t in members if positives.get(t) is not None}
        for i, (rule, norm, rename) in enumerate(rules):
            res = retrieval.retrieval_metrics(
                x[q_rows], x[g_rows], sets, query_gallery_index=pos_in_gallery[q_rows], ks=ks, max_topk=max_topk,
                normalize=norm, backend=backend, mem_budget_bytes=mem_budget_bytes, per_query=bool(per_query),
                positive_counts=pc or None)
            out["metrics"].update({rename(k): v for k, v in res.metrics.items()})
            if per_query:
                at = np.searchsorted(q_all, q_rows)
                for k, v in res.per_query.items():
                    if rename(k) in per_query:
                        full = out["per_query"].setdefault(rename(k), np.full(len(q_all), np.nan, dtype=np.float32))
                        full[at] = v.astype(np.float32)
            settings = res.definitions.pop("_settings")
            if i == 0:
                out["counts"].update(res.counts)
                out["definitions"].update(res.definitions)
                out["definitions"].setdefault("retrieval_settings", settings)
            else:
                out["definitions"].update(scoring.cos_definitions(res.definitions))
            if "coarse" in members:
                cq = queries["coarse"][q_rows]
                top1 = scoring.top1_neighbours(x[q_rows][cq], x[g_rows], pos_in_gallery[q_rows][cq], normalize=norm)
                out["hubness"][rule] = scoring.hubness(top1)
    return out
