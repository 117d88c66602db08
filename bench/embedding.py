"""Turn batches into one vector per listing with a trained adapter (the Embed step)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from bench.adapter import Adapter
from bench.features.batch import Batch


def _device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def embed_rows(
    model: Adapter,
    batches: Iterable[Batch],
    *,
    variants: bool = False,
) -> np.ndarray | dict[str, np.ndarray]:
    """Embed every listing of ``batches`` with ``model.embed`` (eval mode, no gradients).

    Rows come back in the order the batches yield them (pass an unshuffled stream), as float32
    ``[N, D]``. With ``variants=True`` the result is ``{name: [N, D_name]}`` from
    :meth:`Adapter.embed_variants` (``"default"`` among them). The model's train/eval mode is
    restored afterwards.
    """
    was_training = model.training
    model.eval()
    device = _device(model)
    parts: dict[str, list[np.ndarray]] = {}
    try:
        for batch in batches:
            batch = batch.to(device)
            out = model.embed_variants(batch) if variants else {"default": model.embed(batch)}
            for name, t in out.items():
                if t.shape[0] != batch.size:
                    raise ValueError(f"{type(model).__name__}.embed returned {t.shape[0]} rows for a batch of {batch.size}")
                parts.setdefault(name, []).append(t.detach().float().cpu().numpy())
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError("embed_rows got no batches")
    arrays = {k: np.ascontiguousarray(np.concatenate(v, axis=0), dtype=np.float32) for k, v in parts.items()}
    return arrays if variants else arrays["default"]
