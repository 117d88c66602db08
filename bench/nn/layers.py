"""Transformer layers shared by every model: BERT post-LN, CLIP-style pre-LN, stacks and mask helpers.

Mask convention everywhere in ``bench.nn``: a *key padding mask* is a bool tensor ``[B, L]`` that is
**True on real tokens** (the :class:`bench.features.batch.Batch` convention). An *attention mask* is
a bool tensor broadcastable to ``[B, heads, Lq, Lk]``, True where the query may attend the key; it is
what :func:`torch.nn.functional.scaled_dot_product_attention` takes.

A query row whose keys are all masked would make softmax return NaN. :func:`padding_attn_mask`
therefore lets such rows (a listing that lacks the modality entirely) attend to every key: their
outputs are finite garbage that the caller must ignore (it always does: those rows are padding or
absent listings).

Parameter names follow BERT's structure (``attn.q/k/v/o``, ``attn_ln``, ``ffn.fc1/fc2``, ``ffn_ln``)
so Hugging Face BERT weights can be copied in with a plain name map (see ``scale.model``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Activation = Literal["gelu", "quick_gelu", "relu", "gelu_tanh"]


class QuickGELU(nn.Module):
    """CLIP's ``x * sigmoid(1.702 x)`` approximation of GELU (used by the CLIP/UniVL cross encoders)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def activation(name: Activation | str) -> nn.Module:
    """The activation module for ``name`` (gelu, quick_gelu, relu, gelu_tanh)."""
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "quick_gelu":
        return QuickGELU()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r}; choose gelu, gelu_tanh, quick_gelu or relu")


# --- mask helpers ---------------------------------------------------------------------------------

def padding_attn_mask(key_mask: torch.Tensor | None, query_len: int | None = None) -> torch.Tensor | None:
    """``[B, L]`` key padding mask (True = real) -> bool attention mask ``[B, 1, 1, L]``.

    Rows with no real key attend to all keys (see the module docstring), so SDPA never sees an
    empty key set. ``query_len`` is accepted for symmetry and ignored (the mask broadcasts).
    """
    if key_mask is None:
        return None
    if key_mask.dtype != torch.bool:
        key_mask = key_mask.bool()
    empty = ~key_mask.any(dim=-1, keepdim=True)
    key_mask = key_mask | empty
    return key_mask[:, None, None, :]


def causal_attn_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool ``[1, 1, L, L]`` lower-triangular mask (query i may attend keys <= i)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]


def combine_attn_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of broadcastable bool attention masks; ``None`` entries are skipped."""
    out = None
    for m in masks:
        if m is None:
            continue
        out = m if out is None else (out & m)
    return out


def block_attn_mask(segment_ids: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Attention mask from per-token segment ids ``[B, L]`` and a ``[S, S]`` bool matrix saying which
    segment may attend which (e.g. modality-presence or stream-restricted attention)."""
    q = segment_ids[:, :, None]
    k = segment_ids[:, None, :]
    return allowed[q, k][:, None]


# --- attention and layers -------------------------------------------------------------------------

