"""Feature builds split over the ranks of a multi-process launch (one store, shard i on rank i mod W).

The two-process tests start this file as a script, once per rank, with the variables a launcher
sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): accelerate's process state reads
them and joins a gloo process group, as under ``accelerate launch --cpu`` or ``torchrun``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_features_media import tiny_catalog  # noqa: F401  (fixture)

from bench.console import UserError
from bench.features import FeatureConfig, FeatureStore, build_features, store_dir
from bench.features.ranks import Ranks, launch_ranks, wait_for_paths

# Small images and few frames keep the mini catalog quick; a vocabulary size of its own keeps this
# tokenizer apart from the other tests' in the session's cache.
MINI_CFG = FeatureConfig(shard_size=200, image_size=32, video_size=32, max_frames=3, audio_seconds=2.0,
                         vocab_size=1200)
TINY_CFG = FeatureConfig(shard_size=5, vocab_size=500, video_fps=4.0, image_size=48, video_size=32)
# What may differ between two builds of the same store: when and how fast they ran, by which processes.
META_RUN_KEYS = {"pid", "timings_s", "cpu_s"}
INFO_RUN_KEYS = {"timings", "created"}


def _worker(out: str) -> None:
    from bench.data import load_catalog

    torch.set_num_threads(1)
    ranks = launch_ranks()
    cat = load_catalog("synthetic:mini", progress=False)
    st = build_features(cat, MINI_CFG, workers=1, progress=False)
    Path(out).write_text(json.dumps({"rank": ranks.rank, "world": ranks.world, "pid": os.getpid(),
                                     "store": str(st.path)}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp: Path, world: int = 2) -> list[dict]:
    """Run ``_worker`` on ``world`` ranks at once; each rank's report, by rank."""
    port = _free_port()
    procs = []
    for r in range(world):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": str(world), "LOCAL_RANK": str(r),
               "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        # own session, so a hung rank can be killed with everything it started
        procs.append(subprocess.Popen([sys.executable, str(Path(__file__)), str(tmp / f"rank{r}.json")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
    for p, text in zip(procs, outs):
        assert p.returncode == 0, text[-4000:]
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(world)]


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _differing_keys(a: dict, b: dict) -> set[str]:
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def _assert_same_bytes(ref: Path, got: Path, resumed: bool = False) -> None:
    """Every file of two stores is byte-identical, except the run records in meta.json / info.json
    (and, in a resumed build, that the tokenizer was found cached)."""
    fa, fb = _files(ref), _files(got)
    assert sorted(fa) == sorted(fb)
    assert any(k.endswith("region_feats.npy") for k in fa) and "category.npy" in fa and "product.npy" in fa
    for name, p in fa.items():
        if name.endswith("meta.json"):
            a, b = json.loads(p.read_text()), json.loads(fb[name].read_text())
            assert _differing_keys(a, b) <= META_RUN_KEYS, name
        elif name == "info.json":
            a, b = json.loads(p.read_text()), json.loads(fb[name].read_text())
            if resumed:
                assert (a["tokenizer"]["cached"], b["tokenizer"]["cached"]) == (False, True)
                b["tokenizer"]["cached"] = False
            assert _differing_keys(a, b) <= INFO_RUN_KEYS
            assert a["timings"]["world_size"] == 1 and b["timings"]["world_size"] == 2
            assert a["timings"]["devices"] == b["timings"]["devices"] == {"cpu": a["num_shards"]}
        else:
            assert p.read_bytes() == fb[name].read_bytes(), name


@pytest.fixture(scope="module")
def two_rank_build(mini_catalog, tmp_path_factory):
    """A one-process build of the mini catalog, moved aside, then the same store built by two ranks."""
    tmp = tmp_path_factory.mktemp("ranks")
    single = build_features(mini_catalog, MINI_CFG, workers=1, progress=False)
    tok = Path(single.info["tokenizer"]["path"]).parent
    shutil.move(str(single.path), tmp / "ref")
    shutil.move(str(tok), tmp / "ref_tokenizer")  # rank 0 trains it again
    reports = _launch(tmp)
    return tmp, reports, store_dir(mini_catalog, MINI_CFG), tok


@pytest.mark.slow
def test_two_ranks_build_the_same_bytes_as_one_process(two_rank_build):
    tmp, reports, path, tok = two_rank_build
    assert [(r["rank"], r["world"], r["store"]) for r in reports] == [(0, 2, str(path)), (1, 2, str(path))]
    _assert_same_bytes(tmp / "ref", path)
    assert (tok / "tokenizer.json").read_bytes() == (tmp / "ref_tokenizer" / "tokenizer.json").read_bytes()
    info = FeatureStore(path).info
    assert info["tokenizer"]["cached"] is False and info["timings"]["shards_resumed"] == 0
    # shard i was written by rank i mod 2 (one worker per rank writes in the rank's own process)
    pids = [json.loads((path / "shards" / f"{s:05d}" / "meta.json").read_text())["pid"]
            for s in range(info["num_shards"])]
    assert info["num_shards"] == 8
    assert pids == [reports[s % 2]["pid"] for s in range(8)]


@pytest.mark.slow
def test_two_ranks_resume_an_interrupted_build(two_rank_build):
    tmp, _, path, _ = two_rank_build
    kept = {s: (path / "shards" / f"{s:05d}" / "meta.json").read_text() for s in range(8)}
    for s in (2, 5):  # one shard of each rank is lost, as is everything rank 0 writes last
        shutil.rmtree(path / "shards" / f"{s:05d}")
    for name in ("info.json", "category.npy", "product.npy"):
        (path / name).unlink()
    (tmp / "again").mkdir()
    again = _launch(tmp / "again")
    info = FeatureStore(path).info
    assert info["timings"]["shards_resumed"] == 6
    for s in range(8):
        meta = (path / "shards" / f"{s:05d}" / "meta.json").read_text()
        if s in (2, 5):
            assert json.loads(meta)["pid"] == again[s % 2]["pid"]  # rebuilt by its own rank
        else:
            assert meta == kept[s]  # reused, not rewritten
    _assert_same_bytes(tmp / "ref", path, resumed=True)


# --- the protocol in one process: ranks played in turn, waits with a short timeout ----------------
def _as_rank(monkeypatch, rank: int, world: int = 2) -> None:
    monkeypatch.setattr("bench.features.store.launch_ranks", lambda: Ranks(rank=rank, world=world))


def test_shard_owner_is_index_mod_world_size():
    for world in (1, 2, 3, 5):
        for s in range(23):
            owners = [r for r in range(world) if Ranks(rank=r, world=world).owns(s)]
            assert owners == [s % world] == [Ranks(world=world).owner(s)]


def test_missing_shards_and_info_fail_the_wait_in_one_line(tiny_catalog, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "home"))
    path = store_dir(tiny_catalog, TINY_CFG)
    _as_rank(monkeypatch, 0)  # rank 0 alone: builds shards 0 and 2 of 3, then waits for rank 1's
    with pytest.raises(UserError) as e:
        build_features(tiny_catalog, TINY_CFG, workers=1, progress=False, wait_timeout_s=0.5)
    msg = str(e.value)
    assert "\n" not in msg and "rank 0 of 2" in msg and "00001 (rank 1)" in msg and "(rank 0)" not in msg
    assert sorted(p.name for p in (path / "shards").iterdir()) == ["00000", "00002"]
    assert not (path / "info.json").exists()

    _as_rank(monkeypatch, 1)  # rank 1 alone: builds shard 1 (resuming), then waits for rank 0's info.json
    with pytest.raises(UserError, match=r"rank 1 of 2: waiting for rank 0 to write info\.json"):
        build_features(tiny_catalog, TINY_CFG, workers=1, progress=False, wait_timeout_s=0.5)
    assert sorted(p.name for p in (path / "shards").iterdir()) == ["00000", "00001", "00002"]

    _as_rank(monkeypatch, 0)  # rank 0 again: every shard exists, so it completes the store
    st = build_features(tiny_catalog, TINY_CFG, workers=1, progress=False, wait_timeout_s=0.5)
    t = st.info["timings"]
    assert (t["shards_resumed"], t["world_size"], t["devices"]) == (3, 2, {"cpu": 3})
    monkeypatch.undo()
    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "single"))
    single = build_features(tiny_catalog, TINY_CFG, workers=1, progress=False)
    for name in ("category.npy", "product.npy", *(f"shards/{s:05d}/{a}.npy" for s in range(3)
                                                  for a in ("status", "title_ids", "region_feats", "audio_feats"))):
        assert (st.path / name).read_bytes() == (single.path / name).read_bytes(), name


