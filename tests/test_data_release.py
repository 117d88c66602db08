"""A release-shaped folder with the official file names: lists, ground truth, two region TSV shards,
S3D and mel .npy folders; the official protocol built from it and honoured by the evaluator."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import cli, wide_console  # noqa: F401 - the fixture is used by name

from bench.data.catalog import load_catalog

# 16 listings in 4 categories. Products: two listings each, except lone products p_c and p_z.
LISTINGS = {
    # pretraining pool (the subset's training half: t0-t3)
    "t0": ("cA", "p_t0"), "t1": ("cB", "p_t1"), "t2": ("cC", "p_t2"), "t3": ("cD", "p_t3"),
    "t4": ("cA", "p_t4"), "t5": ("cB", "p_t5"),
    # coarse queries and the separate coarse gallery
    "q0": ("cA", "p_a"), "q1": ("cB", "p_b"), "q2": ("cD", "p_c"),  # q2: cD has no gallery listing: lone
    "g0": ("cA", "p_a"), "g1": ("cA", "p_x"), "g2": ("cB", "p_b"), "g3": ("cC", "p_y"),
    # the rest of the fine query set
    "f0": ("cC", "p_y"), "f1": ("cC", "p_z"),  # f1: p_z has no other listing: lone
    "f2": ("cB", "p_x2"),
}
QUERY_C, GALLERY_C = ["q0", "q1", "q2"], ["g0", "g1", "g2", "g3"]
QUERY_FG = ["q0", "g0", "q1", "g2", "g3", "f0", "f1"]  # products p_a, p_a, p_b, p_b, p_y, p_y, p_z
SUBSET_TRAIN, SUBSET_TEST = ["t0", "t1", "t2", "t3"], ["g0", "g1", "g2", "q0"]
TRAIN = ["t0", "t1", "t2", "t3", "t4", "t5"]
SHARD_OF = {iid: i % 2 for i, iid in enumerate(LISTINGS)}
VIDEO, AUDIO = ["q0", "g0", "t1"], ["q0", "t2"]


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.float32).tobytes()).decode()


def _ids(ids: list[str], label: str = "category") -> dict:
    return {i: {"label": LISTINGS[i][0] if label == "category" else LISTINGS[i][1]} for i in ids}


def region_rows(iid: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(sorted(LISTINGS).index(iid))
    n = 3 + sorted(LISTINGS).index(iid) % 4
    boxes = np.stack([rng.uniform(0, 40, n), rng.uniform(0, 40, n), rng.uniform(50, 100, n),
                      rng.uniform(50, 80, n)], 1).astype(np.float32)
    return rng.standard_normal((n, 2048)).astype(np.float32), boxes


def make_release(root: Path) -> Path:
    """The folder: every file under the release's own name."""
    root.mkdir(parents=True, exist_ok=True)
    w = lambda name, obj: (root / name).write_text(json.dumps(obj), encoding="utf-8")  # noqa: E731
    w("id_info_dict.json", {i: {"title": f"title {i}", "pv": "colour#:#red", "label": c} for i, (c, _) in LISTINGS.items()})
    # the fine-grained ground truth also names a listing outside the catalog (p_b's third listing)
    w("product1m_product5m_test_id_label.json", {**_ids(QUERY_FG, "product"), "elsewhere": {"label": "p_b"}})
    w("subset_v2_id_label.json", {i: {"title": "", "pv": "", "label": LISTINGS[i][0]} for i in SUBSET_TRAIN + SUBSET_TEST})
    w("subset_v2_label_list.json", ["cA", "cB", "cC", "cD"])
    w("train_id_label.json", _ids(TRAIN))
    w("subset_v2_train_id_label.json", _ids(SUBSET_TRAIN))
    w("subset_v2_test_id_label.json", _ids(SUBSET_TEST))
    w("query_c_id_label.json", _ids(QUERY_C))
    w("gallery_c_id_label.json", _ids(GALLERY_C))
    w("query_fg_id_label.json", _ids(QUERY_FG, "product"))
    w("gallery_fg_id_label.json", _ids(["f2"], "product"))
    for s in (0, 1):  # two region-feature shards under the official subset names
        with open(root / ("subset_v2_train.tsv", "subset_v2_test.tsv")[s], "w") as f:
            for iid in [i for i in LISTINGS if SHARD_OF[i] == s]:
                feats, boxes = region_rows(iid)
                f.write("\t".join([iid, "100", "80", str(len(feats)), _b64(boxes), _b64(feats), "t"]) + "\n")
    (root / "video_feature").mkdir()
    (root / "audio_feature").mkdir()
    for iid in VIDEO:
        np.save(root / "video_feature" / f"{iid}.npy", np.full((4, 1024), 0.5, np.float16))
    for iid in AUDIO:
        np.save(root / "audio_feature" / f"{iid}.npy", np.ones((80, 751), np.float32))
    # a listed query whose listing is not in the annotation: not scored, counted
    (root / "query_c_id_label.json").write_text(json.dumps({**_ids(QUERY_C), "gone": {"label": "cA"}}))
    (root / "README.txt").write_text("release notes")
    (root / "gallery_c_feature.lmdb").mkdir()
    return root


