"""Shared assertion of the kNN tests: a backend's lists equal the exact torch path's, bit for bit."""

from __future__ import annotations

import torch

from bench.eval.knn import GallerySearcher


def assert_same_as_torch(backend: str, query: torch.Tensor, gallery: torch.Tensor, k: int,
                         self_index: torch.Tensor) -> None:
    """``backend``'s index, score and self-score lists equal the torch path's exactly (NaN == NaN)."""
    a = GallerySearcher(gallery, backend="torch").search(query, k, self_index)
    b = GallerySearcher(gallery, backend=backend).search(query, k, self_index)
    assert torch.equal(a.index, b.index), (backend, k)
    assert torch.equal(a.score, b.score), (backend, k)
    assert torch.equal(a.self_score.isnan(), b.self_score.isnan())
    assert torch.equal(a.self_score.nan_to_num(), b.self_score.nan_to_num())
