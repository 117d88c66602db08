"""Every featurizer setting in one dataclass, and the hash that keys a feature store.

Two runs with equal :meth:`FeatureConfig.hash` produce the same features from the same catalog,
so the store directory ``$M5BENCH_HOME/features/<catalog fingerprint>/<hash>/`` is reused; any
change that alters a feature value (tokenizer files, backbone weights file, resolution, frame
rate, audio front end...) changes the hash. Settings that only change *how* the work is laid out
(shard size, worker count) are deliberately left out of the hash.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

#: Bumped whenever stored values for an unchanged config would change (a featurizer fix).
FEATURES_VERSION = 1

_NOT_HASHED = frozenset({"shard_size"})


def _digest_path(path: str | os.PathLike[str]) -> str:
    """Content digest of a file or a folder's files (tokenizer folders, weight files)."""
    p = Path(path).resolve()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    stamp = tuple((str(q), q.stat().st_size, q.stat().st_mtime_ns) for q in files)
    return _digest_files(p, stamp)


@functools.lru_cache(maxsize=64)
def _digest_files(p: Path, stamp: tuple) -> str:
    # Cached on (path, size, mtime) of every file: hashing a weights file once per process is enough.
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        h.update(str(q.relative_to(p) if p.is_dir() else q.name).encode())
        with open(q, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class FeatureConfig:
    """All featurizer settings. Defaults are sized for a 2-core CPU (see the features benchmark)."""

    # --- title and table (T, Tab) ---
    tokenizer: str | None = None  # local Hugging Face tokenizer folder; None = train WordPiece on the catalog
    vocab_size: int = 4000  # size of the WordPiece vocabulary trained on the catalog
    lowercase: bool = True
    title_len: int = 36  # including [CLS] and [SEP] (the official loaders' max)
    table_len: int = 64

    # --- image (I) ---
    image_backbone: str = "resnet18"  # any timm model name with features_only support
    image_weights: str | None = None  # local weights file; None = seeded random init
    image_size: int = 64  # pixels, square (images are resized, not cropped, so boxes cover the whole image)
    image_stage: int = 3  # features_only stage index used for regions (-1 = last); resnet18 stage 3 = 256-d, stride 16
    image_grid: int = 4  # feature map adaptive-pooled to grid x grid regions (<= 6 keeps <= 36 regions)
    image_color: bool = False  # append each region's mean RGB (3 dims); off: measured no gain on a linear probe
    seed: int = 0  # seeds the random backbone init

    # --- video (V) ---
    video_fps: float = 1.0  # frames sampled per second of video (the paper: 1)
    max_frames: int = 12  # cap on sampled frames (the official S3D features: up to 12)
    video_min_frames: int = 4  # a clip too short for video_fps gets this many evenly spaced frames (0 = off)
    video_size: int = 48  # frame resolution fed to the backbone (globally pooled per frame)

    # --- audio (A) ---
    audio_features: str = "mfcc"  # "mfcc" (the paper) or "logmel" (the official code)
    sample_rate: int = 16000
    n_fft: int = 1024  # frame size 1024 and hop 256, as the paper states
    hop_length: int = 256
    n_mfcc: int = 40
    n_mels: int = 80
    audio_seconds: float = 12.0  # decoded length cap (the official code pads/truncates to 12 s)
    max_audio: int = 64  # cap on audio tokens (time frames)
    audio_reduce: str = "pool"  # "pool": average contiguous frames down to max_audio; "truncate": keep the first

    # --- storage ---
    dtype: str = "float16"  # on-disk dtype of float features (batches are float32)
    shard_size: int = 256  # rows per shard (not hashed: layout only)

    extra: dict[str, Any] = field(default_factory=dict)  # free-form, hashed (e.g. an experiment tag)

    def __post_init__(self) -> None:
        if self.audio_features not in ("mfcc", "logmel"):
            raise ValueError(f"audio_features must be 'mfcc' or 'logmel', got {self.audio_features!r}")
        if self.audio_reduce not in ("pool", "truncate"):
            raise ValueError(f"audio_reduce must be 'pool' or 'truncate', got {self.audio_reduce!r}")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {self.dtype!r}")
        if self.title_len < 3 or self.table_len < 3:
            raise ValueError("title_len and table_len must leave room for [CLS] x [SEP]")
        if not 1 <= self.image_grid <= 6:
            raise ValueError("image_grid must be 1..6 (at most 36 regions)")
        if self.video_fps <= 0 or self.max_frames < 1 or self.max_audio < 1:
            raise ValueError("video_fps, max_frames and max_audio must be positive")
        for name in ("tokenizer", "image_weights"):
            v = getattr(self, name)
            if v is not None and not Path(v).exists():
                raise FileNotFoundError(f"{name} path does not exist: {v}")

    @property
    def audio_dim(self) -> int:
        return self.n_mfcc if self.audio_features == "mfcc" else self.n_mels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes: Any) -> "FeatureConfig":
        return replace(self, **changes)

    def identity(self) -> dict[str, Any]:
        """What the hash covers: every value-changing setting plus the content of referenced files."""
        d = {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED}
        d["features_version"] = FEATURES_VERSION
        # Paths are replaced by content digests: moving a file keeps the store, editing it does not.
        for name in ("tokenizer", "image_weights"):
            if d[name] is not None:
                d[name] = "sha256:" + _digest_path(d[name])
        return d

    def hash(self) -> str:
        """Short stable hash of :meth:`identity` (16 hex digits)."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
