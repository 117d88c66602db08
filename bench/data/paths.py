"""Where m5bench keeps its caches: ``$M5BENCH_HOME`` (default ``~/.cache/m5bench``)."""

from __future__ import annotations

import os
from pathlib import Path


def m5bench_home() -> Path:
    """The cache root; created on demand."""
    home = Path(os.environ.get("M5BENCH_HOME") or Path.home() / ".cache" / "m5bench").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def catalogs_dir() -> Path:
    d = m5bench_home() / "catalogs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def pool_context():
    """The multiprocessing context for worker pools.

    ``fork`` where the platform has it: unlike ``spawn`` it does not re-import the caller's
    ``__main__`` (so scripts without an ``if __name__ == "__main__"`` guard still work). Workers only
    run numpy, Pillow and PyAV code, never torch or BLAS, so forking a process that has torch
    threads is safe here.
    """
    import multiprocessing as mp

    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
