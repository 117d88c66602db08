"""The feature store end to end on a tiny catalog with real and broken media."""

from __future__ import annotations

import base64
import os
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.features import Batch, FeatureConfig, FeatureStore, build_features, store_dir
from bench.modalities import ALL, Modality, ModalitySet
from test_features_media import make_catalog, tiny_catalog  # noqa: F401  (fixture)

CFG = FeatureConfig(shard_size=5, vocab_size=500, video_fps=4.0, image_size=48, video_size=32)


@pytest.fixture(scope="module")
def store(tiny_catalog):  # noqa: F811
    return build_features(tiny_catalog, CFG, workers=1, progress=False)


def _all(store: FeatureStore) -> Batch:
    return store.get_batch(np.arange(len(store)), ALL)


def test_spec_from_actual_tokenizer_and_backbone(store):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(store.info["tokenizer"]["path"])
    s = store.spec
    assert s.vocab_size == tok.get_vocab_size()
    assert tok.id_to_token(s.pad_id) == "[PAD]" and tok.id_to_token(s.mask_id) == "[MASK]"
    assert tok.id_to_token(s.cls_id) == "[CLS]" and tok.id_to_token(s.sep_id) == "[SEP]"
    assert (s.region_dim, s.max_regions, s.video_dim, s.audio_dim) == (256, 16, 256, 40)
    assert s.num_categories == 2 and s.extra["num_products"] == 7
    assert "random init (seed 0)" in store.info["sources"]["I"]


def test_presence_flags_and_reasons(store):
    st = store
    expect_missing = {
        Modality.I: {8: "absent", 9: "decode_error", 10: "file_not_found", 11: "absent"},
        Modality.V: {8: "absent", 9: "decode_error", 10: "file_not_found", 11: "absent"},
        Modality.A: {8: "absent", 9: "decode_error", 10: "file_not_found", 11: "absent"},
        Modality.T: {8: "absent", 11: "absent"},
        Modality.Tab: {8: "absent", 11: "too_long"},
    }
    for m, missing in expect_missing.items():
        present = st.present(m)
        assert present.tolist() == [i not in missing for i in range(12)], m
        reasons = {}
        for r in missing.values():
            reasons[r] = reasons.get(r, 0) + 1
        assert st.missing_reasons(m) == reasons
        assert st.info["counts"][m.value]["by_reason"] == reasons
    assert "bad.jpg" in st.info["failure_examples"]["I"]["decode_error"][0]
    assert "nope.mp4" in st.info["failure_examples"]["V"]["file_not_found"][0]


def test_batch_contents(store, tiny_catalog):  # noqa: F811
    b = _all(store)
    s = store.spec
    assert b.index.tolist() == list(range(12))
    for m in ALL:
        assert b.present[m].dtype == torch.bool
    # Missing modality: zero features, all-False mask, pad ids.
    for row in (8, 9, 10):
        assert not b.region_mask[row].any() and b.region_feats[row].abs().sum() == 0
        assert not b.video_mask[row].any() and b.video_feats[row].abs().sum() == 0
        assert not b.audio_mask[row].any() and b.audio_feats[row].abs().sum() == 0
    assert (b.title_ids[8] == s.pad_id).all() and not b.title_mask[8].any()
    # Present modality: real values under the mask.
    for row in range(8):
        assert b.region_mask[row].sum() == 16 and b.region_feats[row].abs().sum() > 0
        assert torch.isfinite(b.audio_feats[row]).all() and b.audio_mask[row].sum() > 10
        n_frames = int(b.video_mask[row].sum())
        assert n_frames == 4 * (1 + row % 3)  # 1-3 s clips at video_fps 4
        assert (b.video_feats[row, n_frames:] == 0).all()
    # Boxes: a 4x4 grid over the unit square.
    boxes = b.region_boxes[0]
    assert torch.allclose(boxes[:, 4].sum(), torch.tensor(1.0)) and boxes[:, :4].min() >= 0 and boxes[:, :4].max() <= 1
    # Padding only to the longest listing in the batch.
    assert b.title_ids.shape[1] == int(b.title_mask.sum(1).max())
    assert b.video_feats.shape[1] == int(b.video_mask.sum(1).max()) == 12
    # Labels: contiguous ids over the catalog's values.
    cats = tiny_catalog.dataset["category"]
    names = sorted(set(cats))
    assert b.category.tolist() == [names.index(c) for c in cats]
    assert b.product.max().item() == 6 and b.product.min().item() == 0
    # Table entity spans survive storage.
    n = int(b.table_mask[0].sum())
    assert b.table_entity[0, :n].tolist()[0] == -1 and b.table_entity[0, :n].max().item() == 2
    assert set(b.table_kind[0, 1 : n - 1].tolist()) == {1, 2}


