"""Helpers shared by the baseline tests: tiny model sizes and batches with missing images."""

from __future__ import annotations

from dataclasses import replace

import torch

from bench.features.batch import Batch
from bench.modalities import Modality
from bench.registry import create_model
from bench.testing import random_batch, tiny_spec

MODELS = {
    "bert": "T,Tab",
    "image": "I",
    "vilbert": "I,T",
    "clip": "I,T",
    "vlbert": "I,T",
    "visualbert": "I,T",
    "uniter": "I,T",
    "capture": "I,T",
}

SMALL = dict(d=32, heads=2, ffn_dim=64, dropout=0.0)
EXTRA = {
    "vilbert": dict(vision_heads=2, vision_ffn_dim=64, coattn_heads=2),
    "clip": dict(image_d=32, image_heads=2, embed_dim=32),
    "capture": dict(vision_heads=2, vision_ffn_dim=64, coattn_dim=32, coattn_heads=2, cross_heads=2,
                    out_dim=32, clr_dim=32),
}


def spec():
    return tiny_spec()


def build(name: str, **overrides):
    torch.manual_seed(0)
    kw = {**SMALL, **EXTRA.get(name, {}), **overrides}
    return create_model(name, MODELS[name], spec(), "tiny", **kw)


def batch(name: str, *, size: int = 8, seed: int = 0, missing_images: bool = False) -> Batch:
    b = random_batch(spec(), MODELS[name], size, seed=seed)
    if missing_images and Modality.I in b.present:
        b = drop_images(b, torch.arange(size) % 3 == 0)
    return b


def drop_images(b: Batch, rows: torch.Tensor) -> Batch:
    """The batch with the image of ``rows`` missing, as the feature store marks it."""
    keep = ~rows
    present = dict(b.present)
    present[Modality.I] = b.present[Modality.I] & keep
    return replace(
        b,
        present=present,
        region_feats=b.region_feats * keep[:, None, None],
        region_boxes=b.region_boxes * keep[:, None, None],
        region_mask=b.region_mask & keep[:, None],
    )


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
