"""Featurize one shard of catalog rows (runs in a worker process) and write it atomically.

A shard is a fixed, contiguous range of catalog rows. Its arrays are written as ``.npy`` files into
a temporary folder that is renamed into place at the end, so a shard is complete iff its folder
exists: a killed build resumes by redoing only the shards that have no folder, with no duplicate or
lost rows. Every per-listing failure (missing file, undecodable media, nothing left after
truncation) becomes a status code for that listing and modality, never an exception.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.modalities import ORDER, Modality

# Per-listing, per-modality status codes stored in ``status.npy`` ([N, 5] int8, columns in ORDER).
OK, ABSENT, NOT_FOUND, DECODE_ERROR, EMPTY, NOT_PRECOMPUTED, TOO_LONG = range(7)
REASONS = {
    ABSENT: "absent",  # the catalog has no value for it
    NOT_FOUND: "file_not_found",
    DECODE_ERROR: "decode_error",
    EMPTY: "empty",  # decodes to nothing (no frames, no samples, no tokens)
    NOT_PRECOMPUTED: "not_in_precomputed",  # the precomputed feature source lacks this item
    TOO_LONG: "too_long",  # a table whose first entity alone exceeds the token budget
}
COL = {m: i for i, m in enumerate(ORDER)}
MAX_EXAMPLES = 5  # error messages kept per modality and reason


@dataclass
class Setup:
    """Everything a worker needs that is the same for every shard."""

    config: dict[str, Any]
    tokenizer_json: str
    special: dict[str, int]
    region_dim: int | None  # None: the backbone's channels (+3 with mean RGB), known once it is built
    max_regions: int
    video_dim: int | None
    audio_dim: int
    image_tsv: str | None = None
    image_tsv_shards: list[str] | None = None  # every region TSV shard (image_tsv is the first)
    video_npy_dir: str | None = None
    audio_npy_dir: str | None = None
    device: str = "cpu"  # where the image/video CNN runs: "cpu" or "cuda:N"


@dataclass
class Job:
    shard: int
    start: int
    out_dir: str  # final shard folder
    item_id: list[str]
    title: list[str | None]
    table: list[Any]
    image: list[str | None]
    video: list[str | None]
    audio: list[str | None]
    tsv_offsets: list[int | None] = field(default_factory=list)  # packed (shard, offset), see image.shard_location
    fail_after: int | None = None  # test hook: raise after this many shards in this process


class _Log:
    """Per-shard status codes plus the first few error messages per modality and reason."""

    def __init__(self, n: int) -> None:
        self.status = np.zeros((n, len(ORDER)), dtype=np.int8)
        self.examples: dict[str, dict[str, list[str]]] = {}

    def set(self, i: int, m: Modality, code: int, msg: str | None = None) -> None:
        self.status[i, COL[m]] = code
        if msg is not None:
            ex = self.examples.setdefault(m.value, {}).setdefault(REASONS[code], [])
            if len(ex) < MAX_EXAMPLES:
                ex.append(msg[:300])


def _media_status(path: str | None) -> int:
    if not path:
        return ABSENT
    if not os.path.isfile(path):
        return NOT_FOUND
    return OK


class Featurizer:
    """Holds the tokenizer and backbone of one process; :meth:`run` featurizes and writes one shard."""

    def __init__(self, setup: Setup) -> None:
        import torch
        from tokenizers import Tokenizer

        from bench.features.config import FeatureConfig
        from bench.features.text import SpecialIds

        torch.set_num_threads(1)  # parallelism is across worker processes
        self.setup = setup
        self.cfg = FeatureConfig.from_dict(setup.config)
        self.tok = Tokenizer.from_str(setup.tokenizer_json)
        self.ids = SpecialIds(**setup.special)
        self.fdtype = np.float16 if self.cfg.dtype == "float16" else np.float32
        self._backbone = None
        self._tsv = None
        self.shards_done = 0
        cnn_dim = None
        if setup.region_dim is None or setup.video_dim is None:
            cnn_dim = self.backbone.dim + (3 if self.cfg.image_color else 0)
        self.region_dim = setup.region_dim or cnn_dim
        self.video_dim = setup.video_dim or cnn_dim

    @property
    def backbone(self) -> Any:
        if self._backbone is None:
            from bench.features.image import Backbone

            c = self.cfg
            self._backbone = Backbone(c.image_backbone, c.image_stage, c.image_weights, c.seed, self.setup.device)
        return self._backbone

    # -- modalities -------------------------------------------------------------------------
    def _text(self, job: Job, log: _Log, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        from bench.features.text import encode_tables, encode_titles

        c = self.cfg
        ids, lens = encode_titles(self.tok, job.title, c.title_len, self.ids)
        arrays["title_ids"], arrays["title_n"] = ids, lens
        for i, t in enumerate(job.title):
            if lens[i] == 0:
                log.set(i, Modality.T, ABSENT if not (t and t.strip()) else EMPTY)
        tids, ent, kind, tlens, dropped = encode_tables(self.tok, job.table, c.table_len, self.ids)
        arrays.update(table_ids=tids, table_entity=ent, table_kind=kind, table_n=tlens)
        meta["table_entities_dropped"] = int(dropped.sum())
        meta["tables_truncated"] = int((dropped > 0).sum())
        for i, t in enumerate(job.table):
            if tlens[i] == 0:
                nonempty = any((e.get("key") or "").strip() or (e.get("value") or "").strip() for e in (t or ()))
                if not nonempty:
                    log.set(i, Modality.Tab, ABSENT)
                elif dropped[i] > 0:
                    log.set(i, Modality.Tab, TOO_LONG, f"{job.item_id[i]}: first entity longer than {c.table_len - 2} tokens")
                else:
                    log.set(i, Modality.Tab, EMPTY)

    def _images(self, job: Job, log: _Log, arrays: dict[str, np.ndarray]) -> None:
        from bench.features.image import grid_boxes, load_image, read_tsv_regions, region_features, shard_location

        c, s = self.cfg, self.setup
        n, R = len(job.image), s.max_regions
        feats = np.zeros((n, R, self.region_dim), dtype=self.fdtype)
        boxes = np.zeros((n, R, 5), dtype=np.float32)
        counts = np.zeros(n, dtype=np.int16)
        if s.image_tsv:
            if self._tsv is None:
                self._tsv = {}
            for i, packed in enumerate(job.tsv_offsets):
                if packed is None:
                    log.set(i, Modality.I, NOT_PRECOMPUTED)
                    continue
                shard, off = shard_location(packed)
                try:
                    if shard not in self._tsv:
                        self._tsv[shard] = open((s.image_tsv_shards or [s.image_tsv])[shard], "rb")
                    f, b = read_tsv_regions(self._tsv[shard], off, R)
                except Exception as exc:  # a corrupt row is a missing image, not a failed build
                    log.set(i, Modality.I, DECODE_ERROR, f"{job.item_id[i]}: {exc!r}")
                    continue
                if len(f) == 0:
                    log.set(i, Modality.I, EMPTY)
                    continue
                feats[i, : len(f)], boxes[i, : len(f)], counts[i] = f, b, len(f)
        else:
            imgs, where = [], []
            for i, p in enumerate(job.image):
                st = _media_status(p)
                if st != OK:
                    log.set(i, Modality.I, st, None if st == ABSENT else f"{p}")
                    continue
                try:
                    imgs.append(load_image(p, c.image_size))
                    where.append(i)
                except Exception as exc:
                    log.set(i, Modality.I, DECODE_ERROR, f"{p}: {exc!r}")
            if imgs:
                f = region_features(self.backbone, np.stack(imgs), c.image_grid, c.image_color)
                feats[where] = f.astype(self.fdtype)
                boxes[where] = grid_boxes(c.image_grid)
                counts[where] = f.shape[1]
        arrays.update(region_feats=feats, region_boxes=boxes, region_n=counts)

    def _videos(self, job: Job, log: _Log, arrays: dict[str, np.ndarray]) -> None:
        from bench.features.image import global_features
        from bench.features.video import sample_frames

        c, s = self.cfg, self.setup
        n, F = len(job.video), c.max_frames
        feats = np.zeros((n, F, self.video_dim), dtype=self.fdtype)
        counts = np.zeros(n, dtype=np.int16)
        if s.video_npy_dir:
            for i, item in enumerate(job.item_id):
                p = os.path.join(s.video_npy_dir, f"{item}.npy")
                if not os.path.isfile(p):
                    log.set(i, Modality.V, NOT_PRECOMPUTED)
                    continue
                try:
                    x = np.load(p).astype(np.float32).reshape(-1, self.video_dim)[:F]
                except Exception as exc:
                    log.set(i, Modality.V, DECODE_ERROR, f"{p}: {exc!r}")
                    continue
                if len(x) == 0:
                    log.set(i, Modality.V, EMPTY)
                    continue
                feats[i, : len(x)], counts[i] = x, len(x)
        else:
            clips, where = [], []
            for i, p in enumerate(job.video):
                st = _media_status(p)
                if st != OK:
                    log.set(i, Modality.V, st, None if st == ABSENT else f"{p}")
                    continue
                try:
                    frames, _ = sample_frames(p, c.video_fps, F, c.video_size, c.video_min_frames)
                except Exception as exc:
                    log.set(i, Modality.V, DECODE_ERROR, f"{p}: {exc!r}")
                    continue
                if len(frames) == 0:
                    log.set(i, Modality.V, EMPTY, f"{p}: no frames")
                    continue
                clips.append(frames)
                where.append(i)
            if clips:
                # One backbone pass over every sampled frame of the shard, then split back per clip.
                g = global_features(self.backbone, np.concatenate(clips), c.image_color)
                pos = 0
                for i, fr in zip(where, clips):
                    k = len(fr)
                    feats[i, :k] = g[pos : pos + k].astype(self.fdtype)
                    counts[i] = k
                    pos += k
        arrays.update(video_feats=feats, video_n=counts)

    def _audio(self, job: Job, log: _Log, arrays: dict[str, np.ndarray]) -> None:
        from bench.features.audio import audio_frames, load_audio, reduce_frames

        c, s = self.cfg, self.setup
        n, L = len(job.audio), c.max_audio
        feats = np.zeros((n, L, s.audio_dim), dtype=self.fdtype)
        counts = np.zeros(n, dtype=np.int16)
        for i in range(n):
            if s.audio_npy_dir:
                p = os.path.join(s.audio_npy_dir, f"{job.item_id[i]}.npy")
                if not os.path.isfile(p):
                    log.set(i, Modality.A, NOT_PRECOMPUTED)
                    continue
                try:
                    x = np.load(p).astype(np.float32)
                    # Official files are (mel bins x time); tokens are time frames.
                    x = x.T if x.ndim == 2 and x.shape[0] == s.audio_dim and x.shape[1] != s.audio_dim else x
                    x = x.reshape(-1, s.audio_dim)
                except Exception as exc:
                    log.set(i, Modality.A, DECODE_ERROR, f"{p}: {exc!r}")
                    continue
            else:
                p = job.audio[i]
                st = _media_status(p)
                if st != OK:
                    log.set(i, Modality.A, st, None if st == ABSENT else f"{p}")
                    continue
                try:
                    y = load_audio(p, c.sample_rate, c.audio_seconds)
                except Exception as exc:
                    log.set(i, Modality.A, DECODE_ERROR, f"{p}: {exc!r}")
                    continue
                if len(y) == 0:
                    log.set(i, Modality.A, EMPTY, f"{p}: no samples")
                    continue
                x = audio_frames(y, c.audio_features, c.sample_rate, c.n_fft, c.hop_length, c.n_mfcc, c.n_mels)
            if len(x) == 0 or not np.all(np.isfinite(x)):
                log.set(i, Modality.A, EMPTY if len(x) == 0 else DECODE_ERROR, f"{job.item_id[i]}: no finite frames")
                continue
            x = reduce_frames(x, L, c.audio_reduce)
            feats[i, : len(x)], counts[i] = x, len(x)
        arrays.update(audio_feats=feats, audio_n=counts)

    # -- one shard -----------------------------------------------------------------------------
    def run(self, job: Job) -> dict[str, Any]:
        """Featurize ``job`` and write its folder atomically; returns the shard's meta."""
        if job.fail_after is not None and self.shards_done >= job.fail_after:
            raise RuntimeError(f"test hook: simulated crash after {self.shards_done} shard(s)")
        n = len(job.item_id)
        log = _Log(n)
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"shard": job.shard, "start": job.start, "rows": n, "pid": os.getpid(),
                                "device": self.setup.device}
        timings, cpu = {}, {}
        for name, fn in (("text", lambda: self._text(job, log, arrays, meta)), ("image", lambda: self._images(job, log, arrays)),
                         ("video", lambda: self._videos(job, log, arrays)), ("audio", lambda: self._audio(job, log, arrays))):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            timings[name] = round(time.perf_counter() - t0, 4)
            cpu[name] = round(time.process_time() - c0, 4)
        arrays["status"] = log.status
        meta["timings_s"] = timings
        meta["cpu_s"] = cpu  # process CPU time: comparable across machine loads, unlike wall time
        meta["examples"] = log.examples
        _write_shard(Path(job.out_dir), arrays, meta)
        self.shards_done += 1
        return meta


