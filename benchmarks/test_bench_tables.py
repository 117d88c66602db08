"""Leaderboard generation speed: reading result files and rendering every table.

Run: ``/work/venv/bin/pytest benchmarks/test_bench_tables.py --benchmark-only -s``.
Single-threaded pure Python (no torch, no BLAS work), so the thread count is 1 by construction.

The fixture is a full grid: every distinct cell of the four paper tables (40) at 3 seeds (120 result files),
the size of a complete leaderboard at the default seeds, plus 10x as many unrelated result files
(other data) that ``collect`` must read and filter out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tables_fake import MINI, make_result, write_result  # noqa: E402

from bench.leaderboard import collect, render_all  # noqa: E402
from bench.tables import TABLES  # noqa: E402

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    cells = {c for t in TABLES.values() for c in t.cells()}
    for c in sorted(cells):
        for s in SEEDS:
            write_result(root / "main", make_result(c.model, c.modalities, c.split, s, overrides=c.overrides_dict))
    for i in range(10 * len(cells) * len(SEEDS)):
        write_result(root / "other", make_result("clip", "I,T", "subset", i, data=MINI))
    return root, len(cells) * len(SEEDS)


def test_bench_collect_and_render_all_tables(benchmark, grid):
    root, n = grid

    def build():
        return render_all(TABLES.values(), collect(root, data="synthetic"))

    blocks = benchmark(build)
    assert all("Coverage: 0/" not in b for b in blocks.values())
    benchmark.extra_info.update(result_files=n, unrelated_files=10 * n, threads=1)
    print(f"\n{n} result files (+{10 * n} filtered out): {benchmark.stats.stats.mean * 1000:.1f} ms per full render")
