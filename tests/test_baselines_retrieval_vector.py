"""Every registered adapter declares its retrieval vector, and ``embed`` returns exactly that tensor.

Parametrised over the registry, so a new model is covered without editing this file: the tiny
preset on a small random batch (with some missing modalities), ``embed(batch)`` must equal
``embed_variants(batch)[model.embed_variant]`` and ``embed_variants(batch)["default"]``.
"""

from __future__ import annotations

import pytest
import torch

from bench import registry
from bench.testing import random_batch, tiny_spec

SPEC = tiny_spec()
#: Variant names that are an ITM-trained pooler (or a product of poolers): never a default.
POOLER_NAMES = ("pooler", "product")


def _build(name: str):
    entry = registry.get(name)
    torch.manual_seed(0)
    model = registry.create_model(name, entry.consumes, SPEC, preset="tiny")
    batch = random_batch(SPEC, entry.consumes, batch_size=6, missing=0.2, seed=1)
    return model.eval(), batch


@pytest.mark.parametrize("name", registry.names())
def test_embed_returns_the_declared_retrieval_vector(name: str) -> None:
    model, batch = _build(name)
    cls = type(model)
    declared = model.embed_variant
    assert isinstance(cls.retrieval_vector, str) and cls.retrieval_vector.strip(), \
        f"{cls.__name__} must say which tensor embed returns (retrieval_vector)"
    assert "retrieval vector" in (cls.__doc__ or "").lower(), \
        f"{cls.__name__}'s docstring must name its retrieval vector and why"
    with torch.no_grad():
        emb = model.embed(batch)
        variants = model.embed_variants(batch)
    assert declared in variants, f"{name}: declared variant {declared!r} not in {sorted(variants)}"
    assert torch.equal(emb, variants[declared])
    assert torch.equal(emb, variants["default"])
    assert emb.shape[0] == batch.size and torch.isfinite(emb).all()
    assert not any(p in declared for p in POOLER_NAMES), \
        f"{name}: the default retrieval vector must not be an ITM-trained pooler ({declared!r})"


@pytest.mark.parametrize("name,declared,old", [
    ("vilbert", "mean_first", "product"), ("uniter", "cls", "pooler"), ("visualbert", "cls", "pooler"),
    ("clip", "normalized_sum", "sum"), ("capture", "mean", "sum"), ("scale", "mean_present", "sum_present"),
    ("bert", "cls", "mean"), ("vlbert", "cls", "mean"), ("image", "global", "mean"),
])
def test_declared_defaults_and_ablation_variants(name: str, declared: str, old: str) -> None:
    """The defaults chosen by principle; the earlier defaults (poolers, sums) stay as named variants."""
    model, batch = _build(name)
    assert model.embed_variant == declared
    with torch.no_grad():
        variants = model.embed_variants(batch)
    assert old in variants


def test_vector_scale_does_not_grow_with_modalities() -> None:
    """SCALE's default: a listing's vector is the mean of its modalities' outputs, so duplicating a
    listing with more modalities present does not lengthen its vector by their count."""
    model, _ = _build("scale")
    batch = random_batch(SPEC, "I,T,Tab,V,A", batch_size=8, missing=0.5, seed=3)
    with torch.no_grad():
        v = model.embed_variants(batch)
    n = batch.present_matrix(model.order).sum(1, keepdim=True).float()
    assert torch.allclose(v["default"] * n, v["sum_present"], atol=1e-5)
