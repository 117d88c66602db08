"""Exact top-k search of query chunks against a gallery, with a deterministic tie rule.

Scores are dot products in float32 (the official M5Product script ranks by the raw dot product;
callers L2-normalise first for cosine). Memory is O(chunk x gallery): the full query x gallery
matrix is never built.

Order of a returned list: descending score, and among equal scores the lower gallery index first
(the order Python's stable ``sorted(..., reverse=True)`` / ``heapq.nlargest`` gives, which is what
the official script uses). Every backend applies this rule to exact ties, also at the top-k boundary.

Backends:

* ``select``: one chunk x gallery float32 matmul into a reused buffer, then
  :func:`bench.eval.select.select_topk` (a sampled per-row threshold, one comparison pass, an exact
  sort of the survivors, about 2 x k of them). Its cost is the matmul plus a few memory-bound
  passes whatever k is, so it does not hinge on one CPU's heap speed. Same scores as ``torch``,
  bit for bit.
* ``bf16``: the chunk x gallery matmul in bfloat16 (half the float32 matmul's time or less on CPUs
  with bf16 dot-product instructions), then :func:`bench.eval.select.select_topk_bf16`: a rigorous
  per-row bound on |bf16 score - float32 score| (derived there) lowers the sampled threshold so that
  every column whose float32 score can reach the k-th is a candidate; the candidates (k plus a band of
  about 1 % of the score range) are re-scored in float32 and the exact order taken among them.
  What "exact" means here (:func:`bench.eval.select.rescoring`, recorded in results): with faiss
  installed each candidate pair is one float32 dot product, and the lists are the exact top-k under
  those scores (exact ties stay ties; last-bit near-ties may order differently from ``torch``, as with
  ``faiss``); without faiss the re-scoring is one float32 matmul of a group of at least 4 query rows
  against the gallery rows of their candidates, which on MKL (an entry has the same bits whichever
  other rows and columns share a call of >= 4 rows and >= 12 columns, measured) gives the float32
  path's scores bit for bit and ``select``'s lists. ``auto`` picks ``bf16`` only where its lists agree
  with ``select``'s on the timing job. Rows too large for bf16 (non-finite, norms above 2^60) go the
  ``select`` way.
* ``torch``: the same matmul, then ``topk``, whose cost at k = 560 is about that of the matmul itself
  (kept as the plain reference the other backends are tested against).
* ``faiss`` (``faiss.knn``, the search of ``IndexFlatIP``: BLAS blocks with top-k heaps; below the
  torch matmul on some CPUs, 3.4x it on others at k = 560, see ``benchmarks/test_bench_eval.py``).

``auto`` (the default) is whichever of ``select``, ``bf16`` and faiss a short timing on first use found
fastest on this machine (:mod:`bench.eval.knn_choice`).

faiss computes float32 dot products with different BLAS blocking, so a score can differ from the
torch matmul in the last bit and *near*-ties may order differently; exact ties cannot. A faiss row
whose k-th and (k+1)-th scores tie is recomputed by the torch path, which resolves boundary ties
exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.eval.select import bf16_applicable, bf16_rows, select_topk, select_topk_bf16

BACKENDS = ("auto", "select", "bf16", "torch", "faiss")
_TIE_BLOCK = 64
_SELECT_ROWS = 320
_BF16_ROWS, _BF16_MIN_TAIL = 160, 8


@dataclass
class ChunkNeighbors:
    """Top-k of one query chunk. ``index`` is -1 and ``score`` -inf where fewer than k exist."""

    index: torch.Tensor  # (c, k) int64 gallery rows, self excluded
    score: torch.Tensor  # (c, k) float32
    self_score: torch.Tensor  # (c,) float32 score of the query against its own gallery row, NaN if none


def _order_by_score_then_index(index: torch.Tensor, score: torch.Tensor, n_gallery: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by (-score, index): a stable sort by score after a sort by index.

    Input rows are already in descending score order (topk / faiss output); only rows holding equal
    scores can be out of index order, so only those are re-sorted.
    """
    tied = torch.nonzero((score[:, 1:] == score[:, :-1]).any(dim=1)).flatten() if score.shape[1] > 1 else None
    if tied is None or len(tied) == 0:
        return index, score
    idx_t, score_t = index[tied], score[tied]
    key = torch.where(idx_t < 0, torch.full_like(idx_t, n_gallery), idx_t)
    key, perm = key.sort(dim=1)
    score_t = score_t.gather(1, perm)
    idx_t = idx_t.gather(1, perm)
    score_t, perm = score_t.sort(dim=1, descending=True, stable=True)
    index, score = index.clone(), score.clone()
    index[tied] = idx_t.gather(1, perm)
    score[tied] = score_t
    return index, score


