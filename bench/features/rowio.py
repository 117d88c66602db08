"""Row reads from ``.npy`` files by positional I/O.

Why not ``np.load(mmap_mode="r")`` for the loader: pages of a memory map stay mapped, and counted in
the process's resident set, until the map is closed, so iterating over a whole split through memory
maps grows RSS with the split size. Positional reads (``os.pread``) of just the batch's rows keep
the loader's memory flat whatever the store size, and the files stay ordinary ``.npy`` that any
tool can ``np.load(..., mmap_mode="r")``.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np


def read_npy_header(path: str) -> tuple[int, tuple[int, ...], np.dtype]:
    """``(data offset, shape, dtype)`` of a C-ordered ``.npy`` file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if fortran:
        raise ValueError(f"{path}: Fortran-ordered arrays are not supported")
    return offset, tuple(shape), np.dtype(dtype)


class NpyRows:
    """Random access to the rows (first axis) of one ``.npy`` file without mapping or loading it."""

    def __init__(self, path: str, header: tuple[int, tuple[int, ...], np.dtype] | None = None) -> None:
        self.offset, self.shape, self.dtype = header or read_npy_header(path)
        self.path = path
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def _pread(self, nbytes: int, offset: int) -> bytes:
        if hasattr(os, "pread"):
            buf = os.pread(self.fd, nbytes, offset)
        else:  # pragma: no cover - Windows
            os.lseek(self.fd, offset, os.SEEK_SET)
            buf = os.read(self.fd, nbytes)
        if len(buf) != nbytes:
            raise IOError(f"{self.path}: short read ({len(buf)} of {nbytes} bytes)")
        return buf

    def read_into(self, out: np.ndarray, out_pos: np.ndarray, rows: np.ndarray) -> None:
        """``out[out_pos[j]] = self[rows[j]]``; consecutive rows are fetched with one read."""
        order = np.argsort(rows, kind="stable")
        rows_s, pos_s = rows[order], out_pos[order]
        j = 0
        n = len(rows_s)
        while j < n:
            k = j + 1
            while k < n and rows_s[k] == rows_s[k - 1] + 1:
                k += 1
            start, count = int(rows_s[j]), k - j
            buf = self._pread(count * self.row_bytes, self.offset + start * self.row_bytes)
            block = np.frombuffer(buf, dtype=self.dtype).reshape((count,) + self.row_shape)
            out[pos_s[j:k]] = block
            j = k


def _default_max_open() -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except Exception:  # pragma: no cover - no resource module (Windows)
        return 256
    soft = 4096 if soft == resource.RLIM_INFINITY else soft
    return max(64, min(4096, soft // 4))  # leave most descriptors to the rest of the process


class ReaderCache:
    """A bounded set of open :class:`NpyRows` (file descriptors), least recently used closed first.

    Headers are remembered after the first open, so a descriptor evicted by a shuffled pass over a
    large store costs one ``os.open`` to reopen, not a header parse.
    """

    def __init__(self, max_open: int | None = None) -> None:
        self.max_open = max_open or _default_max_open()
        self._open: OrderedDict[str, NpyRows] = OrderedDict()
        self._headers: dict[str, tuple[int, tuple[int, ...], np.dtype]] = {}

    def get(self, path: str) -> NpyRows:
        r = self._open.get(path)
        if r is None:
            header = self._headers.get(path)
            r = NpyRows(path, header)
            self._headers[path] = (r.offset, r.shape, r.dtype)
            self._open[path] = r
            while len(self._open) > self.max_open:
                _, old = self._open.popitem(last=False)
                old.close()
        else:
            self._open.move_to_end(path)
        return r

    def close(self) -> None:
        for r in self._open.values():
            r.close()
        self._open.clear()
