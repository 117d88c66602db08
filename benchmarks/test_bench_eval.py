"""Evaluator speed and memory: 10,000 queries x 100,000 (and 300,000) gallery x 256-d.

pytest-benchmark; reports, never fails on a time. One test per gallery size times, in the same
process and interleaved round by round:

* ``mm``          bare chunked matmul of the queries against the gallery (same chunk size), nothing else;
* ``ours``        ``retrieval_metrics`` coarse + fine, every definition, default backend (``auto``:
                  ``select``, ``bf16`` or faiss, whichever a cached timing found fastest on this machine);
* ``ours_select`` the same with ``backend="select"`` (matmul + sampled threshold + exact sort);
* ``ours_torch``  the same with ``backend="torch"`` (matmul + topk, the exact reference path);
* ``ours_faiss``  the same with ``backend="faiss"`` (a candidate of ``auto``);
* ``ours_bf16``   the same with ``backend="bf16"`` (bfloat16 matmul, candidates re-scored in float32,
                  pair by pair with faiss; the third candidate of ``auto``);
* ``ours_bf16_matmul`` the same, candidates re-scored by the grouped float32 matmul (bf16 without faiss);
* ``ours_coarse`` / ``ours_coarse_torch`` / ``ours_coarse_bf16``  coarse labels only (the metric set PML
                  computes, and more);
* ``pml``         pytorch-metric-learning ``AccuracyCalculator(k="max_bin_count")`` with its default
                  faiss kNN: coarse precision_at_1, mean_average_precision_at_r, r_precision.

Ratios (targets: ours/mm <= 1.3, ours_coarse/pml <= 0.8) go to ``extra_info`` and stdout. Peak RSS of the
evaluator (target <= 1 GiB at 10k x 100k, whole process) is measured in a fresh subprocess. Threads: ``M5BENCH_BENCH_THREADS``
(default 1) for torch and faiss alike. The machine is shared: each row records the load average and
this process's CPU time over wall time (< 1 means it waited for a core).

Run: ``/work/venv/bin/pytest benchmarks/test_bench_eval.py -s`` (add ``-m "not slow"`` to skip 300k).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from bench.eval.knn_choice import cpu_model

THREADS = int(os.environ.get("M5BENCH_BENCH_THREADS", "1"))
ROUNDS = int(os.environ.get("M5BENCH_BENCH_ROUNDS", "1"))
N_QUERY, DIM, N_CAT, PROD_PER_CAT = 10_000, 256, 200, 20


def make_data(n_gallery: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered unit vectors: item = product centre + noise, product centre = category centre + noise."""
    rng = np.random.default_rng(seed)
    cat_c = rng.standard_normal((N_CAT, DIM), dtype=np.float32)
    prod_c = np.repeat(cat_c, PROD_PER_CAT, axis=0) + rng.standard_normal((N_CAT * PROD_PER_CAT, DIM), dtype=np.float32)
    pid = rng.integers(0, N_CAT * PROD_PER_CAT, n_gallery)
    x = prod_c[pid]
    x += 2.5 * rng.standard_normal((n_gallery, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, pid // PROD_PER_CAT, pid


def _set_threads() -> None:
    torch.set_num_threads(THREADS)
    try:
        import faiss

        faiss.omp_set_num_threads(THREADS)
    except ImportError:
        pass


def _matmul_rescoring(fn):
    """``fn()`` with bf16's candidates re-scored by the grouped float32 matmul (its way without faiss)."""
    from bench.eval import select

    real = select.pair_dots
    select.pair_dots = lambda: None
    try:
        return fn()
    finally:
        select.pair_dots = real


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


@pytest.mark.parametrize("n_gallery", [100_000, pytest.param(300_000, marks=pytest.mark.slow)])
def test_bench_retrieval(benchmark, n_gallery):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    from bench.eval.knn import choose_chunk_size, resolve_backend
    from bench.eval.retrieval import retrieval_metrics
    from bench.eval.select import pair_dots

    _set_threads()
    resolve_backend("auto")  # the once-per-machine timing of auto is not any timed row's work
    x, cat, pid = make_data(n_gallery)
    q = x[:N_QUERY]
    qgi = np.arange(N_QUERY)  # queries are gallery rows: leave-one-out, as in the official protocol
    g_t, q_t = torch.from_numpy(x), torch.from_numpy(q)
    chunk = choose_chunk_size(n_gallery, int(np.bincount(cat).max()), 256 << 20)

    def mm():
        for s in range(0, N_QUERY, chunk):
            q_t[s : s + chunk] @ g_t.T

    both = {"coarse": (cat[:N_QUERY], cat), "fine": (pid[:N_QUERY], pid)}
    coarse = {"coarse": (cat[:N_QUERY], cat)}
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
                              k="max_bin_count")
    cat_f = torch.from_numpy(cat.astype(np.int64))
    runs = {
        "mm": mm,
        "ours": lambda: retrieval_metrics(q, x, both, query_gallery_index=qgi),
        "ours_torch": lambda: retrieval_metrics(q, x, both, query_gallery_index=qgi, backend="torch"),
        "ours_faiss": lambda: retrieval_metrics(q, x, both, query_gallery_index=qgi, backend="faiss"),
        "ours_select": lambda: retrieval_metrics(q, x, both, query_gallery_index=qgi, backend="select"),
        "ours_bf16": lambda: retrieval_metrics(q, x, both, query_gallery_index=qgi, backend="bf16"),
        "ours_bf16_matmul": lambda: _matmul_rescoring(
            lambda: retrieval_metrics(q, x, both, query_gallery_index=qgi, backend="bf16")),
        "ours_coarse": lambda: retrieval_metrics(q, x, coarse, query_gallery_index=qgi),
        "ours_coarse_torch": lambda: retrieval_metrics(q, x, coarse, query_gallery_index=qgi, backend="torch"),
        "ours_coarse_bf16": lambda: retrieval_metrics(q, x, coarse, query_gallery_index=qgi, backend="bf16"),
        "pml": lambda: calc.get_accuracy(q_t, cat_f[:N_QUERY], g_t, cat_f, ref_includes_query=True),
    }
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    outs = {}
    load = [os.getloadavg()[0]]
    for _ in range(ROUNDS):
        for name, fn in runs.items():
            if name == "ours":
                continue
            w, c, outs[name] = _timed(fn)
            if w < wall.get(name, float("inf")):
                wall[name], cpu[name] = w, c
        load.append(os.getloadavg()[0])
    # the benchmark fixture times the default evaluator itself
    def ours_with_cpu():
        c0 = time.process_time()
        out = runs["ours"]()
        cpu["ours"] = min(cpu.get("ours", float("inf")), time.process_time() - c0)
        return out

    outs["ours"] = benchmark.pedantic(ours_with_cpu, rounds=ROUNDS, iterations=1)
    wall["ours"] = benchmark.stats.stats.min
    load.append(os.getloadavg()[0])

    pml, ours_c = outs["pml"], outs["ours_coarse"].metrics
    agree = {
        "mAP@R": abs(pml["mean_average_precision_at_r"] - ours_c["coarse/mAP@R[pml]"]),
        "R-precision": abs(pml["r_precision"] - ours_c["coarse/R-precision[pml]"]),
        "P@1": abs(pml["precision_at_1"] - ours_c["coarse/Recall@1"]),
    }
    ratios = {
        "ours/mm": wall["ours"] / wall["mm"],
        "ours_torch/mm": wall["ours_torch"] / wall["mm"],
        "ours_faiss/mm": wall["ours_faiss"] / wall["mm"],
        "ours/ours_faiss": wall["ours"] / wall["ours_faiss"],
        "ours_select/mm": wall["ours_select"] / wall["mm"],
        "ours_select/ours_faiss": wall["ours_select"] / wall["ours_faiss"],
        "ours_bf16/mm": wall["ours_bf16"] / wall["mm"],
        "ours_bf16/ours_select": wall["ours_bf16"] / wall["ours_select"],
        "ours_bf16/ours_bf16_matmul": wall["ours_bf16"] / wall["ours_bf16_matmul"],
        "ours_coarse/pml": wall["ours_coarse"] / wall["pml"],
        "ours_coarse_torch/pml": wall["ours_coarse_torch"] / wall["pml"],
        "ours_coarse_bf16/pml": wall["ours_coarse_bf16"] / wall["pml"],
    }
    # with one thread, own CPU seconds track the work done even when other processes hold the cores
    # (they still inflate it through shared caches and memory bandwidth); wall ratios need an idle machine
    cpu_ratios = {
        "ours/mm": cpu["ours"] / cpu["mm"],
        "ours_torch/mm": cpu["ours_torch"] / cpu["mm"],
        "ours_faiss/mm": cpu["ours_faiss"] / cpu["mm"],
        "ours/ours_faiss": cpu["ours"] / cpu["ours_faiss"],
        "ours_select/mm": cpu["ours_select"] / cpu["mm"],
        "ours_select/ours_faiss": cpu["ours_select"] / cpu["ours_faiss"],
        "ours_bf16/mm": cpu["ours_bf16"] / cpu["mm"],
        "ours_bf16/ours_select": cpu["ours_bf16"] / cpu["ours_select"],
        "ours_bf16/ours_bf16_matmul": cpu["ours_bf16"] / cpu["ours_bf16_matmul"],
        "ours_coarse/pml": cpu["ours_coarse"] / cpu["pml"],
        "ours_coarse_torch/pml": cpu["ours_coarse_torch"] / cpu["pml"],
        "ours_coarse_bf16/pml": cpu["ours_coarse_bf16"] / cpu["pml"],
    }
    info = {"default_backend": outs["ours"].definitions["_settings"]["knn_backend"],
            "default_choice": outs["ours"].definitions["_settings"]["knn_backend_choice"], "cpu": cpu_model(), "n_query": N_QUERY, "n_gallery": n_gallery, "dim": DIM, "threads": THREADS, "rounds": ROUNDS,
            "chunk": chunk, "wall_s": wall, "cpu_s": cpu,
            "cpu_over_wall": {k: cpu[k] / wall[k] for k in cpu}, "loadavg_1min": load, "ratios": ratios,
            "cpu_ratios": cpu_ratios,
            "pml_abs_diff": agree, "coarse_values": {k: ours_c[k] for k in ("coarse/mAP@R[pml]",
                                                                              "coarse/R-precision[pml]",
                                                                              "coarse/Recall@1",
                                                                              "coarse/mAP@10[m5product]")}}
    benchmark.extra_info.update(info)
    print("\n" + json.dumps(info, indent=1))
    for v in agree.values():  # correctness is asserted; time is only reported
        assert v < 1e-3  # faiss-L2 vs float32 dot ranking: a near-tie swap at rank 1 moves P@1 by 1/Q
    if pair_dots() is None:  # bf16 re-scored by the float32 matmul: the same lists, bit for bit
        assert outs["ours_bf16"].metrics == outs["ours_select"].metrics
    else:  # re-scored pair by pair: last-bit near-ties may swap, as with faiss
        assert max(abs(v - outs["ours_select"].metrics[k]) for k, v in outs["ours_bf16"].metrics.items()) < 1e-3


_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
sys.path.insert(0, {bench_dir!r})
from test_bench_eval import make_data, _set_threads, N_QUERY
from bench.eval.knn import resolve_backend
from bench.eval.retrieval import retrieval_metrics
_set_threads()
resolve_backend({backend!r})  # auto: the once-per-machine timing is not the evaluator's footprint
x, cat, pid = make_data({n_gallery})
import gc; gc.collect()
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 2**20  # kB -> GiB
data_peak = status("VmHWM")
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:  # reset the high-water mark to the current RSS
    fh.write("5")
t = time.perf_counter()
retrieval_metrics(x[:N_QUERY], x, {{"coarse": (cat[:N_QUERY], cat), "fine": (pid[:N_QUERY], pid)}},
                  query_gallery_index=np.arange(N_QUERY), backend={backend!r})
peak = status("VmHWM")
chosen = resolve_backend({backend!r})
print(json.dumps({{"peak_rss_gib": peak, "rss_before_gib": before, "evaluator_extra_gib": peak - before,
                   "data_generation_peak_gib": data_peak, "wall_s": time.perf_counter() - t, "backend": chosen}}))
"""


@pytest.mark.parametrize("backend", ["auto", "select", "bf16", "faiss", "torch"])
def test_peak_memory_10k_x_100k(benchmark, backend):
    code = _CHILD.format(bench_dir=os.path.dirname(__file__), n_gallery=100_000, backend=backend)
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))

    def child():
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        return json.loads(res.stdout.strip().splitlines()[-1])

    out = benchmark.pedantic(child, rounds=1, iterations=1)
    benchmark.extra_info.update(out, backend=backend, threads=THREADS)
    print(f"\npeak RSS ({backend}): {out}")
    # the default (either of its candidates) is held to the 1 GiB target; torch only to a sanity bound
    assert out["peak_rss_gib"] <= (2.0 if backend == "torch" else 1.0)
