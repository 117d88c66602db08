"""Real media for the feature tests (JPEG, MP4, MP3, WAV made with Pillow and PyAV) and a tiny catalog.

Other ``test_features_*`` modules import the helpers from here; the tests at the bottom check the
helpers themselves (a file the featurizers cannot read must really be unreadable).
"""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def make_jpeg(path: Path, color: tuple[int, int, int], shape: str = "circle", size: tuple[int, int] = (80, 60)) -> Path:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, (245, 245, 245))
    d = ImageDraw.Draw(im)
    w, h = size
    box = (w * 0.2, h * 0.2, w * 0.8, h * 0.8)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=color)
    im.save(path, "JPEG", quality=90)
    return path


def make_mp4(path: Path, seconds: float, fps: int = 24, size: int = 48, color: tuple[int, int, int] = (200, 50, 50)) -> Path:
    """An H.264 clip whose frame ``i`` has green level ``i * 8 % 256`` (so a test can tell frames apart)."""
    import av

    n = int(round(seconds * fps))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(n):
            img = np.empty((size, size, 3), dtype=np.uint8)
            img[...] = color
            img[..., 1] = (i * 8) % 256
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def tone(seconds: float, freq: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_wav(path: Path, seconds: float, freq: float = 440.0, sr: int = 22050) -> Path:
    import soundfile as sf

    sf.write(str(path), tone(seconds, freq, sr), sr)
    return path


def make_mp3(path: Path, seconds: float, freq: float = 440.0, sr: int = 22050) -> Path:
    import av

    y = tone(seconds, freq, sr)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mp3", rate=sr)
        s.layout = "mono"
        hop = 1152
        for a in range(0, len(y), hop):
            chunk = y[a : a + hop][None, :]
            fr = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            fr.sample_rate = sr
            fr.pts = a
            fr.time_base = Fraction(1, sr)
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def make_catalog(root: Path, fingerprint: str | None = None):
    """Twelve listings over two categories with real and broken media, as a duck-typed catalog.

    Rows (by index): 0-7 fully featured (some short, some long clips); 8 has no media and no title;
    9 has broken files of every kind; 10 has paths that do not exist; 11 has a table whose only
    entity is too long for the table budget and an empty title.
    """
    import datasets

    from bench.data.schema import FEATURES

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    names = list(COLORS)
    for i in range(8):
        cname = names[i % 4]
        cat = "cat_round" if i % 2 == 0 else "cat_square"
        img = make_jpeg(root / f"img{i}.jpg", COLORS[cname], "circle" if i % 2 == 0 else "square")
        vid = make_mp4(root / f"vid{i}.mp4", seconds=1.0 + (i % 3), color=COLORS[cname])
        aud = (make_mp3 if i % 2 else make_wav)(root / f"aud{i}.{'mp3' if i % 2 else 'wav'}", 1.0 + i * 0.25, 300 + 60 * i)
        rows.append(dict(item_id=f"it{i}", product_id=f"p{i // 2}", category=cat,
                         title=f"{cname} {'round ball' if i % 2 == 0 else 'square box'} number {i}",
                         table=[{"key": "color", "value": cname}, {"key": "shape", "value": "round" if i % 2 == 0 else "square"},
                                {"key": "material", "value": "plastic" if i < 4 else "wooden"}],
                         image=str(img), video=str(vid), audio=str(aud)))
    rows.append(dict(item_id="it8", product_id="p8", category="cat_round", title=None, table=[], image=None, video=None, audio=None))
    (root / "bad.jpg").write_bytes(b"this is not a jpeg")
    (root / "bad.mp4").write_bytes((root / "vid0.mp4").read_bytes()[:200])  # truncated container
    (root / "bad.mp3").write_bytes(b"\x00" * 64)
    rows.append(dict(item_id="it9", product_id="p9", category="cat_square", title="broken media listing",
                     table=[{"key": "color", "value": "red"}],
                     image=str(root / "bad.jpg"), video=str(root / "bad.mp4"), audio=str(root / "bad.mp3")))
    rows.append(dict(item_id="it10", product_id="p9", category="cat_square", title="missing files listing",
                     table=[{"key": "size", "value": "large"}],
                     image=str(root / "nope.jpg"), video=str(root / "nope.mp4"), audio=str(root / "nope.mp3")))
    long_value = " ".join(f"word{j}" for j in range(100))
    rows.append(dict(item_id="it11", product_id="p10", category="cat_round", title="   ",
                     table=[{"key": "description", "value": long_value}], image=None, video=None, audio=None))
    for r in rows:
        r.update(split="pretrain", subset=True, cls_split="train", coarse_query=False, fine_query=False)
    ds = datasets.Dataset.from_list(rows, features=FEATURES)
    fp = fingerprint or hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return SimpleNamespace(dataset=ds, fingerprint=fp, info={}, root=root)


@pytest.fixture(scope="module")
def tiny_catalog(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("tiny_catalog"))


def test_broken_media_is_really_unreadable(tiny_catalog):
    from PIL import Image

    root = tiny_catalog.root
    with pytest.raises(Exception):
        Image.open(root / "bad.jpg").load()
    import av

    with pytest.raises(Exception):
        with av.open(str(root / "bad.mp4")) as c:
            list(c.decode(video=0))


def test_generated_media_decode(tiny_catalog):
    import av
    import soundfile as sf

    root = tiny_catalog.root
    with av.open(str(root / "vid2.mp4")) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == 24 * 3
    y, sr = sf.read(str(root / "aud1.mp3"))
    assert sr == 22050 and abs(len(y) / sr - 1.25) < 0.1
