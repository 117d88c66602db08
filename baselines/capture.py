"""CAPTURE baseline (Product1M, ICCV 2021): unimodal -> contrast -> co-attention -> cross.

1. Unimodal post-LN stacks: text (BERT embeddings) and image (loc5 region embedding + global mean
   token), run independently.
2. CLR, before any fusion: ``z = ReLU(Linear(first token))`` of each stream, SimCLR NT-Xent over
   the 2B stacked vectors (intra-modal negatives included), fixed temperature 0.07, over listings
   that have both modalities.
3. ``coattn_layers`` ViLBERT co-attention layers applied *consecutively* (not interleaved).
4. A pre-LN cross encoder (QuickGELU, FFN 4x) over ``concat(text, image)`` with learned absolute
   positions over the concatenation (image positions start at ``title_len``, as in the fixed-length
   original) and no type embedding.
5. Per-stream ``Linear + ReLU`` (``t_fc``, ``v_fc``) to ``out_dim``; MLM maps ``out_dim -> d`` before
   the tied LM head; masked regions regress their original feature (MSE, the released
   ``--predict_feature``). No ITM (``BertPreTrainingHeads_woITM``).

Initialisation (``init``): ``"lecun"`` (default) re-draws every Linear outside the pre-LN cross encoder
with std ``1/sqrt(fan_in)`` after the BERT init (the cross encoder keeps 0.02, near the identity), as
SCALE does (see :func:`bench.nn.layers.init_lecun_linears` for the measured collapse it prevents at
width 128); the ``paper`` preset keeps BERT's 0.02 (``"bert"``).

Retrieval vector (CAPTURE ships no retrieval extractor): the **mean** of the two streams' first
tokens after ``t_fc`` / ``v_fc`` (CAPTURE's pooled outputs, which its classifier reads), over the
streams a listing has. Why: the sibling SCALE code combines per-modality first tokens, and SCALE
here averages them so that a vector's scale does not grow with the number of modalities a listing
has (under the paper's raw dot product a listing with both streams would otherwise outrank one
without an image whatever its content); for listings with both streams the mean ranks exactly as
the released sum. ``sum`` (the earlier default), ``concat``, ``text`` and ``image`` are variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from baselines._common import BaselineAdapter, BaselineConfig, zero_like_loss
from bench.features.batch import Batch, FeatureSpec
from bench.modalities import Modality, ModalitySet
from bench.nn.coattention import CoAttentionLayer
from bench.nn.embeddings import RegionEmbedding, TextEmbedding, masked_mean
from bench.nn.heads import MLMHead, Pooler, RegressionHead
from bench.nn.layers import Encoder
from bench.nn.losses import masked_mse, nt_xent


@dataclass
class CaptureConfig(BaselineConfig):
    text_layers: int = 1
    vision_layers: int = 1
    coattn_layers: int = 1
    cross_layers: int = 1
    vision_heads: int = 4
    vision_ffn_dim: int = 512
    coattn_dim: int = 128
    coattn_heads: int = 4
    cross_heads: int = 4
    out_dim: int = 128  # t_fc / v_fc width (CAPTURE: 512)
    clr_dim: int = 128  # contrastive projection width (CAPTURE: 512)
    temperature: float = 0.07
    combine: str = "mean"  # retrieval vector: "mean" / "sum" over present streams, or "concat"

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        p = super().presets()
        # capture.json + cross_config.json: 4 + 4 unimodal, 4 co-attention (512, 8 heads), 6 cross (8 heads)
        p["paper"].update(text_layers=4, vision_layers=4, coattn_layers=4, cross_layers=6, vision_heads=8,
                          vision_ffn_dim=1024, coattn_dim=512, coattn_heads=8, cross_heads=8, out_dim=512,
                          clr_dim=512)
        return p


class Capture(BaselineAdapter):
    """CAPTURE (module docstring). Retrieval vector: mean of the text and image pooled first tokens
    (``t_fc`` / ``v_fc``) over the streams a listing has, so its scale does not depend on how many
    streams are present (``combine`` picks ``sum`` or ``concat`` instead)."""

    config_cls = CaptureConfig
    retrieval_vector = "mean of the text [CLS] and image global-token outputs of t_fc / v_fc over the present streams"

    @property
    def embed_variant(self) -> str:  # type: ignore[override]
        return self.config.combine

    def __init__(self, config: CaptureConfig, spec: FeatureSpec, modalities: ModalitySet):
        super().__init__(config, spec, modalities)
        c = config
        if c.combine not in ("mean", "sum", "concat"):
            raise ValueError(f"CAPTURE combine must be 'mean', 'sum' or 'concat', not {c.combine!r}")
        self.text = TextEmbedding(spec.vocab_size, c.d, spec.title_len, dropout=c.dropout, pad_id=spec.pad_id)
        self.region = RegionEmbedding(spec.region_dim, c.d, box_dim=5, dropout=c.dropout)
        self.text_encoder = Encoder(c.text_layers, c.d, c.heads, c.ffn_dim, norm="post", dropout=c.dropout)
        self.vision_encoder = Encoder(c.vision_layers, c.d, c.vision_heads, c.vision_ffn_dim, norm="post",
                                      dropout=c.dropout)
        self.clr_t = Pooler(c.d, c.clr_dim, activation="relu")
        self.clr_v = Pooler(c.d, c.clr_dim, activation="relu")
        self.coattn = nn.ModuleList(
            CoAttentionLayer(c.d, c.d, c.coattn_dim, c.coattn_heads, c.ffn_dim, c.vision_ffn_dim, dropout=c.dropout)
            for _ in range(c.coattn_layers))
        self.image_offset = spec.title_len
        self.cross_position = nn.Embedding(spec.title_len + spec.max_regions + 1, c.d)
        self.cross_encoder = Encoder(c.cross_layers, c.d, c.cross_heads, 4 * c.d, norm="pre", dropout=c.dropout,
                                     act="quick_gelu")
        self.t_fc = nn.Sequential(nn.Linear(c.d, c.out_dim), nn.ReLU())
        self.v_fc = nn.Sequential(nn.Linear(c.d, c.out_dim), nn.ReLU())
        self.mlm_in = nn.Linear(c.out_dim, c.d)
        self.mlm = MLMHead(c.d, spec.vocab_size, self.text.word)
        self.mrp = RegressionHead(c.out_dim, spec.region_dim)
        self._init_weights()

    def _lecun_skip(self) -> tuple[nn.Module, ...]:
        # the pre-LN cross encoder keeps 0.02 (near the identity at init), as SCALE's joint stack
        return (self.cross_encoder,)

    def _forward(self, ids: torch.Tensor, t_mask: torch.Tensor, r: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
        t_mask = t_mask.bool()
        v_mask = r["mask"]
        t = self.text_encoder(self.text(ids), t_mask)
        v = self.vision_encoder(self.region(r["feats"], r["boxes"]), v_mask)
        out = {"z_t": self.clr_t(t), "z_v": self.clr_v(v)}  # unimodal, before fusion
        for co in self.coattn:
            t, v = co(t, t_mask, v, v_mask)
        Lt, Lv = t.shape[1], v.shape[1]
        pos = torch.cat([torch.arange(Lt, device=t.device), self.image_offset + torch.arange(Lv, device=t.device)])
        x = torch.cat([t, v], dim=1) + self.cross_position(pos)[None]
        h = self.cross_encoder(x, torch.cat([t_mask, v_mask], dim=1))
        out["t"], out["v"] = self.t_fc(h[:, :Lt]), self.v_fc(h[:, Lt:])
        return out

    def pretrain_step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        batch = self.prepare(batch)
        ids, labels = self.mask_title(batch.title_ids, batch.title_mask, batch.present[Modality.T], generator)
        r = self.regions(batch, generator, mask=True)
        o = self._forward(ids, batch.title_mask, r)
        mlm = self.mlm_loss(lambda x: self.mlm(self.mlm_in(x)), o["t"], labels)
        mrp = masked_mse(self.mrp(o["v"]), r["target"], r["picked"])
        both = batch.present[Modality.I] & batch.present[Modality.T]
        clr = nt_xent(o["z_t"], o["z_v"], self.config.temperature, present=both)
        if clr is None:
            clr = zero_like_loss(o["z_t"], o["z_v"])
        return {"loss": mlm + mrp + clr, "mlm": mlm.detach(), "mrp": mrp.detach(), "clr": clr.detach()}

    def embed_variants(self, batch: Batch) -> dict[str, torch.Tensor]:
        batch = self.prepare(batch)
        r = self.regions(batch, None, mask=False)
        o = self._forward(batch.title_ids, batch.title_mask, r)
        pt, pv = o["t"][:, 0], o["v"][:, 0]
        wt = batch.present[Modality.T].to(pt.dtype)[:, None]
        wv = batch.present[Modality.I].to(pv.dtype)[:, None]
        present = torch.stack([batch.present[Modality.T], batch.present[Modality.I]], dim=1)
        out = {"text": pt, "image": pv, "mean": masked_mean(torch.stack([pt, pv], dim=1), present),
               "sum": pt * wt + pv * wv, "concat": torch.cat([pt * wt, pv * wv], -1)}
        out["default"] = out[self.embed_variant]
        return out

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.embed_variants(batch)[self.embed_variant]

    def classification_features(self, batch: Batch) -> torch.Tensor:
        """CAPTURE's classifier reads ``concat(pooled_t, pooled_v)`` (its released head)."""
        return self.embed_variants(batch)["concat"]
