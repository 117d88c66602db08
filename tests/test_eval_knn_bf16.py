"""The ``bf16`` kNN path: its error bound against float64 on adversarial data, and its lists on ties, random,
clustered and raw embeddings, under both re-scorings: the float32 matmul (lists equal the float32 paths'
bit for bit) and one dot product per pair with faiss (lists the exact top-k under those scores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from knn_helpers import assert_same_as_torch

from bench.eval import select
from bench.eval.knn import GallerySearcher

KS = (1, 5, 17, 40)


def _pairs_scored_alike() -> bool:
    """Whether this BLAS gives a matmul entry the same bits whatever other rows and columns share the call
    (what makes ``bf16``'s re-scored lists equal ``select``'s bit for bit)."""
    rng = np.random.default_rng(11)
    q = torch.from_numpy(rng.normal(size=(40, 64)).astype(np.float32))
    g = torch.from_numpy(rng.normal(size=(3000, 64)).astype(np.float32))
    cols = torch.from_numpy(np.sort(rng.choice(3000, 200, replace=False)))
    return torch.equal((q @ g.T)[:4, cols], q[:4] @ g[cols].T)


_MODE: dict[str, str] = {}


@pytest.fixture(autouse=True, params=["matmul", "pairs"])
def rescoring(request, monkeypatch):
    """Every test runs under both re-scorings of the candidates."""
    if request.param == "matmul":
        if not _pairs_scored_alike():
            pytest.skip("this BLAS scores a pair differently by call shape")
        monkeypatch.setattr(select, "pair_dots", lambda: None)
    elif select.pair_dots() is None:
        pytest.skip("pair-by-pair re-scoring needs faiss")
    _MODE["now"] = request.param
    return request.param


def _pair_scores(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Every (query, gallery) score by the pair-by-pair re-scoring's own dot product."""
    fn, ptr = select.pair_dots()
    q, g = np.ascontiguousarray(query.numpy()), np.ascontiguousarray(gallery.numpy())
    ids = np.tile(np.arange(len(g), dtype=np.int64), (len(q), 1))
    out = np.empty(ids.shape, dtype=np.float32)
    fn(ptr(out), ptr(q), ptr(g), ptr(ids), q.shape[1], len(q), len(g))
    return torch.from_numpy(out)


