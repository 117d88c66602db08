"""The default kNN core (``select``) against the exact torch path: identical lists, scores and self scores."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
import torch
from knn_helpers import assert_same_as_torch

from bench.eval import select
from bench.eval.knn import GallerySearcher, choose_chunk_size, resolve_backend
from bench.eval.retrieval import retrieval_metrics

KS = (1, 5, 17, 40)


def _assert_same(query: torch.Tensor, gallery: torch.Tensor, k: int, self_index: torch.Tensor,
                 default: bool = True) -> None:
    """select == torch bit for bit; the default (auto: select, bf16 or faiss, as timed here) == torch on
    the lists where scores tie exactly (bf16 and faiss may order last-bit near-ties differently)."""
    assert_same_as_torch("select", query, gallery, k, self_index)
    if not default:
        return
    a = GallerySearcher(gallery, backend="torch").search(query, k, self_index)
    for backend in ("auto", "faiss", "bf16"):  # whichever auto picked here, every candidate is checked
        c = GallerySearcher(gallery, backend=backend).search(query, k, self_index)
        assert torch.equal(a.index, c.index), (backend, k)
        torch.testing.assert_close(c.score, a.score)  # faiss' BLAS / bf16's pair dots may differ in the last bit


def _k_equals_r(gallery: torch.Tensor, labels: np.ndarray, self_index: np.ndarray) -> None:
    """k = R per query (R = its positives, own row excluded): one search per distinct R, as retrieval does."""
    r = np.bincount(labels)[labels[self_index]] - 1
    for k in np.unique(r[r > 0]):
        rows = np.flatnonzero(r == k)
        _assert_same(gallery[self_index[rows]], gallery, int(k), torch.from_numpy(self_index[rows]))


@pytest.mark.parametrize("n", [600, 20_000])  # below and above the width where the sample uses segments
def test_default_on_constant_embeddings(n):
    g = torch.ones(n, 4)
    self_index = torch.tensor([-1, 0, 7, n - 1, n // 2])
    for k in KS:
        _assert_same(torch.ones(5, 4), g, k, self_index)
    labels = np.arange(n) % 3  # all ties: the first R rows of the gallery are retrieved, not R positives
    _k_equals_r(g, labels, np.array([0, 1, 5, n - 1]))


@pytest.mark.parametrize("n", [600, 20_000])
def test_default_on_exact_duplicates_in_scrambled_order(n):
    rng = np.random.default_rng(7)
    base = rng.normal(size=(30, 8)).astype(np.float32)
    labels = rng.integers(0, 30, n)
    g = torch.from_numpy(base[labels])  # each base vector repeated ~n/30 times, scattered over the gallery
    queries = torch.from_numpy(base[:12])
    for k in KS:
        _assert_same(queries, g, k, torch.full((12,), -1))
        _assert_same(g[:12], g, k, torch.arange(12))
    _k_equals_r(g, labels, rng.choice(n, 16, replace=False))


def test_select_equals_torch_on_random_data_and_k_up_to_the_gallery():
    rng = np.random.default_rng(1)
    g = torch.from_numpy(rng.normal(size=(300, 16)).astype(np.float32))
    self_index = torch.from_numpy(rng.integers(-1, 300, 40))
    for k in (1, 10, 150, 299, 300):  # k = 300 with the own row excluded: -1 at the end
        _assert_same(g[:40], g, k, self_index, default=False)
    nb = GallerySearcher(g, backend="select").search(g[:3], 300, torch.tensor([0, 1, 2]))
    assert (nb.index[:, -1] == -1).all() and (nb.index[:, :-1] >= 0).all()


def test_rows_the_sample_misjudges_are_redone_exactly(monkeypatch):
    # the sampled columns (one in four) hold the 200 highest scores: the sample's threshold keeps fewer
    # than k columns, so those rows must fall back to their exact k-th score
    n, k = 800, 40
    row = torch.rand(n)
    row[::4] += 10.0
    scores = torch.stack([row, row.flip(0), torch.zeros(n)])  # a misjudged row, a fine one, all ties
    thr = select.sample_threshold(scores, k)
    assert thr is not None and ((scores >= thr[:, None]).sum(dim=1) < k)[0]
    calls: list[int] = []
    real = select._kth_largest

    def spy(s, kk):
        calls.append(s.shape[0])
        return real(s, kk)

    monkeypatch.setattr(select, "_kth_largest", spy)
    index, score = select.select_topk(scores, k)
    assert calls and calls[0] >= 1
    ref_score, _ = scores.sort(dim=1, descending=True, stable=True)
    ref_index = scores.sort(dim=1, descending=True, stable=True).indices
    assert torch.equal(index, ref_index[:, :k]) and torch.equal(score, ref_score[:, :k])
    assert index[2].tolist() == list(range(k))  # ties: lower column first


def test_score_buffer_is_reused_and_grows():
    rng = np.random.default_rng(2)
    g = torch.from_numpy(rng.normal(size=(500, 8)).astype(np.float32))
    s = GallerySearcher(g, backend="select")
    ref = GallerySearcher(g, backend="torch")
    for rows in (slice(0, 10), slice(10, 60), slice(60, 65)):
        q, si = g[rows], torch.arange(500)[rows]
        a, b = ref.search(q, 7, si), s.search(q, 7, si)
        assert torch.equal(a.index, b.index) and torch.equal(a.score, b.score)
    assert s._buffer is not None and s._buffer.shape == (50, 500)


def test_chunks_wider_than_one_score_block_match_torch():
    # select scores a chunk in row blocks of _SELECT_ROWS; the torch path scores it in one matmul
    from bench.eval.knn import _SELECT_ROWS

    rng = np.random.default_rng(3)
    g = torch.from_numpy(rng.normal(size=(2000, 64)).astype(np.float32))
    n_q = 2 * _SELECT_ROWS + 17
    _assert_same(g[:n_q], g, 25, torch.arange(n_q), default=False)


def test_select_chunks_are_sized_by_the_score_block():
    g = torch.zeros(1000, 4)
    assert GallerySearcher(g, backend="select").needs_score_block
    assert not GallerySearcher(g, backend="faiss").needs_score_block
    assert choose_chunk_size(1000, 10, 4000 * 8 + 64 * 11 * 8) == 8


def test_auto_is_timed_once_cached_and_recorded(monkeypatch, tmp_path):
    from bench.eval import knn_choice

    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path))
    monkeypatch.setattr(knn_choice, "_memo", {})
    timings = iter([{"select": 1.0, "faiss": 0.5}])
    monkeypatch.setattr(knn_choice, "_time_backends", lambda: next(timings))  # a second timing would raise
    assert resolve_backend("auto") == "faiss"
    monkeypatch.setattr(knn_choice, "_memo", {})  # a new process: reads the cache, does not time again
    assert resolve_backend("auto") == "faiss"
    cached = json.loads((tmp_path / "knn_backend.json").read_text())
    assert cached[knn_choice.machine_key()]["seconds"] == {"select": 1.0, "faiss": 0.5}
    x = np.eye(4, dtype=np.float32)
    res = retrieval_metrics(x, x, {"c": ([0, 0, 1, 1], [0, 0, 1, 1])}, query_gallery_index=np.arange(4))
    assert res.definitions["_settings"]["knn_backend"] == "faiss"
    assert res.definitions["_settings"]["knn_backend_choice"]["seconds"]["faiss"] == 0.5
    with pytest.raises(ValueError, match="unknown knn backend 'fais'"):
        resolve_backend("fais")


def test_auto_keeps_select_unless_faiss_is_clearly_faster(monkeypatch, tmp_path):
    from bench.eval import knn_choice

    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path))
    monkeypatch.setattr(knn_choice, "_memo", {})
    monkeypatch.setattr(knn_choice, "_time_backends", lambda: {"select": 1.0, "faiss": 0.97})  # within noise
    assert resolve_backend("auto") == "select"


def test_auto_is_select_or_bf16_without_faiss(monkeypatch, tmp_path):
    from bench.eval import knn_choice

    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path))
    monkeypatch.setattr(knn_choice, "_memo", {})
    monkeypatch.setattr(knn_choice, "_JOB", {"queries": 64, "gallery": 3000, "dim": 16, "k": 50})
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("no faiss here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    assert resolve_backend("auto") in ("select", "bf16")
    assert "faiss" not in knn_choice.auto_choice()["seconds"]
    GallerySearcher(torch.eye(4), backend="auto").search(torch.eye(2, 4), 2, torch.tensor([0, 1]))


def test_the_timing_runs_every_backend_on_a_small_job(monkeypatch):
    from bench.eval import knn_choice

    monkeypatch.setattr(knn_choice, "_JOB", {"queries": 64, "gallery": 3000, "dim": 16, "k": 50})
    seconds = knn_choice._time_backends()
    assert set(seconds) == {"select", "faiss", "bf16"} and all(v >= 0 for v in seconds.values())


@pytest.mark.parametrize(("rescoring", "error"), [("matmul", "last_bit"), ("pairs", "missed_neighbour")])
def test_the_timing_leaves_out_a_bf16_path_whose_lists_differ(monkeypatch, rescoring, error):
    from bench.eval import knn_choice, select
    from bench.eval.knn import GallerySearcher as Searcher

    if rescoring == "matmul":  # must equal select's lists bit for bit: one bit off is caught
        monkeypatch.setattr(select, "pair_dots", lambda: None)
    elif select.pair_dots() is None:
        pytest.skip("pair-by-pair re-scoring needs faiss")
    monkeypatch.setattr(knn_choice, "_JOB", {"queries": 64, "gallery": 3000, "dim": 16, "k": 50})
    real = Searcher._search_bf16

    def wrong(self, query, k, self_index, floor=None):
        nb = real(self, query, k, self_index, floor)
        if error == "last_bit":
            nb.score[0, 0] = torch.nextafter(nb.score[0, 0], torch.tensor(0.0))
        else:  # pairs may differ in the last bits, not by a neighbour left out of the candidates
            nb.index[0, 3:-1], nb.score[0, 3:-1] = nb.index[0, 4:].clone(), nb.score[0, 4:].clone()
        return nb

    monkeypatch.setattr(Searcher, "_search_bf16", wrong)
    assert set(knn_choice._time_backends()) == {"select", "faiss"}


def test_the_timing_keeps_a_pair_rescored_bf16_path_that_agrees(monkeypatch):
    from bench.eval import knn_choice, select

    if select.pair_dots() is None:
        pytest.skip("pair-by-pair re-scoring needs faiss")
    monkeypatch.setattr(knn_choice, "_JOB", {"queries": 64, "gallery": 3000, "dim": 16, "k": 50})
    assert set(knn_choice._time_backends()) == {"select", "faiss", "bf16"}


def test_auto_picks_the_fastest_clearly_faster_backend():
    from bench.eval.knn_choice import pick

    assert pick({"select": 1.0, "faiss": 0.9, "bf16": 0.7}) == "bf16"
    assert pick({"select": 1.0, "faiss": 0.6, "bf16": 0.7}) == "faiss"
    assert pick({"select": 1.0, "faiss": 1.2, "bf16": 0.97}) == "select"  # within noise
    assert pick({"select": 1.0}) == "select"


def test_retrieval_metrics_identical_for_select_and_torch():
    rng = np.random.default_rng(4)
    cc = rng.normal(size=(10, 32))
    cat = rng.integers(0, 10, 500)
    pid = rng.integers(0, 80, 500)
    x = (cc[cat] + rng.normal(size=(500, 32))).astype(np.float32)
    labels = {"c": (cat, cat), "f": (pid, pid)}
    a = retrieval_metrics(x, x, labels, query_gallery_index=np.arange(500), backend="torch", per_query=True)
    b = retrieval_metrics(x, x, labels, query_gallery_index=np.arange(500), backend="select", per_query=True,
                          mem_budget_bytes=500 * 4 * 37)  # many small chunks: the buffer is reused
    assert a.metrics == b.metrics
    for key, v in a.per_query.items():
        np.testing.assert_array_equal(v, b.per_query[key])


def test_tied_rows_are_sorted_a_few_rows_at_a_time(monkeypatch):
    # a constant block ties every column: candidates are sorted in row groups under the limit
    monkeypatch.setattr(select, "_SORT_ELEMS", 2500)
    sizes: list[int] = []
    real = select._sort_candidates

    def spy(block, flat, counts, k):
        sizes.append(int(counts.sum()))
        return real(block, flat, counts, k)

    monkeypatch.setattr(select, "_sort_candidates", spy)
    scores = torch.zeros(7, 1000)
    scores[3, 500] = 1.0
    index, score = select.select_topk(scores, 5)
    assert max(sizes) <= 2500 and len(sizes) >= 3
    assert index[0].tolist() == [0, 1, 2, 3, 4] and index[3].tolist() == [500, 0, 1, 2, 3]
    assert score[3].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
