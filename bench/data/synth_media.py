"""Rendering and encoding of the synthetic catalog's media: JPEG images, H.264 MP4 clips, MP3 audio.

Each function takes plain parameters plus a per-file seed, so a file's bytes depend only on
(generator version, catalog seed, listing, modality), never on which worker process wrote it.
Encoders run single-threaded with bit-exact flags, which is what makes the files byte-identical
across runs (x264 with several threads, and muxers that stamp a library version, would not be).
"""

from __future__ import annotations

import colorsys
import math
from typing import Any

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "pentagon", "hexagon", "star", "cross", "ring",
          "ellipse", "crescent", "arrow")
TEXTURES = ("solid", "stripes", "dots", "checker", "gradient", "rings")
MOTIONS = ("horizontal", "vertical", "diagonal", "orbit", "zoom", "bounce", "spin", "blink")
TIMBRES = ("sine", "square", "saw", "bell", "fm", "noise", "tremolo")

IMAGE_SIZE = 64
VIDEO_SIZE = 64
FPS = 8
SAMPLE_RATE = 16000


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]] | None:
    def reg(n: int, rr: float, off: float = 0.0) -> list[tuple[float, float]]:
        return [(cx + rr * math.cos(rot + off + 2 * math.pi * k / n), cy + rr * math.sin(rot + off + 2 * math.pi * k / n))
                for k in range(n)]

    if shape == "square":
        return reg(4, r * 1.15, math.pi / 4)
    if shape == "triangle":
        return reg(3, r * 1.2, -math.pi / 2)
    if shape == "diamond":
        return [(cx + x * math.cos(rot) - y * math.sin(rot), cy + x * math.sin(rot) + y * math.cos(rot))
                for x, y in ((0, -r * 1.2), (r * 0.75, 0), (0, r * 1.2), (-r * 0.75, 0))]
    if shape == "pentagon":
        return reg(5, r * 1.1, -math.pi / 2)
    if shape == "hexagon":
        return reg(6, r * 1.1)
    if shape == "star":
        pts = []
        for k in range(10):
            rr = r * 1.2 if k % 2 == 0 else r * 0.5
            a = rot - math.pi / 2 + math.pi * k / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    if shape == "cross":
        w, L = r * 0.4, r * 1.15
        base = [(-w, -L), (w, -L), (w, -w), (L, -w), (L, w), (w, w), (w, L), (-w, L), (-w, w), (-L, w), (-L, -w), (-w, -w)]
        return [(cx + x * math.cos(rot) - y * math.sin(rot), cy + x * math.sin(rot) + y * math.cos(rot)) for x, y in base]
    if shape == "arrow":
        base = [(-r, -r * 0.3), (r * 0.2, -r * 0.3), (r * 0.2, -r * 0.8), (r * 1.1, 0), (r * 0.2, r * 0.8), (r * 0.2, r * 0.3), (-r, r * 0.3)]
        return [(cx + x * math.cos(rot) - y * math.sin(rot), cy + x * math.sin(rot) + y * math.cos(rot)) for x, y in base]
    return None


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float, rot: float):
    """An ``L`` mask (PIL image) of one shape."""
    from PIL import Image, ImageDraw

    m = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(m)
    poly = _polygon(shape, cx, cy, r, rot)
    if poly is not None:
        d.polygon(poly, fill=255)
    elif shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "ring":
        d.ellipse((cx - r * 1.1, cy - r * 1.1, cx + r * 1.1, cy + r * 1.1), fill=255)
        d.ellipse((cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55), fill=0)
    elif shape == "ellipse":
        d.ellipse((cx - r * 1.25, cy - r * 0.65, cx + r * 1.25, cy + r * 0.65), fill=255)
    elif shape == "crescent":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        d.ellipse((cx - r * 0.4, cy - r * 1.05, cx + r * 1.4, cy + r * 0.75), fill=0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return m


def texture(kind: str, size: int, c1: tuple[int, int, int], c2: tuple[int, int, int], period: float, angle: float) -> np.ndarray:
    """An HxWx3 uint8 pattern mixing two colours."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    if kind == "solid":
        w = np.zeros_like(x)
    elif kind == "stripes":
        w = (np.floor(u / period) % 2).astype(np.float32)
    elif kind == "dots":
        w = ((((u % period) - period / 2) ** 2 + ((v % period) - period / 2) ** 2) < (period * 0.3) ** 2).astype(np.float32)
    elif kind == "checker":
        w = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif kind == "gradient":
        w = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    elif kind == "rings":
        rr = np.sqrt((x - size / 2) ** 2 + (y - size / 2) ** 2)
        w = (np.floor(rr / period) % 2).astype(np.float32)
    else:
        raise ValueError(f"unknown texture {kind!r}")
    a, b = np.array(c1, np.float32), np.array(c2, np.float32)
    return (a[None, None] * (1 - w[..., None]) + b[None, None] * w[..., None]).astype(np.uint8)


def _background(rng: np.random.Generator, size: int, clutter: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    bg = Image.new("RGB", (size, size), _rgb(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.75, 1.0)))
    d = ImageDraw.Draw(bg)
    for _ in range(clutter):
        col = _rgb(rng.random(), rng.uniform(0.1, 0.6), rng.uniform(0.4, 0.95))
        x0, y0 = rng.uniform(0, size, 2)
        x1, y1 = x0 + rng.uniform(-size / 3, size / 3), y0 + rng.uniform(-size / 3, size / 3)
        if rng.random() < 0.5:
            d.line((x0, y0, x1, y1), fill=col, width=int(rng.integers(1, 3)))
        else:
            d.ellipse((min(x0, x1), min(y0, y1), min(x0, x1) + abs(x1 - x0) / 3 + 2, min(y0, y1) + abs(y1 - y0) / 3 + 2), fill=col)
    return np.asarray(bg).copy()


def render_image(p: dict[str, Any], seed: list[int]) -> np.ndarray:
    """The listing's main image: a textured object (shape, colour, texture) on a cluttered background."""
    rng = np.random.default_rng(seed)
    S = IMAGE_SIZE
    img = _background(rng, S, int(rng.integers(0, 5)))
    r = S * 0.28 * p["scale"] * rng.uniform(0.88, 1.12)
    cx, cy = S / 2 + rng.uniform(-6, 6), S / 2 + rng.uniform(-6, 6)
    mask = np.asarray(shape_mask(p["shape"], S, cx, cy, r, rng.uniform(-0.25, 0.25))) > 127
    hue = p["hue"] + rng.normal(0, 0.01)
    c1 = _rgb(hue, p["sat"], p["val"] * rng.uniform(0.92, 1.05))
    c2 = _rgb(hue + 0.5 * p["contrast"], p["sat"] * 0.6, p["val"] * 0.55)
    tex = texture(p["texture"], S, c1, c2, p["period"], p["angle"] + rng.normal(0, 0.1))
    img[mask] = tex[mask]
    return img


def write_jpeg(path: str, arr: np.ndarray, quality: int) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, format="JPEG", quality=int(quality), optimize=False)


