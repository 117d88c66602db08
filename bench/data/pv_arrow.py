"""The pv rule of :func:`bench.data.loaders.clean_table` for a batch of pv strings, in Arrow.

A release's id_info gives every listing's table as one pv string; parsing them one by one in Python
(a dict per entity) was the loader's largest cost. :func:`parse_pv_batch` applies the same rule to
a whole batch with Arrow kernels: split on ``#;#``, skip blank parts, split each part on ``#:#``
(exactly two pieces), strip with Python's own set of white-space characters, refuse an empty key;
a string of at most one character is no table; one bad entity makes the whole table malformed.
Strings the kernels cannot take as they are (JSON-looking text, invalid UTF-8) go through
:func:`clean_table` itself.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench.data.pv import ENTITY_SEP, KV_SEP

TABLE_TYPE = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))


class PvText(str):
    """A pv string whose parsing is left to the batch (:func:`parse_pv_batch`)."""


@cache
def python_whitespace() -> str:
    """Every character :meth:`str.strip` removes."""
    return "".join(c for c in map(chr, range(0x110000)) if c.isspace())


def _strip(arr: Any) -> Any:
    return pc.utf8_trim(arr, characters=python_whitespace())


def parse_pv_batch(values: list[str]) -> tuple[pa.ListArray, np.ndarray]:
    """``(tables, malformed)`` of pv strings: a ``list<struct<key, value>>`` array (empty where
    malformed) and a ``bool`` per string, exactly as :func:`bench.data.loaders.clean_table` gives
    them one by one."""
    from bench.data.loaders import clean_table

    n = len(values)
    arrow_ok = np.ones(n, dtype=bool)
    try:
        arr = pa.array(values, pa.string())
    except (UnicodeEncodeError, pa.ArrowException):
        arrow_ok = np.fromiter((_utf8(v) for v in values), dtype=bool, count=n)
        arr = pa.array([v if ok else "" for v, ok in zip(values, arrow_ok)], pa.string())
    head = pc.utf8_slice_codeunits(_strip(arr), 0, 1)
    arrow_ok &= ~pc.is_in(head, value_set=pa.array(["{", "["])).to_numpy(zero_copy_only=False)
    short = pc.less_equal(pc.utf8_length(arr), 1).to_numpy(zero_copy_only=False)

    parts = pc.split_pattern(arr, ENTITY_SEP)
    parent = pc.list_parent_indices(parts).to_numpy()
    flat = parts.flatten()
    kv = pc.split_pattern(flat, KV_SEP)
    pair = (pc.list_value_length(kv).to_numpy() == 2)
    blank = pc.equal(_strip(flat), "").to_numpy(zero_copy_only=False)
    pairs = kv.filter(pa.array(pair))
    keys, vals = _strip(pc.list_element(pairs, 0)), _strip(pc.list_element(pairs, 1))
    good = np.zeros(len(flat), dtype=bool)
    good[pair] = pc.greater(pc.utf8_length(keys), 0).to_numpy(zero_copy_only=False)
    bad_part = ~good & ~blank
    malformed = (np.bincount(parent[bad_part], minlength=n) > 0) & ~short
    keep_row = ~malformed & ~short & arrow_ok
    keep = good & keep_row[parent]
    sel = keep[pair]
    counts = np.bincount(parent[keep], minlength=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    ents = pa.StructArray.from_arrays([keys.filter(pa.array(sel)), vals.filter(pa.array(sel))], names=["key", "value"])
    tables = pa.ListArray.from_arrays(pa.array(offsets), ents, type=TABLE_TYPE)
    malformed &= arrow_ok
    if not arrow_ok.all():  # the rest, one by one
        idx = np.flatnonzero(~arrow_ok)
        slow = []
        for i in idx.tolist():
            found: set[str] = set()
            slow.append(clean_table(str(values[i]), found))
            malformed[i] = "pv_malformed" in found
        tables = _patch(tables, idx, pa.array(slow, TABLE_TYPE))
    return tables, malformed


def _utf8(v: str) -> bool:
    try:
        v.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _patch(tables: pa.ListArray, idx: np.ndarray, values: pa.ListArray) -> pa.ListArray:
    """``tables`` with rows ``idx`` replaced by ``values``."""
    where = np.arange(len(tables), dtype=np.int64)
    where[idx] = len(tables) + np.arange(len(idx))
    return pc.take(pa.concat_arrays([tables, values]), pa.array(where))


def merge_tables(py_tables: list[Any], deferred: np.ndarray, parsed: pa.ListArray) -> pa.ListArray:
    """The table column of a batch: rows ``deferred`` (positions) from ``parsed``, the rest from
    the Python lists ``py_tables`` (their entries at the deferred positions are ignored)."""
    if len(deferred) == len(py_tables):
        return parsed
    base = pa.array([[] if isinstance(t, PvText) else t for t in py_tables], TABLE_TYPE)
    return _patch(base, deferred, parsed) if len(deferred) else base
