"""CLIP baseline: two towers, no fusion, symmetric InfoNCE with a learnable temperature.

Text tower: token + learned position embeddings, pre-LN blocks with a **causal** mask, the state at
the ``[SEP]`` (end-of-text) token, ``ln_final``, a bias-free linear projection. (CLIP pools the EOT
token; with the BERT vocabulary the EOT is ``[SEP]``, the last real token of a row.)

Image tower: **region features instead of pixels** (the one unavoidable deviation: the benchmark
stores detector regions, not images). ``Linear(feat) + Linear(box)`` take the place of the patch
embedding and its position embedding (regions have no grid order), a learnable class token is
prepended, then ``ln_pre``, pre-LN blocks, ``ln_post`` on the class token, a bias-free projection.

No layer reads both modalities. Loss: symmetric InfoNCE over pairs where both image and title are
present; ``logit_scale`` starts at ``log(1/0.07)`` and is clamped to ``log 100``.

Retrieval vector (``combine``, default ``normalized_sum``): the L2-normalised tower outputs summed
over the modalities a listing has, then L2-normalised again. Why: CLIP has no joint embedding, and
its loss only ever compares *directions* (cosine similarities), so the length of a tower output
carries nothing CLIP learned; the combined vector is a direction too, and its scale does not grow
with the number of modalities a listing has (the plain sum of unit vectors is up to twice as long
for a listing with both). Variants: ``sum`` (the sum of the normalised towers, the earlier
default), ``raw_sum`` (sum of the unnormalised tower outputs), ``concat``, and ``text`` / ``image``
(normalised towers) for single-modality retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines._common import BaselineAdapter, BaselineConfig
from bench.features.batch import Batch, FeatureSpec
from bench.modalities import Modality, ModalitySet
from bench.nn.clip_loss import LogitScale, clip_infonce
from bench.nn.embeddings import TextEmbedding
from bench.nn.layers import Encoder


#: retrieval-vector rules (``ClipConfig.combine``), each also an ``embed_variants`` entry
COMBINE = ("normalized_sum", "sum", "raw_sum", "concat")


@dataclass
class ClipConfig(BaselineConfig):
    text_layers: int = 2
    image_layers: int = 2
    image_d: int = 128
    image_heads: int = 4
    embed_dim: int = 128
    dropout: float = 0.0  # CLIP trains without dropout
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    # retrieval vector: "normalized_sum" | "sum" (of normalised towers) | "raw_sum" | "concat"
    combine: str = "normalized_sum"
    # CLIP's own init (``_post_init``) already scales with width and depth, so no extra re-draw
    init: str = "bert"

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        # ViT-B/32-sized towers: text 12 x 512 (8 heads), image 12 x 768 (12 heads), joint 512
        p = super().presets()
        p["paper"].update(d=512, heads=8, ffn_dim=2048, text_layers=12, image_layers=12, image_d=768,
                          image_heads=12, embed_dim=512,
                          dropout=0.0)
        return p


class Clip(BaselineAdapter):
    """CLIP (module docstring). Retrieval vector: the L2-normalised sum of the L2-normalised tower
    outputs over the present modalities, a direction, as CLIP's loss only compares directions."""

    config_cls = ClipConfig
    retrieval_vector = ("L2-normalised sum of the L2-normalised image and text tower outputs over the "
                        "present modalities")

    @property
    def embed_variant(self) -> str:  # type: ignore[override]
        return self.config.combine

    def __init__(self, config: ClipConfig, spec: FeatureSpec, modalities: ModalitySet):
        super().__init__(config, spec, modalities)
        c = config
        if c.combine not in COMBINE:
            raise ValueError(f"CLIP combine must be one of {', '.join(COMBINE)}, not {c.combine!r}")
        # text tower
        self.text = TextEmbedding(spec.vocab_size, c.d, spec.title_len, type_vocab_size=0,
                                  dropout=c.dropout, pad_id=spec.pad_id)
        self.text_encoder = Encoder(c.text_layers, c.d, c.heads, c.ffn_dim, norm="pre", dropout=c.dropout,
                                    final_ln=True)
        self.text_proj = nn.Linear(c.d, c.embed_dim, bias=False)
        # image tower
        self.region_feat = nn.Linear(spec.region_dim, c.image_d, bias=False)
        self.region_box = nn.Linear(5, c.image_d, bias=False)
        self.class_token = nn.Parameter(torch.zeros(c.image_d))
        self.ln_pre = nn.LayerNorm(c.image_d)
        self.image_encoder = Encoder(c.image_layers, c.image_d, c.image_heads, 4 * c.image_d, norm="pre",
                                     dropout=c.dropout)
        self.ln_post = nn.LayerNorm(c.image_d)
        self.image_proj = nn.Linear(c.image_d, c.embed_dim, bias=False)
        self.logit_scale = LogitScale(c.init_temperature, c.max_logit_scale)
        self._init_weights()

    def _post_init(self) -> None:
        """CLIP's initialisation (not BERT's 0.02 everywhere): attention and MLP weights scale with
        the width and depth, so the residual branches matter from the first step. With BERT's init
        the constant class token dominates the image tower's output and both towers start (and
        stay for epochs) collapsed on product features."""
        c = self.config
        nn.init.normal_(self.text.word.weight, std=0.02)
        nn.init.normal_(self.text.position.weight, std=0.01)
        for enc, width, layers in ((self.text_encoder, c.d, c.text_layers),
                                   (self.image_encoder, c.image_d, c.image_layers)):
            attn_std = width ** -0.5
            proj_std = width ** -0.5 * (2 * layers) ** -0.5
            fc_std = (2 * width) ** -0.5
            for layer in enc.layers:
                for lin in (layer.attn.q, layer.attn.k, layer.attn.v):
                    nn.init.normal_(lin.weight, std=attn_std)
                nn.init.normal_(layer.attn.o.weight, std=proj_std)
                nn.init.normal_(layer.ffn.fc1.weight, std=fc_std)
                nn.init.normal_(layer.ffn.fc2.weight, std=proj_std)
        scale = c.image_d ** -0.5
        nn.init.normal_(self.class_token, std=scale)
        nn.init.normal_(self.region_box.weight, std=scale)  # stands in for the positional embedding
        self.region_feat.reset_parameters()  # the patch projection keeps torch's default init, as CLIP's conv1
        nn.init.normal_(self.image_proj.weight, std=scale)
        nn.init.normal_(self.text_proj.weight, std=c.d ** -0.5)

    def extra_state(self) -> dict[str, Any]:
        return {"logit_scale": float(self.logit_scale().detach()), "combine": self.config.combine,
                "retrieval_vector": self.retrieval_vector if self.config.combine == "normalized_sum"
                else f"the {self.config.combine!r} variant"}

    # --- towers ----------------------------------------------------------------------------------
    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, embed_dim] unnormalised text features (state at the last real token, i.e. [SEP])."""
        h = self.text_encoder(self.text(ids), mask.bool(), causal=True)
        eos = (mask.long().sum(1) - 1).clamp(min=0)
        return self.text_proj(h[torch.arange(h.shape[0], device=h.device), eos])

    def encode_image(self, feats: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, embed_dim] unnormalised image features (class token over the regions)."""
        x = self.region_feat(feats) + self.region_box(boxes)
        B = x.shape[0]
        x = torch.cat([self.class_token.expand(B, 1, -1), x], dim=1)
        m = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=mask.device), mask.bool()], dim=1)
        h = self.image_encoder(self.ln_pre(x), m)
        return self.image_proj(self.ln_post(h[:, 0]))

    def _towers(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.encode_image(batch.region_feats, batch.region_boxes, batch.region_mask),
                self.encode_text(batch.title_ids, batch.title_mask))

    def pretrain_step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        batch = self.prepare(batch)
        img, txt = self._towers(batch)
        both = batch.present[Modality.I] & batch.present[Modality.T]
        scale = self.logit_scale()
        loss = clip_infonce(img, txt, scale, both)
        return {"loss": loss, "infonce": loss.detach(), "logit_scale": scale.detach()}

    def embed_variants(self, batch: Batch) -> dict[str, torch.Tensor]:
        batch = self.prepare(batch)
        raw_img, raw_txt = self._towers(batch)
        img, txt = F.normalize(raw_img, dim=-1), F.normalize(raw_txt, dim=-1)
        pi = batch.present[Modality.I].to(img.dtype)[:, None]
        pt = batch.present[Modality.T].to(txt.dtype)[:, None]
        total = img * pi + txt * pt
        out = {"image": img, "text": txt, "normalized_sum": F.normalize(total, dim=-1), "sum": total,
               "raw_sum": raw_img * pi + raw_txt * pt, "concat": torch.cat([img * pi, txt * pt], dim=-1)}
        out["default"] = out[self.embed_variant]
        return out

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.embed_variants(batch)[self.embed_variant]
