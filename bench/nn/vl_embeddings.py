"""Region embeddings of the single-stream vision-language baselines (UNITER, VL-BERT, VisualBERT).

Each model encodes a region differently, and the difference is part of what defines it:

* UNITER: ``LN(Linear(feat)) + LN(Linear(box7)) + type(1)`` then LN, with the 7-d box
  ``[x1, y1, x2, y2, w, h, w*h]``; masked regions get a learned mask vector added to their zeroed
  feature; the MRFR output layer reuses the input projection (tied).
* VL-BERT: a *visual feature embedding* (appearance concatenated with a sinusoidal geometry code,
  ``Dropout -> Linear -> ReLU``) is added to **every** token, text included (text tokens carry the
  whole image), behind a LayerNorm whose scale starts at 0; regions are ``[IMG]`` tokens in segment
  C that all share one position, followed by ``[END]``.
* VisualBERT: ``Linear(feat)`` + a visual segment embedding + a visual position embedding (id 0)
  and **no boxes**, normalised by the text embedding's own LayerNorm (one LN over the concatenation).

Text tokens always come from the shared :class:`bench.nn.embeddings.TextEmbedding`; these modules
read its tables (word, position, token_type, ln) rather than keeping copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.nn.embeddings import TextEmbedding, masked_mean


# --- UNITER ---------------------------------------------------------------------------------------

def box7(boxes: torch.Tensor) -> torch.Tensor:
    """``(x1, y1, x2, y2, area)`` -> UNITER's ``(x1, y1, x2, y2, w, h, w*h)`` (all normalised)."""
    x1, y1, x2, y2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    w, h = (x2 - x1).clamp(min=0), (y2 - y1).clamp(min=0)
    return torch.stack([x1, y1, x2, y2, w, h, w * h], dim=-1)


class UniterImageEmbedding(nn.Module):
    """UNITER region embedding. ``token_type`` is the text embedding's segment table (shared, id 1).

    ``forward(feats [B,R,Df], boxes [B,R,5], masked [B,R] bool | None) -> [B,R,d]``.
    """

    def __init__(self, feat_dim: int, d: int, token_type: nn.Embedding, dropout: float = 0.1,
                 ln_eps: float = 1e-12):
        super().__init__()
        self.img_linear = nn.Linear(feat_dim, d)
        self.img_ln = nn.LayerNorm(d, eps=ln_eps)
        self.pos_linear = nn.Linear(7, d)
        self.pos_ln = nn.LayerNorm(d, eps=ln_eps)
        # row 0 stays zero: only masked regions receive the learned mask vector
        self.mask_embedding = nn.Embedding(2, feat_dim, padding_idx=0)
        self.ln = nn.LayerNorm(d, eps=ln_eps)
        self.drop = nn.Dropout(dropout)
        self._token_type = [token_type]  # a reference, not a submodule: the table is owned by the text side

    def forward(self, feats: torch.Tensor, boxes: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        if masked is not None:
            feats = feats + self.mask_embedding(masked.long())
        x = self.img_ln(self.img_linear(feats)) + self.pos_ln(self.pos_linear(box7(boxes)))
        x = x + self._token_type[0].weight[1]
        return self.drop(self.ln(x))

    def tied_output(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """MRFR output layer tied to the input projection: ``h @ W_img + b`` (``W_img`` is [d, Df])."""
        return F.linear(h, self.img_linear.weight.t(), bias)


# --- VL-BERT --------------------------------------------------------------------------------------

def vlbert_geometry(boxes: torch.Tensor, dim: int = 2048, wave_length: float = 1000.0) -> torch.Tensor:
    """VL-BERT's sinusoidal box code: ``(xc, yc, w, h) * 100``, each with ``dim/8`` frequencies of
    sin and cos (wavelength base ``wave_length``) -> ``[..., dim]``. Boxes are ``(x1,y1,x2,y2,...)``
    already normalised by the image size."""
    if dim % 8:
        raise ValueError(f"geometry dimension must be a multiple of 8, got {dim}")
    x1, y1, x2, y2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    pos = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1), (y2 - y1)], dim=-1) * 100.0  # [..., 4]
    n = dim // 8
    freq = wave_length ** (torch.arange(n, device=boxes.device, dtype=boxes.dtype) / n)  # [n]
    angles = pos[..., None] / freq  # [..., 4, n]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # [..., 8n]


