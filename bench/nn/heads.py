"""Output heads: tied MLM head, feature regression head, poolers."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from bench.nn.layers import activation


class MLMHead(nn.Module):
    """BERT LM head: ``dense -> act -> LN`` transform, then a decoder whose weight is **tied** to the
    word embeddings, plus its own output bias. One instance serves MLM and MEM (SCALE).

    ``word_embeddings`` is the ``nn.Embedding`` to tie to; with ``None`` the decoder has its own
    weight. ``forward(h [..., d]) -> logits [..., vocab]``. Call it on the selected (masked)
    positions only: the vocabulary projection is the most expensive op of a small model.
    """

    def __init__(self, d: int, vocab_size: int, word_embeddings: nn.Embedding | None = None,
                 act: str = "gelu", ln_eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(d, d)
        self.act = activation(act)
        self.ln = nn.LayerNorm(d, eps=ln_eps)
        self.decoder = nn.Linear(d, vocab_size, bias=False)
        if word_embeddings is not None:
            if tuple(word_embeddings.weight.shape) != (vocab_size, d):
                raise ValueError(f"cannot tie a {tuple(word_embeddings.weight.shape)} embedding to a "
                                 f"({vocab_size}, {d}) decoder")
            self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.ln(self.act(self.dense(h)))) + self.bias


class RegressionHead(nn.Module):
    """Feature regression head (masked region / frame / audio prediction):
    ``dense(d->hidden) -> act -> LN -> Linear(hidden->out_dim)``."""

    def __init__(self, d: int, out_dim: int, hidden: int | None = None, act: str = "gelu", ln_eps: float = 1e-12):
        super().__init__()
        hidden = hidden or d
        self.dense = nn.Linear(d, hidden)
        self.act = activation(act)
        self.ln = nn.LayerNorm(hidden, eps=ln_eps)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.ln(self.act(self.dense(h))))


class Pooler(nn.Module):
    """Pool one token and project it: ``act(Linear(h[:, index]))``.

    ``activation``: ``"tanh"`` (BERT pooler), ``"relu"`` (ViLBERT / CAPTURE / SCALE contrastive
    projection) or ``"identity"`` (a plain linear projection, CLIP). ``linear=False`` skips the
    projection (pure token selection). ``forward(h [B, L, d])`` -> ``[B, out_dim]``; a 2-D input is
    taken as already pooled.
    """

    def __init__(self, d: int, out_dim: int | None = None,
                 activation: Literal["tanh", "relu", "identity"] = "tanh",
                 index: int = 0, linear: bool = True, bias: bool = True):
        super().__init__()
        self.index = index
        self.proj = nn.Linear(d, out_dim or d, bias=bias) if linear else None
        if activation == "tanh":
            self.act: nn.Module = nn.Tanh()
        elif activation == "relu":
            self.act = nn.ReLU()
        elif activation == "identity":
            self.act = nn.Identity()
        else:
            raise ValueError(f"unknown pooler activation {activation!r}; choose tanh, relu or identity")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h[:, self.index] if h.dim() == 3 else h
        if self.proj is not None:
            x = self.proj(x)
        return self.act(x)


__all__ = ["MLMHead", "RegressionHead", "Pooler"]
