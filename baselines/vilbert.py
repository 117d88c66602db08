"""ViLBERT baseline: two streams with interleaved co-attention (Lu et al., 2019).

Text and vision have separate post-LN stacks. Co-attention layer k sits after text layer
``t_bi[k]`` and vision layer ``v_bi[k]``, with ``t_bi = L_t-K .. L_t-1`` and ``v_bi = L_v-K ..
L_v-1`` (ViLBERT's ``t_biattention_id = [6..11]``, ``v_biattention_id = [0..5]``): text runs its
first ``L_t - K`` layers alone, and with ``L_v = K`` vision has no self-attention before the first
co-attention, as the original. Poolers take the first token of each stream, ``Linear -> ReLU``.

Objectives (plain sum): MLM; masked region modelling (15 %, 90 % zeroed) as MSE regression to the
original feature (``predict_feature`` in the original; product features have no detector
classes for the KL variant); ITM by caption swap (p 0.5) scored by ``Linear(pooled_t * pooled_v)``.
MLM and region losses count only on rows whose pair is not swapped (a swapped caption would teach
the model to reconstruct words from the wrong image).

Retrieval vector: the **mean of the two streams' first-token states** (text ``[CLS]`` and image
global token after the last layer, over the streams a listing has). Why: it is the two-stream
convention of SCALE and CAPTURE (the per-stream first tokens combined), and it carries the content
both streams encode. ViLBERT's own fusion ``pooled_t * pooled_v`` multiplies two ReLU poolers that
only the ITM head trains: a product of two non-negative sparse vectors, whose raw dot products
are dominated by a few large coordinates (a handful of gallery items become everyone's nearest
neighbour). The mean, not the sum, so a listing without an image is not shorter than one with both.
The pooler outputs and their product stay available as the ``product``, ``text_pooler`` and
``image_pooler`` variants (for the ablation); ``sum_first``, ``text`` and ``image`` too.

Deviation: the vision and co-attention widths equal the text width ``d`` (ViLBERT uses 1024) so
every model feeds the evaluator vectors of one width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines._common import BaselineAdapter, BaselineConfig, zero_like_loss
from bench.features.batch import Batch, FeatureSpec
from bench.modalities import Modality, ModalitySet
from bench.nn.coattention import CoAttentionLayer
from bench.nn.embeddings import RegionEmbedding, TextEmbedding, masked_mean
from bench.nn.heads import MLMHead, Pooler, RegressionHead
from bench.nn.itm import ITMHead, itm_title_swap
from bench.nn.layers import Encoder, padding_attn_mask
from bench.nn.losses import masked_mse


@dataclass
class ViLBertConfig(BaselineConfig):
    text_layers: int = 2
    vision_layers: int = 1
    coattn_layers: int = 1
    vision_heads: int = 4
    vision_ffn_dim: int = 512
    coattn_heads: int = 4
    itm_neg_prob: float = 0.5
    itm: bool = True

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        p = super().presets()
        # bert_base_6layer_6conect: text 12, vision 6 (8 heads, FFN 1024), 6 co-attention (8 heads)
        p["paper"].update(text_layers=12, vision_layers=6, coattn_layers=6, vision_heads=8,
                          vision_ffn_dim=1024, coattn_heads=8)
        return p


class ViLBert(BaselineAdapter):
    """ViLBERT (module docstring). Retrieval vector: mean of the text ``[CLS]`` and image global-token
    final states over the streams a listing has, the SCALE / CAPTURE two-stream convention, instead
    of the product of the ITM-trained ReLU poolers (a variant)."""

    config_cls = ViLBertConfig
    embed_variant = "mean_first"
    retrieval_vector = "mean of the text [CLS] and image global-token final states over the present streams"

    def __init__(self, config: ViLBertConfig, spec: FeatureSpec, modalities: ModalitySet):
        super().__init__(config, spec, modalities)
        c = config
        K = c.coattn_layers
        if not (1 <= K <= min(c.text_layers, c.vision_layers)):
            raise ValueError(f"ViLBERT needs 1 <= coattn_layers ({K}) <= text_layers ({c.text_layers}) "
                             f"and vision_layers ({c.vision_layers})")
        self.text = TextEmbedding(spec.vocab_size, c.d, spec.title_len, dropout=c.dropout, pad_id=spec.pad_id)
        self.region = RegionEmbedding(spec.region_dim, c.d, box_dim=5, dropout=c.dropout)
        self.text_encoder = Encoder(c.text_layers, c.d, c.heads, c.ffn_dim, norm="post", dropout=c.dropout)
        self.vision_encoder = Encoder(c.vision_layers, c.d, c.vision_heads, c.vision_ffn_dim, norm="post",
                                      dropout=c.dropout)
        self.coattn = nn.ModuleList(
            CoAttentionLayer(c.d, c.d, c.d, c.coattn_heads, c.ffn_dim, c.vision_ffn_dim, dropout=c.dropout)
            for _ in range(K))
        self.t_bi = list(range(c.text_layers - K, c.text_layers))
        self.v_bi = list(range(c.vision_layers - K, c.vision_layers))
        self.text_pooler = Pooler(c.d, c.d, activation="relu")
        self.vision_pooler = Pooler(c.d, c.d, activation="relu")
        self.mlm = MLMHead(c.d, spec.vocab_size, self.text.word)
        self.mrp = RegressionHead(c.d, spec.region_dim)
        self.itm_head = ITMHead(c.d, c.dropout)
        self._init_weights()

    # the interleaved schedule of BertEncoder.forward in vilbert_beta
    def _encode(self, ids: torch.Tensor, t_mask: torch.Tensor, r: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.text(ids)
        v = self.region(r["feats"], r["boxes"])
        v_mask = r["mask"]
        t_attn, v_attn = padding_attn_mask(t_mask), padding_attn_mask(v_mask)
        t_layers, v_layers = self.text_encoder.layers, self.vision_encoder.layers
        ts = vs = 0
        for k, co in enumerate(self.coattn):
            for i in range(vs, self.v_bi[k]):
                v = v_layers[i](v, v_attn)
            for i in range(ts, self.t_bi[k]):
                t = t_layers[i](t, t_attn)
            t, v = co(t, t_mask, v, v_mask)
            ts, vs = self.t_bi[k], self.v_bi[k]
        for i in range(vs, len(v_layers)):
            v = v_layers[i](v, v_attn)
        for i in range(ts, len(t_layers)):
            t = t_layers[i](t, t_attn)
        return t, v

    def streams(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Final text and vision stream states ``(t [B, Lt, d], v [B, 1 + R, d])``, no masking."""
        batch = self.prepare(batch)
        r = self.regions(batch, None, mask=False)
        return self._encode(batch.title_ids, batch.title_mask.bool(), r)

    def pooled(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled text and vision streams ``(pooled_t, pooled_v)``, each [B, d]."""
        t, v = self.streams(batch)
        return self.text_pooler(t), self.vision_pooler(v)

    def pretrain_step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        batch = self.prepare(batch)
        c = self.config
        batch, pairs, matched = itm_title_swap(batch, c.itm, generator, c.itm_neg_prob)
        t_rows = batch.present[Modality.T] & matched
        ids, labels = self.mask_title(batch.title_ids, batch.title_mask, t_rows, generator)
        r = self.regions(batch, generator, mask=True)
        r["picked"] = r["picked"] & matched[:, None]
        t, v = self._encode(ids, batch.title_mask.bool(), r)
        mlm = self.mlm_loss(self.mlm, t, labels)
        mrp = masked_mse(self.mrp(v), r["target"], r["picked"])
        total = mlm + mrp
        out = {"mlm": mlm.detach(), "mrp": mrp.detach()}
        if pairs is not None:
            logits = self.itm_head(self.text_pooler(t) * self.vision_pooler(v))
            if bool(pairs.valid.any()):
                itm = F.cross_entropy(logits[pairs.valid], pairs.label[pairs.valid])
            else:
                itm = zero_like_loss(logits)
            total = total + itm
            out["itm"] = itm.detach()
        out["loss"] = total
        return out

    def embed_variants(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``mean_first`` (default), ``sum_first``, ``text`` / ``image`` (first-token states) and the
        pooler outputs ``text_pooler`` / ``image_pooler`` / ``product`` (ViLBERT's fusion)."""
        t, v = self.streams(batch)
        first = torch.stack([t[:, 0], v[:, 0]], dim=1)  # [B, 2, d]
        present = torch.stack([batch.present[Modality.T], batch.present[Modality.I]], dim=1)
        pt, pv = self.text_pooler(t), self.vision_pooler(v)
        out = {"mean_first": masked_mean(first, present), "sum_first": (first * present[..., None]).sum(1),
               "text": t[:, 0], "image": v[:, 0], "text_pooler": pt, "image_pooler": pv, "product": pt * pv}
        out["default"] = out[self.embed_variant]
        return out

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.embed_variants(batch)[self.embed_variant]