def test_only_requested_modalities_are_materialised(store):
    b = store.get_batch(np.array([3, 1, 8]), ModalitySet.parse("T,A"))
    assert b.index.tolist() == [3, 1, 8]
    assert set(b.present) == {Modality.T, Modality.A}
    assert b.region_feats is None and b.video_feats is None and b.table_ids is None
    assert b.title_ids is not None and b.audio_feats is not None
    full = _all(store)
    L = b.title_ids.shape[1]
    assert torch.equal(b.title_ids, full.title_ids[[3, 1, 8], :L])


def test_batches_cover_rows_and_shuffle_is_seeded(store):
    rows = np.array([0, 2, 4, 5, 6, 7, 9, 11])
    seq = [b.index.tolist() for b in store.batches(rows, "I,T", 3)]
    assert seq == [[0, 2, 4], [5, 6, 7], [9, 11]]
    assert [len(b) for b in [x.index for x in store.batches(rows, "I", 3, drop_last=True)]] == [3, 3]
    a = [x for b in store.batches(rows, "T", 3, shuffle=True, seed=1) for x in b.index.tolist()]
    b = [x for b in store.batches(rows, "T", 3, shuffle=True, seed=1) for x in b.index.tolist()]
    c = [x for b in store.batches(rows, "T", 3, shuffle=True, seed=2) for x in b.index.tolist()]
    assert a == b and sorted(a) == rows.tolist() and a != c
    mask = np.zeros(12, bool)
    mask[[1, 3]] = True
    assert [b.index.tolist() for b in store.batches(mask, "T", 8)] == [[1, 3]]


def test_store_is_reused_and_config_changes_are_not(store, tiny_catalog, monkeypatch):  # noqa: F811
    import bench.features.store as store_mod

    def boom(*a, **k):
        raise AssertionError("a complete store must not be rebuilt")

    monkeypatch.setattr(store_mod, "_run_jobs", boom)
    again = build_features(tiny_catalog, CFG, workers=1, progress=False)
    assert again.path == store.path == store_dir(tiny_catalog, CFG)
    assert store.path.parent.name == str(tiny_catalog.fingerprint)
    assert CFG.replace(shard_size=7).hash() == CFG.hash()  # layout only
    changed = CFG.replace(max_audio=16)
    assert changed.hash() != CFG.hash()
    monkeypatch.undo()
    other = build_features(tiny_catalog, changed, workers=1, progress=False)
    assert other.path != store.path
    assert other.get_batch(np.array([0]), "A").audio_feats.shape[1] == 16


def _assert_same_store(a: FeatureStore, b: FeatureStore) -> None:
    sa, sb = a.spec.to_dict(), b.spec.to_dict()
    sa["extra"].pop("store"), sb["extra"].pop("store")
    assert sa == sb
    np.testing.assert_array_equal(a.status(), b.status())
    x, y = _all(a), _all(b)
    for f in fields(Batch):
        u, v = getattr(x, f.name), getattr(y, f.name)
        if isinstance(u, torch.Tensor):
            assert torch.equal(u, v), f.name
    assert {m: t.tolist() for m, t in x.present.items()} == {m: t.tolist() for m, t in y.present.items()}


def test_killed_build_resumes_to_identical_store(tiny_catalog, tmp_path, monkeypatch):  # noqa: F811
    cfg = CFG.replace(max_frames=6)
    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "home_a"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_features(tiny_catalog, cfg, workers=1, progress=False, _fail_after=1)
    path = store_dir(tiny_catalog, cfg)
    assert not (path / "info.json").exists()
    done = sorted(p.name for p in (path / "shards").iterdir())
    assert done == ["00000"]  # exactly one complete shard; no partial shard folder left behind
    resumed = build_features(tiny_catalog, cfg, workers=1, progress=False)
    assert resumed.info["timings"]["shards_resumed"] == 1
    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "home_b"))
    fresh = build_features(tiny_catalog, cfg, workers=1, progress=False)
    assert fresh.path != resumed.path
    _assert_same_store(resumed, fresh)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.float32).tobytes()).decode()