@pytest.fixture
def release(tmp_path, monkeypatch):
    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "home"))
    return load_catalog(f"m5product:{make_release(tmp_path / 'release')}", progress=False)


def _ids_of(cat, rows) -> list[str]:
    return sorted(cat.dataset.select(np.asarray(rows).tolist())["item_id"])


def test_release_files_are_read_and_extra_files_listed(release):
    pre = release.info["precomputed"]
    assert [Path(p).name for p in pre["image_tsv_shards"]] == ["subset_v2_test.tsv", "subset_v2_train.tsv"]
    assert pre["video_npy_dir"].endswith("video_feature") and pre["audio_npy_dir"].endswith("audio_feature")
    assert release.info["unrecognised_files"] == ["README.txt", "gallery_c_feature.lmdb/"]
    assert set(release.info["release_lists"]) >= {"coarse_query", "coarse_gallery", "fine_query", "subset_test"}
    # splits follow the lists: the pretraining pool and the subset are the train lists
    assert _ids_of(release, release.split_indices("pretrain_full")) == sorted(TRAIN)
    assert _ids_of(release, release.split_indices("pretrain_subset")) == sorted(SUBSET_TRAIN)
    json.dumps(release.info)
    # precomputed features count as present before anything is decoded (no media files here)
    pres = release.modality_presence()
    assert pres["I"] == 1.0 and pres["V"] == len(VIDEO) / len(LISTINGS) and pres["A"] == len(AUDIO) / len(LISTINGS)


def test_every_listing_gets_its_regions_from_either_shard(release):
    from bench.features.config import FeatureConfig
    from bench.features.store import build_features
    from bench.modalities import ModalitySet

    cfg = FeatureConfig(vocab_size=300)
    st = build_features(release, cfg, workers=1, progress=False)
    assert st.present("I").all()
    ids = list(release.dataset["item_id"])
    for iid in ("t0", "t1"):  # one listing from each shard
        row = ids.index(iid)
        b = st.get_batch(np.array([row]), ModalitySet.parse("I"))
        feats, _ = region_rows(iid)
        assert int(b.region_mask[0].sum()) == len(feats)
        np.testing.assert_allclose(b.region_feats[0, : len(feats)].numpy(), feats, atol=2e-3, rtol=1e-3)
    assert sorted(np.asarray(ids)[st.present("V")]) == sorted(VIDEO)
    assert sorted(np.asarray(ids)[st.present("A")]) == sorted(AUDIO)
    assert "1 more shard" in st.info["sources"]["I"]


def test_task_sets_follow_the_lists(release):
    q, g, loo = release.task_rows("coarse", "full")
    assert (_ids_of(release, q), _ids_of(release, g), loo) == (sorted(QUERY_C), sorted(GALLERY_C), False)
    for split in ("subset", "full"):
        q, g, loo = release.task_rows("fine", split)
        assert _ids_of(release, q) == _ids_of(release, g) == sorted(QUERY_FG) and loo
    q, g, loo = release.task_rows("coarse", "subset")
    assert _ids_of(release, q) == _ids_of(release, g) == sorted(SUBSET_TEST) and loo
    # P counted in the ground truth: p_b has a third listing there, outside the catalog
    ids = list(release.dataset["item_id"])
    fine = release.task_set("fine", "full")
    sizes = {ids[r]: int(p) for r, p in zip(fine.query.tolist(), fine.positives)}
    assert sizes["q1"] == 3 and sizes["q0"] == 2 and sizes["f1"] == 1
    # the subset's coarse P counts the subset's training listings too (cA: t0, g0, g1, q0)
    sub = release.task_set("coarse", "subset")
    assert {ids[r]: int(p) for r, p in zip(sub.query.tolist(), sub.positives)}["g0"] == 4
    # the full coarse P counts every labelled listing (cA: t0, t4, q0, g0, g1)
    full = release.task_set("coarse", "full")
    assert {ids[r]: int(p) for r, p in zip(full.query.tolist(), full.positives)}["q0"] == 5
    train, test = release.cls_rows("subset")
    assert _ids_of(release, train) == sorted(SUBSET_TRAIN) and _ids_of(release, test) == sorted(SUBSET_TEST)


