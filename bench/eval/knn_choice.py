"""Which exact kNN backend ``auto`` runs on this machine: a short timing on first use, cached.

``select`` (torch matmul + threshold selection) costs about one float32 matmul everywhere. faiss'
cost depends on the CPU: at k = 560 it took 3.4x the matmul on an Intel Xeon, yet 0.85-0.97x on an
AMD EPYC, whose faiss BLAS outruns torch's (``benchmarks/test_bench_eval.py``). ``bf16`` (bfloat16
matmul, exact float32 re-scoring of the candidates) pays only on CPUs with fast bf16 dot products and
when the candidates are few next to the gallery. So none wins everywhere, and ``auto`` times all
three once per machine on a fixed evaluator-shaped job (clustered unit vectors, queries in cluster
order as the evaluator's sort by R leaves them, k = 512 of a 100,000 gallery as at k = R in
``benchmarks/test_bench_eval.py``, the evaluator's chunking) and keeps the fastest. k / gallery sets
how many candidates ``bf16`` re-scores: measured here (AMD EPYC, one thread, pair-by-pair re-scoring,
960 queries of this job's data), it took 0.50x select's CPU time at k = 10, 0.55x at k = 100 and 0.69x
at k = 560 of 100,000, but 0.91x at k = 512 of 40,000. Without bf16 dot-product instructions the bf16
matmul need not beat the float32 one at all (not measured here), which is why it is timed, not assumed.

``select`` returns exactly what the ``torch`` reference path returns. An alternative must be clearly
faster (:data:`MARGIN`) to be picked, so a timing within noise does not switch it: faiss may order
last-bit near-ties differently, and ``bf16`` is taken only if its lists on the timing job agree with
``select``'s (:func:`bf16_agrees`: bit for bit where it re-scores by the float32 matmul; within float32
rounding where it re-scores pair by pair, which like faiss may order last-bit near-ties differently).
The choice is cached in ``$M5BENCH_HOME/knn_backend.json`` under the CPU model, thread count, library versions and :data:`VERSION`, and :func:`auto_choice` says
how it was made (results record it).
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any

import numpy as np
import torch

from bench.eval import select

MARGIN = 0.95  # an alternative is picked only when it takes < 95% of select's time
VERSION = 3  # of the timing: 2 added bf16; 3 its pair-by-pair re-scoring, so cached choices are timed again
_JOB = {"queries": 640, "gallery": 100_000, "dim": 256, "k": 512}
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
            f"numpy={np.__version__} | choice=v{VERSION} | faiss={faiss_version}")


def _cache_path():
    from bench.data.paths import m5bench_home

    return m5bench_home() / "knn_backend.json"


def _job() -> tuple[torch.Tensor, int]:
    """The timing job's gallery (its first rows are the queries, in cluster order) and k."""
    rng = np.random.default_rng(0)
    n_q, n_g, d, k = _JOB["queries"], _JOB["gallery"], _JOB["dim"], _JOB["k"]
    centres = rng.standard_normal((200, d), dtype=np.float32)
    label = rng.integers(0, 200, n_g)
    label[:n_q] = np.sort(label[:n_q])  # the evaluator's sort by R leaves a category's queries together
    x = centres[label] + 2.5 * rng.standard_normal((n_g, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return torch.from_numpy(x), k


def _time_backends() -> dict[str, float]:
    """CPU seconds of one evaluator-shaped search per backend (after a small warm-up of each).

    Left out: faiss where it is not installed, ``bf16`` where it fails or its lists disagree with
    ``select``'s (:func:`bf16_agrees`).
    """
    from bench.eval.knn import GallerySearcher, choose_chunk_size

    g, k = _job()
    n_q, n_g = _JOB["queries"], g.shape[0]
    seconds, lists = {}, {}
    for backend in ("select", "faiss", "bf16"):
        try:
            searcher = GallerySearcher(g, backend=backend)
            chunk = choose_chunk_size(n_g, k, 256 << 20, score_block=searcher.needs_score_block)
            searcher.search(g[:32], k, torch.arange(32))  # warm-up: first-call allocations, thread pools
            t0 = time.process_time()
            out = [searcher.search(g[s : min(n_q, s + chunk)], k, torch.arange(s, min(n_q, s + chunk)))
                   for s in range(0, n_q, chunk)]
            seconds[backend] = time.process_time() - t0
        except (ValueError, RuntimeError):  # faiss not installed; no bf16 matmul on this build
            continue
        lists[backend] = (torch.cat([o.index for o in out]), torch.cat([o.score for o in out]))
    if "bf16" in lists and not bf16_agrees(lists["bf16"], lists["select"]):
        del seconds["bf16"]
    return seconds


def bf16_agrees(bf16: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor]) -> bool:
    """Whether ``bf16``'s (index, score) lists are what they claim against ``select``'s ``ref`` on one job.

    Re-scored by the float32 matmul they must be equal bit for bit. Re-scored pair by pair (faiss) the
    scores differ from the matmul's in the last bits, so: each rank's score within float32 rounding of
    ``ref``'s (a top-k member missing from the candidates shifts the ranks after it by a score gap, far
    more at this job's density) and at most 1 % of the entries holding another index (near-ties).
    """
    if select.pair_dots() is None:
        return all(torch.equal(a, b) for a, b in zip(bf16, ref))
    (i_b, s_b), (i_r, s_r) = bf16, ref
    return bool(torch.allclose(s_b, s_r, rtol=1e-5, atol=1e-6)) and float((i_b != i_r).float().mean()) <= 0.01


def pick(seconds: dict[str, float]) -> str:
    """The fastest backend of a timing, an alternative to ``select`` only when under MARGIN x its time."""
    best = "select"
    for alt in ("faiss", "bf16"):
        if alt in seconds and seconds[alt] < MARGIN * seconds["select"] and seconds[alt] < seconds[best]:
            best = alt
    return best


def auto_choice() -> dict[str, Any]:
    """The backend ``auto`` means here, with how it was chosen (``backend``, ``reason``, ``seconds``)."""
    key = machine_key()
    if key in _memo:
        return _memo[key]
    path = _cache_path()
    cache = _read(path)
    choice: dict[str, Any] = cache.get(key) or {}
    if "backend" not in choice:
        seconds = _time_backends()
        choice = {"backend": pick(seconds), "seconds": {b: round(s, 4) for b, s in seconds.items()},
                  "reason": (f"timed on this machine ({_JOB}); an alternative needs < {MARGIN} x select, "
                             "bf16 also select's lists bit for bit; not timed: "
                             + (", ".join(b for b in ("faiss", "bf16") if b not in seconds) or "none")),
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
