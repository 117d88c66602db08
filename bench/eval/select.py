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

:func:`select_topk_bf16` does the same from a bfloat16 score block (a matmul of bf16 copies, about
half the float32 matmul's time on CPUs with bf16 dot-product instructions): a rigorous per-row bound on
|bf16 score - float32 score| (derived below) lowers the k-th bf16 score to a floor that every column
able to reach the float32 k-th score clears; those candidates are re-scored in float32 and sorted as
above. The bound holds for a float32 dot product summed in any order, so the candidates serve either
re-scoring:

* with faiss installed, one float32 dot product per candidate pair (C, straight from the gallery): a
  pair's score depends on its two rows only, so exact ties stay ties and the tie rule applies as
  everywhere, but last-bit near-ties may order differently from the float32 matmul (as with the faiss
  backend; rows scored by the float32 matmul itself, below, keep its scores). Cheaper than the other
  way, whose gather of gallery rows dominates it (:func:`_rescore_pairs`).
* without faiss, a float32 matmul of a group of >= 4 consecutive query rows against the gallery rows of
  their candidates: the BLAS gives a matmul entry the same bits whatever else shares the call once the
  call has >= 4 rows and >= 12 columns (MKL, measured), while no per-pair formula reproduces its
  summation order. So the lists and scores equal the float32 path's bit for bit where that holds
  (blocks of 1-3 rows, whose kernels do depend on the call's shape, are scored by the float32 matmul
  itself); on a BLAS where it does not, only last-bit near-ties can order differently.

``bench.eval.knn_choice`` checks the lists against ``select``'s before ``auto`` may pick bf16.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    """The first k candidates of each row of ``block`` by (score descending, column ascending)."""
    return _sort_lines(flat % block.shape[1], block.reshape(-1)[flat], counts, k)


def _sort_lines(cols: np.ndarray, vals: np.ndarray, counts: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k of each row's candidates (``counts[r]`` consecutive entries of ``cols`` / ``vals``, in
    ascending column order) by (score descending, column ascending), -inf past a row's last candidate.

    Candidates are laid out one row per line, padded with -inf. Each gets one integer key, the score's
    descending key shifted left with its place in the line below it: keys are distinct, so numpy's fast
    unstable integer sort gives the (score desc, column asc) order -- about 3x faster here than a stable
    sort of the scores.
    """
    n_rows = len(counts)
    starts = np.cumsum(counts) - counts
    pos = np.arange(len(cols)) - np.repeat(starts, counts)
    width = max(k, int(counts.max(initial=0)))  # a line shorter than k (a caller's floor) ends in -inf
    shift = max(1, (width - 1).bit_length())  # 32 + shift bits: fits int64 for any line of < 2**31 entries
    pad_col = np.zeros((n_rows, width), dtype=np.int64)
    pad_score = np.full((n_rows, width), -np.inf, dtype=np.float32)
    lin = np.repeat(np.arange(n_rows) * width, counts) + pos
    pad_col.reshape(-1)[lin] = cols
    pad_score.reshape(-1)[lin] = vals
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


# --- bfloat16 candidates, exact float32 re-scoring ---------------------------------------------------
#
# Error bound. Let q, g be float32 rows of dimension d, q^ = bf16(q), g^ = bf16(g) (round to nearest),
# r = q - q^ and t = g - g^ (exact in float32), s = sum_k q_k g_k the real dot product.
#   inputs:  sum q^_k g^_k = s - sum_k (q_k t_k + r_k g^_k), so by Cauchy-Schwarz
#            |sum q^ g^ - s| <= |q| |t| + |r| |g^|;
#   bf16 kernels flush subnormal inputs, products and sums to zero (DAZ/FTZ, measured): each such term
#            moves the sum by at most 2^-126 (times max|g^| or max|q^| for a flushed input), A below;
#   accumulation: the products are exact in float32 and summed in float32 (the bf16 kernels keep
#            float32 accumulators, rounding to bf16 once at the end) in some order, so the sum
#            s~ is within gamma(2d) sum_k |q^_k g^_k| <= gamma(2d) |q^| |g^| (gamma(n) = n u / (1 - n u),
#            u = 2^-24; 2d covers any summation tree, also one that adds products pairwise);
#   output:  the kernel rounds s~ to bf16: s^ = s~ (1 + e), |e| <= 2^-8, so |s^ - s~| <= c |s^| with
#            c = 2^-8 / (1 - 2^-8);
#   reference: the float32 matmul's score s_f is within gamma(2d) |q| |g| of s.
# So |s^ - s_f| <= E + c |s^| with, per query row and over the gallery's largest norms,
#   E = |q| max|t| + |r| max|g^| + gamma(2d) (|q^| max|g^| + |q| max|g|) + A,
#   A = 2^-126 (d (3 + max|q^_k| + max|g^_k|) + 2),
# times 1 + 2^-10 for the float64 arithmetic of E itself.
#
# Selection. If at least k columns have s^ >= theta, each has s_f >= h(s^) >= h(theta) with
# h(x) = x - E - c|x| (non-decreasing), so the float32 k-th score is >= L = theta - E - c|theta|. A column
# whose float32 score reaches it has s^ + E + c|s^| >= L, i.e. s^ >= F^-1(L - E) with F(x) = x + c|x|.
# Every such column is a candidate; each candidate is re-scored in float32 and the exact top-k taken
# among them, ties included (all of a tie's columns are candidates when one is).

_BF16_U = 2.0**-8
_BF16_C = _BF16_U / (1.0 - _BF16_U)
_TINY = 2.0**-126
# Rows re-scored by one float32 matmul against their candidates. MKL computes an entry of a matmul of >= 4
# rows and >= 12 columns with the same bits whichever other rows and columns are in the call (measured);
# smaller calls use other kernels, so a group is never smaller than the score block it stands for, and
# its columns are padded to _MIN_UNION. Four rows is also the cheapest group: each row's candidates are
# scored against every row of its group, and a matmul of more rows did not get enough faster to pay for
# that (measured: 8 rows 1.3x the time of 4 per score, 2x the scores).
_GROUP_ROWS, _MIN_UNION = 4, 64
# Rows whose candidates would cover more than this fraction of the gallery (near-constant scores) are
# scored by the float32 matmul instead: re-scoring them would cost more than it saves.
_MAX_CANDIDATE_FRACTION = 0.25
# Score entries per candidate pass (the boolean mask and the candidate lists stay tens of MiB).
_BF16_PASS_ELEMS = 1 << 24


@dataclass
class Bf16Rows:
    """Rows of a float32 matrix with their bfloat16 copy and upper bounds on the norms the error bound needs."""

    exact: torch.Tensor  # (r, d) float32
    low: torch.Tensor  # (r, d) bfloat16, round to nearest
    norm: np.ndarray  # >= |x| (float64)
    norm_low: np.ndarray  # >= |bf16(x)|
    resid: np.ndarray  # >= |x - bf16(x)|
    amax_low: np.ndarray  # max_k |bf16(x)_k|, exact


def _norm_upper(x: torch.Tensor) -> np.ndarray:
    """Per row, a float64 number >= the row's exact Euclidean norm, from a float32 norm (infinite if it overflows).

    A float32 norm costs ~1 % of a float64 one here (no widened copy of the rows). Whatever the summation
    order (or a scaled algorithm), the computed sum of squares S^ is >= S (1 - gamma) - 2 d 2^-126 with
    gamma = gamma(2d + 2) (the 2d covers rounding of squares and sums, the 2^-126 terms squares and sums that
    underflow), and the computed root n^ >= sqrt(S^) (1 - u); so S <= ((n^ / (1 - u))^2 + 2 d 2^-126) / (1 - gamma).
    """
    d = x.shape[1]
    if d == 0:
        return np.zeros(x.shape[0])
    u = 2.0**-24
    gamma = (2 * d + 2) * u / (1 - (2 * d + 2) * u)
    n_hat = torch.linalg.vector_norm(x, dim=1).double().numpy()
    with np.errstate(over="ignore"):
        return np.sqrt(((n_hat / (1 - u)) ** 2 + 2 * d * _TINY) / (1 - gamma)) * (1 + 2.0**-50)


def bf16_rows(x: torch.Tensor, step: int = 16384) -> Bf16Rows:
    """The bfloat16 copy of float32 rows ``x`` and upper bounds on their norms (:func:`_norm_upper`),
    ``step`` rows at a time (the float32 temporaries stay a few MiB).

    ``x - bf16(x)`` is exact in float32 (both are float32 numbers and the difference keeps at most 16
    significant bits within float32's exponent range), so its norm bound is as sound as the others.
    """
    low = x.to(torch.bfloat16)
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for s in range(0, x.shape[0], step):
        xs, ls = x[s : s + step], low[s : s + step].float()
        amax = ls.abs().amax(dim=1).double().numpy() if x.shape[1] else np.zeros(len(ls))
        for part, v in zip(parts, (_norm_upper(xs), _norm_upper(ls), _norm_upper(xs - ls), amax)):
            part.append(v)
    norm, norm_low, resid, amax_low = (np.concatenate(p) if p else np.zeros(0) for p in parts)
    return Bf16Rows(exact=x, low=low, norm=norm, norm_low=norm_low, resid=resid, amax_low=amax_low)


def bf16_applicable(rows: Bf16Rows, limit: float = 2.0**60) -> bool:
    """Finite rows whose bf16 scores cannot overflow (|q| |g| <= limit**2 for any pair of such rows)."""
    return bool(np.all(np.isfinite(rows.norm)) and (rows.norm.max(initial=0.0) <= limit))


def bf16_error(query: Bf16Rows, gallery: Bf16Rows) -> np.ndarray:
    """Per query row, E of the bound above: |s^ - s_f| <= E + c |s^| for every gallery row."""
    d = query.exact.shape[1]
    gamma = 2 * d * 2.0**-24 / (1 - 2 * d * 2.0**-24)
    g_max, g_low, g_res = gallery.norm.max(initial=0.0), gallery.norm_low.max(initial=0.0), gallery.resid.max(initial=0.0)
    tiny = _TINY * (d * (3.0 + query.amax_low + gallery.amax_low.max(initial=0.0)) + 2.0)
    e = query.norm * g_res + query.resid * g_low + gamma * (query.norm_low * g_low + query.norm * g_max) + tiny
    return e * (1.0 + 2.0**-10)


def _reach_floor(low: np.ndarray, e: np.ndarray) -> np.ndarray:
    """F^-1(L - E): the lowest bf16 score whose column's float32 score can be >= ``low`` (-inf where L is not finite)."""
    y = low - e
    with np.errstate(invalid="ignore"):
        tau = np.where(y >= 0, y / (1.0 + _BF16_C), y / (1.0 - _BF16_C))
    return np.where(np.isfinite(low), tau, -np.inf)


def _candidate_floor(theta: np.ndarray, e: np.ndarray) -> np.ndarray:
    """F^-1(theta - 2E - c|theta|): the lowest bf16 score a column can have and still reach the top k
    (theta at or below the k-th bf16 score puts the float32 k-th at or above theta - E - c|theta|)."""
    with np.errstate(invalid="ignore"):
        return _reach_floor(np.where(np.isfinite(theta), theta - e - _BF16_C * np.abs(theta), theta), e)


def _bf16_floor_bits(tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int16 bf16 bit patterns at or below each float64 ``tau``, and whether that bf16 value is > 0.

    bf16 bits read as int16 order the positive values; a negative value v >= -x (x >= 0) iff its bits
    are >= 0 or <= the bits of -x (larger magnitudes have larger int16 bits among negatives).
    """
    t32 = np.nextafter(tau.astype(np.float32), np.float32(-np.inf))  # float32 at or below tau
    pos = t32 > 0
    up = np.where(pos, t32, -t32).astype(np.float32).view(np.int32).astype(np.int64)
    mag = np.where(pos, up >> 16, (up + 0xFFFF) >> 16)  # positive: round down; negative: magnitude up
    mag = np.minimum(mag, 0x7F80)  # at most inf
    bits = np.where(pos & (mag > 0), mag, (mag | 0x8000) - 0x10000)
    return bits.astype(np.int16), pos & (mag > 0)


def _bf16_candidates(bits: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-major flat positions of the bf16 scores (int16 bits) at or above their row's ``tau``, and counts."""
    tb, pos = _bf16_floor_bits(tau)
    mask = bits >= np.where(pos, tb, 0).astype(np.int16)[:, None]
    neg = np.flatnonzero(~pos)
    if len(neg):
        mask[neg] |= bits[neg] <= tb[neg, None]
    flat = np.flatnonzero(mask)
    return flat, np.bincount(flat // bits.shape[1], minlength=bits.shape[0])


def _bits_to_float(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (int16) as float32 values (exact)."""
    return (bits.astype(np.int32) << 16).view(np.float32)


def _rescore_groups(c: int) -> list[tuple[int, int]]:
    """Consecutive rows in groups of ``_GROUP_ROWS``, the last of up to ``2 * _GROUP_ROWS - 1`` (one group if fewer)."""
    cuts = list(range(0, c, _GROUP_ROWS))
    if len(cuts) > 1 and c - cuts[-1] < _GROUP_ROWS:
        cuts.pop()
    return list(zip(cuts, [*cuts[1:], c]))


def pair_dots() -> tuple[Callable[..., None], Callable[..., Any]] | None:
    """faiss' ``fvec_inner_products_by_idx`` (float32 dot products of listed pairs, in C) and ``swig_ptr``,
    or None where faiss is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    fn, ptr = getattr(faiss, "fvec_inner_products_by_idx", None), getattr(faiss, "swig_ptr", None)
    return None if fn is None or ptr is None else (fn, ptr)


def rescoring() -> str:
    """How :func:`select_topk_bf16` re-scores its candidates here (results of the bf16 backend record it)."""
    if pair_dots() is not None:
        return ("float32 dot product of each candidate pair (faiss fvec_inner_products_by_idx): the exact "
                "top-k under those scores; last-bit near-ties may order differently from the float32 matmul")
    return ("float32 matmul of 4-row groups against their candidates: the float32 matmul's scores, bit for "
            "bit where the BLAS scores an entry alike in any call of >= 4 rows (MKL)")


def _rescore_pairs(q: torch.Tensor, gallery: torch.Tensor, cols: np.ndarray, counts: np.ndarray,
                   self_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_rescore_pass` by one float32 dot product per pair, in C (faiss).

    Cheaper than the grouped matmul: each gallery row is read once per pair it is in, straight from the
    gallery, where the matmul reads a gathered copy and scores it against every row of its group (the
    evaluator benchmark's ``ours_bf16`` / ``ours_bf16_matmul`` rows: the whole evaluation 0.86x at
    100,000 and 0.75x at 300,000 gallery rows, AMD EPYC, one thread). A pair's score
    depends on the two rows only, so equal rows score equally (exact ties stay ties) whatever the call.
    """
    fn, ptr = pair_dots()
    c = len(counts)
    width = int(counts.max(initial=0))
    starts = np.cumsum(counts) - counts
    rows = np.repeat(np.arange(c), counts)
    pos = np.arange(len(cols)) - starts[rows]
    ids = np.full((c, width + 1), -1, dtype=np.int64)  # -1 scores -inf; the last column is the own row
    ids[rows, pos] = cols
    ids[:, width] = self_index
    ip = np.empty(ids.shape, dtype=np.float32)
    qn, gn = np.ascontiguousarray(q.numpy()), np.ascontiguousarray(gallery.numpy())
    fn(ptr(ip), ptr(qn), ptr(gn), ptr(ids), qn.shape[1], c, width + 1)
    vals = ip[rows, pos]
    vals[cols == self_index[rows]] = -np.inf  # the own row is excluded, as in the float32 block
    return vals, np.where(self_index >= 0, ip[:, width], np.float32(np.nan)).astype(np.float32)


def _rescore_pass(q: torch.Tensor, gallery: torch.Tensor, cols: np.ndarray, counts: np.ndarray,
                  self_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 scores of a pass's candidates (row r's are ``counts[r]`` consecutive entries of ``cols``),
    own columns at -inf, and each row's own-column score (NaN where none).

    With faiss installed, one dot product per pair (:func:`_rescore_pairs`). Without it, one matmul per
    group of consecutive rows (:func:`_rescore_groups`): its query rows against the gallery rows of all
    their candidates, one row's after the other, then their own rows (and the first ``_MIN_UNION`` rows
    when that is short). The same kernel family as the full score block's matmul, so
    the same bits (see ``_GROUP_ROWS``). A column that is a candidate of two rows of a group is read twice
    rather than deduplicated: at k in the hundreds the rows' candidate sets overlap little (~8 % for
    adjacent rows of the evaluator benchmark), and deduplicating cost more than it saved (measured).
    Reading those gallery rows (random rows of a gallery larger than the caches) is most of the cost.
    """
    if pair_dots() is not None:
        return _rescore_pairs(q, gallery, cols, counts, self_index)
    n = gallery.shape[0]
    vals = np.empty(len(cols), dtype=np.float32)
    self_score = np.full(len(counts), np.nan, dtype=np.float32)
    ends = np.cumsum(counts)
    starts = ends - counts
    rows = np.repeat(np.arange(len(counts)), counts)
    for a, b in _rescore_groups(len(counts)):
        lo, hi = int(starts[a]), int(ends[b - 1])
        own = self_index[a:b]
        has = np.flatnonzero(own >= 0)
        read = np.concatenate([cols[lo:hi], own[has]])
        if len(read) < min(n, _MIN_UNION):
            read = np.concatenate([read, np.arange(min(n, _MIN_UNION))])
        s = torch.matmul(q[a:b], gallery.index_select(0, torch.from_numpy(read)).T).numpy()
        vals[lo:hi] = s[rows[lo:hi] - a, np.arange(hi - lo)]
        self_score[a + has] = s[has, hi - lo + np.arange(len(has))]
    vals[cols == self_index[rows]] = -np.inf  # the own row is excluded, as in the float32 block
    return vals, self_score


def _kth_of_lines(vals: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """k-th largest of each row's ``counts[r]`` consecutive ``vals`` (-inf where a row has fewer than k)."""
    width = max(k, int(counts.max(initial=0)))
    pad = np.full((len(counts), width), -np.inf, dtype=np.float32)
    starts = np.cumsum(counts) - counts
    pos = np.arange(len(vals)) - np.repeat(starts, counts)
    pad.reshape(-1)[np.repeat(np.arange(len(counts)) * width, counts) + pos] = vals
    return np.partition(pad, width - k, axis=1)[:, width - k].astype(np.float64)


def _bf16_pass(sims: torch.Tensor, r0: int, r1: int, theta: np.ndarray, e: np.ndarray, k: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidates of rows r0:r1 (row-major flat positions within them, counts), their bf16 scores (as
    float32) and each row's exact k-th bf16 score.

    The first pass uses the sampled ``theta``; a row whose candidates hold k or more scores has its exact
    k-th among them, and keeps the candidates at or above its floor when that floor is not below the
    sampled one (otherwise the pass missed columns: its whole row gives the k-th and is scanned again).
    """
    bits = sims.view(torch.int16).numpy()[r0:r1]
    th, ee = theta[r0:r1], e[r0:r1]
    tau = _candidate_floor(th, ee)
    flat, counts = _bf16_candidates(bits, tau)
    vals = _bits_to_float(bits.reshape(-1)[flat])
    exact = _kth_of_lines(vals, counts, k)
    redo = np.flatnonzero((counts < k) | (exact < th))
    if len(redo):
        exact[redo] = _kth_largest(sims[r0 + torch.from_numpy(redo)], k).double().numpy()
        flat, counts = _bf16_candidates(bits, np.minimum(tau, _candidate_floor(exact, ee)))
        vals = _bits_to_float(bits.reshape(-1)[flat])
    rows = np.repeat(np.arange(r1 - r0), counts)
    keep = vals >= _candidate_floor(exact, ee)[rows]
    return flat[keep], np.bincount(rows[keep], minlength=r1 - r0), vals[keep], exact


def _float32_rows(q: torch.Tensor, gallery: torch.Tensor, self_index: torch.Tensor, k: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`select_topk` of the float32 scores of ``q``, own columns excluded, and the own-column scores."""
    exact = torch.matmul(q, gallery.T)
    own = torch.nonzero(self_index >= 0).flatten()
    self_score = torch.full((q.shape[0],), float("nan"))
    self_score[own] = exact[own, self_index[own]]
    exact[own, self_index[own]] = float("-inf")
    return (*select_topk(exact, k), self_score)


def select_topk_bf16(sims: torch.Tensor, query: Bf16Rows, gallery: Bf16Rows, k: int,
                     self_index: torch.Tensor, floor: np.ndarray | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact float32 top-``k`` from bfloat16 scores: candidates by the error bound above, re-scored in float32.

    Args:
        sims: (c, n) bfloat16 ``query.low @ gallery.low.T`` with each row's own column set to -inf.
        query, gallery: :func:`bf16_rows` of the query block and of the gallery.
        k: 1 <= k <= n.
        self_index: (c,) int64 own gallery row per query, -1 for none.
        floor: (c,) optional scores below which a row wants nothing: candidates whose float32 score
            cannot reach it are not re-scored, and a row may come back with fewer than k entries
            (the rest -inf).

    Returns:
        ``(index, score, self_score)``: what :func:`select_topk` returns for the float32 block with the
        own column set to -inf (with ``floor``: its entries at or above the floor, then -inf), and the
        own column's float32 score (NaN where none).
    """
    c, n = sims.shape
    index = torch.empty((c, k), dtype=torch.int64)
    score = torch.empty((c, k), dtype=torch.float32)
    self_score = torch.empty(c, dtype=torch.float32)
    theta_t = sample_threshold(sims, k)
    theta = (theta_t if theta_t is not None else _kth_largest(sims, k)).double().numpy()
    e = bf16_error(query, gallery)
    selfs = self_index.numpy()
    step = max(2 * _GROUP_ROWS, _BF16_PASS_ELEMS // n)
    bounds = [*range(0, max(1, c - 2 * _GROUP_ROWS), step), c]  # passes of >= 2 groups (or the only one)
    for r0, r1 in itertools.pairwise(bounds):
        flat, counts, vals16, _ = (None,) * 4 if c < _GROUP_ROWS else _bf16_pass(sims, r0, r1, theta, e, k)
        if counts is None or counts.sum() > _MAX_CANDIDATE_FRACTION * n * (r1 - r0):
            # fewer rows than a group (BLAS kernels for 1-3 rows give bits by call shape: only the
            # full row matches), or near-constant scores: the float32 matmul of these rows, as select
            index[r0:r1], score[r0:r1], self_score[r0:r1] = _float32_rows(query.exact[r0:r1], gallery.exact,
                                                                          self_index[r0:r1], k)
            continue
        if floor is not None:  # only columns whose float32 score can reach the caller's floor
            keep = vals16 >= np.repeat(_reach_floor(floor[r0:r1], e[r0:r1]), counts)
            flat, counts = flat[keep], np.bincount(np.repeat(np.arange(r1 - r0), counts)[keep], minlength=r1 - r0)
        cols = flat % n
        vals, own = _rescore_pass(query.exact[r0:r1], gallery.exact, cols, counts, selfs[r0:r1])
        self_score[r0:r1] = torch.from_numpy(own)
        index[r0:r1], score[r0:r1] = _sort_lines(cols, vals, counts, k)
    return index, score, self_score