def _exact_lists(scores: torch.Tensor, k: int, self_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k of full score rows by (score desc, column asc), own column excluded, and the own scores."""
    s = scores.clone()
    own = torch.nonzero(self_index >= 0).flatten()
    self_score = torch.full((len(s),), float("nan"))
    self_score[own] = s[own, self_index[own]]
    s[own, self_index[own]] = float("-inf")
    order = np.lexsort((np.broadcast_to(np.arange(s.shape[1]), s.shape), -s.numpy()), axis=1)[:, :k]
    index = torch.from_numpy(order.copy())
    score = s.gather(1, index)
    return torch.where(torch.isinf(score) & (score < 0), -1, index), score, self_score


def _assert_bf16_same(query: torch.Tensor, gallery: torch.Tensor, k: int, self_index: torch.Tensor) -> None:
    """matmul: bf16's lists equal torch's bit for bit. pairs: each row's list (index, score, own score) is
    exactly the top-k under the pair scores, or, for rows bf16 scores by the float32 matmul itself (blocks
    of 1-3 rows, near-constant rows), exactly torch's."""
    if _MODE["now"] == "matmul":
        assert_same_as_torch("bf16", query, gallery, k, self_index)
        return
    k = max(1, min(k, len(gallery)))
    got = GallerySearcher(gallery, backend="bf16").search(query, k, self_index)
    want_p = _exact_lists(_pair_scores(query, gallery), k, self_index)
    want_t = GallerySearcher(gallery, backend="torch").search(query, k, self_index)
    want_t = (want_t.index, want_t.score, want_t.self_score)
    for r in range(len(query)):
        row = (got.index[r], got.score[r], got.self_score[r : r + 1].nan_to_num(-7.0))
        assert any(torch.equal(row[0], w[0][r]) and torch.equal(row[1], w[1][r])
                   and torch.equal(row[2], w[2][r : r + 1].nan_to_num(-7.0)) for w in (want_p, want_t)), (r, k)


def _k_equals_r(gallery: torch.Tensor, labels: np.ndarray, self_index: np.ndarray) -> None:
    r = np.bincount(labels)[labels[self_index]] - 1
    for k in np.unique(r[r > 0]):
        rows = np.flatnonzero(r == k)
        _assert_bf16_same(gallery[self_index[rows]], gallery, int(k), torch.from_numpy(self_index[rows]))


@pytest.fixture(params=["as_shipped", "always_rescored"])
def rescore_all(request, monkeypatch):
    """Ties cover the whole row: as shipped those rows take the float32 matmul; forced, they are re-scored."""
    if request.param == "always_rescored":
        monkeypatch.setattr(select, "_MAX_CANDIDATE_FRACTION", 1.0)


@pytest.mark.parametrize("n", [600, 20_000])
def test_bf16_on_constant_embeddings(n, rescore_all):
    g = torch.ones(n, 4)
    self_index = torch.tensor([-1, 0, 7, n - 1, n // 2])
    for k in KS:
        _assert_bf16_same(torch.ones(5, 4), g, k, self_index)
    _k_equals_r(g, np.arange(n) % 3, np.array([0, 1, 5, n - 1]))


@pytest.mark.parametrize("n", [600, 20_000])
def test_bf16_on_exact_duplicates_in_scrambled_order(n, rescore_all):
    rng = np.random.default_rng(7)
    base = rng.normal(size=(30, 8)).astype(np.float32)
    labels = rng.integers(0, 30, n)
    g = torch.from_numpy(base[labels])
    for k in KS:
        _assert_bf16_same(torch.from_numpy(base[:12]), g, k, torch.full((12,), -1))
        _assert_bf16_same(g[:12], g, k, torch.arange(12))
    _k_equals_r(g, labels, rng.choice(n, 16, replace=False))


def _clustered(rng, n: int, d: int, unit: bool) -> torch.Tensor:
    centres = rng.normal(size=(40, d))
    x = centres[rng.integers(0, 40, n)] + 2.5 * rng.normal(size=(n, d))
    if unit:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    else:  # raw embeddings: norms spread over three orders of magnitude, up to ~1e5
        x *= 10.0 ** rng.uniform(0, 3, (n, 1)) * 3
    return torch.from_numpy(x.astype(np.float32))


@pytest.mark.parametrize("kind", ["random", "clustered", "raw_clustered", "raw_random"])
def test_bf16_equals_float32_path(kind):
    rng = np.random.default_rng(5)
    n, d = 6000, 48
    if kind == "random":
        g = torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32))
    elif kind == "raw_random":
        g = torch.from_numpy((rng.normal(size=(n, d)) * 1e4).astype(np.float32))
    else:
        g = _clustered(rng, n, d, unit=kind == "clustered")
    n_q = 2 * 320 + 13  # two full score blocks and a short one
    self_index = torch.from_numpy(rng.integers(-1, n, n_q))
    queries = torch.cat([g[: n_q // 2], torch.from_numpy(rng.normal(size=(n_q - n_q // 2, d)).astype(np.float32))
                         * g.norm(dim=1).mean()])
    for k in (1, 10, 150, n - 1, n):
        _assert_bf16_same(queries, g, k, self_index)
    for rows in (slice(0, 3), slice(3, 9)):  # blocks smaller than a re-scoring group
        _assert_bf16_same(queries[rows], g, 25, self_index[rows])


def test_bf16_rows_too_large_for_bf16_take_the_float32_path():
    rng = np.random.default_rng(6)
    g = torch.from_numpy(rng.normal(size=(500, 8)).astype(np.float32))
    big = g * 1e25  # scores ~1e51: beyond bf16's range
    _assert_bf16_same(big[:20], g, 7, torch.arange(20))
    _assert_bf16_same(g[:20], big, 7, torch.arange(20))


def _adversarial(d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose bf16 rounding errors add up instead of cancelling, plus wide ranges and subnormals."""
    just_below_half = 1.0 + 2.0**-8 - 2.0**-20  # rounds down to 1 by almost half a bf16 ulp
    rng = np.random.default_rng(9)
    rows = [np.full(d, just_below_half), -np.full(d, just_below_half), np.full(d, 1.0 + 2.0**-8 + 2.0**-20),
            rng.normal(size=d) * 10.0 ** rng.uniform(-25, 12, d),  # 37 orders of magnitude in one row
            np.full(d, 1e-39),  # bf16 subnormals: the bf16 kernel flushes them to zero
            np.full(d, 1e14), rng.normal(size=d), np.where(np.arange(d) % 2, 1.0, -1.0) * just_below_half]
    x = torch.from_numpy(np.array(rows, dtype=np.float32))
    return x, torch.cat([x, x * 3.3, -x * 1e2])


@pytest.mark.parametrize("d", [3, 256, 1024])
def test_bf16_error_bound_holds_against_float64(d):
    q, g = _adversarial(d)
    qr, gr = select.bf16_rows(q), select.bf16_rows(g)
    assert select.bf16_applicable(qr) and select.bf16_applicable(gr)
    low = (qr.low @ gr.low.T).double()
    f32 = (q @ g.T).double()
    exact = q.double() @ g.double().T
    e = torch.from_numpy(select.bf16_error(qr, gr)).unsqueeze(1)
    bound = e + select._BF16_C * low.abs()
    assert torch.isfinite(low).all() and torch.isfinite(bound).all()
    assert (low - f32).abs().le(bound).all()
    assert (low - exact).abs().le(bound).all()
    # input rounding errors that add up attain the bound's input part: it is not loose where it matters
    one = select.bf16_rows(q[:1])
    err = ((one.low @ one.low.T).double() - q[:1].double() @ q[:1].double().T).abs().item()
    assert err > 0.9 * select.bf16_error(one, one)[0]


@pytest.mark.parametrize("d", [1, 3, 256, 1024])
def test_float32_norm_bounds_hold_against_float64(d):
    # the norms of the error bound come from float32 arithmetic: each must stay at or above the exact norm,
    # also for subnormal entries (whose squares underflow) and entries spanning many orders of magnitude
    q, g = _adversarial(d)
    rows = torch.cat([q, g, torch.full((1, d), 1.5e-45), torch.zeros(1, d)])
    exact = rows.double().norm(dim=1).numpy()
    bound = select._norm_upper(rows)
    assert (bound >= exact).all()
    normal = exact > 1e-18  # away from underflow the bound is within float32 rounding of the norm
    assert (bound[normal] <= exact[normal] * (1 + 1e-4)).all()
    r = select.bf16_rows(rows, step=3)  # in row steps, as for a large gallery
    low = r.low.double()
    assert (r.resid >= (rows.double() - low).norm(dim=1).numpy()).all()
    assert (r.norm_low >= low.norm(dim=1).numpy()).all()
    assert np.array_equal(r.amax_low, low.abs().amax(dim=1).numpy())


def test_bf16_candidates_reach_the_float32_kth_score():
    # on raw clustered data, every column at or above the float32 k-th score is a candidate
    rng = np.random.default_rng(8)
    g = _clustered(rng, 4000, 32, unit=False)
    q = g[:64]
    qr, gr = select.bf16_rows(q), select.bf16_rows(g)
    sims = qr.low @ gr.low.T
    k = 50
    theta = select._kth_largest(sims, k).double().numpy()
    floor = select._candidate_floor(theta, select.bf16_error(qr, gr))
    flat, counts = select._bf16_candidates(sims.view(torch.int16).numpy(), floor)
    kth32 = (q @ g.T).topk(k, dim=1).values[:, -1:]
    needed = torch.nonzero((q @ g.T) >= kth32).numpy()
    assert set(map(tuple, needed)) <= set(zip(*np.divmod(flat, 4000)))
    assert counts.min() >= k


def test_bf16_floor_bits_compare_like_the_floats():
    vals = torch.tensor([-np.inf, -3e38, -1.0, -1e-40, -0.0, 0.0, 1e-40, 0.5, 1.0, 2.0, 3e38, np.inf]).bfloat16()
    bits = vals.view(torch.int16).numpy()[None, :].repeat(9, axis=0)
    tau = np.array([-np.inf, -1.5, -1.0, -1e-41, 0.0, 1e-41, 0.7, 1.0, 3e38])
    flat, counts = select._bf16_candidates(bits, tau)
    got = np.zeros(bits.shape, dtype=bool)
    got.reshape(-1)[flat] = True
    want = vals.float().numpy()[None, :] >= tau[:, None]
    assert (got >= want).all()  # a superset: every value at or above its floor
    v = np.broadcast_to(vals.float().numpy()[None, :], got.shape)
    extra = got & ~want  # only values within the bf16 rounding of the floor below it
    assert (v[extra] >= np.broadcast_to(tau[:, None] - np.maximum(np.abs(tau[:, None]) * 2.0**-7, 2.0**-132),
                                        got.shape)[extra]).all()
    assert extra.sum() <= 4


def test_bf16_floor_keeps_every_entry_at_or_above_it():
    # a caller's floor (the k-th score of lists it already holds) may drop the entries below it, never one
    # at or above it; ties at the floor stay, and rows whose floor is -inf are searched in full
    rng = np.random.default_rng(12)
    g = _clustered(rng, 5000, 32, unit=True)
    q, k, self_index = g[:300], 60, torch.arange(300)
    full = GallerySearcher(g, backend="bf16").search(q, k, self_index)
    floor = full.score[:, k // 2].clone()
    floor[::7] = float("-inf")
    floor[1] = full.score[1, -1] + 1.0  # above every score: nothing wanted
    got = GallerySearcher(g, backend="bf16").search(q, k, self_index, floor)
    wanted = full.score >= floor.unsqueeze(1)  # these stay where they were; below the floor, some may go
    assert torch.equal(full.index[wanted], got.index[wanted]) and torch.equal(full.score[wanted], got.score[wanted])
    below = ~wanted & (got.index >= 0)  # what is still returned below the floor is genuine and below it
    assert bool((got.score[below] < floor.unsqueeze(1).expand_as(got.score)[below]).all())
    exact = (q @ g.T).gather(1, got.index.clamp(min=0))
    assert torch.allclose(got.score[below], exact[below], rtol=1e-5, atol=1e-6)
    assert bool(torch.isinf(got.score[~wanted & (got.index < 0)]).all())
    assert torch.equal(got.index[::7], full.index[::7])
    assert torch.equal(full.self_score, got.self_score)
    assert int((got.index >= 0).sum()) < int((full.index >= 0).sum())  # entries below the floor were skipped