def _write_shard(final: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, a in arrays.items():
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(a))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        os.replace(tmp, final)  # atomic on one filesystem: the shard appears complete or not at all
    except OSError:
        if final.exists():  # another process finished the same shard first: identical content, keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise


# --- process-pool plumbing ------------------------------------------------------------------------
_FEATURIZER: Featurizer | None = None


def load_native_libraries() -> None:
    """Import every library with a native thread pool, so a following ``threadpool_limits`` covers
    them all (a BLAS loaded later, e.g. scipy's through librosa, would start with every core)."""
    import av  # noqa: F401
    import librosa.feature  # noqa: F401
    import PIL.Image  # noqa: F401
    import scipy.fft  # noqa: F401
    import scipy.signal  # noqa: F401
    import soundfile  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401


def init_worker(setup: Setup) -> None:
    global _FEATURIZER
    import signal

    # The parent handles Ctrl-C (it stops the pool and keeps the finished shards); a worker that
    # also raised KeyboardInterrupt would only print a traceback. Normally the worker already
    # starts with SIGINT ignored (see bench.data.paths.sigint_blocked); this covers a replacement.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from threadpoolctl import threadpool_limits

    load_native_libraries()
    # numpy/scipy BLAS and OpenMP pools default to every core; with one process per core they only
    # fight each other (measured: librosa MFCC 2.5x slower with default threads on a busy machine).
    threadpool_limits(limits=1)
    _FEATURIZER = Featurizer(setup)


def run_job(job: Job) -> dict[str, Any]:
    assert _FEATURIZER is not None, "init_worker was not called"
    try:
        return _FEATURIZER.run(job)
    except Exception as exc:
        # Re-raise with the worker's traceback text: a process pool loses the original one.
        raise RuntimeError(f"shard {job.shard} failed: {exc!r}\n{traceback.format_exc()}") from None