class VLBertEmbedding(nn.Module):
    """VL-BERT's joint input: ``[CLS] text [SEP] | [IMG] x R | [END]``.

    Every token = token embedding + visual feature embedding + segment + position, then the text
    embedding's LN and dropout. Segment ids: text 0, visual elements (RoIs and ``[END]``) 2.
    Positions: text 0..n-1 (n real text tokens of that row), every RoI ``n`` (one shared position),
    ``[END]`` ``n+1``. The whole image (masked mean of the region features, box ``[0,0,1,1]``)
    is the visual feature of every text token and of ``[END]``: product features have no separate
    whole-image RoI, so the mean region stands in for it (documented deviation).

    ``text`` must have ``type_vocab_size >= 3`` and ``max_len >= title_len + 2``.
    """

    SEGMENT_VISUAL = 2

    def __init__(self, text: TextEmbedding, feat_dim: int, d: int, mask_id: int, geom_dim: int = 2048,
                 dropout: float = 0.1, ln_eps: float = 1e-12):
        super().__init__()
        if text.token_type is None or text.token_type.num_embeddings < 3:
            raise ValueError("VL-BERT needs a text embedding with 3 segments (A, B, C=visual)")
        self._text = [text]  # owned by the adapter; referenced, not registered twice
        self.geom_dim = geom_dim
        self.mask_id = mask_id
        self.img_token = nn.Parameter(torch.zeros(d))
        self.end_token = nn.Parameter(torch.zeros(d))
        nn.init.normal_(self.img_token, std=0.02)
        nn.init.normal_(self.end_token, std=0.02)
        self.visual_drop = nn.Dropout(dropout)
        self.visual_fc = nn.Linear(feat_dim + geom_dim, d)
        # zero-initialised scale: the visual contribution starts switched off and is learned
        self.visual_ln_text = nn.LayerNorm(d, eps=ln_eps)
        self.visual_ln_object = nn.LayerNorm(d, eps=ln_eps)
        for ln in (self.visual_ln_text, self.visual_ln_object):
            nn.init.zeros_(ln.weight)

    def visual_feature(self, feats: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        geo = vlbert_geometry(boxes, self.geom_dim)
        return F.relu(self.visual_fc(self.visual_drop(torch.cat([feats, geo], dim=-1))))

    def forward(self, ids: torch.Tensor, text_mask: torch.Tensor, feats: torch.Tensor, boxes: torch.Tensor,
                region_mask: torch.Tensor, masked_regions: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Returns ``(embeddings [B, Lt+R+1, d], key mask [B, Lt+R+1], info)``; ``info`` holds the
        ``position_ids`` and ``segment_ids`` used (the tests read them). ``masked_regions`` marks RoIs
        whose feature was masked: their token embedding is ``[MASK]`` instead of ``[IMG]``."""
        text = self._text[0]
        B, Lt = ids.shape
        R = feats.shape[1]
        dev = ids.device
        n_text = text_mask.long().sum(1)  # [B]
        whole_feat = masked_mean(feats, region_mask)[:, None]  # [B,1,Df]
        whole_box = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0], device=dev, dtype=boxes.dtype).expand(B, 1, 5)
        whole_vis = self.visual_feature(whole_feat, whole_box)  # [B,1,d]
        obj_vis = self.visual_feature(feats, boxes[..., :5])  # [B,R,d]

        # token embeddings
        tok_text = text.word(ids)
        tok_obj = self.img_token.expand(B, R, -1)
        if masked_regions is not None:
            mask_word = text.word.weight[self.mask_id]
            tok_obj = torch.where(masked_regions[..., None], mask_word.expand_as(tok_obj), tok_obj)
        tok_end = self.end_token.expand(B, 1, -1)

        # positions: text 0..n-1, all RoIs n, [END] n+1
        pos_text = torch.arange(Lt, device=dev)[None].expand(B, Lt)
        pos_obj = n_text[:, None].expand(B, R)
        pos_end = (n_text + 1)[:, None]
        position_ids = torch.cat([pos_text, pos_obj, pos_end], dim=1)
        segment_ids = torch.cat([torch.zeros(B, Lt, dtype=torch.long, device=dev),
                                 torch.full((B, R + 1), self.SEGMENT_VISUAL, dtype=torch.long, device=dev)], dim=1)

        vis = torch.cat([self.visual_ln_text(whole_vis).expand(B, Lt, -1),
                         self.visual_ln_object(obj_vis),
                         self.visual_ln_text(whole_vis)], dim=1)
        tok = torch.cat([tok_text, tok_obj, tok_end], dim=1)
        x = tok + vis + text.position(position_ids) + text.token_type(segment_ids)
        x = text.drop(text.ln(x))
        mask = torch.cat([text_mask.bool(), region_mask.bool(),
                          torch.ones(B, 1, dtype=torch.bool, device=dev)], dim=1)
        return x, mask, {"position_ids": position_ids, "segment_ids": segment_ids}


# --- VisualBERT -----------------------------------------------------------------------------------

class VisualBertVisualEmbedding(nn.Module):
    """VisualBERT's visual tokens: ``Linear(feat) + visual_type(1) + visual_position(0)``, no boxes.

    The visual segment and position tables start as copies of the text ones (VisualBERT's
    ``special_visual_initialize``). Normalisation uses the text embedding's LayerNorm, because
    VisualBERT applies a single LN over the concatenated text+visual sequence (LN is per token, so
    that is the same as normalising each part with the same LN).
    ``forward(feats [B,R,Df]) -> [B,R,d]`` (call :meth:`copy_text_tables` after initialising the text side).
    """

    def __init__(self, text: TextEmbedding, feat_dim: int, d: int, type_vocab_size: int = 2,
                 visual_positions: int | None = None):
        super().__init__()
        self._text = [text]
        self.visual_projection = nn.Linear(feat_dim, d)
        self.visual_token_type = nn.Embedding(type_vocab_size, d)
        # VisualBERT's table has one row per text position (rows > 0 serve word-region alignment,
        # which product data lacks); kept full-size so weights map one-to-one onto HF's model
        self.visual_position = nn.Embedding(visual_positions or text.max_len, d)
        self.copy_text_tables()

    @torch.no_grad()
    def copy_text_tables(self) -> None:
        text = self._text[0]
        if text.token_type is not None:
            n = min(text.token_type.num_embeddings, self.visual_token_type.num_embeddings)
            self.visual_token_type.weight[:n].copy_(text.token_type.weight[:n])
        n = min(self.visual_position.num_embeddings, text.position.num_embeddings)
        self.visual_position.weight[:n].copy_(text.position.weight[:n])

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        text = self._text[0]
        x = self.visual_projection(feats) + self.visual_token_type.weight[1] + self.visual_position.weight[0]
        return text.drop(text.ln(x))


__all__ = ["box7", "UniterImageEmbedding", "vlbert_geometry", "VLBertEmbedding", "VisualBertVisualEmbedding"]
