"""Cheap validation of media files, cached by (path, size, mtime).

A listing's image, video or audio counts as present only when its file exists, is non-empty and
decodes: the image's pixels decode (Pillow, reduced-size JPEG draft so large photos stay cheap),
the video yields at least one frame and the audio at least one audio frame (PyAV). Results, and
each file's SHA-1 (used for the catalog fingerprint), are cached in an SQLite table under
``$M5BENCH_HOME`` so a second load of the same files does no decoding.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from bench.data.paths import m5bench_home, pool_context, sigint_blocked

KINDS = ("image", "video", "audio")


@dataclass(frozen=True)
class MediaCheck:
    """The outcome of checking one file: ``ok`` or a skip ``reason`` such as ``video_no_frames``."""

    path: str
    ok: bool
    reason: str | None
    size: int
    sha1: str | None


def _sha1(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _decode_image(path: str) -> None:
    from PIL import Image

    with Image.open(path) as im:
        # draft() lets the JPEG decoder scale by 1/8 in the DCT, so validating a 1000px photo is cheap;
        # load() still walks the whole entropy-coded stream, so truncation is caught.
        im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()


def _decode_av(path: str, kind: str) -> bool:
    """True when the file has a stream of ``kind`` and at least one frame of it decodes."""
    import av

    with av.open(path, "r") as c:
        streams = c.streams.video if kind == "video" else c.streams.audio
        if not streams:
            return False
        for _frame in c.decode(streams[0]):
            return True
    return False


def _id3_only(path: str) -> bool:
    """True for an MP3 that starts with an ID3v2 tag followed by no MPEG audio frame.

    An MPEG audio frame starts with an 11-bit sync (0xFFE) and a valid bitrate index; a Xing/Info
    header frame alone carries no audio, so it does not count.
    """
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if not head.startswith(b"ID3") or len(head) < 10:
        return False
    size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
    body = head[10 + size :]
    frames = 0
    i = 0
    while i + 4 <= len(body):
        if body[i] == 0xFF and (body[i + 1] & 0xE0) == 0xE0 and (body[i + 2] >> 4) not in (0, 15):
            if b"Xing" not in body[i : i + 64] and b"Info" not in body[i : i + 64]:
                frames += 1
                break
            i += 4
        else:
            i += 1
    return frames == 0


def check_file(path: str, kind: str) -> MediaCheck:
    """Check one media file without any cache; never raises for a bad file."""
    if kind not in KINDS:
        raise ValueError(f"unknown media kind {kind!r}")
    try:
        st = os.stat(path)
    except OSError:
        return MediaCheck(path, False, f"{kind}_missing", -1, None)
    if not stat.S_ISREG(st.st_mode):  # a folder, or a device/FIFO whose read would never end
        return MediaCheck(path, False, f"{kind}_missing", -1, None)
    if st.st_size == 0:
        return MediaCheck(path, False, f"{kind}_empty", 0, None)
    try:
        if kind == "image":
            _decode_image(path)
        elif not _decode_av(path, kind):
            return MediaCheck(path, False, f"{kind}_no_frames", st.st_size, None)
    except Exception:  # any decoder error (PIL, av.error.*, OSError) means a corrupt or truncated file
        if kind == "audio" and _id3_only(path):
            # FFmpeg cannot even probe an MP3 that is an ID3 tag (plus at most a Xing/Info header)
            # and no audio frames; name that case rather than calling it corrupt.
            return MediaCheck(path, False, "audio_no_frames", st.st_size, None)
        return MediaCheck(path, False, f"{kind}_corrupt", st.st_size, None)
    return MediaCheck(path, True, None, st.st_size, _sha1(path))


def _check_many(items: Sequence[tuple[str, str]]) -> list[MediaCheck]:
    return [check_file(p, k) for p, k in items]


class ValidationCache:
    """SQLite cache of :class:`MediaCheck` results keyed by absolute path, valid while size and mtime match."""

    _lock = threading.Lock()

    def __init__(self, db_path: Path | None = None) -> None:
        self.db_path = Path(db_path) if db_path else m5bench_home() / "media_validation.sqlite"
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.db_path), timeout=60)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS media (path TEXT PRIMARY KEY, kind TEXT, size INTEGER, "
            "mtime_ns INTEGER, ok INTEGER, reason TEXT, sha1 TEXT)"
        )
        self._conn.commit()

    def close(self) -> None:
        self._conn.close()

    def check(self, items: Iterable[tuple[str, str]], *, progress: bool = False, workers: int | None = None) -> dict[str, MediaCheck]:
        """Check ``(path, kind)`` pairs, using and refreshing the cache. Returns path -> check."""
        items = list(dict.fromkeys(items))
        out: dict[str, MediaCheck] = {}
        todo: list[tuple[str, str]] = []
        stats: dict[str, tuple[int, int] | None] = {}
        cur = self._conn.cursor()
        for path, kind in items:
            try:
                st = os.stat(path)
            except OSError:
                st = None
            if st is None or not stat.S_ISREG(st.st_mode):
                stats[path] = None
                out[path] = MediaCheck(path, False, f"{kind}_missing", -1, None)
                continue
            stats[path] = (st.st_size, st.st_mtime_ns)
            row = cur.execute(
                "SELECT ok, reason, sha1 FROM media WHERE path=? AND kind=? AND size=? AND mtime_ns=?",
                (path, kind, st.st_size, st.st_mtime_ns),
            ).fetchone()
            if row is not None:
                out[path] = MediaCheck(path, bool(row[0]), row[1], st.st_size, row[2])
            else:
                todo.append((path, kind))
        if todo:
            for chk in self._run(todo, progress=progress, workers=workers):
                out[chk.path] = chk
            rows = []
            for path, kind in todo:
                chk, st = out[path], stats[path]
                if st is not None:
                    rows.append((path, kind, st[0], st[1], int(chk.ok), chk.reason, chk.sha1))
            with self._lock:
                cur.executemany("INSERT OR REPLACE INTO media VALUES (?,?,?,?,?,?,?)", rows)
                self._conn.commit()
        return out

    @staticmethod
    def _run(todo: list[tuple[str, str]], *, progress: bool, workers: int | None) -> list[MediaCheck]:
        from bench.data.progress import track

        workers = workers if workers is not None else min(os.cpu_count() or 1, 4)
        chunk = 256
        chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
        results: list[MediaCheck] = []
        if workers <= 1 or len(todo) < 2 * chunk:
            for c in track(chunks, "validating media", total=len(chunks), enabled=progress):
                results.extend(_check_many(c))
            return results
        # multiprocessing.Pool, not ProcessPoolExecutor: on Ctrl-C its terminate() (the with block's
        # exit) stops the workers at once. They start with SIGINT blocked (inherited), so the
        # interrupt reaches only this process and no worker prints a traceback.
        with sigint_blocked():
            pool = pool_context().Pool(workers)
        with pool:
            for res in track(pool.imap(_check_many, chunks), "validating media", total=len(chunks), enabled=progress):
                results.extend(res)
        return results