def test_official_protocol_scores_lone_queries_zero_and_is_recorded(release):
    from bench.data.tasks import eval_masks
    from bench.eval import evaluate

    eval_rows = release.split_indices("gallery")
    sets = eval_masks(release, "full", eval_rows)
    cat, prod = release.category_ids()[eval_rows], release.product_ids()[eval_rows]
    # an oracle embedding: one direction per product, a shared one per category
    x = (np.eye(4)[cat] * 3).astype(np.float32)
    x = np.concatenate([x, np.eye(len(release.product_names))[prod].astype(np.float32)], axis=1)
    out = evaluate(x, category=cat, product=prod, coarse_query=sets["queries"]["coarse"],
                   fine_query=sets["queries"]["fine"], gallery=sets["cluster_rows"],
                   task_galleries=sets["galleries"], positive_counts=sets["positives"] or None,
                   protocol=sets["protocol"], tasks=("retrieval",), cosine_too=False)
    m, c = out["metrics"], out["counts"]
    assert c["coarse/queries"] == 3 and c["coarse/lone_queries"] == 1
    assert c["fine/queries"] == 7 and c["fine/lone_queries"] == 1
    # the oracle finds every positive; the lone query scores 0 and is counted under [m5product]
    assert m["coarse/mAP@1[m5product]"] == pytest.approx(2 / 3)
    assert m["fine/mAP@1[m5product]"] == pytest.approx(6 / 7)
    # and is excluded under the standard definitions
    assert m["coarse/Prec@1[std]"] == pytest.approx(1.0) and m["fine/Recall@1"] == pytest.approx(1.0)
    proto = out["definitions"]["retrieval_protocol"]
    assert proto["fine"]["leave_one_out"] and proto["fine"]["queries"] == proto["fine"]["gallery"] == 7
    assert not proto["coarse"]["leave_one_out"] and (proto["coarse"]["queries"], proto["coarse"]["gallery"]) == (3, 4)
    assert proto["coarse"]["queries_in_gallery"] == 0 and proto["coarse"]["listed_absent"] == 1


@pytest.mark.usefixtures("wide_console")
def test_stats_lists_shards_protocol_and_unrecognised_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "home"))
    root = make_release(tmp_path / "release")
    rc, out, _ = cli(["data", "stats", f"m5product:{root}"], capsys)
    assert rc == 0
    assert "README.txt" in out and "gallery_c_feature.lmdb/" in out and "unrecognised" in out
    assert "region feature TSV shards (2)" in out and "evaluation protocol" in out


def test_unreadable_release_list_is_a_one_line_refusal(tmp_path, monkeypatch):
    from bench.data.errors import CatalogError

    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "home"))
    root = make_release(tmp_path / "release")
    (root / "query_c_id_label.json").write_text("{not json")
    with pytest.raises(CatalogError, match="query_c_id_label.json.*invalid JSON"):
        load_catalog(f"m5product:{root}", progress=False)


@pytest.fixture(scope="module")
def official_synth(tmp_path_factory):
    """A tiny synthetic catalog written with the release's own list names (``official_lists``)."""
    from bench.data.synth import config_for, generate

    out = tmp_path_factory.mktemp("official_synth") / "catalog"
    generate(out, config_for("tiny", seed=0, n_listings=80, official_lists=True), workers=1)
    return out


def test_synth_official_lists_load_as_the_official_protocol(official_synth, tiny_synth_dir):
    from bench.data.release import RELEASE_LISTS

    for role in ("coarse_query", "coarse_gallery", "fine_query", "subset", "subset_test", "pretrain"):
        assert (official_synth / f"{RELEASE_LISTS[role][0]}.json").is_file(), role
    assert (official_synth / "subset_v2_id_label.json").is_file()
    assert not any((official_synth / "splits").glob("*"))  # no harness lists beside the release's
    cat = load_catalog(f"m5product:{official_synth}", progress=False)
    ids = list(cat.dataset["item_id"])
    q, g, loo = cat.task_rows("coarse", "full")
    expect = json.loads((official_synth / "query_c_id_label.json").read_text())
    assert sorted(ids[r] for r in q) == sorted(expect) and not loo and not np.isin(q, g).any()
    q, g, loo = cat.task_rows("fine", "full")
    assert loo and np.array_equal(q, g)
    assert cat.info["unrecognised_files"] == []
    # the embedded catalogs are written as before: harness lists only, no new config key
    assert not any((tiny_synth_dir / f"{stems[0]}.json").exists() for stems in RELEASE_LISTS.values())
    assert "official_lists" not in json.loads((tiny_synth_dir / "info.json").read_text())["config"]
    plain = load_catalog(f"m5product:{tiny_synth_dir}", progress=False)
    assert plain.task_sets is None and plain.info.get("protocol") is None