def render_video(p: dict[str, Any], seed: list[int]) -> np.ndarray:
    """T x H x W x 3 frames: the product's object moving with its category's motion pattern."""
    rng = np.random.default_rng(seed)
    S = VIDEO_SIZE
    n = int(p["n_frames"])
    bg = _background(rng, S, int(rng.integers(0, 3)))
    phase = rng.uniform(0, 2 * math.pi)
    freq = p["freq"]  # cycles per second
    base_r = S * 0.16 * p["scale"]
    c1 = _rgb(p["hue"] + rng.normal(0, 0.01), p["sat"], p["val"])
    c2 = _rgb(p["hue"] + 0.5 * p["contrast"], p["sat"] * 0.6, p["val"] * 0.55)
    tex = texture(p["texture"], S, c1, c2, p["period"], p["angle"])
    frames = np.empty((n, S, S, 3), np.uint8)
    amp = S * 0.25
    for t in range(n):
        a = 2 * math.pi * freq * t / FPS + phase
        cx = cy = S / 2
        r, rot, bright = base_r, 0.0, 1.0
        m = p["motion"]
        if m == "horizontal":
            cx += amp * math.sin(a)
        elif m == "vertical":
            cy += amp * math.sin(a)
        elif m == "diagonal":
            cx += amp * 0.8 * math.sin(a)
            cy += amp * 0.8 * math.sin(a)
        elif m == "orbit":
            cx += amp * 0.8 * math.cos(a)
            cy += amp * 0.8 * math.sin(a)
        elif m == "zoom":
            r = base_r * (1.0 + 0.6 * math.sin(a))
        elif m == "bounce":
            cy += amp * (0.9 - 1.8 * abs(math.sin(a)))
        elif m == "spin":
            rot = a
        elif m == "blink":
            bright = 0.55 + 0.45 * math.cos(a)
        mask = np.asarray(shape_mask(p["shape"], S, cx, cy, max(r, 2.0), rot)) > 127
        # Spinning turns the texture too, so spin is visible on round shapes.
        ftex = texture(p["texture"], S, c1, c2, p["period"], p["angle"] + rot) if m == "spin" else tex
        f = bg.copy()
        f[mask] = (ftex[mask].astype(np.float32) * bright).astype(np.uint8)
        frames[t] = f
    return frames


