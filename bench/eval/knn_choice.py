"""Which exact kNN backend ``auto`` runs on this machine: a short timing on first use, cached.

``select`` (torch matmul + threshold selection) costs about one float32 matmul everywhere. faiss'
cost depends on the CPU: at k = 560 it took 3.4x the matmul on an Intel Xeon, yet 0.85-0.97x on an
AMD EPYC, whose faiss BLAS outruns torch's (``benchmarks/test_bench_eval.py``). So neither wins
everywhere, and ``auto`` times both once per machine on a fixed evaluator-shaped job (clustered unit
vectors, k = 512, the evaluator's chunking) and keeps the faster.

faiss must be clearly faster (:data:`MARGIN`) to be picked: ``select`` returns exactly what the
``torch`` reference path returns, while faiss may order last-bit near-ties differently, so a
timing within noise should not switch it. The choice is cached in ``$M5BENCH_HOME/knn_backend.json``
under the CPU model, thread count and library versions, and :func:`auto_choice` says how it was made
(results record it).
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any

import numpy as np
import torch

MARGIN = 0.95  # faiss is picked only when it takes < 95% of select's time
_JOB = {"queries": 1024, "gallery": 40_000, "dim": 256, "k": 512}
_memo: dict[str, dict[str, Any]] = {}


def cpu_model() -> str:
    """The CPU's model name: which kNN backend is faster depends on it (faiss' heaps are fast on some CPUs only)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key() -> str:
    """What the timing depends on: CPU model, torch threads, torch / numpy / faiss versions."""
    try:
        import faiss

        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = "none"
    return (f"{cpu_model()} | threads={torch.get_num_threads()} | torch={torch.__version__} | "
            f"numpy={np.__version__} | faiss={faiss_version}")


def _cache_path():
    from bench.data.paths import m5bench_home

    return m5bench_home() / "knn_backend.json"


def _time_backends() -> dict[str, float]:
    """CPU seconds of one evaluator-shaped search per backend (after a small warm-up of each)."""
    from bench.eval.knn import GallerySearcher, choose_chunk_size

    rng = np.random.default_rng(0)
    n_q, n_g, d, k = _JOB["queries"], _JOB["gallery"], _JOB["dim"], _JOB["k"]
    centres = rng.standard_normal((200, d), dtype=np.float32)
    x = centres[rng.integers(0, 200, n_g)] + 2.5 * rng.standard_normal((n_g, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    g = torch.from_numpy(x)
    seconds = {}
    for backend in ("select", "faiss"):
        searcher = GallerySearcher(g, backend=backend)
        chunk = choose_chunk_size(n_g, k, 256 << 20, score_block=searcher.needs_score_block)
        searcher.search(g[:32], k, torch.arange(32))  # warm-up: first-call allocations, thread pools
        t0 = time.process_time()
        for s in range(0, n_q, chunk):
            searcher.search(g[s : min(n_q, s + chunk)], k, torch.arange(s, min(n_q, s + chunk)))
        seconds[backend] = time.process_time() - t0
    return seconds


def auto_choice() -> dict[str, Any]:
    """The backend ``auto`` means here, with how it was chosen (``backend``, ``reason``, ``seconds``)."""
    key = machine_key()
    if key in _memo:
        return _memo[key]
    if key.endswith("faiss=none"):
        choice: dict[str, Any] = {"backend": "select", "reason": "faiss is not installed"}
    else:
        path = _cache_path()
        cache = _read(path)
        choice = cache.get(key) or {}
        if "backend" not in choice:
            seconds = _time_backends()
            faster = "faiss" if seconds["faiss"] < MARGIN * seconds["select"] else "select"
            choice = {"backend": faster, "seconds": {b: round(s, 4) for b, s in seconds.items()},
                      "reason": f"timed on this machine ({_JOB}); faiss needs < {MARGIN} x select",
                      "machine": key}
            cache[key] = choice
            _write(path, cache)
    _memo[key] = choice
    return choice


def _read(path) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(path, cache: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"  # atomic replace: concurrent evaluators never read half a file
    try:
        with open(tmp, "w") as fh:
            json.dump(cache, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs a re-timing next process
