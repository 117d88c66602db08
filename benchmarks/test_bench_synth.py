"""Benchmark: generating the ``default`` synthetic catalog (~5,000 listings with real media).

Target: <= 60 s wall on a 2-core machine. Media are rendered by ``min(cpus, 4)`` worker processes,
each encoding single-threaded (x264 threads=1, LAME), so the thread count is one per worker.
Run: ``/work/venv/bin/pytest benchmarks/test_bench_synth.py --benchmark-only -q``.
"""

from __future__ import annotations

import os
import shutil

import pytest

from bench.data.synth import SIZES, config_for, generate


@pytest.mark.slow
def test_bench_generate_default(benchmark, tmp_path):
    workers = min(os.cpu_count() or 1, 4)
    runs = iter(range(100))
    outs: list = []

    def setup():
        out = tmp_path / f"run{next(runs)}"
        outs.append(out)
        return (out,), {}

    def run(out):
        return generate(out, config_for("default", seed=0), workers=workers)

    info = benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    benchmark.extra_info.update({"workers": workers, "threads_per_worker": 1, "cpus": os.cpu_count(),
                                 "listings": info["counts"]["listings"]})
    assert info["counts"]["listings"] == SIZES["default"]
    for o in outs:
        shutil.rmtree(o, ignore_errors=True)
    print(f"\ndefault synthetic catalog: median {benchmark.stats.stats.median:.1f} s over 3 rounds "
          f"({workers} worker processes x 1 thread, {os.cpu_count()} CPUs)")