def write_mp4(path: str, frames: np.ndarray, fps: int = FPS) -> None:
    import av

    # +bitexact keeps library version strings out of the container; one x264 thread keeps
    # the bitstream independent of scheduling, so the same frames give the same bytes.
    with av.open(path, "w", format="mp4", options={"fflags": "+bitexact"}) as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "30", "threads": "1",
                                                        "x264-params": "threads=1:sliced-threads=0"})
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def render_audio(p: dict[str, Any], seed: list[int]) -> np.ndarray:
    """Mono float32 waveform: a note of the category's timbre at the product's pitch, plus noise."""
    rng = np.random.default_rng(seed)
    sr = SAMPLE_RATE
    n = int(sr * p["duration"])
    t = np.arange(n, dtype=np.float64) / sr
    f0 = p["f0"] * (1.0 + rng.normal(0, 0.003))
    tim = p["timbre"]
    if tim == "sine":
        y = np.sin(2 * np.pi * f0 * t)
    elif tim == "square":
        y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 3, 5, 7, 9))
    elif tim == "saw":
        y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 9))
    elif tim == "bell":
        y = sum(a * np.sin(2 * np.pi * f0 * m * t) * np.exp(-t * d) for m, a, d in ((1, 1, 2), (2.76, 0.6, 4), (5.4, 0.4, 6)))
    elif tim == "fm":
        y = np.sin(2 * np.pi * f0 * t + 2.0 * np.sin(2 * np.pi * f0 * 2 * t))
    elif tim == "noise":
        noise = rng.standard_normal(n)
        y = noise * np.sin(2 * np.pi * f0 * t) * 0.6 + 0.4 * np.sin(2 * np.pi * f0 * t)
    elif tim == "tremolo":
        y = np.sin(2 * np.pi * f0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 6.0 * t))
    else:
        raise ValueError(f"unknown timbre {tim!r}")
    attack = max(int(sr * 0.02), 1)
    env = np.minimum(1.0, np.arange(n) / attack) * np.exp(-t * p["decay"])
    y = y / (np.abs(y).max() + 1e-9) * env * 0.6
    # Start offset and background noise differ per listing.
    y = np.roll(y, int(rng.integers(0, sr // 10)))
    y = y + rng.normal(0, p["noise"], n)
    return np.clip(y, -0.95, 0.95).astype(np.float32)


def write_mp3(path: str, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    import av

    with av.open(path, "w", format="mp3", options={"fflags": "+bitexact"}) as c:
        # LAME's fastest psychoacoustic setting: ~25% less CPU, still a normal MP3 stream.
        s = c.add_stream("libmp3lame", rate=sr, options={"compression_level": "9"})
        s.layout = "mono"
        s.bit_rate = 32000
        frame = av.AudioFrame.from_ndarray(wav[None, :], format="fltp", layout="mono")
        frame.sample_rate = sr
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def render_task(task: tuple[str, str, dict[str, Any], list[int]]) -> None:
    """Render and write one file; ``task`` is (kind, path, params, seed)."""
    kind, path, p, seed = task
    if kind == "image":
        write_jpeg(path, render_image(p, seed), p["quality"])
    elif kind == "video":
        write_mp4(path, render_video(p, seed))
    elif kind == "audio":
        write_mp3(path, render_audio(p, seed))
    else:
        raise ValueError(kind)


def render_chunk(tasks: list[tuple[str, str, dict[str, Any], list[int]]]) -> int:
    for t in tasks:
        render_task(t)
    return len(tasks)
