"""Label handling shared by the evaluator: joint remapping of arbitrary hashable ids to 0..n-1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def as_label_array(labels: Any, name: str) -> np.ndarray:
    """Turn a label sequence (numpy, torch, list, pandas) into a 1-d numpy array, or raise ValueError."""
    if hasattr(labels, "detach"):  # torch tensor without importing torch here
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    return arr


def remap_labels(*label_arrays: Sequence[Any] | np.ndarray, names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Map the union of several label arrays to contiguous int64 codes 0..n-1, jointly.

    Any hashable works (strings, big int64 product ids, mixed objects). Codes follow the order of
    first appearance across the arrays, so the mapping is deterministic. Libraries such as
    pytorch-metric-learning cast labels to float32, where ids >= 2**24 collide; contiguous codes
    avoid that. A missing label (None/NaN) is an error because a query without a label cannot be scored.
    """
    import pandas as pd  # factorize handles object arrays of mixed hashables, which np.unique does not

    names = list(names) if names is not None else [f"labels[{i}]" for i in range(len(label_arrays))]
    arrays = [as_label_array(a, n) for a, n in zip(label_arrays, names)]
    sizes = [len(a) for a in arrays]
    if not arrays:
        return []
    joined = np.concatenate([a.astype(object) for a in arrays]) if len({a.dtype for a in arrays}) > 1 else np.concatenate(arrays)
    codes, _ = pd.factorize(joined, use_na_sentinel=True)
    codes = np.asarray(codes, dtype=np.int64)
    out: list[np.ndarray] = []
    start = 0
    for n, size in zip(names, sizes):
        part = codes[start : start + size]
        if size and part.min() < 0:
            bad = int(np.flatnonzero(part < 0)[0])
            raise ValueError(f"{n} has a missing label (None/NaN) at row {bad}")
        out.append(part)
        start += size
    return out
