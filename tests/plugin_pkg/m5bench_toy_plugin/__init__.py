"""A toy third-party adapter: a bag of title tokens, pretrained by predicting dropped tokens.

It lives outside m5bench's packages and reaches the registry only through the ``m5bench.models``
entry point of its own ``pyproject.toml`` (or as ``--model m5bench_toy_plugin:BagOfWords``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import Adapter, AdapterConfig


@dataclass
class BagOfWordsConfig(AdapterConfig):
    dim: int = 32
    keep: float = 0.5  # fraction of title tokens the pooled vector sees in pretraining
    batch_size: int = 32
    lr: float = 1e-3
    epochs: int = 1
    warmup_ratio: float = 0.1


class BagOfWords(Adapter):
    """Mean of title token embeddings, projected; pretrained to predict the tokens it did not see."""

    consumes = "T"
    requires = "T"
    paper_name = "Bag of words (plugin)"
    summary = "toy plugin: mean title token embedding, predicts dropped tokens"
    config_cls = BagOfWordsConfig
    retrieval_vector = "projection of the mean embedding of the title's real tokens"

    def __init__(self, config: BagOfWordsConfig, spec, modalities):
        super().__init__(config, spec, modalities)
        self.tokens = nn.Embedding(spec.vocab_size, config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.decode = nn.Linear(config.dim, spec.vocab_size)

    def _pool(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(self.tokens.weight.dtype)
        return self.proj((self.tokens(ids) * m).sum(1) / m.sum(1).clamp(min=1.0))

    def pretrain_step(self, batch, generator=None):
        ids, mask = batch.title_ids, batch.title_mask.bool()
        draw = torch.rand(mask.shape, generator=generator).to(mask.device)
        seen, hidden = mask & (draw < self.config.keep), mask & (draw >= self.config.keep)
        logp = F.log_softmax(self.decode(self._pool(ids, seen)), dim=-1)
        picked = logp.gather(1, ids) * hidden
        loss = -picked.sum() / hidden.sum().clamp(min=1)
        return {"loss": loss, "dropped_tokens": loss.detach()}

    def embed(self, batch):
        return self._pool(batch.title_ids, batch.title_mask.bool())
