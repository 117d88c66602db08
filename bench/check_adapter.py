"""Smoke check of a registered adapter (``bench check-adapter``).

For every modality set the model supports, build its ``tiny`` preset on the real feature store of
a catalog (``synthetic:mini`` by default), take a few optimizer steps through the adapter contract
and one embedding pass, and check what a harness relies on: finite named losses with a ``loss``
total, gradients that reach the parameters, one finite vector per listing, and the same vectors
after a save/load round trip. It checks the contract, not model quality.
"""

from __future__ import annotations

import itertools
import tempfile
import time
import traceback
from dataclasses import dataclass

from bench import registry
from bench.modalities import ModalitySet


@dataclass
class AdapterCheck:
    model: str
    modalities: str
    ok: bool
    detail: str
    seconds: float


def supported_sets(entry: registry.ModelEntry) -> list[ModalitySet]:
    """Every modality set ``entry`` accepts: supersets of ``requires`` within ``consumes``."""
    optional = [m for m in entry.consumes if m not in entry.requires]
    out = []
    for k in range(len(optional) + 1):
        for extra in itertools.combinations(optional, k):
            mods = ModalitySet(list(entry.requires) + list(extra))
            if mods:
                out.append(mods)
    return sorted(out, key=lambda s: (len(s), str(s)))


def check_one(entry: registry.ModelEntry, mods: ModalitySet, store, rows, *, steps: int = 3,
              batch_size: int = 16, seed: int = 0) -> AdapterCheck:
    """Build, train ``steps`` steps, embed and round-trip one (model, modalities) pair."""
    import numpy as np
    import torch

    t0 = time.perf_counter()
    try:
        torch.manual_seed(seed)
        model = registry.create_model(entry.name, mods, store.spec, preset="tiny")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        batches = store.batches(rows, mods, batch_size, shuffle=True, seed=seed, drop_last=True)
        for _, batch in zip(range(steps), batches):
            losses = model.pretrain_step(batch, gen)
            if "loss" not in losses:
                raise AssertionError(f"pretrain_step returned no 'loss' (keys: {sorted(losses)})")
            bad = {k: float(torch.as_tensor(v).detach()) for k, v in losses.items()
                   if not torch.isfinite(torch.as_tensor(v).detach()).all()}
            if bad:
                raise AssertionError(f"non-finite losses {bad}")
            opt.zero_grad()
            losses["loss"].backward()
            if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()):
                raise AssertionError("no parameter received a gradient")
            opt.step()
        model.eval()
        eval_batch = store.get_batch(rows[:batch_size], mods)
        with torch.no_grad():
            emb = model.embed(eval_batch)
        if emb.ndim != 2 or emb.shape[0] != eval_batch.size or not torch.isfinite(emb).all():
            raise AssertionError(f"embed gave shape {tuple(emb.shape)} (finite={bool(torch.isfinite(emb).all())}) "
                                 f"for {eval_batch.size} listings")
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d)
            again = registry.create_model(entry.name, mods, store.spec, preset="tiny")
            again.load_weights(d)
            again.eval()
            with torch.no_grad():
                emb2 = again.embed(eval_batch)
        if not np.allclose(emb.numpy(), emb2.numpy(), atol=1e-6):
            raise AssertionError("embeddings differ after save/load")
        detail = f"{steps} steps, loss {losses['loss'].item():.3f}, embedding {emb.shape[1]}-d"
        return AdapterCheck(entry.name, str(mods), True, detail, time.perf_counter() - t0)
    except Exception as exc:  # a failing adapter is a row in the table, not a crash of the check
        last = traceback.extract_tb(exc.__traceback__)[-1]
        where = f" ({last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
        return AdapterCheck(entry.name, str(mods), False, f"{type(exc).__name__}: {exc}{where}",
                            time.perf_counter() - t0)


def check_adapter(name: str, *, data: str = "synthetic:mini", steps: int = 3, progress: bool = False
                  ) -> list[AdapterCheck]:
    """Run :func:`check_one` for every modality set model ``name`` supports."""
    from bench.data import load_catalog
    from bench.features import build_features

    entry = registry.get(name)
    catalog = load_catalog(data, progress=progress)
    store = build_features(catalog, progress=progress)
    rows = catalog.split_indices("pretrain_subset")
    return [check_one(entry, mods, store, rows, steps=steps) for mods in supported_sets(entry)]
