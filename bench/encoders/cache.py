"""Embedding a catalog's raw media with a frozen encoder, cached on disk.

One file per (catalog fingerprint, model name, weights digest, modality, preprocessing): a second run
of the same model on the same catalog (another seed, another fine-tuning setting, another modality
set sharing a modality) reads the vectors instead of re-encoding the media.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.data.paths import m5bench_home
from bench.data.progress import track
from bench.encoders.base import FrozenEncoder, compute_device
from bench.modalities import Modality

#: Bumped when the embedding procedure changes in a way the key does not capture.
VERSION = 1


def cache_path(model: FrozenEncoder, fingerprint: str, code: str) -> Path:
    """Where one modality's vectors of ``model`` on the catalog ``fingerprint`` are cached."""
    cfg = {k: v for k, v in model.config.to_dict().items() if k in ("pooling", "max_length")}
    key = json.dumps({"data": fingerprint, "model": model.model_name(), "weights": model.weights_digest,
                      "modality": code, "preprocessing": model.preprocessing(code), "config": cfg,
                      "version": VERSION}, sort_keys=True, default=str)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model.model_name())[-48:].strip("-.")
    return m5bench_home() / "encoders" / f"{slug}-{code}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"


def encode_catalog(model: FrozenEncoder, catalog: Any, present: dict[str, np.ndarray], *,
                   progress: bool = False, say: Callable[[Any], None] = lambda *_: None) -> dict[str, torch.Tensor]:
    """``{code: [catalog rows, d] float32}`` for each of the model's modalities (zeros where absent).

    Rows where ``present[code]`` is False are not encoded. Runs on the GPU when there is one.
    """
    out: dict[str, torch.Tensor] = {}
    for code in [m.value for m in model.modalities]:
        path = cache_path(model, catalog.fingerprint, code)
        model.cache_files[code] = str(path)
        if path.is_file():
            out[code] = torch.from_numpy(np.load(path))
            say(f"[green]encode[/] {Modality(code).long_name}: cached ({path.name})")
            continue
        values = list(catalog.dataset[Modality(code).long_name])
        rows = np.flatnonzero(present[code])
        vecs = _encode_rows(model, code, values, rows, progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, vecs)
        tmp.replace(path)
        out[code] = torch.from_numpy(vecs)
        say(f"[bold]encode[/] {Modality(code).long_name}: {len(rows)} listings with {model.model_name()} ({path.name})")
    return out


@torch.no_grad()
def _encode_rows(model: FrozenEncoder, code: str, values: list[Any], rows: np.ndarray, progress: bool) -> np.ndarray:
    device = compute_device()
    was_training = model.training
    model.to(device).eval()
    bs = int(model.config.embed_batch_size)
    parts = []
    try:
        chunks = [rows[i:i + bs] for i in range(0, len(rows), bs)]
        for chunk in track(chunks, f"encoding {Modality(code).long_name}", total=len(chunks), enabled=progress):
            parts.append(model.encode(code, [values[int(r)] for r in chunk]).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError(f"no listing has modality {code}")
    dim = parts[0].shape[1]
    vecs = np.zeros((len(values), dim), dtype=np.float32)
    vecs[rows] = np.concatenate(parts)
    return vecs