def test_run_on_official_lists_records_the_protocol(official_synth, tmp_path):
    from bench.modalities import ModalitySet
    from bench.pipeline import CellSpec, plan_cell, run_cell

    for split in ("full", "subset"):
        cell = CellSpec("bert", ModalitySet.parse("T"), data=f"m5product:{official_synth}", split=split, seed=0,
                        overrides={"max_steps": 2, "batch_size": 16, "finetune_epochs": 1})
        res = run_cell(plan_cell(cell, tmp_path / split), progress=False, say=lambda s: None)
        proto = res["definitions"]["retrieval_protocol"]
        assert proto["fine"]["leave_one_out"] and proto["fine"]["queries"] == proto["fine"]["gallery"]
        assert proto["coarse"]["leave_one_out"] == (split == "subset")
        assert proto["coarse"]["positives_from"] != "the gallery"
        assert res["counts"]["fine/queries"] == proto["fine"]["queries"]
        # the subset cells fine-tune on the subset's training list (the official subset scripts)
        subset = json.loads((official_synth / "subset_v2_train_id_label.json").read_text())
        assert (res["counts"]["cls_train_listings"] == len(subset)) == (split == "subset")


def test_protocol_file_scores_external_embeddings_as_the_run_does(release, tmp_path):
    from bench.data.tasks import eval_masks
    from bench.eval import evaluate
    from bench.eval.files import score_embeddings
    from bench.protocol import read_protocol, write_protocol

    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(release), 8)).astype(np.float32)
    ids = np.asarray(release.dataset["item_id"])
    for split in ("full", "subset"):
        path = tmp_path / f"{split}.parquet"
        write_protocol(release, path, split)
        cols = read_protocol(path)
        assert cols["fine_gallery"].sum() == len(QUERY_FG) and cols["coarse_query"].sum() == (3 if split == "full" else 4)
        ext = score_embeddings({"item_id": ids, "embeddings": x}, path, probe=False, knn_backend="select")
        eval_rows = release.split_indices("gallery")
        sets = eval_masks(release, split, eval_rows)
        own = evaluate(x[eval_rows], category=release.category_ids()[eval_rows], product=release.product_ids()[eval_rows],
                       coarse_query=sets["queries"]["coarse"], fine_query=sets["queries"]["fine"],
                       gallery=sets["cluster_rows"], task_galleries=sets["galleries"],
                       positive_counts=sets["positives"] or None, tasks=("retrieval", "clustering"),
                       knn_backend="select")
        for k, v in own["metrics"].items():
            assert ext["metrics"][k] == pytest.approx(v, nan_ok=True), (split, k)


def test_region_index_is_built_once_and_first_shard_wins(tmp_path):
    import os

    from bench.features.image import shard_location
    from bench.features.region_index import region_index

    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    a.write_text("x\t1\t1\t0\t\t\n" + "y\t1\t1\t0\t\t\n")
    b.write_text("y\t2\t2\t0\t\t\n" + "z\t2\t2\t0\t\t\n")
    idx = region_index([str(a), str(b)], tmp_path / "cache")
    x, y, z, w = idx.lookup(["x", "y", "z", "w"])
    assert shard_location(x) == (0, 0) and shard_location(y) == (0, 10) and shard_location(z) == (1, 10) and w is None
    (cached,) = (tmp_path / "cache").glob("*.npz")
    again = region_index([str(a), str(b)], tmp_path / "cache")  # loaded, not rescanned
    assert again.lookup(["z"]) == [z] and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    b.write_text("z\t2\t2\t0\t\t\n")  # a changed shard is indexed again
    os.utime(b, ns=(1, 1))
    assert shard_location(region_index([str(a), str(b)], tmp_path / "cache").lookup(["z"])[0]) == (1, 0)
