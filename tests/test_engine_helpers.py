"""Shared by the engine tests: a tiny real adapter and batch factories (no dependency on SCALE; no tests here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import Adapter, AdapterConfig
from bench.features.batch import Batch
from bench.modalities import ModalitySet
from bench.testing import random_batch, tiny_spec

SPEC = tiny_spec()


@dataclass
class TinyConfig(AdapterConfig):
    dim: int = 16
    dropout: float = 0.1
    mlm: bool = True
    nan_at: int = 0  # the pretrain_step call from which the loss is NaN (0: never)


class TinyAdapter(Adapter):
    """Mean-pooled title embedding; losses: class-word CE and an MLM-like masked-token CE.

    Pretraining batches carry no labels, so the "cat" loss predicts the class word that
    :func:`labelled_batch` writes at title position 1 (``5 + category``), read from the input.
    """

    config_cls = TinyConfig

    def __init__(self, config: TinyConfig, spec=SPEC, modalities=ModalitySet.parse("T")):
        super().__init__(config, spec, modalities)
        self.tok = nn.Embedding(spec.vocab_size, config.dim)
        self.norm = nn.LayerNorm(config.dim)
        self.drop = nn.Dropout(config.dropout)
        self.mlm_head = nn.Linear(config.dim, spec.vocab_size)
        self.cls_head = nn.Linear(config.dim, spec.num_categories)
        self.calls = 0

    def pooled(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.tok(ids) * mask[..., None]
        return self.norm(h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1))

    def pretrain_step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self.calls += 1
        ids, mask = batch.title_ids, batch.title_mask
        class_word = (ids[:, 1] - 5).clamp(0, self.spec.num_categories - 1)  # 5 + category (labelled_batch)
        cat = F.cross_entropy(self.cls_head(self.drop(self.pooled(ids, mask))), class_word)
        out = {"cat": cat}
        total = cat
        if self.config.mlm:
            pick = (torch.rand(ids.shape, generator=generator, device=ids.device) < 0.3) & mask & (ids >= 5)
            masked = torch.where(pick, torch.full_like(ids, self.spec.mask_id), ids)
            h = self.tok(masked) + self.pooled(masked, mask)[:, None]
            logits = self.mlm_head(self.drop(h))
            mlm = F.cross_entropy(logits[pick], ids[pick]) if bool(pick.any()) else logits.sum() * 0
            out["mlm"] = mlm
            total = total + mlm
        if self.config.nan_at and self.calls >= self.config.nan_at:
            total = total * float("nan")
            out["cat"] = out["cat"] * float("nan")
        out["loss"] = total
        return out

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.pooled(batch.title_ids, batch.title_mask)

    def embed_variants(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"default": self.embed(batch), "sum": self.tok(batch.title_ids).sum(1)}

    def extra_state(self) -> dict:
        return {"norm_scale": round(float(self.norm.weight.detach().mean()), 6)}


def make_model(seed: int = 0, **cfg) -> TinyAdapter:
    torch.manual_seed(seed)
    return TinyAdapter(TinyConfig(**cfg))


def labelled_batch(seed: int, size: int = 8) -> Batch:
    """A title batch whose category is written in the title (words 5 + c and 5 + C + c): easy to learn."""
    b = random_batch(SPEC, "T", size, seed=seed)
    C, ids = SPEC.num_categories, b.title_ids
    # other words avoid the 2C class words, so the classes are separable by one word
    words = ids >= 5
    ids[words] = 5 + 2 * C + (ids[words] - 5) % (SPEC.vocab_size - 5 - 2 * C)
    # every other word names the class (two synonyms)
    b.title_ids[:, 1::4] = torch.where(ids[:, 1::4] >= 5, (5 + b.category)[:, None], ids[:, 1::4])
    b.title_ids[:, 3::4] = torch.where(ids[:, 3::4] >= 5, (5 + C + b.category)[:, None], ids[:, 3::4])
    return b


class Factory:
    """``epoch -> batches`` in an order that depends only on (seed, epoch), like the feature store."""

    def __init__(self, batches: list[Batch], seed: int = 0):
        self.batches, self.seed = batches, seed

    def __call__(self, epoch: int) -> list[Batch]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.batches))
        return [self.batches[i] for i in order]

    def __len__(self) -> int:
        return len(self.batches)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
