"""Video frame sampling with PyAV on synthetic clips of known length."""

from __future__ import annotations

import numpy as np
import pytest

from bench.features.video import sample_frames
from test_features_media import make_mp4


def _green_index(frames: np.ndarray) -> list[int]:
    """The generator writes green = 8 * frame_index (mod 256); recover the index (H.264 is lossy)."""
    return [int(round(float(f[..., 1].mean()) / 8)) for f in frames]


def test_one_frame_per_second(tmp_path):
    clip = make_mp4(tmp_path / "five.mp4", seconds=5.0, fps=10)
    frames, times = sample_frames(str(clip), fps=1.0, max_frames=12, size=32)
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.uint8
    assert times == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0], abs=1e-3)
    assert _green_index(frames) == [0, 10, 20, 30, 8]  # frames 0,10,..,40: green 80*k mod 256


def test_frame_cap(tmp_path):
    clip = make_mp4(tmp_path / "long.mp4", seconds=20.0, fps=4, size=32)
    frames, times = sample_frames(str(clip), fps=1.0, max_frames=12, size=16)
    assert len(frames) == 12 and times[-1] == pytest.approx(11.0, abs=1e-3)


def test_short_clip_gets_min_frames(tmp_path):
    clip = make_mp4(tmp_path / "short.mp4", seconds=1.0, fps=8)
    frames, times = sample_frames(str(clip), fps=1.0, max_frames=12, size=16, min_frames=4)
    assert len(frames) == 4
    assert times == pytest.approx([0.0, 0.25, 0.5, 0.75], abs=1e-3)
    frames, _ = sample_frames(str(clip), fps=1.0, max_frames=12, size=16, min_frames=0)
    assert len(frames) == 1  # the paper's 1 fps on a 1 s clip
    frames, _ = sample_frames(str(clip), fps=1.0, max_frames=12, size=16, min_frames=50)
    assert len(frames) == 8  # never more than the clip's own frames


def test_unreadable_video_raises(tmp_path):
    good = make_mp4(tmp_path / "g.mp4", seconds=1.0)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(Exception):
        sample_frames(str(bad), 1.0, 12, 16)
