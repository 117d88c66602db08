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
    """Start worker processes inside this block so that they never see a Ctrl-C.

    A terminal sends SIGINT to the whole process group, so without this every worker raises its own
    KeyboardInterrupt and prints a traceback. Inside the block SIGINT is ignored (spawned children
    keep an ignored disposition across exec, and Python then leaves it ignored) and blocked (forked
    children inherit the mask; on Linux a blocked signal stays pending even while ignored, so a
    Ctrl-C during the block reaches this process when it ends; starting a *spawned* child resets
    this process's mask, so there a Ctrl-C in the few milliseconds of the block may be dropped).
    Only the parent sees the interrupt, and it stops the workers itself. Outside the main thread
    (where signal dispositions cannot be changed) this does nothing.
    """
    import threading

    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    old_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def stop_pool(executor: Any) -> None:
    """Stop a ``ProcessPoolExecutor`` now (Ctrl-C): terminate its workers, so queued work never runs.

    Work already returned is the caller's to keep; a worker killed mid-write leaves only a temporary
    file or folder that the next run removes.
    """
    procs = list((getattr(executor, "_processes", None) or {}).values())
    call_queue = getattr(executor, "_call_queue", None)
    if call_queue is not None:
        # Jobs still in the pipe to the workers will never be read: do not wait to flush them.
        call_queue.cancel_join_thread()
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)
    # The pool's manager thread sees its workers gone, fails the queued work and exits; waiting for
    # it here (not in the interpreter's exit hook) avoids a spurious "Bad file descriptor" at exit.
    executor.shutdown(wait=True)
