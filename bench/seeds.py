"""Named random streams: every random choice of a run derives from the one ``seed`` and a purpose
name, so adding a new use of randomness never shifts an existing one."""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, purpose: str) -> np.random.Generator:
    """A numpy generator that is a pure function of (``seed``, ``purpose``)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, zlib.crc32(purpose.encode())])


#: First seed of each epoch-ordered stream of shuffled batches. These offsets predate the named
#: streams; they stay so that cached checkpoints and recorded results remain reproducible.
_EPOCH_STREAMS = {"pretrain-batches": 0, "finetune-batches": 5_000}


def epoch_seed(seed: int, purpose: str, epoch: int) -> int:
    """The integer seed of ``purpose``'s batch order in ``epoch`` (a pure function of the three)."""
    if purpose not in _EPOCH_STREAMS:
        raise KeyError(f"unknown batch stream {purpose!r}; known: {sorted(_EPOCH_STREAMS)}")
    return int(seed) * 10_007 + _EPOCH_STREAMS[purpose] + int(epoch)
