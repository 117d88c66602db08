"""End-to-end wall time of the headline job, `bench run --model scale --modalities I,T,Tab,V,A`.

Two figures, as the SCALE issue states its budget: from cold caches (the catalog is generated,
featurized, SCALE pretrained, embedded, scored, fine-tuned) and with the catalog and features
cached (everything from pretraining on). Each round is a fresh `bench` process, so imports count.

    pytest benchmarks/test_bench_run.py --benchmark-only -s  [M5BENCH_BENCH_ROUNDS=3]

Threads: torch's default (2 on this machine); feature extraction uses 2 worker processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROUNDS = int(os.environ.get("M5BENCH_BENCH_ROUNDS", "1"))
CMD = [sys.executable, "-m", "bench.cli", "run", "--model", "scale", "--modalities", "I,T,Tab,V,A"]

pytestmark = pytest.mark.slow


def _run(home: Path, results: Path) -> None:
    env = {**os.environ, "M5BENCH_HOME": str(home)}
    proc = subprocess.run(CMD + ["--results", str(results), "--force"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_headline_cold(benchmark, tmp_path):
    homes = iter(range(1000))

    def setup():
        home = tmp_path / f"home{next(homes)}"
        return (home, home / "results"), {}

    benchmark.pedantic(_run, setup=setup, rounds=ROUNDS, iterations=1)


def test_headline_cached_catalog_and_features(benchmark, tmp_path):
    home = tmp_path / "home"
    _run(home, home / "results")  # warm the catalog and feature caches (not timed)

    def setup():
        shutil.rmtree(home / "runs", ignore_errors=True)  # pretraining must run again
        return (home, home / "results"), {}

    benchmark.pedantic(_run, setup=setup, rounds=ROUNDS, iterations=1)
