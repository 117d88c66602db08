"""The evaluation side at the M5Product release's size: time and peak RSS of each stage.

pytest-benchmark; every test is ``slow`` and runs its stage ONCE in a fresh subprocess (so the peak
RSS, ``VmHWM`` of that process, is the stage's own, imports included); data are written by another
subprocess first. Numbers go to ``extra_info`` and stdout. Threads: ``M5BENCH_BENCH_THREADS``
(default 1) for torch, faiss and OpenMP alike.

* ``test_bench_coarse_eval``: ``retrieval_metrics`` (official coarse task: 24,054 queries against a
  separate 1,179,613-row gallery, 256-d, memory-mapped ``.npy`` files, random unit vectors, 6,232
  uniformly drawn categories), against a bare chunked matmul over the same data, same query chunks and
  gallery blocks (timed on the first ``BARE_SHARE`` of the query chunks and scaled by query count: the
  matmul is linear in the queries). Target: peak RSS <= 2 GiB.
* ``test_bench_kmeans``: k = 6,000 on 200,000 x 256: faiss (the evaluator's settings, iterations
  capped at ``FAISS_ITERS`` and extrapolated to its 20) vs scikit-learn (k-means++ init timed whole,
  Lloyd iterations capped at ``SKLEARN_ITERS`` and extrapolated per iteration).
* ``test_bench_probe``: ``linear_probe`` on a 1,000,000 x 256 memory-mapped pool with 1,805 classes
  (the capped stratified minibatch path) and 100,000 test rows. Target: peak RSS <= 4 GiB.
* ``test_bench_data_stats``: ``bench data stats`` on release-shaped annotation sets
  (``benchmarks/release_shaped.py``) at three sizes, each run twice (the second reuses the table the
  first kept on disk); a power law fitted to the first runs projects 6.3M listings, which is run
  (twice) if the projection is under 10 minutes and 4 GiB, or when ``M5BENCH_SCALE_FULL=1``.

``M5BENCH_SCALE_FRACTION`` (default 1) shrinks every size for a smoke run; ``M5BENCH_SCALE_DATA`` keeps
the generated data in a folder of your choice (default: pytest's tmp dir).

Run: ``/work/main/.venv/bin/pytest benchmarks/test_bench_release_scale.py -m slow -s -k coarse_eval``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

THREADS = int(os.environ.get("M5BENCH_BENCH_THREADS", "1"))
FRACTION = float(os.environ.get("M5BENCH_SCALE_FRACTION", "1"))
N_QUERY, N_GALLERY, DIM, N_CAT = 24_054, 1_179_613, 256, 6_232
BARE_SHARE = 0.15
FAISS_ITERS, SKLEARN_ITERS = 4, 2
STATS_SIZES = (100_000, 200_000, 400_000)
FULL_RELEASE = 6_313_067
ROOT = Path(__file__).resolve().parent.parent


def _n(n: int) -> int:
    return max(100, int(n * FRACTION))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = os.environ.get("M5BENCH_SCALE_DATA")
    return Path(d) if d else tmp_path_factory.mktemp("release_scale")


_PRELUDE = r"""
import json, os, sys, time
import numpy as np
sys.path.insert(0, {root!r})
if {torch!r}:
    import torch
    torch.set_num_threads({threads})
    try:
        import faiss
        faiss.omp_set_num_threads({threads})
    except ImportError:
        pass
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 2**20  # kB -> GiB
"""

_WRITE = r"""
def write(path, n, dim, seed, centres=None, labels=None, noise=1.0):
    # unit rows (or class centre + noise), written 65,536 rows at a time: never the whole array in RAM
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    rng = np.random.default_rng(seed)
    for s in range(0, n, 65536):
        x = rng.standard_normal((min(n, s + 65536) - s, dim), dtype=np.float32) * noise
        if centres is not None:
            x += centres[labels[s : s + len(x)]]
        else:
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + len(x)] = x
    out.flush()
    del out