def _exclude_self(sims: torch.Tensor, self_index: torch.Tensor) -> torch.Tensor:
    """Score of each query's own gallery row (NaN if none), then that entry of ``sims`` set to -inf."""
    self_score = torch.full((sims.shape[0],), float("nan"), dtype=sims.dtype)
    rows = torch.nonzero(self_index >= 0).flatten()
    if len(rows):
        cols = self_index[rows]
        self_score[rows] = sims[rows, cols]
        sims[rows, cols] = float("-inf")
    return self_score


def first_nonfinite_row(t: torch.Tensor) -> int | None:
    """The first row of a float32 matrix holding NaN or inf, or None.

    A finite row sum proves every entry finite (NaN/inf propagate). Float32 sums cost ~4 % of float64
    ones (measured, 100,000 x 256); a float32 sum can overflow from finite entries, so only the rows
    whose float32 sum is not finite are summed again in float64 (which cannot overflow) and then looked at.
    """
    suspect = torch.nonzero(~torch.isfinite(t.sum(dim=1))).flatten()
    if len(suspect) == 0 or bool(torch.isfinite(t[suspect].sum(dim=1, dtype=torch.float64)).all()):
        return None
    return int(suspect[~torch.isfinite(t[suspect]).all(dim=1)][0])


def resolve_backend(backend: str) -> str:
    """``auto`` -> the backend timed fastest on this machine (:mod:`bench.eval.knn_choice`, cached);
    other names are checked and returned.

    ``select`` costs about one float32 matmul on every CPU; faiss is 3.4x the matmul on some CPUs
    (Intel Xeon, k = 560) and faster than ``select`` on others (AMD EPYC), so no constant is right.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown knn backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    from bench.eval.knn_choice import auto_choice  # imports knn: resolved at call time

    return auto_choice()["backend"]


class GallerySearcher:
    """Holds a gallery and answers exact top-k queries chunk by chunk.

    Args:
        gallery: (G, d) float32 tensor (already normalised if cosine is wanted).
        backend: ``"auto"`` (timed per machine), ``"select"`` (matmul + threshold selection),
            ``"bf16"`` (bfloat16 matmul + bounded candidates re-scored in float32),
            ``"torch"`` (matmul + topk) or ``"faiss"`` (``faiss.knn``); :attr:`backend` holds the
            resolved name.
        mem_budget_bytes: bound on the score block of the torch path (faiss rows redone exactly for a
            boundary tie go through it in blocks of this size). ``select`` holds at most
            ``_SELECT_ROWS`` rows of the chunk it is given (sized by the caller from this budget).
    """

    def __init__(self, gallery: torch.Tensor, backend: str = "auto", mem_budget_bytes: int = 256 << 20) -> None:
        backend = resolve_backend(backend)
        self.mem_budget_bytes = int(mem_budget_bytes)
        self.gallery = gallery.contiguous()
        self.n = int(gallery.shape[0])
        self.backend = backend
        self._index: np.ndarray | None = None  # faiss: the gallery as the array faiss.knn reads
        self._buffer: torch.Tensor | None = None  # select: score block reused across chunks
        self._buffer16: torch.Tensor | None = None  # bf16: its bfloat16 score block
        self._low = None  # bf16: the gallery's bfloat16 copy and norms (None: too large for bf16)
        if backend == "bf16":
            low = bf16_rows(self.gallery)
            self._low = low if bf16_applicable(low) else None
        if backend == "faiss":
            try:
                import faiss
            except ImportError as exc:  # optional dependency
                raise ValueError("knn backend 'faiss' needs the faiss-cpu package (pip install faiss-cpu)") from exc
            # faiss.knn is IndexFlatIP's search (same kernel, same results) on the caller's array: an
            # index would hold a second copy of the gallery (100 MB at 100k x 256)
            self._index = np.ascontiguousarray(self.gallery.numpy(), dtype=np.float32)

    def search(self, query: torch.Tensor, k: int, self_index: torch.Tensor,
               floor: torch.Tensor | None = None) -> ChunkNeighbors:
        """Top-``k`` gallery rows for each query row, never returning the row ``self_index`` (-1: none).

        ``floor`` (optional, per query row): scores below it are not wanted (a caller merging this
        gallery's lists with others already holds k scores at or above it). The ``bf16`` backend then
        skips re-scoring the columns that cannot reach it: the entries at or above the floor come back
        exactly as without one, those below it may be left out (-1 / -inf in their place).
        """
        k = max(1, min(int(k), self.n))
        if self.backend == "faiss":
            return self._search_faiss(query, k, self_index)
        if self.backend == "select" or (self.backend == "bf16" and self._low is None):
            return self._search_select(query, k, self_index)
        if self.backend == "bf16":
            return self._search_bf16(query, k, self_index, floor)
        return self._search_torch(query, k, self_index)

    @property
    def needs_score_block(self) -> bool:
        """Whether a search materialises the chunk x gallery score block (sizes the query chunks)."""
        return self.backend != "faiss"

    def _score_block(self, query: torch.Tensor) -> torch.Tensor:
        """``query @ gallery.T`` into a buffer kept between calls.

        A fresh block of a few hundred MiB per chunk is handed back to the OS and faulted in again
        every time (about 15% of the matmul's time, measured); the same BLAS call writes the same
        bits into the reused buffer.
        """
        c = query.shape[0]
        if self._buffer is None or self._buffer.shape[0] < c:
            self._buffer = None  # release the old block before allocating the larger one
            self._buffer = torch.empty((c, self.n), dtype=torch.float32)
        return torch.matmul(query, self.gallery.T, out=self._buffer[:c])

    def _search_select(self, query: torch.Tensor, k: int, self_index: torch.Tensor) -> ChunkNeighbors:
        parts = []
        # row blocks of at most _SELECT_ROWS: the matmul is as fast as on the whole chunk (measured,
        # 320 vs 615 rows) and the score buffer, the evaluator's largest allocation, is half as large
        for r0 in range(0, query.shape[0], _SELECT_ROWS):
            sims = self._score_block(query[r0 : r0 + _SELECT_ROWS])
            self_score = _exclude_self(sims, self_index[r0 : r0 + _SELECT_ROWS])
            index, score = select_topk(sims, k)
            parts.append((index, score, self_score))
        index, score, self_score = (torch.cat(p) for p in zip(*parts)) if len(parts) > 1 else parts[0]
        index = torch.where(torch.isinf(score) & (score < 0), torch.full_like(index, -1), index)
        return ChunkNeighbors(index=index, score=score, self_score=self_score)

    def _search_bf16(self, query: torch.Tensor, k: int, self_index: torch.Tensor,
                     floor: torch.Tensor | None = None) -> ChunkNeighbors:
        parts = []
        for r0, r1 in _bf16_blocks(query.shape[0]):
            q, si = query[r0:r1], self_index[r0:r1]
            low = bf16_rows(q.contiguous())
            if not bf16_applicable(low):
                nb = self._search_select(q, k, si)
                parts.append((nb.index, nb.score, nb.self_score))
                continue
            c = q.shape[0]
            if self._buffer16 is None or self._buffer16.shape[0] < c:
                self._buffer16 = None
                self._buffer16 = torch.empty((c, self.n), dtype=torch.bfloat16)
            sims = torch.matmul(low.low, self._low.low.T, out=self._buffer16[:c])
            rows = torch.nonzero(si >= 0).flatten()
            sims[rows, si[rows]] = float("-inf")
            parts.append(select_topk_bf16(sims, low, self._low, k, si,
                                          None if floor is None else floor[r0:r1].double().numpy()))
        index, score, self_score = (torch.cat(p) for p in zip(*parts)) if len(parts) > 1 else parts[0]
        index = torch.where(torch.isinf(score) & (score < 0), torch.full_like(index, -1), index)
        return ChunkNeighbors(index=index, score=score, self_score=self_score)

    def _search_torch(self, query: torch.Tensor, k: int, self_index: torch.Tensor) -> ChunkNeighbors:
        sims = query @ self.gallery.T  # (c, G): the only chunk x gallery allocation
        self_score = _exclude_self(sims, self_index)
        take = min(k + 1, self.n)  # one extra column detects a tie straddling the k-th place
        score, index = sims.topk(take, dim=1, largest=True, sorted=True)
        if take > k:
            kth = score[:, k - 1]
            tied = torch.nonzero((kth == score[:, k]) & torch.isfinite(kth)).flatten()
            index, score = index[:, :k].clone(), score[:, :k].clone()
            # topk picks arbitrarily among equal scores at the boundary; rebuild those rows exactly:
            # everything above the k-th score, then the lowest-index items equal to it. Done in small
            # row blocks because the cumulative count is int64 over whole gallery rows.
            for b0 in range(0, len(tied), _TIE_BLOCK):
                rows_t = tied[b0 : b0 + _TIE_BLOCK]
                block = sims[rows_t]
                thr = kth[rows_t].unsqueeze(1)
                above = block > thr
                equal = block == thr
                need = k - above.sum(dim=1, keepdim=True)
                keep = above | (equal & (equal.cumsum(dim=1) <= need))
                idx_t = torch.nonzero(keep)[:, 1].view(len(rows_t), k)  # ascending column order
                score_t, perm = block.gather(1, idx_t).sort(dim=1, descending=True, stable=True)
                index[rows_t] = idx_t.gather(1, perm)
                score[rows_t] = score_t
        index = torch.where(torch.isinf(score) & (score < 0), torch.full_like(index, -1), index)
        index, score = _order_by_score_then_index(index, score, self.n)
        return ChunkNeighbors(index=index, score=score, self_score=self_score)

    def _search_faiss(self, query: torch.Tensor, k: int, self_index: torch.Tensor) -> ChunkNeighbors:
        q = np.ascontiguousarray(query.numpy(), dtype=np.float32)
        take = min(k + 2, self.n)  # room for the query's own row and one column past the k-th
        import faiss

        dist, idx = faiss.knn(q, self._index, take, metric=faiss.METRIC_INNER_PRODUCT)
        score = torch.from_numpy(dist)
        index = torch.from_numpy(idx).to(torch.int64)
        c = q.shape[0]
        self_score = torch.full((c,), float("nan"), dtype=torch.float32)
        has_self = self_index >= 0
        is_self = (index == self_index.unsqueeze(1)) & has_self.unsqueeze(1)
        found = is_self.any(dim=1)
        if found.any():
            self_score[found] = score[is_self]
        missing = torch.nonzero(has_self & ~found).flatten()
        if len(missing):
            # the own row fell outside the returned list (ties or a larger-norm neighbour): score it directly
            self_score[missing] = (query[missing] * self.gallery[self_index[missing]]).sum(dim=1)
        score = score.masked_fill(is_self, float("-inf"))
        index = index.masked_fill(is_self | (index < 0), -1)
        score, perm = score.sort(dim=1, descending=True, stable=True)  # move the own row to the end
        index = index.gather(1, perm)
        if score.shape[1] > k:
            # faiss keeps the lower index among exact ties in practice, but that is its heap's habit,
            # not its contract: rows with a tie straddling the k-th place are redone exactly
            kth = score[:, k - 1]
            tied = torch.nonzero((kth == score[:, k]) & torch.isfinite(kth)).flatten()
            if len(tied):
                index, score = index[:, :k].clone(), score[:, :k].clone()
                # in row blocks whose score block fits the memory budget (a constant embedding ties every row)
                step = max(1, self.mem_budget_bytes // (4 * self.n))
                for b0 in range(0, len(tied), step):
                    rows = tied[b0 : b0 + step]
                    exact = self._search_torch(query[rows], k, self_index[rows])
                    index[rows], score[rows], self_score[rows] = exact.index, exact.score, exact.self_score
        index, score = _order_by_score_then_index(index[:, :k], score[:, :k], self.n)
        return ChunkNeighbors(index=index, score=score, self_score=self_score)


def _bf16_blocks(c: int) -> list[tuple[int, int]]:
    """Row blocks of the bf16 path: select's blocks cut into ``_BF16_ROWS`` rows, a short tail joined to the
    block before it.

    The smaller block (32 MiB of bfloat16 scores at 100,000 columns) stays closer to the caches for the
    passes that read it after the matmul (the whole search ~10 % faster than with 320 rows,
    measured). A block shorter than a re-scoring group (1-3 rows) is scored by the float32 matmul of
    those rows, whose bits depend on the call's shape: it only occurs where select's own block is that
    short, so both score the same rows in one call.
    """
    bounds = []
    for a in range(0, c, _SELECT_ROWS):
        b = min(c, a + _SELECT_ROWS)
        cuts = list(range(a, b, _BF16_ROWS))
        if len(cuts) > 1 and b - cuts[-1] < _BF16_MIN_TAIL:
            cuts.pop()
        bounds += list(zip(cuts, [*cuts[1:], b]))
    return bounds


def choose_chunk_size(n_gallery: int, k: int, mem_budget_bytes: int, *, score_block: bool = True) -> int:
    """Query rows per chunk so that the chunk x gallery score block (+ top-k lists) fits the budget.

    faiss (``score_block=False``) never materialises the score block, and its per-query cost halves
    with large query batches (measured: k=1600, 2000 vs 200 queries per call), so its chunks are
    bounded by the top-k lists only, up to 4096 queries (faiss' own query block size).
    """
    per_row = (4 * n_gallery if score_block else 0) + 64 * (k + 1)  # scores + topk lists, sort copies, sums
    chunk = max(1, int(mem_budget_bytes // per_row))
    return chunk if score_block else min(chunk, 4096)