class MultiHeadAttention(nn.Module):
    """Multi-head attention on :func:`F.scaled_dot_product_attention`.

    ``forward(x, context=None, attn_mask=None)``: queries from ``x`` ``[B, Lq, d]``, keys/values from
    ``context`` ``[B, Lk, d_ctx]`` (``x`` itself when None: self-attention). ``context_dim`` lets a
    cross-attention read a stream of another width (ViLBERT co-attention); the output has width
    ``d``. ``attn_mask`` is a bool mask broadcastable to ``[B, heads, Lq, Lk]`` (True = attend).
    """

    def __init__(self, d: int, heads: int, dropout: float = 0.0, context_dim: int | None = None,
                 inner_dim: int | None = None, bias: bool = True):
        super().__init__()
        inner = inner_dim or d
        if inner % heads:
            raise ValueError(f"attention width {inner} is not divisible by {heads} heads")
        ctx = context_dim or d
        self.heads = heads
        self.head_dim = inner // heads
        self.q = nn.Linear(d, inner, bias=bias)
        self.k = nn.Linear(ctx, inner, bias=bias)
        self.v = nn.Linear(ctx, inner, bias=bias)
        self.o = nn.Linear(inner, d, bias=bias)
        self.dropout = dropout

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        B, L, _ = t.shape
        return t.view(B, L, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        ctx = x if context is None else context
        q, k, v = self._split(self.q(x)), self._split(self.k(ctx)), self._split(self.v(ctx))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        B, H, L, Dh = out.shape
        return self.o(out.transpose(1, 2).reshape(B, L, H * Dh))


class FeedForward(nn.Module):
    """``fc2(dropout(act(fc1(x))))`` (BERT "intermediate" + "output" dense layers)."""

    def __init__(self, d: int, ffn_dim: int, act: Activation | str = "gelu", dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(d, ffn_dim)
        self.act = activation(act)
        self.fc2 = nn.Linear(ffn_dim, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class PostLNLayer(nn.Module):
    """A BERT layer: ``x = LN(x + drop(attn(x))); x = LN(x + drop(ffn(x)))``.

    Args:
        d: hidden width. heads: attention heads. ffn_dim: FFN width (default ``4 d``).
        dropout: hidden dropout. attn_dropout: attention-probability dropout (default ``dropout``).
        act: FFN activation. ln_eps: LayerNorm epsilon (BERT: 1e-12).
    """

    def __init__(self, d: int, heads: int, ffn_dim: int | None = None, dropout: float = 0.1,
                 attn_dropout: float | None = None, act: Activation | str = "gelu", ln_eps: float = 1e-12):
        super().__init__()
        self.attn = MultiHeadAttention(d, heads, dropout if attn_dropout is None else attn_dropout)
        self.attn_ln = nn.LayerNorm(d, eps=ln_eps)
        self.ffn = FeedForward(d, ffn_dim or 4 * d, act)
        self.ffn_ln = nn.LayerNorm(d, eps=ln_eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn_ln(x + self.drop(self.attn(x, attn_mask=attn_mask)))
        return self.ffn_ln(x + self.drop(self.ffn(x)))


class PreLNLayer(nn.Module):
    """A CLIP-style residual block: ``x = x + attn(LN(x)); x = x + mlp(LN(x))``.

    Same arguments as :class:`PostLNLayer`; defaults follow CLIP (QuickGELU, eps 1e-5).
    """

    def __init__(self, d: int, heads: int, ffn_dim: int | None = None, dropout: float = 0.0,
                 attn_dropout: float | None = None, act: Activation | str = "quick_gelu", ln_eps: float = 1e-5):
        super().__init__()
        self.attn_ln = nn.LayerNorm(d, eps=ln_eps)
        self.attn = MultiHeadAttention(d, heads, dropout if attn_dropout is None else attn_dropout)
        self.ffn_ln = nn.LayerNorm(d, eps=ln_eps)
        self.ffn = FeedForward(d, ffn_dim or 4 * d, act)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_ln(x), attn_mask=attn_mask))
        return x + self.drop(self.ffn(self.ffn_ln(x)))


class Encoder(nn.Module):
    """A stack of :class:`PostLNLayer` (``norm="post"``) or :class:`PreLNLayer` (``norm="pre"``).

    ``forward(x, mask=None, attn_mask=None, causal=False, return_all=False)``: ``mask`` is the
    ``[B, L]`` key padding mask (True = real), combined with an optional extra bool ``attn_mask``
    and a causal mask. ``final_ln`` adds a LayerNorm after the stack (pre-LN only, CLIP ``ln_final``).
    ``return_all`` returns the list of every layer's output (last = final).
    """

    def __init__(self, num_layers: int, d: int, heads: int, ffn_dim: int | None = None, *,
                 norm: Literal["post", "pre"] = "post", dropout: float = 0.1,
                 attn_dropout: float | None = None, act: Activation | str | None = None,
                 ln_eps: float | None = None, final_ln: bool = False):
        super().__init__()
        if norm not in ("post", "pre"):
            raise ValueError(f"norm must be 'post' or 'pre', not {norm!r}")
        cls = PostLNLayer if norm == "post" else PreLNLayer
        kw: dict = dict(ffn_dim=ffn_dim, dropout=dropout, attn_dropout=attn_dropout)
        if act is not None:
            kw["act"] = act
        if ln_eps is not None:
            kw["ln_eps"] = ln_eps
        self.norm = norm
        self.layers = nn.ModuleList(cls(d, heads, **kw) for _ in range(num_layers))
        self.final_ln = nn.LayerNorm(d, eps=ln_eps or 1e-5) if final_ln else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, causal: bool = False,
                return_all: bool = False) -> torch.Tensor | list[torch.Tensor]:
        full = combine_attn_masks(padding_attn_mask(mask), attn_mask,
                                  causal_attn_mask(x.shape[1], x.device) if causal else None)
        outs = []
        for layer in self.layers:
            x = layer(x, attn_mask=full)
            outs.append(x)
        if self.final_ln is not None:
            x = self.final_ln(x)
            if outs:
                outs[-1] = x
        return outs if return_all else x


def run_length_bucketed(fn, x: torch.Tensor, mask: torch.Tensor, buckets: int = 1
                        ) -> tuple[torch.Tensor, int]:
    """Run ``fn(x_sub, mask_sub)`` on rows grouped by length, so short rows are not padded to the
    longest one (rows of a transformer batch are independent).

    ``x [B, L, d]`` with a *left-aligned* key padding mask ``mask [B, L]`` (real tokens first, as the
    batches and packed sequences here are). Rows are sorted by length and split into ``buckets``
    groups of (nearly) equal size; each group is cut to its own longest row. Returns the output
    ``[B, L, d']`` (zeros past each row's group length) and the number of token positions processed.
    ``buckets=1`` runs the whole batch cut to its longest row.
    """
    B, L = mask.shape
    lengths = mask.sum(1)
    if buckets <= 1 or B <= 1:
        Lm = max(int(lengths.max()), 1) if B else 1
        y = fn(x[:, :Lm], mask[:, :Lm])
        if Lm < L:
            y = torch.cat([y, y.new_zeros(B, L - Lm, y.shape[-1])], 1)
        return y, B * Lm
    order = torch.argsort(lengths, descending=True, stable=True)
    out = None
    processed = 0
    for rows in torch.tensor_split(order, min(buckets, B)):
        if len(rows) == 0:
            continue
        Lm = max(int(lengths[rows].max()), 1)
        y = fn(x[rows, :Lm], mask[rows, :Lm])
        if out is None:
            out = y.new_zeros(B, L, y.shape[-1])
        out[rows, :Lm] = y
        processed += len(rows) * Lm
    return out, processed


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT initialisation: normal(0, 0.02) weights, zero biases, LayerNorm 1/0.

    Apply with ``model.apply(init_bert_weights)`` before tying or loading pretrained weights.
    """
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_lecun_linears(module: nn.Module, min_fan_in: int = 8, skip: tuple[nn.Module, ...] = ()) -> None:
    """Width-aware re-initialisation of every ``nn.Linear`` under ``module``: weights
    ``normal(0, 1 / sqrt(fan_in))`` (LeCun normal), biases zero. Apply after :func:`init_bert_weights`
    (which sets the embeddings and LayerNorms).

    Why: BERT's fixed ``std=0.02`` was chosen for 768-wide layers, where a Linear has a signal gain
    of about ``0.02 * sqrt(768) ~ 0.55``. At the tiny presets' width 128 the same std gives a gain of
    ~0.23 per Linear, ~0.05 through an attention branch (value then output projection), so the
    residual stream, i.e. the listing-independent ``[CLS]`` / global-token embedding, is ~95 % of every
    first-token output: measured on synthetic:mini, the title ``[CLS]`` outputs have cosine 1.000
    between listings at init, SIMCL starts above ``log(2B - 1)`` (modalities far apart, listings
    identical) and collapses to exactly ``log(2B - 1)`` within one epoch. With unit gain the attention
    and FFN branches carry content from the first step (same compute, only the starting point
    changes). Linears with ``fan_in < min_fan_in`` (e.g. the 5-d box projection, whose inputs are
    coordinates in [0, 1], not unit-variance features) keep their previous init. A word embedding
    tied to an LM decoder ``Linear`` gets that decoder's ``1 / sqrt(d)``, so token identity outweighs
    the 0.02 position / segment embeddings under the embedding LayerNorm. Linears inside the modules
    in ``skip`` (e.g. a pre-LN stack that should start near the identity) are left as they are.
    """
    skipped = {id(p) for sub in skip for p in sub.parameters()}
    for mod in module.modules():
        if (isinstance(mod, nn.Linear) and mod.in_features >= min_fan_in
                and id(mod.weight) not in skipped):
            nn.init.normal_(mod.weight, mean=0.0, std=mod.in_features ** -0.5)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)


def num_params(module: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


__all__ = [
    "Activation", "QuickGELU", "activation", "padding_attn_mask", "causal_attn_mask",
    "combine_attn_masks", "block_attn_mask", "MultiHeadAttention", "FeedForward", "PostLNLayer",
    "PreLNLayer", "Encoder", "run_length_bucketed", "init_bert_weights", "init_lecun_linears", "num_params",
]
