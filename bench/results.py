"""Result files: one JSON per cell (model, modalities, data, split, seed, preset, overrides).

The schema is versioned (``SCHEMA``); readers refuse versions they do not know. Files are
written atomically (temporary file in the same directory, then ``os.replace``), so a killed run
never leaves a half-written result that a table would read.

Layout of a result (see :func:`new_result`)::

    schema, cell{model, modalities, split, preset, seed, overrides}, data{source, fingerprint,
    description, is_m5product, listings}, config{model, train, features, eval},
    metrics{pretrain{...}, finetune{...}} (null where a metric has no value), null_metrics{group/name:
    reason}, warnings[...], eval_health{queries and positives per task}, definitions{...}, counts{...},
    extra{...}, timings{stage: seconds}, provenance{version, git commit, libraries, command, created}
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

SCHEMA = "m5bench.result/1"
KNOWN_SCHEMAS = {SCHEMA}

_LIBRARIES = ("torch", "transformers", "timm", "open_clip_torch", "datasets", "accelerate",
              "scikit-learn", "numpy", "av", "librosa", "tokenizers", "faiss-cpu")


class ResultError(ValueError):
    pass


def overrides_key(overrides: dict[str, Any]) -> str:
    """Short stable tag for a set of config overrides ("" when there are none)."""
    if not overrides:
        return ""
    blob = json.dumps(overrides, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def model_slug(model: str) -> str:
    """A model name as a file-name part: registered names are kept; a name with other characters
    (``hf:/path/to/folder``, ``open_clip:ARCH@TAG``) becomes a readable slug plus a hash of the name."""
    if re.fullmatch(r"[A-Za-z0-9_.-]+", model):
        return model
    slug = re.sub(r"[^A-Za-z0-9_.]+", "-", model).strip("-.")
    if len(slug) > 48:  # a long path: its start (the family) and its end (the folder) stay readable
        slug = f"{slug[:16]}-{slug[-31:]}"
    return f"{slug}-{hashlib.sha1(model.encode()).hexdigest()[:8]}"


def cell_filename(model: str, modalities_key: str, split: str, preset: str, seed: int,
                  overrides: dict[str, Any] | None = None, data: str | None = None) -> str:
    """``model__mods__split__preset__seedN[__overrides-tag][__data].json``; ``data`` names the
    catalog (a readable slug and the fingerprint's prefix), so cells on two catalogs never collide."""
    tag = overrides_key(overrides or {})
    return (f"{model_slug(model)}__{modalities_key}__{split}__{preset}__seed{seed}" + (f"__{tag}" if tag else "")
            + (f"__{data}" if data else "") + ".json")


def git_commit(cwd: str | Path | None = None) -> dict[str, Any]:
    """The commit of the checkout the package runs from, and whether it has local changes."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha or None, "dirty": bool(dirty) if sha else None}


def library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def provenance() -> dict[str, Any]:
    from bench import __version__

    return {
        "m5bench_version": __version__,
        "git": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": library_versions(),
        "command": sys.argv[:],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def new_result(**parts: Any) -> dict[str, Any]:
    """A result dict with the schema tag and provenance filled in; ``parts`` fill the rest."""
    res: dict[str, Any] = {"schema": SCHEMA}
    res.update(parts)
    res.setdefault("provenance", provenance())
    return res


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None`` (JSON has no NaN); numpy
    scalars become Python numbers. The one NaN policy of every file m5bench writes: a value that
    is not a number is written as null, and a result says why next to it (``null_metrics``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy scalar
        return json_safe(obj.item())
    return obj


def atomic_tmp(path: Path, prefix: str | None = None) -> tuple[int, str]:
    """``(fd, name)`` of a temporary file beside ``path`` for an atomic replace, with the permissions a
    plain ``open(path, "w")`` would give (``mkstemp`` makes it owner-only, which the rename would keep)."""
    fd, tmp = tempfile.mkstemp(prefix=prefix or path.name + ".", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, tmp


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON so readers see either the old file or the complete new one, never a partial one.
    Non-finite floats are written as null (:func:`json_safe`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = atomic_tmp(path)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(json_safe(obj), f, indent=2, sort_keys=True, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_result(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        res = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    schema = res.get("schema")
    if schema not in KNOWN_SCHEMAS:
        raise ResultError(f"{path}: unknown result schema {schema!r}; this m5bench reads {sorted(KNOWN_SCHEMAS)}")
    return res


def iter_results(root: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every result file under ``root``, in sorted path order (so tables are reproducible)."""
    for p in sorted(Path(root).rglob("*.json")):
        try:
            res = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(res, dict) and res.get("schema") in KNOWN_SCHEMAS:
            yield p, res
