"""An on-disk index of region-feature TSV shards: ``image_id`` -> (shard, byte offset).

A release's region features are terabytes of base64 rows in many shards; finding a listing's row
means reading every line's first field once. The index is kept as two sorted numpy arrays (ids and
packed locations) in ``$M5BENCH_HOME/region_index/``, keyed by each shard's path, size and mtime,
so later builds (another feature config, another catalog over the same release) load it instead of
scanning again, and a lookup is a binary search rather than a Python dict of millions of entries.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.features.image import OFFSET_BITS, index_region_tsv


class RegionIndex:
    """Sorted unique ids and their packed ``(shard << 40) | offset`` (the first shard listing an id wins)."""

    def __init__(self, keys: np.ndarray, locations: np.ndarray) -> None:
        self.keys, self.locations = keys, locations

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, ids: Sequence[str]) -> list[int | None]:
        """Packed location of each id (see :func:`bench.features.image.shard_location`), None if absent."""
        if not len(self.keys) or not len(ids):
            return [None] * len(ids)
        q = np.asarray([str(i) for i in ids])
        at = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        hit = self.keys[at] == q
        return [int(loc) if h else None for loc, h in zip(self.locations[at].tolist(), hit.tolist())]


def _digest(paths: Sequence[str]) -> str:
    h = hashlib.sha256(b"m5bench-region-index-1\n")
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def build_region_index(paths: Sequence[str]) -> RegionIndex:
    """Scan every shard once (line by line, first field only) into a :class:`RegionIndex`."""
    keys: list[str] = []
    locs: list[int] = []
    for s, path in enumerate(paths):
        for key, off in index_region_tsv(path).items():
            keys.append(key)
            locs.append((s << OFFSET_BITS) | off)
    if not keys:
        return RegionIndex(np.zeros(0, dtype="<U1"), np.zeros(0, dtype=np.int64))
    arr = np.asarray(keys)
    uniq, first = np.unique(arr, return_index=True)  # first occurrence: the earliest shard wins
    return RegionIndex(uniq, np.asarray(locs, dtype=np.int64)[first])


def region_index(paths: Sequence[str], cache_dir: Path | None = None) -> RegionIndex:
    """The index of ``paths``: loaded from ``cache_dir`` when a shard set with the same paths,
    sizes and mtimes was indexed before, else built and saved there (atomically)."""
    if cache_dir is None:
        from bench.data.paths import m5bench_home

        cache_dir = m5bench_home() / "region_index"
    path = Path(cache_dir) / f"{_digest(paths)}.npz"
    if path.is_file():
        with np.load(path) as z:
            return RegionIndex(z["keys"], z["locations"])
    index = build_region_index(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, keys=index.keys, locations=index.locations)
    os.replace(tmp, path)
    return index
