"""Bad input in the M5Product layout: every listing-level problem is counted and the load goes on;
a broken whole file raises CatalogError naming the file and line, and nothing is written."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bench.data import CatalogError, load_catalog
from bench.data import synth_media as sm


def _good_media(root: Path, iid: str, *, video: bool = True, audio: bool = True) -> None:
    rng_seed = [7, int(iid)]
    look = {"shape": "star", "hue": 0.3, "sat": 0.8, "val": 0.9, "contrast": 0.5, "texture": "stripes",
            "period": 5.0, "angle": 0.3, "scale": 1.0}
    sm.write_jpeg(str(root / "images" / f"{iid}.jpg"), sm.render_image(look, rng_seed), 90)
    if video:
        sm.write_mp4(str(root / "videos" / f"{iid}.mp4"),
                     sm.render_video(dict(look, motion="orbit", freq=0.5, n_frames=8), rng_seed))
    if audio:
        sm.write_mp3(str(root / "audios" / f"{iid}.mp3"),
                     sm.render_audio({"timbre": "saw", "f0": 220.0, "duration": 1.0, "decay": 0.5, "noise": 0.01}, rng_seed))


def build_broken_release(root: Path) -> dict[str, str]:
    """A small release with one listing per problem kind plus healthy ones; returns id -> problem."""
    for d in ("images", "videos", "audios"):
        (root / d).mkdir(parents=True)
    problems: dict[str, str] = {}
    meta: list[bytes] = []

    def rec(iid: str, title: bytes | str = "a good title", label: str | None = "catA", **kw) -> None:
        d = {"item_id": iid, "caption": "@@TITLE@@", "label": label, "tabular": {"colour": "red"}}
        d.update(kw)
        line = json.dumps(d, ensure_ascii=False).encode()
        t = title if isinstance(title, bytes) else json.dumps(title, ensure_ascii=False)[1:-1].encode()
        meta.append(line.replace(b"@@TITLE@@", t))

    for i in range(1, 9):  # healthy listings over two categories, two listings per product
        iid = f"{100 + i}"
        _good_media(root, iid)
        rec(iid, label="catA" if i <= 4 else "catB")
    # Image problems.
    rec("201"); problems["201"] = "image_missing"  # meta names images/201.jpg implicitly; give an explicit path instead
    meta[-1] = meta[-1].replace(b'"label"', b'"image": "images/201.jpg", "label"')
    (root / "images" / "202.jpg").write_bytes(b""); rec("202"); problems["202"] = "image_empty"
    (root / "images" / "203.jpg").write_bytes(np.random.default_rng(0).bytes(500)); rec("203"); problems["203"] = "image_corrupt"
    _good_media(root, "204", video=False, audio=False)
    jpg = (root / "images" / "204.jpg").read_bytes()
    (root / "images" / "204.jpg").write_bytes(jpg[: len(jpg) // 2]); rec("204"); problems["204"] = "image_corrupt"
    # Truncated MP4 (moov atom lost) and an MP3 with no audio frames (an ID3 tag only).
    _good_media(root, "205", audio=False)
    mp4 = (root / "videos" / "205.mp4").read_bytes()
    (root / "videos" / "205.mp4").write_bytes(mp4[: len(mp4) // 2]); rec("205"); problems["205"] = "video_corrupt"
    _good_media(root, "206", video=False, audio=False)
    (root / "audios" / "206.mp3").write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00"); rec("206"); problems["206"] = "audio_no_frames"
    # Text problems.
    _good_media(root, "207", video=False, audio=False)
    rec("207", tabular="colour#:#red#;#sizeXL"); problems["207"] = "pv_malformed"
    _good_media(root, "208", video=False, audio=False)
    rec("208", title=b"bad \xff\xfe bytes"); problems["208"] = "title_not_utf8"
    _good_media(root, "209", video=False, audio=False)
    rec("209", label=None); problems["209"] = "label_missing"
    rec("101", label="catB"); problems["101#2"] = "duplicate_item_id"  # second record for 101: ignored
    (root / "meta_info.jsonl").write_bytes(b"\n".join(meta) + b"\n")
    # id_info in the SCALE code's format for one more listing, with a malformed pv.
    (root / "id_info_dict.json").write_text(json.dumps({"210": {"title": "x", "pv": "#:#v", "label": "catB"}}))
    problems["210"] = "pv_malformed"
    # ...and no file in images/: every release listing has an image, so that is a counted problem.
    problems["210#2"] = "image_missing"
    (root / "product1m_product5m_test_id_label.json").write_text(json.dumps(
        {f"{100 + i}": {"title": "", "label": f"prod{(i + 1) // 2}"} for i in range(1, 9)}))
    return problems


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken") / "release"
    problems = build_broken_release(root)
    return root, problems


def test_every_listing_problem_is_counted_and_load_goes_on(broken):
    root, problems = broken
    cat = load_catalog(f"m5product:{root}", progress=False)
    expected = Counter(problems.values())
    assert cat.skips == expected
    ids: dict[str, list[str]] = {}
    for key, reason in problems.items():
        ids.setdefault(reason, []).append(key.split("#")[0])
    assert {r: sorted(v) for r, v in cat.problem_ids.items()} == {r: sorted(v) for r, v in ids.items()}
    ds = cat.dataset
    rows = {r["item_id"]: r for r in ds}
    assert "209" not in rows  # no label: dropped
    assert len(rows) == 8 + 9  # healthy + problem listings except the unlabelled one
    for iid in ("201", "202", "203", "204"):
        assert rows[iid]["image"] is None and rows[iid]["title"] == "a good title"
    assert rows["205"]["video"] is None and rows["205"]["image"] is not None
    assert rows["206"]["audio"] is None
    assert rows["207"]["table"] == [] and rows["210"]["table"] == []
    assert rows["208"]["title"] is None and rows["208"]["image"] is not None
    assert rows["101"]["category"] == "catA"  # the first record wins
    assert rows["101"]["product_id"] == "prod1" and rows["201"]["product_id"] == "201"
    assert all(Path(r["image"]).is_absolute() for r in rows.values() if r["image"])
    assert rows["102"]["video"] and rows["102"]["audio"]


def test_second_load_uses_validation_cache(broken, monkeypatch):
    root, _ = broken
    first = load_catalog(f"m5product:{root}", progress=False)
    import bench.data.media as media

    def boom(*a, **k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(media, "check_file", boom)
    monkeypatch.setattr(media, "_check_many", boom)
    second = load_catalog(f"m5product:{root}", progress=False)
    assert second.fingerprint == first.fingerprint and second.skips == first.skips


def test_fingerprint_follows_media_bytes(tmp_path):
    root = tmp_path / "r"
    build_broken_release(root)
    fp1 = load_catalog(f"m5product:{root}", progress=False).fingerprint
    img = root / "images" / "103.jpg"
    other = (root / "images" / "104.jpg").read_bytes()
    img.write_bytes(other)
    fp2 = load_catalog(f"m5product:{root}", progress=False).fingerprint
    assert fp1 != fp2


def test_unparseable_json_names_file_and_line(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "meta_info.jsonl").write_text('{"item_id": "1", "label": "a"}\n{"item_id": "2", "label": \n')
    with pytest.raises(CatalogError) as ei:
        load_catalog(f"m5product:{root}", progress=False)
    assert "meta_info.jsonl:2:" in str(ei.value)
    (root / "meta_info.jsonl").unlink()
    (root / "id_info_dict.json").write_text('{\n "1": {"title": "t", "pv": "", "label": "a"},\n "2": {"title": }\n}')
    with pytest.raises(CatalogError) as ei:
        load_catalog(f"m5product:{root}", progress=False)
    assert "id_info_dict.json:3:" in str(ei.value)
    assert sorted(p.name for p in root.iterdir()) == ["id_info_dict.json"]  # nothing written


def test_no_annotation_file(tmp_path):
    with pytest.raises(CatalogError, match="no annotation file"):
        load_catalog(f"m5product:{tmp_path}", progress=False)


def test_duplicate_keys_in_id_info_keep_first(tmp_path):
    (tmp_path / "id_info_dict.json").write_text(
        '{"1": {"title": "first", "pv": "a#:#b", "label": "x"}, "2": {"title": "t", "pv": "", "label": "x"},'
        ' "1": {"title": "second", "pv": "", "label": "y"}}')
    cat = load_catalog(f"m5product:{tmp_path}", progress=False)
    assert cat.skips == Counter({"duplicate_item_id": 1})
    r = cat.dataset[0]
    assert (r["item_id"], r["title"], r["category"], r["table"]) == ("1", "first", "x", [{"key": "a", "value": "b"}])
    assert cat.info["product_ids"].startswith("item_id")
    assert cat.product_names == ["1", "2"]


def test_precomputed_feature_files_are_recorded(tmp_path):
    import base64

    (tmp_path / "id_info_dict.json").write_text('{"1": {"title": "t", "pv": "a#:#b", "label": "x"}}')
    boxes = base64.b64encode(np.zeros((2, 4), np.float32).tobytes()).decode()
    feats = base64.b64encode(np.zeros((2, 2048), np.float32).tobytes()).decode()
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "subset_v2_train.tsv").write_text(f"1\t64\t64\t2\t{boxes}\t{feats}\tt\n")
    (tmp_path / "video_feature").mkdir()
    np.save(tmp_path / "video_feature" / "1.npy", np.zeros((3, 1024), np.float32))
    cat = load_catalog(f"m5product:{tmp_path}", progress=False)
    pre = cat.info["precomputed"]
    assert pre["image_tsv"].endswith("features/subset_v2_train.tsv")
    assert pre["video_npy_dir"].endswith("video_feature") and pre["audio_npy_dir"] is None
    json.dumps(cat.info)  # info is plain JSON, so results can embed it
