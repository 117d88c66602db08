"""The two scoring rules every retrieval metric is reported under, and the hubness diagnostic.

* raw dot product -- what the released M5Product code ranks by; a metric's plain name
  (``coarse/mAP@1[m5product]``) is this rule.
* cosine -- the same metric on L2-normalised embeddings, named with ``/cos`` inside the tag
  (``coarse/mAP@1[m5product/cos]``; ``coarse/Recall@1[cos]`` for untagged names). Under a raw dot
  product a few long vectors can become everyone's nearest neighbour, so a ranking of models on
  raw scores can measure vector norms rather than what the embeddings hold; cosine removes that.

Hubness: under a degenerate scoring, a handful of gallery items are the top-1 neighbour of most
queries. :func:`hubness` measures it from each query's top-1 neighbour.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: A result whose 10 most frequent top-1 neighbours answer more than this share of its queries is
#: flagged degenerate: its ranking says more about a few gallery vectors than about the queries.
DEGENERATE_TOP10_SHARE = 0.5
#: How many of the most frequent top-1 neighbours :func:`hubness` counts.
HUBS = 10


def cos_name(name: str) -> str:
    """``coarse/mAP@1[m5product]`` -> ``coarse/mAP@1[m5product/cos]``; ``coarse/Recall@1`` -> ``coarse/Recall@1[cos]``."""
    if name.endswith("]") and "[" in name:
        return name[:-1] + "/cos]"
    return name + "[cos]"


def cos_definitions(definitions: dict[str, Any]) -> dict[str, str]:
    """One ``<tag>/cos`` definition per text definition of the raw rule."""
    out = {f"{tag}/cos": f"{text} -- on L2-normalised embeddings (cosine similarity)"
           for tag, text in definitions.items() if isinstance(text, str) and not tag.startswith("_")}
    out["cos"] = "the untagged metric (e.g. Recall@K) on L2-normalised embeddings (cosine similarity)"
    return out


@torch.no_grad()
def top1_neighbours(query: np.ndarray, gallery: np.ndarray, query_gallery_index: np.ndarray, *,
                    normalize: bool, chunk: int = 1024) -> np.ndarray:
    """Each query's highest-scoring gallery row (its own row excluded; ties: lower index)."""
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    g = torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32))
    if normalize:
        q, g = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)
    out = np.empty(len(q), dtype=np.int64)
    for s in range(0, len(q), chunk):
        scores = q[s:s + chunk] @ g.T
        own = torch.from_numpy(query_gallery_index[s:s + chunk])
        rows = torch.nonzero(own >= 0).squeeze(1)
        scores[rows, own[rows]] = -torch.inf
        out[s:s + chunk] = scores.argmax(dim=1).numpy()  # argmax returns the first maximum: the lower index
    return out


def hubness(top1: np.ndarray) -> dict[str, Any]:
    """``top10_share``: share of queries whose top-1 neighbour is one of the ``HUBS`` most frequent
    top-1 items; ``distinct_top1``: how many gallery items are anyone's top-1; ``degenerate``:
    ``top10_share > DEGENERATE_TOP10_SHARE``."""
    if not len(top1):
        return {"queries": 0, "top10_share": None, "distinct_top1": 0, "degenerate": False}
    _, counts = np.unique(top1, return_counts=True)
    share = float(np.sort(counts)[::-1][:HUBS].sum() / len(top1))
    return {"queries": int(len(top1)), "top10_share": share, "distinct_top1": int(len(counts)),
            "degenerate": share > DEGENERATE_TOP10_SHARE}
