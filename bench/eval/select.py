"""Exact per-row top-k of a score block by threshold selection.

``torch.topk`` at k in the hundreds costs about as much as the matmul that made the scores, and
faiss' heaps grow slow with k on some CPUs. Selection by threshold costs a few cheap passes instead:

1. a per-row threshold below (or at) the k-th largest score, read off a small sample of columns;
2. one comparison pass keeps the columns at or above it (about 2k of them per row);
3. an exact sort of those few by (score descending, column ascending).

Step 1 is a guess, step 2 checks it: a row whose threshold kept fewer than k columns gets its exact
k-th score (``topk`` on that row alone) and is compared again, so the result never depends on the
sample. Every column whose score ties the k-th is kept, so ties are broken by the lower column
exactly as the stable sort of the full row would.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# The sample is one segment of _SEGMENT contiguous columns in every _STRIDE segments: whole cache lines,
# so reading it touches ~1/_STRIDE of the block (a strided column sample would touch every line).
_SEGMENT, _STRIDE = 64, 32
# Below this width a row is cheap anyway; single columns, one in four, keep the sample meaningful.
_SMALL_ROW, _SMALL_SEGMENT, _SMALL_STRIDE = 16384, 1, 4
# Elements compared per pass: the boolean mask and the candidate lists stay a few MiB.
_BLOCK_ELEMS = 1 << 22
# Candidates sorted at once (~60 bytes each with the padded lines and keys): rows tied over their
# whole width (a constant embedding) are sorted a few rows at a time instead of as one huge block.
_SORT_ELEMS = 1 << 20


def sample_threshold(scores: torch.Tensor, k: int) -> torch.Tensor | None:
    """Per-row score that is very likely at or below the row's k-th largest; ``None`` if no sample fits.

    Of the true top-k, a sample holding a fraction p of the columns catches about mu = k * p
    (binomial when the gallery order is unrelated to the scores). Taking the sample's k_s-th largest
    with k_s = mu + 4 sqrt(mu) + 2 leaves the threshold above the k-th score only when the sample
    caught k_s or more of the top-k, a 4-sigma event; callers verify the count anyway.
    """
    c, n = scores.shape
    seg, stride = (_SEGMENT, _STRIDE) if n >= _SMALL_ROW else (_SMALL_SEGMENT, _SMALL_STRIDE)
    period = seg * stride
    n_cut = (n // period) * period
    n_sample = n_cut // stride
    mu = k * n_sample / n
    k_s = math.ceil(mu + 4.0 * math.sqrt(mu) + 2.0)
    if n_sample == 0 or k_s > n_sample // 2:  # the sample would not be much smaller than the answer
        return None
    sample = scores[:, :n_cut].reshape(c, n_cut // period, period)[:, :, :seg].reshape(c, n_sample)
    return sample.topk(k_s, dim=1, sorted=False).values.amin(dim=1)


def _kth_largest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Exact k-th largest score of each row (the slow path: only rows the sample misjudged)."""
    return scores.topk(k, dim=1, sorted=False).values.amin(dim=1)


def _candidates(block: np.ndarray, thr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-major flat positions of the entries at or above their row's threshold, and per-row counts."""
    flat = np.flatnonzero(block >= thr[:, None])  # numpy: about 5x faster than torch's compare + nonzero here
    return flat, np.bincount(flat // block.shape[1], minlength=block.shape[0])


def _descending_keys(values: np.ndarray) -> np.ndarray:
    """int64 keys whose ascending order is the descending order of float32 ``values`` (equal floats, equal keys).

    The float's bits read as int32 order non-negative floats; flipping the magnitude bits of negative
    ones orders those too; ``~`` reverses the order. -0.0 is made +0.0 first (they compare equal).
    """
    bits = (values + np.float32(0.0)).view(np.int32)
    ascending = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)
    return (~ascending).astype(np.int64)


def _sort_candidates(block: np.ndarray, flat: np.ndarray, counts: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k candidates of each row by (score descending, column ascending).

    Candidates are laid out one row per line in ascending column order (``flatnonzero`` order), padded
    with -inf. Each gets one integer key, the score's descending key shifted left with its place in the
    line below it: keys are distinct, so numpy's fast unstable integer sort gives the (score desc,
    column asc) order -- about 3x faster here than a stable sort of the scores.
    """
    n_rows, n = block.shape
    rows, cols = np.divmod(flat, n)
    starts = np.cumsum(counts) - counts
    pos = np.arange(len(flat)) - np.repeat(starts, counts)
    width = int(counts.max())
    shift = max(1, (width - 1).bit_length())  # 32 + shift bits: fits int64 for any line of < 2**31 entries
    pad_col = np.zeros((n_rows, width), dtype=np.int64)
    pad_score = np.full((n_rows, width), -np.inf, dtype=np.float32)
    lin = rows * width + pos
    pad_col.reshape(-1)[lin] = cols
    pad_score.reshape(-1)[lin] = block.reshape(-1)[flat]
    keys = (_descending_keys(pad_score) << shift) | np.arange(width, dtype=np.int64)
    keys.sort(axis=1)
    place = keys[:, :k] & ((1 << shift) - 1)
    index = np.take_along_axis(pad_col, place, axis=1)
    score = np.take_along_axis(pad_score, place, axis=1)
    return torch.from_numpy(index), torch.from_numpy(score)


def select_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` of each row of a float32 score block, ordered by (score desc, column asc).

    Args:
        scores: (c, n) contiguous float32 CPU tensor (not modified).
        k: 1 <= k <= n.

    Returns:
        ``(index, score)``, both (c, k): column indices (int64) and their scores. Entries scoring -inf
        are returned like any other (callers map them to -1).
    """
    c, n = scores.shape
    index = torch.empty((c, k), dtype=torch.int64)
    score = torch.empty((c, k), dtype=torch.float32)
    if c == 0:
        return index, score
    thr = sample_threshold(scores, k)
    if thr is None:
        thr = _kth_largest(scores, k)
    thr_np = thr.numpy()
    s_np = scores.numpy()
    rows_per_block = max(1, _BLOCK_ELEMS // n)
    for r0 in range(0, c, rows_per_block):
        r1 = min(c, r0 + rows_per_block)
        block, t = s_np[r0:r1], thr_np[r0:r1]
        flat, counts = _candidates(block, t)
        short = np.flatnonzero(counts < k)
        if len(short):  # the sample set the threshold too high for these rows: use their exact k-th score
            t = t.copy()
            t[short] = _kth_largest(scores[r0 + torch.from_numpy(short)], k).numpy()
            flat, counts = _candidates(block, t)
        for a, b in _row_groups(counts, _SORT_ELEMS):
            lo, hi = int(counts[:a].sum()), int(counts[:b].sum())
            index[r0 + a : r0 + b], score[r0 + a : r0 + b] = _sort_candidates(
                block[a:b], flat[lo:hi] - a * n, counts[a:b], k)
    return index, score


def _row_groups(counts: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive row ranges holding at most ``limit`` candidates each (at least one row per range)."""
    groups, start, total = [], 0, 0
    for row, cnt in enumerate(counts.tolist()):
        if row > start and total + cnt > limit:
            groups.append((start, row))
            start, total = row, 0
        total += cnt
    groups.append((start, len(counts)))
    return groups
