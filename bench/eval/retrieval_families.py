"""One function per retrieval metric family, each computed from the same ranked lists.

A family function takes a :class:`RankedBlock` (one chunk of queries of one label set, ranked
once by :func:`bench.eval.retrieval.retrieval_metrics`), the cut-offs ``ks`` and ``put(name, values)``,
which stores per-query values of the metric ``name`` (e.g. ``mAP@5[m5product]``) for the block's
queries; it returns counts to add to the label set's tallies. NaN marks a query the family does not
score (lone queries, R == 0, outside the official m5product definition).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

Put = Callable[[str, np.ndarray], None]


@dataclass
class RankedBlock:
    """Ranked lists of one chunk of queries under one label set.

    ``rel`` [n, w] bool: rank i holds a positive; ``hits`` / ``sap`` [n, w] float64: ``H@i`` and
    ``S@i`` (sum of ``H@j / j`` over hit ranks j <= i); ``r``: positives excluding the query
    (``R``); ``p_size``: the official positive set including the query (``|P|``); ``list_len``:
    the official list length (top ``max_topk`` with the query, the query removed)."""

    rel: torch.Tensor
    hits: torch.Tensor
    sap: torch.Tensor
    r: torch.Tensor
    p_size: torch.Tensor
    list_len: torch.Tensor
    max_topk: int

    @property
    def positive(self) -> torch.Tensor:
        return self.r > 0


def m5product(b: RankedBlock, ks: Sequence[int], put: Put) -> dict[str, int]:
    """``mAP@K[m5product]`` and ``Prec@K[m5product]``: the official script's definition."""
    empty = 0
    for k in ks:
        kp = torch.minimum(torch.minimum(b.p_size, b.list_len), torch.tensor(k))
        ok = kp > 0
        at = torch.clamp(kp - 1, min=0).unsqueeze(1)
        hk = b.hits.gather(1, at).squeeze(1)
        sk = b.sap.gather(1, at).squeeze(1)
        prec = torch.where(ok, hk / torch.clamp(kp, min=1).double(), 0.0)
        ap = torch.where(ok & (hk > 0), sk / torch.clamp(hk, min=1.0), 0.0)
        put(f"mAP@{k}[m5product]", ap.numpy())
        put(f"Prec@{k}[m5product]", prec.numpy())
        if k == ks[0]:
            empty = int((~ok).sum())
    return {"m5product_short_lists": int((b.list_len < b.max_topk).sum()), "m5product_empty_lists": empty}


def pml(b: RankedBlock, ks: Sequence[int], put: Put) -> dict[str, int]:
    """``mAP@R[pml]`` and ``R-precision[pml]`` (pytorch-metric-learning)."""
    at_r = torch.clamp(b.r - 1, min=0).unsqueeze(1)
    h_r = b.hits.gather(1, at_r).squeeze(1)
    s_r = b.sap.gather(1, at_r).squeeze(1)
    rr = torch.clamp(b.r.to(torch.float64), min=1.0)
    put("mAP@R[pml]", torch.where(b.positive, s_r / rr, torch.nan).numpy())
    put("R-precision[pml]", torch.where(b.positive, h_r / rr, torch.nan).numpy())
    return {}


def recall(b: RankedBlock, ks: Sequence[int], put: Put) -> dict[str, int]:
    """``Recall@K``: 1 if a positive is in the top K."""
    for k in ks:
        put(f"Recall@{k}", torch.where(b.positive, (b.hits[:, k - 1] > 0).double(), torch.nan).numpy())
    return {}


def std_precision(b: RankedBlock, ks: Sequence[int], put: Put) -> dict[str, int]:
    """``Prec@K[std]`` = H@K / K."""
    for k in ks:
        put(f"Prec@{k}[std]", torch.where(b.positive, b.hits[:, k - 1] / k, torch.nan).numpy())
    return {}


def min_k_r(b: RankedBlock, ks: Sequence[int], put: Put) -> dict[str, int]:
    """``mAP@K[min_k_r]`` = S@K / min(K, R) (classic IR AP@K)."""
    rf = b.r.to(torch.float64)
    for k in ks:
        denom = torch.clamp(torch.minimum(rf, torch.tensor(float(k))), min=1.0)
        put(f"mAP@{k}[min_k_r]", torch.where(b.positive, b.sap[:, k - 1] / denom, torch.nan).numpy())
    return {}
