"""Exact top-k against a gallery that stays on disk: row blocks read from a memory-mapped file.

At the release's coarse size (1,179,613 gallery rows x 256-d, 1.2 GB in float32) a float32 copy of
the gallery next to the file's own mapped pages would hold the gallery twice. Here each query chunk
walks the gallery in blocks of :data:`BLOCK_BYTES`, read with plain file reads into one reused buffer
(a file read leaves nothing mapped, so the process's resident set stays the size of one block, not
of the file), searches each block with :class:`bench.eval.knn.GallerySearcher` and keeps the running
top-k.

The merge keeps the tie rule of :mod:`bench.eval.knn` (descending score, then lower gallery index):
every block list is in that order, and all rows of the running list come from earlier blocks
(lower indices), so a stable descending sort of ``[running, block]`` orders equal scores by index,
also at the k-th place.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from bench.eval.knn import ChunkNeighbors, GallerySearcher, first_nonfinite_row, resolve_backend

BLOCK_BYTES = 32 << 20  # one gallery block in float32 (32,768 rows at 256-d)


def block_rows_for(dim: int, block_bytes: int | None = None) -> int:
    """Gallery rows per block so that one float32 block is about ``block_bytes`` (default :data:`BLOCK_BYTES`)."""
    return max(1, int(block_bytes or BLOCK_BYTES) // (4 * max(1, int(dim))))


def _file_backed(arr: np.ndarray) -> bool:
    """Whether ``arr`` is a whole C-ordered ``np.memmap`` (not a view of one), so file offsets are exact."""
    return (isinstance(arr, np.memmap) and isinstance(arr.base, mmap.mmap) and bool(arr.filename)
            and arr.flags.c_contiguous and arr.ndim == 2)


class RowBlocks:
    """Reads consecutive row blocks of a 2-d array as float32 tensors, checked for NaN/inf.

    A whole ``np.memmap`` is read with file reads into a reused buffer; any other array is sliced.
    ``normalize`` L2-normalises each row as it is read (the cosine variant).
    """

    def __init__(self, arr: np.ndarray, block_rows: int, *, normalize: bool = False) -> None:
        if arr.ndim != 2:
            raise ValueError(f"gallery embeddings must be a 2-d (rows x dim) array, got shape {tuple(arr.shape)}")
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"gallery embeddings must be numeric, got dtype {arr.dtype}")
        self.arr = arr
        self.n, self.dim = int(arr.shape[0]), int(arr.shape[1])
        self.block_rows = max(1, int(block_rows))
        self.normalize = normalize
        self._raw = np.empty((self.block_rows, self.dim), dtype=arr.dtype) if _file_backed(arr) else None

    @property
    def reads_file(self) -> bool:
        """Whether blocks come from file reads (nothing of the file stays mapped) rather than slices."""
        return self._raw is not None

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yields ``(first_row, (rows, dim) float32 tensor)``; the tensor is only valid until the next step."""
        fh = open(self.arr.filename, "rb") if self._raw is not None else None  # noqa: SIM115 - closed below
        try:
            row_bytes = self.dim * self.arr.dtype.itemsize
            for b0 in range(0, self.n, self.block_rows):
                b1 = min(self.n, b0 + self.block_rows)
                if fh is not None:
                    view = self._raw[: b1 - b0]
                    fh.seek(int(self.arr.offset) + b0 * row_bytes)
                    if fh.readinto(memoryview(view).cast("B")) != view.nbytes:
                        raise ValueError(f"gallery file {self.arr.filename} is shorter than its array")
                    block = view
                else:
                    block = np.asarray(self.arr[b0:b1])
                t = torch.from_numpy(np.array(block, dtype=np.float32, copy=True))
                bad = first_nonfinite_row(t)
                if bad is not None:
                    raise ValueError(f"gallery embeddings has a non-finite value (NaN/inf) in row {b0 + bad}")
                if self.normalize:
                    t = torch.nn.functional.normalize(t, dim=1)
                yield b0, t
        finally:
            if fh is not None:
                fh.close()


def _merge(best: ChunkNeighbors | None, new: ChunkNeighbors, offset: int) -> ChunkNeighbors:
    """Running top-k of ``best`` (earlier blocks) and ``new`` (the block starting at ``offset``)."""
    index = torch.where(new.index >= 0, new.index + offset, new.index)
    if best is None:
        return ChunkNeighbors(index=index, score=new.score, self_score=new.self_score)
    k = best.index.shape[1]
    score, perm = torch.cat([best.score, new.score], dim=1).sort(dim=1, descending=True, stable=True)
    index = torch.cat([best.index, index], dim=1).gather(1, perm)
    self_score = torch.where(torch.isnan(best.self_score), new.self_score, best.self_score)
    return ChunkNeighbors(index=index[:, :k], score=score[:, :k], self_score=self_score)


class StreamedGallerySearcher:
    """The :class:`bench.eval.knn.GallerySearcher` interface over a gallery read in row blocks.

    Same lists as searching the whole gallery at once (the tie rule holds across blocks); the score
    block is query chunk x gallery block, so callers size query chunks by :attr:`block_rows`.
    """

    def __init__(self, gallery: Any, backend: str = "auto", mem_budget_bytes: int = 256 << 20, *,
                 normalize: bool = False, block_rows: int | None = None) -> None:
        arr = gallery if isinstance(gallery, np.ndarray) else np.asarray(gallery)
        self.backend = resolve_backend(backend)
        self.mem_budget_bytes = int(mem_budget_bytes)
        self.blocks = RowBlocks(arr, block_rows or block_rows_for(arr.shape[1] if arr.ndim == 2 else 1),
                                normalize=normalize)
        self.n, self.dim = self.blocks.n, self.blocks.dim
        self.block_rows = min(self.blocks.block_rows, max(self.n, 1))

    @property
    def needs_score_block(self) -> bool:
        """Whether a search materialises a chunk x block score block (sizes the query chunks)."""
        return self.backend != "faiss"

    def search(self, query: torch.Tensor, k: int, self_index: torch.Tensor) -> ChunkNeighbors:
        """Top-``k`` gallery rows per query row over every block, never the row ``self_index``."""
        k = max(1, min(int(k), self.n))
        best = None
        for b0, block in self.blocks:
            inside = (self_index >= b0) & (self_index < b0 + len(block))
            local = torch.where(inside, self_index - b0, torch.full_like(self_index, -1))
            # the k-th score so far: a later column below it cannot enter the merged list (one equal to
            # it neither: it has the higher index), so a block's search may skip re-scoring those
            floor = None if best is None else best.score[:, k - 1]
            found = GallerySearcher(block, backend=self.backend, mem_budget_bytes=self.mem_budget_bytes).search(
                query, k, local, floor)
            if found.index.shape[1] < k:  # a block shorter than k: pad to the common width
                pad = k - found.index.shape[1]
                found = ChunkNeighbors(
                    index=torch.cat([found.index, torch.full((len(query), pad), -1, dtype=torch.int64)], dim=1),
                    score=torch.cat([found.score, torch.full((len(query), pad), float("-inf"))], dim=1),
                    self_score=found.self_score)
            best = _merge(best, found, b0)
        assert best is not None  # the gallery is never empty here (checked by the caller)
        return best