def test_a_rank_waits_for_rank_0s_layout(tiny_catalog, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "home"))
    _as_rank(monkeypatch, 1)
    with pytest.raises(UserError, match=r"^rank 1 of 2: waiting for rank 0 to write layout\.json: nothing new"):
        build_features(tiny_catalog, TINY_CFG, workers=1, progress=False, wait_timeout_s=0.2)
    assert not store_dir(tiny_catalog, TINY_CFG).exists()  # it wrote nothing of its own


def test_wait_restarts_its_clock_on_progress(tmp_path):
    import threading

    paths = {f"{i:05d}": tmp_path / f"{i:05d}" for i in range(4)}

    def appear():  # one path every 0.3 s: never 0.5 s without progress, 1.2 s in all
        import time

        for p in paths.values():
            time.sleep(0.3)
            p.mkdir()

    t = threading.Thread(target=appear)
    t.start()
    wait_for_paths(paths, "shards", timeout_s=0.5, poll_s=0.05)
    t.join()
    assert all(p.exists() for p in paths.values())
    with pytest.raises(UserError, match=r"^shards a, b, c, d, e, f, g, h and 2 more: nothing new appeared in 0\.1 s"):
        wait_for_paths({k: tmp_path / "none" / k for k in "abcdefghij"}, "shards", timeout_s=0.1, poll_s=0.02)


def test_single_process_ranks():
    r = launch_ranks()
    assert (r.rank, r.world, r.main) == (0, 1, True)
    assert r.device == ("cuda:0" if torch.cuda.is_available() else "cpu")


if __name__ == "__main__":
    _worker(sys.argv[1])
