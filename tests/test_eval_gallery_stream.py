"""A gallery read in row blocks from a memory-mapped file gives the same neighbours and metrics as in RAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.eval.gallery_stream import RowBlocks, StreamedGallerySearcher
from bench.eval.knn import GallerySearcher
from bench.eval.retrieval import retrieval_metrics


def _memmap(tmp_path, x: np.ndarray, name: str = "g.npy") -> np.memmap:
    path = tmp_path / name
    np.save(path, x)
    return np.load(path, mmap_mode="r")


def _data(n_g: int = 700, n_q: int = 90, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    # coarse values (multiples of 1/4) make exact score ties common, also across block boundaries
    g = (rng.integers(-2, 3, (n_g, dim)) / 4).astype(np.float32)
    g[300:340] = g[5]  # a run of duplicates straddling blocks of 64 rows
    q = np.concatenate([g[:40], (rng.integers(-2, 3, (n_q - 40, dim)) / 4).astype(np.float32)])
    qgi = np.concatenate([np.arange(40), np.full(n_q - 40, -1)])
    return q, g, qgi


@pytest.mark.parametrize("backend", ["select", "torch", "faiss", "bf16"])
@pytest.mark.parametrize("k", [1, 7, 50, 130])
def test_streamed_search_equals_whole_gallery(tmp_path, backend, k):
    q, g, qgi = _data()
    mm = _memmap(tmp_path, g)
    whole = GallerySearcher(torch.from_numpy(g), backend=backend).search(
        torch.from_numpy(q), k, torch.from_numpy(qgi))
    streamed = StreamedGallerySearcher(mm, backend=backend, block_rows=64).search(
        torch.from_numpy(q), k, torch.from_numpy(qgi))
    assert torch.equal(whole.index, streamed.index)
    assert torch.equal(whole.score, streamed.score)
    assert torch.equal(whole.self_score.isnan(), streamed.self_score.isnan())
    assert torch.equal(whole.self_score.nan_to_num(), streamed.self_score.nan_to_num())


def test_row_blocks_read_the_file_not_the_mapping(tmp_path):
    x = np.arange(50 * 3, dtype=np.float16).reshape(50, 3)
    mm = _memmap(tmp_path, x)
    blocks = RowBlocks(mm, 16)
    assert blocks._raw is not None  # a whole memmap is read with file reads into one buffer
    got = np.concatenate([t.numpy().copy() for _, t in blocks])
    assert got.dtype == np.float32 and np.array_equal(got, x.astype(np.float32))
    view = RowBlocks(mm[10:], 16)  # a view of a memmap has no exact file offset: sliced instead
    assert view._raw is None
    assert np.array_equal(np.concatenate([t.numpy().copy() for _, t in view]), x[10:].astype(np.float32))


@pytest.mark.parametrize("normalize", [False, True])
def test_retrieval_metrics_on_memmap_match_in_memory(tmp_path, monkeypatch, normalize):
    from bench.eval import gallery_stream

    monkeypatch.setattr(gallery_stream, "BLOCK_BYTES", 64 * 16 * 4)  # blocks of 64 rows
    q, g, qgi = _data(seed=1)
    rng = np.random.default_rng(2)
    cat = rng.integers(0, 6, len(g))
    pid = rng.integers(0, 40, len(g))
    cat[300:340] = cat[5]
    pid[300:340] = pid[5]
    q_cat, q_pid = cat[:len(q)].copy(), pid[:len(q)].copy()
    q_cat[40:] = rng.integers(0, 7, len(q) - 40)  # one label with no gallery row: lone queries
    q_pid[40:] = rng.integers(0, 40, len(q) - 40)
    sets = {"coarse": (q_cat, cat), "fine": (q_pid, pid)}
    kw = {"query_gallery_index": qgi, "normalize": normalize, "backend": "select", "per_query": True}
    ref = retrieval_metrics(q, g, sets, **kw)
    got = retrieval_metrics(q, _memmap(tmp_path, g), sets, **kw)
    # the memmap itself reaches the reader (not a plain view of its mapping, which would stay resident)
    assert got.definitions["_settings"]["gallery_read"] == "row blocks of 64 (file reads)"
    assert "gallery_read" not in ref.definitions["_settings"]
    assert got.counts == ref.counts
    assert got.metrics.keys() == ref.metrics.keys()
    for key, val in ref.metrics.items():
        assert got.metrics[key] == pytest.approx(val, abs=1e-12, nan_ok=True), key
    for key, val in ref.per_query.items():
        np.testing.assert_array_equal(got.per_query[key], val)


def test_streamed_gallery_refuses_non_finite_rows(tmp_path):
    q, g, _ = _data()
    g[333, 2] = np.nan
    with pytest.raises(ValueError, match="row 333"):
        retrieval_metrics(q, _memmap(tmp_path, g), {"c": (np.zeros(len(q)), np.zeros(len(g)))}, backend="select")
