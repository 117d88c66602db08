"""The synthetic generator: layout, real decodable media, latent structure, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from bench.data.synth import _FUNCS, _MODS, _bit, build_listings, build_world, config_for, generate


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_media(tiny_synth_dir):
    root = tiny_synth_dir
    for name in ("meta_info.jsonl", "id_info_dict.json", "product1m_product5m_test_id_label.json", "label_list.json", "info.json"):
        assert (root / name).is_file(), name
    info = json.loads((root / "info.json").read_text())
    assert info["generator_version"] and info["seed"] == 0 and info["counts"]["listings"] == 60
    metas = [json.loads(line) for line in (root / "meta_info.jsonl").read_text().splitlines()]
    assert len(metas) == 60 and len({m["item_id"] for m in metas}) == 60
    id_info = json.loads((root / "id_info_dict.json").read_text())
    assert set(id_info) == {m["item_id"] for m in metas}
    assert all(set(v) == {"title", "pv", "label"} for v in id_info.values())
    assert sum(m["video"] is None for m in metas) > 0  # some listings lack video
    n_img = n_vid = n_aud = 0
    for m in metas:
        if m["image"]:
            assert m["image"] == f"images/{m['item_id']}.jpg"
            with Image.open(root / m["image"]) as im:
                assert im.format == "JPEG" and im.size == (64, 64)
            n_img += 1
        if m["video"] and n_vid < 5:
            with av.open(str(root / m["video"])) as c:
                frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
                assert c.streams.video[0].codec_context.name == "h264"
            assert len(frames) >= 8 and frames[0].shape == (64, 64, 3)
            assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 0.05  # something moves
            n_vid += 1
        if m["audio"] and n_aud < 5:
            with av.open(str(root / m["audio"])) as c:
                s = c.streams.audio[0]
                assert s.codec_context.name.startswith("mp3") and s.sample_rate == 16000 and s.channels == 1
                n = sum(f.samples for f in c.decode(audio=0))
            assert 0.9 * 16000 <= n <= 3.2 * 16000
            n_aud += 1
    assert n_img > 40 and n_vid > 0 and n_aud > 0


def test_same_seed_byte_identical_other_seed_differs(tmp_path, tiny_synth_dir):
    a = tmp_path / "a"
    generate(a, config_for("tiny", seed=0, n_listings=60), workers=2)  # different worker count, same bytes
    assert _hashes(a) == _hashes(tiny_synth_dir)
    b = tmp_path / "b"
    generate(b, config_for("tiny", seed=1, n_listings=60), workers=1)
    ha, hb = _hashes(a), _hashes(b)
    assert ha["meta_info.jsonl"] != hb["meta_info.jsonl"]
    media_a = {v for k, v in ha.items() if k.startswith(("images/", "videos/", "audios/"))}
    media_b = {v for k, v in hb.items() if k.startswith(("images/", "videos/", "audios/"))}
    assert media_a and media_b and not (media_a & media_b)


def test_generate_refuses_non_empty_and_leaves_no_temp(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "x").write_text("keep")
    with pytest.raises(FileExistsError):
        generate(out, config_for("tiny", n_listings=20), workers=1)
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_latent_structure_is_confusable_per_modality_but_separable_jointly():
    cfg = config_for("default", seed=3)
    world = build_world(cfg)
    cats, groups = world["categories"], world["groups"]
    assert 40 <= len(cats) <= 80 and len(world["supers"]) < len(groups) < len(cats)
    sizes = sorted(world["sizes"], reverse=True)
    assert sizes[0] > 4 * sizes[len(sizes) // 2]  # long tail
    n_checked = 0
    for gi, g in enumerate(groups):
        members = [c for c in cats if c["group"] == gi]
        if len(members) < 3:
            continue
        n_checked += 1
        codes = [c["code"] for c in members]
        for m in _MODS:  # no single modality separates a group of >= 3 categories
            assert len({_bit(g["funcs"][m], code) for code in codes}) < len(codes)
        joint = {tuple(_bit(g["funcs"][m], code) for m in _MODS) for code in codes}
        assert len(joint) == len(codes)  # all modalities together do
        assert set(g["funcs"].values()) <= set(_FUNCS)
    assert n_checked > 5
    # Products: 1-4 listings each, several per category.
    assert {p["n"] for p in world["products"]} <= {1, 2, 3, 4}
    listings = build_listings(cfg, world)
    assert len(listings) == cfg.n_listings
    absent_video = np.mean([li["video"] is None for li in listings])
    absent_audio = np.mean([li["audio"] is None for li in listings])
    single = np.mean([sum(li[k] is not None for k in ("image", "title", "table", "video", "audio")) == 1 for li in listings])
    assert 0.35 < absent_video < 0.6 and 0.4 < absent_audio < 0.7 and 0.02 < single < 0.09