"""


def _child(code: str, env_extra: dict | None = None, *, torch: bool = True) -> dict:
    """Run ``code`` in a fresh interpreter (torch and faiss imported and pinned to THREADS unless
    ``torch=False``); its last stdout line is JSON."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS),
               OPENBLAS_NUM_THREADS=str(THREADS), PYTHONPATH=str(ROOT), **(env_extra or {}))
    res = subprocess.run([sys.executable, "-c", _PRELUDE.format(root=str(ROOT), threads=THREADS, torch=torch) + code],
                         capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def _report(benchmark, name: str, info: dict) -> None:
    info = dict(info, threads=THREADS, fraction=FRACTION, loadavg_1min=os.getloadavg()[0])
    benchmark.extra_info.update(info)
    print(f"\n[{name}] " + json.dumps(info))


# --------------------------------------------------------------------------- (a) coarse evaluation

_EVAL = r"""
from bench.eval.gallery_stream import RowBlocks, block_rows_for
from bench.eval.knn import choose_chunk_size
from bench.eval.retrieval import retrieval_metrics
d = {data!r}
q = np.load(d + "/query.npy", mmap_mode="r")
g = np.load(d + "/gallery.npy", mmap_mode="r")
q_lab, g_lab = np.load(d + "/query_cat.npy"), np.load(d + "/gallery_cat.npy")
before = status("VmRSS")
t0, c0 = time.perf_counter(), time.process_time()
res = retrieval_metrics(q, g, {{"coarse": (q_lab, g_lab)}}, backend={backend!r})
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
peak = status("VmHWM")
# the bare chunked matmul: the evaluator's query chunks x gallery blocks, the same file reads
settings = res.definitions["_settings"]
blocks = RowBlocks(g, block_rows_for(g.shape[1]))
k = int(max(np.bincount(g_lab).max(), 10))
chunk = choose_chunk_size(blocks.block_rows, k, 256 << 20, score_block=settings["knn_backend"] != "faiss")
qt = torch.from_numpy(np.array(q, dtype=np.float32))
buf = torch.empty((chunk, blocks.block_rows), dtype=torch.float32)
n_done, t1, c1 = 0, time.perf_counter(), time.process_time()
for s in range(0, len(qt), chunk):
    if n_done >= {bare_share} * len(qt):
        break
    qc = qt[s : s + chunk]
    for _, block in blocks:
        torch.matmul(qc, block.T, out=buf[: len(qc), : len(block)])
    n_done += len(qc)
bare = (time.perf_counter() - t1) * len(qt) / n_done
bare_cpu = (time.process_time() - c1) * len(qt) / n_done
print(json.dumps({{"wall_s": wall, "cpu_s": cpu, "peak_rss_gib": peak, "rss_before_gib": before,
                   "bare_matmul_s": bare, "bare_matmul_cpu_s": bare_cpu, "bare_measured_queries": n_done,
                   "ratio_to_bare": wall / bare, "cpu_ratio_to_bare": cpu / bare_cpu,
                   "backend": settings["knn_backend"], "gallery_read": settings["gallery_read"],
                   "query_chunk": chunk, "max_category_size": int(np.bincount(g_lab).max()),
                   "coarse_mAP@10": res.metrics["coarse/mAP@10[m5product]"], "counts": res.counts}}))
"""


def test_bench_coarse_eval(benchmark, data_dir):
    nq, ng = _n(N_QUERY), _n(N_GALLERY)
    _child(_WRITE + f"""
d = {str(data_dir)!r}
rng = np.random.default_rng(7)
write(d + "/query.npy", {nq}, {DIM}, 1)
write(d + "/gallery.npy", {ng}, {DIM}, 2)
np.save(d + "/query_cat.npy", rng.integers(0, {N_CAT}, {nq}))
np.save(d + "/gallery_cat.npy", rng.integers(0, {N_CAT}, {ng}))
print("{{}}")
""")
    out = benchmark.pedantic(lambda: _child(_EVAL.format(data=str(data_dir), backend="auto", bare_share=BARE_SHARE)),
                             rounds=1, iterations=1)
    _report(benchmark, "coarse eval", dict(out, n_query=nq, n_gallery=ng, dim=DIM))
    assert out["counts"]["coarse/queries"] == nq
    assert out["peak_rss_gib"] <= 2.0


# --------------------------------------------------------------------------- (b) k-means

_KMEANS = r"""
import faiss
from sklearn.cluster import KMeans, kmeans_plusplus
x = np.load({path!r})
n, k = len(x), {k}
t = time.perf_counter()  # faiss with the evaluator's settings (bench.eval.clustering), fewer iterations
km = faiss.Kmeans(x.shape[1], k, niter={faiss_iters}, seed=1234, nredo=1, verbose=False,
                  max_points_per_centroid=max(256, -(-n // k) + 1), min_points_per_centroid=1)
km.train(x)
faiss_train = time.perf_counter() - t
t = time.perf_counter()
km.index.search(x, 1)
faiss_assign = time.perf_counter() - t
t = time.perf_counter()
centres, _ = kmeans_plusplus(x, k, random_state=0)
sk_init = time.perf_counter() - t
t = time.perf_counter()
sk = KMeans(n_clusters=k, init=centres, n_init=1, max_iter={sk_iters}, tol=0.0, random_state=0).fit(x)
sk_lloyd = time.perf_counter() - t
per_iter_sk = sk_lloyd / sk.n_iter_
per_iter_faiss = faiss_train / {faiss_iters}
print(json.dumps({{
    "faiss_train_s": faiss_train, "faiss_iters_run": {faiss_iters}, "faiss_per_iter_s": per_iter_faiss,
    "faiss_assign_s": faiss_assign, "faiss_projected_20_iters_s": per_iter_faiss * 20 + faiss_assign,
    "sklearn_init_s": sk_init, "sklearn_iters_run": int(sk.n_iter_), "sklearn_per_iter_s": per_iter_sk,
    "sklearn_projected_20_iters_s": sk_init + 20 * per_iter_sk,
    "sklearn_projected_300_iters_s": sk_init + 300 * per_iter_sk,
    "cpu_s_total": time.process_time(), "peak_rss_gib": status("VmHWM")}}))
"""


def test_bench_kmeans(benchmark, data_dir):
    n, k = _n(200_000), max(10, int(6_000 * FRACTION))
    path = str(data_dir / "kmeans.npy")
    _child(_WRITE + f"""
rng = np.random.default_rng(3)
centres = 1.5 * rng.standard_normal(({k}, {DIM}), dtype=np.float32)
write({path!r}, {n}, {DIM}, 4, centres=centres, labels=rng.integers(0, {k}, {n}))
print("{{}}")
""")
    code = _KMEANS.format(path=path, k=k, faiss_iters=FAISS_ITERS, sk_iters=SKLEARN_ITERS)
    out = benchmark.pedantic(lambda: _child(code), rounds=1, iterations=1)
    out["sklearn_over_faiss_20_iters"] = out["sklearn_projected_20_iters_s"] / out["faiss_projected_20_iters_s"]
    _report(benchmark, "kmeans", dict(out, n=n, k=k, dim=DIM))
    assert out["faiss_train_s"] > 0


# --------------------------------------------------------------------------- (c) probe

_PROBE = r"""
from bench.eval.classification import linear_probe
d = {data!r}
tr, te = np.load(d + "/probe_train.npy", mmap_mode="r"), np.load(d + "/probe_test.npy", mmap_mode="r")
ytr, yte = np.load(d + "/probe_train_y.npy"), np.load(d + "/probe_test_y.npy")
t, c = time.perf_counter(), time.process_time()
res = linear_probe(tr, ytr, te, yte, seed=0)
print(json.dumps({{"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c, "peak_rss_gib": status("VmHWM"), "accuracy": res["accuracy"],
                   "converged": res["converged"], "n_iter": res["n_iter"], "n_classes": res["n_classes"],
                   "protocol": res["protocol"], "epoch_losses": res.get("epoch_losses")}}))
"""


def test_bench_probe(benchmark, data_dir):
    n_tr, n_te, n_cls = _n(1_000_000), _n(100_000), 1_805
    d = str(data_dir)
    _child(_WRITE + f"""
d = {d!r}
rng = np.random.default_rng(5)
centres = 0.35 * rng.standard_normal(({n_cls}, {DIM}), dtype=np.float32)
p = 1.0 / np.arange(1, {n_cls} + 1) ** 0.8  # a skewed class law: the sample is stratified for a reason
ytr, yte = rng.choice({n_cls}, {n_tr}, p=p / p.sum()), rng.choice({n_cls}, {n_te}, p=p / p.sum())
write(d + "/probe_train.npy", {n_tr}, {DIM}, 6, centres=centres, labels=ytr)
write(d + "/probe_test.npy", {n_te}, {DIM}, 7, centres=centres, labels=yte)
np.save(d + "/probe_train_y.npy", ytr)
np.save(d + "/probe_test_y.npy", yte)
print("{{}}")
""")
    out = benchmark.pedantic(lambda: _child(_PROBE.format(data=d)), rounds=1, iterations=1)
    _report(benchmark, "probe", dict(out, n_train=n_tr, n_test=n_te, dim=DIM))
    assert out["peak_rss_gib"] <= 4.0


# --------------------------------------------------------------------------- (d) bench data stats

_STATS = r"""
import resource, subprocess
t = time.perf_counter()
r = subprocess.run([sys.executable, "-m", "bench.cli", "data", "stats", "m5product:" + {src!r}],
                   capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({{"wall_s": time.perf_counter() - t, "cpu_s": ru.ru_utime + ru.ru_stime, "rc": r.returncode,
                   "err": r.stderr[-500:], "reused_table": "reused (annotation files unchanged)" in r.stdout,
                   "peak_rss_gib": ru.ru_maxrss / 2**20}}))
"""


def _generate(root: Path, n: int) -> dict:
    code = f"""
import resource
from benchmarks.release_shaped import write_release
t = time.perf_counter()
sizes = write_release(__import__("pathlib").Path({str(root)!r}), {n})
print(json.dumps({{"gen_wall_s": time.perf_counter() - t, "gen_peak_rss_gib": status("VmHWM"), "lists": sizes}}))
"""
    return _child(code, torch=False)


def _power_fit(ns: list[int], ys: list[float]) -> tuple[float, float]:
    """``y = a * n ** b`` by least squares in log space: ``(a, b)``."""
    b, log_a = np.polyfit(np.log(ns), np.log(ys), 1)
    return float(math.exp(log_a)), float(b)


def test_bench_data_stats(benchmark, data_dir, tmp_path):
    # the interpreter's start and imports, measured on 1,000 listings, are left out of the growth fit
    tiny = data_dir / "release_1000"
    _generate(tiny, 1000)
    base = _child(_STATS.format(src=str(tiny)), {"M5BENCH_HOME": str(tmp_path / "home")}, torch=False)
    home = {"M5BENCH_HOME": str(tmp_path / "home")}
    rows = []
    for n in (_n(s) for s in STATS_SIZES):
        root = data_dir / f"release_{n}"
        gen = _generate(root, n)
        out = _child(_STATS.format(src=str(root)), home, torch=False)
        assert out["rc"] == 0 and not out["reused_table"], out["err"]
        again = _child(_STATS.format(src=str(root)), home, torch=False)  # the table kept on disk is reused
        assert again["rc"] == 0 and again["reused_table"], again["err"]
        rows.append(dict(out, n=n, **gen, reuse={k: again[k] for k in ("wall_s", "cpu_s", "peak_rss_gib")}))
        print(f"\n[data stats n={n}] " + json.dumps(rows[-1]))
    ns = [r["n"] for r in rows]
    a_t, b_t = _power_fit(ns, [max(r["wall_s"] - base["wall_s"], 1e-3) for r in rows])
    a_c, b_c = _power_fit(ns, [max(r["cpu_s"] - base["cpu_s"], 1e-3) for r in rows])
    a_m, b_m = _power_fit(ns, [max(r["peak_rss_gib"] - base["peak_rss_gib"], 1e-3) for r in rows])
    a_g, b_g = _power_fit(ns, [r["gen_wall_s"] for r in rows])
    proj = {"stats_wall_s": base["wall_s"] + a_t * FULL_RELEASE ** b_t,
            "stats_cpu_s": base["cpu_s"] + a_c * FULL_RELEASE ** b_c,
            "stats_peak_rss_gib": base["peak_rss_gib"] + a_m * FULL_RELEASE ** b_m,
            "generate_wall_s": a_g * FULL_RELEASE ** b_g, "exponent_time": b_t, "exponent_cpu": b_c,
            "exponent_rss": b_m, "base_1000": base}
    print("\n[data stats projected 6.3M] " + json.dumps(proj))
    full = None
    fits = proj["stats_wall_s"] <= 600 and proj["stats_peak_rss_gib"] <= 4
    if (fits or os.environ.get("M5BENCH_SCALE_FULL") == "1") and FRACTION == 1:
        root = data_dir / f"release_{FULL_RELEASE}"
        gen = _generate(root, FULL_RELEASE) if not (root / "id_info_dict.json").is_file() else {}
        full = dict(_child(_STATS.format(src=str(root)), home, torch=False), **gen,
                    loadavg_1min_after=os.getloadavg()[0])
        print("\n[data stats n=6313067] " + json.dumps(full))
        assert full["rc"] == 0, full["err"]
        again = _child(_STATS.format(src=str(root)), home, torch=False)
        full["reuse"] = {k: again[k] for k in ("wall_s", "cpu_s", "peak_rss_gib", "reused_table")}
        print("\n[data stats n=6313067, second run] " + json.dumps(full["reuse"]))
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # the stages above are timed by their children
    _report(benchmark, "data stats", {"sizes": rows, "projected_6.3M": proj, "measured_6.3M": full})
