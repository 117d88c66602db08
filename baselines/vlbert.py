"""VL-BERT baseline: one stream with the visual feature on every token (Su et al., 2020).

Input ``[CLS] title [SEP] [IMG] x R [END]`` built by :class:`bench.nn.vl_embeddings.VLBertEmbedding`:
token + visual feature (appearance + sinusoidal geometry, FC + ReLU, behind a LayerNorm whose
scale starts at zero) + segment (text A, visual C) + position (all RoIs share one). Text tokens
carry the whole-image visual feature. Post-LN BERT stack.

Objectives (as the base config, no sentence-image relation task, no ITM): MLM with visual clues
(15 %, 80/10/10) and masked RoI prediction with linguistic clues (15 % of RoIs, 90 % of those
zeroed and their token set to ``[MASK]``). Product features carry no detector class
distributions for VL-BERT's soft cross-entropy, so masked RoIs regress their original feature by
MSE (documented fallback). Both masks are applied in the same pass, as VL-BERT does.

Retrieval vector: the final ``[CLS]`` state (``cls``), the single-stream convention (the token
every layer lets attend to the whole title and image; VL-BERT pretrains with its pooler disabled).
The mean over real tokens is the ``mean`` variant (and ``pooling="mean"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from baselines._common import BaselineAdapter, BaselineConfig, mean_pool
from bench.features.batch import Batch, FeatureSpec
from bench.modalities import Modality, ModalitySet
from bench.nn.embeddings import TextEmbedding
from bench.nn.heads import MLMHead, RegressionHead
from bench.nn.layers import Encoder
from bench.nn.losses import masked_mse
from bench.nn.vl_embeddings import VLBertEmbedding


@dataclass
class VLBertConfig(BaselineConfig):
    layers: int = 2
    geom_dim: int = 64  # sinusoidal box code width (VL-BERT: 2048)
    pooling: str = "cls"

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        p = super().presets()
        p["paper"].update(layers=12, geom_dim=2048)
        return p


class VLBert(BaselineAdapter):
    """VL-BERT (module docstring). Retrieval vector: the final ``[CLS]`` state (single-stream
    convention); ``pooling="mean"`` picks the mean over real tokens instead."""

    config_cls = VLBertConfig
    retrieval_vector = "final [CLS] hidden state of the joint title + RoI stream"

    @property
    def embed_variant(self) -> str:  # type: ignore[override]
        return self.config.pooling

    def __init__(self, config: VLBertConfig, spec: FeatureSpec, modalities: ModalitySet):
        super().__init__(config, spec, modalities)
        c = config
        if c.pooling not in ("cls", "mean"):
            raise ValueError(f"VL-BERT pooling must be 'cls' or 'mean', not {c.pooling!r}")
        # segments A, B, C (visual); positions for the title, the shared RoI position and [END]
        self.text = TextEmbedding(spec.vocab_size, c.d, spec.title_len + 2, type_vocab_size=3,
                                  dropout=c.dropout, pad_id=spec.pad_id)
        self.embedding = VLBertEmbedding(self.text, spec.region_dim, c.d, spec.mask_id, c.geom_dim, c.dropout)
        self.encoder = Encoder(c.layers, c.d, c.heads, c.ffn_dim, norm="post", dropout=c.dropout)
        self.mlm = MLMHead(c.d, spec.vocab_size, self.text.word)
        self.mrp = RegressionHead(c.d, spec.region_dim)
        self._init_weights()

    def _post_init(self) -> None:
        # BERT init set every LayerNorm scale to 1; VL-BERT's visual LayerNorms start switched off
        for ln in (self.embedding.visual_ln_text, self.embedding.visual_ln_object):
            torch.nn.init.zeros_(ln.weight)

    def _encode(self, ids: torch.Tensor, batch: Batch, r: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        x, mask, info = self.embedding(ids, batch.title_mask.bool(), r["feats"], r["boxes"], r["mask"],
                                       r["zeroed"])
        return self.encoder(x, mask), mask, info

    def pretrain_step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        batch = self.prepare(batch)
        ids, labels = self.mask_title(batch.title_ids, batch.title_mask, batch.present[Modality.T], generator)
        r = self.regions(batch, generator, mask=True, global_token=False)
        h, _, _ = self._encode(ids, batch, r)
        Lt, R = ids.shape[1], r["feats"].shape[1]
        mlm = self.mlm_loss(self.mlm, h[:, :Lt], labels)
        mrp = masked_mse(self.mrp(h[:, Lt:Lt + R]), r["target"], r["picked"])
        return {"loss": mlm + mrp, "mlm": mlm.detach(), "mrp": mrp.detach()}

    def embed_variants(self, batch: Batch) -> dict[str, torch.Tensor]:
        batch = self.prepare(batch)
        r = self.regions(batch, None, mask=False, global_token=False)
        h, mask, _ = self._encode(batch.title_ids, batch, r)
        out = {"cls": h[:, 0], "mean": mean_pool(h, mask)}
        out["default"] = out[self.embed_variant]
        return out

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.embed_variants(batch)[self.embed_variant]