def test_precomputed_official_features(tmp_path, monkeypatch):
    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "home"))
    cat = make_catalog(tmp_path / "cat", fingerprint="precomputed-test")
    rng = np.random.default_rng(0)
    tsv = tmp_path / "regions.tsv"
    feats = {}
    with open(tsv, "w") as f:
        for i in range(6):
            n = 10 + i
            boxes = np.stack([rng.uniform(0, 50, n), rng.uniform(0, 30, n), rng.uniform(50, 100, n), rng.uniform(30, 60, n)], 1)
            feats[i] = (rng.standard_normal((n, 2048)).astype(np.float32), boxes.astype(np.float32))
            f.write("\t".join([f"it{i}", "100", "60", str(n), _b64(boxes), _b64(feats[i][0]), "a title"]) + "\n")
    vdir, adir = tmp_path / "video", tmp_path / "audio"
    vdir.mkdir()
    adir.mkdir()
    for i in range(4):
        np.save(vdir / f"it{i}.npy", rng.standard_normal((3 + i, 1024)).astype(np.float16))
    mel = rng.standard_normal((80, 751)).astype(np.float32)
    np.save(adir / "it0.npy", mel)
    cat.info = {"precomputed": {"image_tsv": str(tsv), "video_npy_dir": str(vdir), "audio_npy_dir": str(adir)}}
    st = build_features(cat, CFG, workers=1, progress=False)
    assert (st.spec.region_dim, st.spec.max_regions, st.spec.video_dim, st.spec.audio_dim) == (2048, 36, 1024, 80)
    assert st.present("I").tolist() == [True] * 6 + [False] * 6
    assert st.missing_reasons("I")["not_in_precomputed"] == 6
    assert st.present("V").sum() == 4 and st.present("A").sum() == 1
    b = st.get_batch(np.array([2, 0]), ALL)
    f2, bx2 = feats[2]
    assert int(b.region_mask[0].sum()) == 12 and b.region_feats.shape[1] == 12  # longest in batch
    np.testing.assert_allclose(b.region_feats[0, :12].numpy(), f2, atol=2e-3, rtol=1e-3)  # float16 storage
    np.testing.assert_allclose(b.region_boxes[0, :12, 0].numpy(), bx2[:, 0] / 100, rtol=1e-6)
    np.testing.assert_allclose(b.region_boxes[0, :12, 4].numpy(),
                               (bx2[:, 2] - bx2[:, 0]) * (bx2[:, 3] - bx2[:, 1]) / 6000, rtol=1e-5)
    from bench.features.audio import reduce_frames

    np.testing.assert_allclose(b.audio_feats[1].numpy(), reduce_frames(mel.T, 64, "pool"), atol=2e-3)
    assert "precomputed TSV" in st.info["sources"]["I"]


@pytest.mark.slow
def test_process_pool_build_equals_in_process_build(tiny_catalog, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "pool"))
    pooled = build_features(tiny_catalog, CFG, workers=2, progress=False)
    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "inproc"))
    single = build_features(tiny_catalog, CFG, workers=1, progress=False)
    _assert_same_store(pooled, single)


@pytest.mark.slow
def test_subprocess_killed_midway_resumes(tmp_path):
    """A real kill (SIGKILL of the building process after its first shard) and a resume."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "build.py"
    script.write_text(
        "import sys, torch\n"
        "torch.set_num_threads(1)\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from pathlib import Path\n"
        "from test_features_media import make_catalog\n"
        "from bench.features import FeatureConfig, build_features\n"
        "if __name__ == '__main__':\n"
        f"    cat = make_catalog(Path({str(tmp_path / 'cat')!r}), fingerprint='kill-test')\n"
        "    cfg = FeatureConfig(shard_size=2, vocab_size=500, video_fps=4.0, image_size=48, video_size=32)\n"
        "    st = build_features(cat, cfg, workers=1, progress=False)\n"
        "    print('DONE', st.path)\n")
    env = dict(os.environ, M5BENCH_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    shards = tmp_path / "home" / "features" / "kill-test"
    deadline = time.time() + 240
    while time.time() < deadline and not list(shards.glob("*/shards/00000")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(shards.glob("*/shards/0*")))
    assert 1 <= done_before < 6 and not list(shards.glob("*/info.json"))
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    resumed = FeatureStore(out.stdout.split("DONE ")[1].strip())
    assert resumed.info["timings"]["shards_resumed"] == done_before
    assert not list((resumed.path / "shards").glob(".*"))  # a half-written shard of the killed run is gone
    env_b = dict(env, M5BENCH_HOME=str(tmp_path / "home_b"))
    out_b = subprocess.run([sys.executable, str(script)], env=env_b, capture_output=True, text=True, timeout=600)
    _assert_same_store(resumed, FeatureStore(out_b.stdout.split("DONE ")[1].strip()))
