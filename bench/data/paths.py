"""Where m5bench keeps its caches: ``$M5BENCH_HOME`` (default ``~/.cache/m5bench``)."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


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


@contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while worker processes are started inside the block.

    A child inherits the signal mask across fork and exec, so workers started here never receive the
    Ctrl-C that a terminal sends to the whole process group: only the parent sees it (its pending
    SIGINT is delivered when the block ends) and stops the workers itself, with no worker traceback.
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no masks; workers may print a traceback
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def stop_pool(executor: Any) -> None:
    """Stop a ``ProcessPoolExecutor`` now (Ctrl-C): drop queued work and terminate its workers.

    Work already returned is the caller's to keep; a worker killed mid-write leaves only a temporary
    file or folder that the next run removes.
    """
    procs = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)
