"""Named random streams: every random choice of a run derives from the one ``seed`` and a purpose
name, so adding a new use of randomness never shifts an existing one."""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, purpose: str) -> np.random.Generator:
    """A numpy generator that is a pure function of (``seed``, ``purpose``)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, zlib.crc32(purpose.encode())])
