"""Input embeddings shared by the models: text, region (loc5), feature sequences, global tokens.

Other location encodings (UNITER's 7-d box, VL-BERT's sin/cos geometry, VisualBERT's visual segment)
belong to the adapters that use them; they can wrap :class:`RegionEmbedding` or write their own.
"""

from __future__ import annotations

import torch
from torch import nn

#: The box of the prepended global image token (whole image, area 1), as ViLBERT/CAPTURE/SCALE.
GLOBAL_BOX = (0.0, 0.0, 1.0, 1.0, 1.0)


class TextEmbedding(nn.Module):
    """BERT embeddings: word + learned absolute position + segment (token type), LN, dropout.

    ``forward(ids, token_type=None, position_ids=None)`` with ``ids`` ``[B, L]``; ``token_type`` is a
    ``[B, L]`` tensor or an int applied to every token (0 title / segment A, 1 table / segment B).
    ``word`` may be passed in to share one word-embedding matrix between several text streams (e.g.
    title and table), in which case ``vocab_size`` must match it. ``type_vocab_size=0`` drops the
    segment embedding (CLIP text tower).
    """

    def __init__(self, vocab_size: int, d: int, max_len: int, type_vocab_size: int = 2,
                 dropout: float = 0.1, pad_id: int = 0, ln_eps: float = 1e-12,
                 word: nn.Embedding | None = None):
        super().__init__()
        if word is not None and word.num_embeddings != vocab_size:
            raise ValueError(f"shared word embedding has {word.num_embeddings} rows, expected {vocab_size}")
        self.word = word if word is not None else nn.Embedding(vocab_size, d, padding_idx=pad_id)
        self.position = nn.Embedding(max_len, d)
        self.token_type = nn.Embedding(type_vocab_size, d) if type_vocab_size > 0 else None
        self.ln = nn.LayerNorm(d, eps=ln_eps)
        self.drop = nn.Dropout(dropout)
        self.max_len = max_len

    def forward(self, ids: torch.Tensor, token_type: torch.Tensor | int | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        L = ids.shape[1]
        if position_ids is None:
            if L > self.max_len:
                raise ValueError(f"sequence of {L} tokens exceeds the {self.max_len} learned positions")
            position_ids = torch.arange(L, device=ids.device)[None]
        x = self.word(ids) + self.position(position_ids)
        if self.token_type is not None:
            if token_type is None:
                token_type = 0
            if isinstance(token_type, int):
                x = x + self.token_type.weight[token_type]
            else:
                x = x + self.token_type(token_type)
        return self.drop(self.ln(x))


class RegionEmbedding(nn.Module):
    """ViLBERT/CAPTURE/SCALE "loc5" region embedding: ``LN(Linear(feat) + Linear(box))``, dropout.

    ``forward(feats [B, R, feat_dim], boxes [B, R, box_dim])``. ``box_dim`` is 5 for
    ``(x1, y1, x2, y2, area)``; UNITER's 7-d variant can reuse this class with ``box_dim=7``.
    """

    def __init__(self, feat_dim: int, d: int, box_dim: int = 5, dropout: float = 0.1, ln_eps: float = 1e-12):
        super().__init__()
        self.feat = nn.Linear(feat_dim, d)
        self.loc = nn.Linear(box_dim, d)
        self.ln = nn.LayerNorm(d, eps=ln_eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, feats: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.drop(self.ln(self.feat(feats) + self.loc(boxes)))


class SequenceFeatureEmbedding(nn.Module):
    """Video / audio frame embedding: ``LN(Linear(feat) + learned position)``, dropout.

    ``forward(feats [B, F, feat_dim], position_ids=None)``; positions default to ``0..F-1`` (after a
    prepended global token, that token is position 0).
    """

    def __init__(self, feat_dim: int, d: int, max_len: int, dropout: float = 0.1, ln_eps: float = 1e-12):
        super().__init__()
        self.feat = nn.Linear(feat_dim, d)
        self.position = nn.Embedding(max_len, d)
        self.ln = nn.LayerNorm(d, eps=ln_eps)
        self.drop = nn.Dropout(dropout)
        self.max_len = max_len

    def forward(self, feats: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        F_ = feats.shape[1]
        if position_ids is None:
            if F_ > self.max_len:
                raise ValueError(f"sequence of {F_} frames exceeds the {self.max_len} learned positions")
            position_ids = torch.arange(F_, device=feats.device)[None]
        return self.drop(self.ln(self.feat(feats) + self.position(position_ids)))


def masked_mean(feats: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``feats [B, L, D]`` over real positions (``mask`` True); zero where a row has none."""
    if mask is None:
        return feats.mean(dim=1)
    m = mask.to(feats.dtype)[..., None]
    return (feats * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def prepend_global(feats: torch.Tensor, mask: torch.Tensor | None, boxes: torch.Tensor | None = None,
                   global_box: tuple[float, ...] = GLOBAL_BOX
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Prepend the global token (masked mean of ``feats``) as ViLBERT/CAPTURE/SCALE do.

    Returns ``(feats [B, 1+L, D], mask [B, 1+L], boxes [B, 1+L, 5] or None)``. The global token is
    always marked real, so a listing without the modality keeps one attendable (all-zero, i.e.
    zero-imputed) token. Call it *after* masking, so the global token is the mean of the masked
    features, as the original code does.
    """
    B, L, _ = feats.shape
    if mask is None:
        mask = torch.ones(B, L, dtype=torch.bool, device=feats.device)
    g = masked_mean(feats, mask)[:, None]
    out = torch.cat([g, feats], dim=1)
    out_mask = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=mask.device), mask.bool()], dim=1)
    out_boxes = None
    if boxes is not None:
        gb = torch.tensor(global_box, dtype=boxes.dtype, device=boxes.device).expand(B, 1, len(global_box))
        out_boxes = torch.cat([gb, boxes], dim=1)
    return out, out_mask, out_boxes


class RunningStandardizer(nn.Module):
    """Per-dimension feature standardisation with running statistics over real tokens.

    Raw region / frame / audio features come on very different scales (e.g. MFCCs in the hundreds,
    ReLU CNN features near 0.1), which makes their masked-regression MSE losses differ by orders of
    magnitude and lets one of them dominate a summed objective. This module keeps running mean and
    variance per dimension (cumulative average over the first ``1 / momentum`` updates, then an EMA)
    and maps features to ``(x - mean) / std``. Call :meth:`update` on training batches (real tokens
    only) and ``forward`` everywhere; the statistics are buffers, so they are saved with the weights.
    ``forward(x, mask)`` zeroes positions where ``mask`` is False (padding stays 0).
    """

    def __init__(self, dim: int, momentum: float = 0.01, eps: float = 1e-5):
        super().__init__()
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("updates", torch.zeros(()))

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        sel = (x[mask] if mask is not None else x.reshape(-1, x.shape[-1])).float()
        if sel.shape[0] == 0:
            return
        n = float(self.updates) + 1.0
        r = max(1.0 / n, self.momentum)
        m = sel.mean(0)
        v = sel.var(0, unbiased=False)
        # mixture of the running and the batch distribution (weights 1 - r, r): exact and stable
        # even when |mean| >> std, unlike E[x^2] - E[x]^2
        delta = m - self.mean
        self.var.mul_(1 - r).add_(v, alpha=r).add_(delta.pow(2), alpha=r * (1 - r))
        self.mean.add_(delta, alpha=r)
        self.updates.add_(1.0)

    def std(self) -> torch.Tensor:
        return self.var.clamp_min(0.0).add(self.eps).sqrt()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = (x.float() - self.mean) / self.std()
        if mask is not None:
            y = y * mask[..., None].to(y.dtype)
        return y


__all__ = ["GLOBAL_BOX", "RunningStandardizer", "TextEmbedding", "RegionEmbedding", "SequenceFeatureEmbedding",
           "masked_mean", "prepend_global"]
