"""Video (V): sample frames at a fixed rate with PyAV; features come from the image backbone.

M5Product videos are recorded at 24 fps and one frame per second is sampled (the official S3D
features give one 1024-d vector per second, up to 12). Here frame ``k`` is the first decoded frame
whose timestamp is at or after ``k / fps``, for ``k = 0 .. max_frames-1``; decoding stops as soon as
the cap is reached, so long videos cost only their first seconds. The rate is configurable because
short synthetic clips (1-2 s) would otherwise yield one or two frames.
"""

from __future__ import annotations

import numpy as np


def clip_duration(container, stream) -> float | None:
    """Duration in seconds from the stream (or container) header, if it states one."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base: microseconds
    return None


def sample_frames(path: str, fps: float, max_frames: int, size: int, min_frames: int = 0) -> tuple[np.ndarray, list[float]]:
    """Decode ``path`` and return ``([F, size, size, 3] uint8 frames, their timestamps in seconds)``.

    ``min_frames``: when the clip is so short that ``fps`` would give fewer frames, the rate is
    raised for this clip so ``min_frames`` frames are spread evenly over it (never above the
    clip's own frame rate, since a frame cannot be sampled twice).

    Raises on an unreadable file or a file without a video stream; returns zero frames only for a
    stream that decodes to nothing.
    """
    import av

    frames: list[np.ndarray] = []
    times: list[float] = []
    eps = 1e-3  # timestamps are rounded to the stream time base
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "NONE"  # one thread per worker process; parallelism is across processes
        step = 1.0 / fps
        duration = clip_duration(container, stream)
        if min_frames and duration and duration * fps < min(min_frames, max_frames):
            step = duration / min(min_frames, max_frames)
        base = prev = None
        for frame in container.decode(stream):
            t = frame.time
            if t is None:  # no timestamp: step from the previous frame at the stream's nominal rate
                t = 0.0 if prev is None else prev + 1.0 / float(stream.average_rate or 24)
            prev = t
            if base is None:
                base = t  # streams may not start at 0
            rel = t - base
            if rel + eps >= len(frames) * step:
                img = frame.reformat(width=size, height=size, format="rgb24").to_ndarray()
                frames.append(img)
                times.append(round(rel, 6))
                if len(frames) >= max_frames:
                    break
    if not frames:
        return np.zeros((0, size, size, 3), dtype=np.uint8), []
    return np.stack(frames), times
