"""ViLBERT's co-attention ("Co-TRM") layer: two streams that attend to each other.

Queries come from one stream, keys and values from the other, in both directions at once, at a
shared width ``d_bi``. Each stream then projects back to its own width, adds the residual and
normalises (post-LN, as BERT), and runs its *own* feed-forward block. There is no self-attention
inside the layer: in ViLBERT self-attention lives in the per-stream layers interleaved with these.
CAPTURE applies a stack of the same layers consecutively after its unimodal encoders.

Built from the shared :class:`bench.nn.layers.MultiHeadAttention` (``context_dim`` and
``inner_dim`` give the cross-width attention) and :class:`bench.nn.layers.FeedForward`.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.nn.layers import FeedForward, MultiHeadAttention, padding_attn_mask


class _CrossBlock(nn.Module):
    """One direction: ``x = LN(x + drop(attn(x -> ctx))); x = LN(x + drop(ffn(x)))``."""

    def __init__(self, d: int, d_ctx: int, d_bi: int, heads: int, ffn: int, dropout: float, eps: float,
                 act: str):
        super().__init__()
        self.attn = MultiHeadAttention(d, heads, dropout, context_dim=d_ctx, inner_dim=d_bi)
        self.attn_ln = nn.LayerNorm(d, eps=eps)
        self.ffn = FeedForward(d, ffn, act)
        self.ffn_ln = nn.LayerNorm(d, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor) -> torch.Tensor:
        x = self.attn_ln(x + self.drop(self.attn(x, ctx, attn_mask=padding_attn_mask(ctx_mask))))
        return self.ffn_ln(x + self.drop(self.ffn(x)))


class CoAttentionLayer(nn.Module):
    """One bidirectional co-attention layer between a text stream and a vision stream.

    Args:
        d_t, d_v: widths of the text and vision streams.
        d_bi: width of the shared attention space (ViLBERT ``bi_hidden_size``).
        heads: attention heads in the shared space.
        ffn_t, ffn_v: feed-forward widths of each stream's own FFN.
    """

    def __init__(self, d_t: int, d_v: int, d_bi: int, heads: int, ffn_t: int, ffn_v: int,
                 dropout: float = 0.1, eps: float = 1e-12, act: str = "gelu"):
        super().__init__()
        self.text = _CrossBlock(d_t, d_v, d_bi, heads, ffn_t, dropout, eps, act)
        self.vision = _CrossBlock(d_v, d_t, d_bi, heads, ffn_v, dropout, eps, act)

    def forward(self, t: torch.Tensor, t_mask: torch.Tensor, v: torch.Tensor, v_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both directions read the layer's *input* (computed at once, as ViLBERT does).

        ``t_mask``/``v_mask`` are key-padding masks, True on real tokens."""
        return self.text(t, v, v_mask), self.vision(v, t, t_mask)
