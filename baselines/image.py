"""Image-only baseline: a transformer over region features, pretrained by masked region regression.

It is the visual half of the region-based models run alone: ViLBERT/CAPTURE "loc5"
region embedding ``LN(Linear(feat) + Linear(box))``, a prepended global token (masked mean of the
region features, box ``[0,0,1,1,1]``), post-LN layers. Objective: 15 % of regions picked, 90 % of
those zeroed, MSE regression to the original feature (product features have no detector class
distributions, so the KL variant has no target). Retrieval vector: the final state of the global
token (``global``), the first-token convention of the region streams of ViLBERT, CAPTURE and SCALE
(the token every layer lets attend to all regions); the mean over regions is the ``mean`` variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from baselines._common import BaselineAdapter, BaselineConfig, mean_pool
from bench.features.batch import Batch, FeatureSpec
from bench.modalities import ModalitySet
from bench.nn.embeddings import RegionEmbedding
from bench.nn.heads import RegressionHead
from bench.nn.layers import Encoder
from bench.nn.losses import masked_mse


@dataclass
class ImageOnlyConfig(BaselineConfig):
    layers: int = 2

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        # paper: the SCALE/CAPTURE image encoder (6 layers, 768, 8 heads, FFN 1024)
        p = super().presets()
        p["paper"].update(heads=8, ffn_dim=1024, layers=6)
        return p


class ImageOnly(BaselineAdapter):
    """Image-only (module docstring). Retrieval vector: the final global-token state (first-token
    convention of the region streams)."""

    config_cls = ImageOnlyConfig
    embed_variant = "global"
    retrieval_vector = "final hidden state of the global (mean-region) token"

    def __init__(self, config: ImageOnlyConfig, spec: FeatureSpec, modalities: ModalitySet):
        super().__init__(config, spec, modalities)
        c = config
        self.region = RegionEmbedding(spec.region_dim, c.d, box_dim=5, dropout=c.dropout)
        self.encoder = Encoder(c.layers, c.d, c.heads, c.ffn_dim, norm="post", dropout=c.dropout)
        self.mrp = RegressionHead(c.d, spec.region_dim)
        self._init_weights()

    def _encode(self, r: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(self.region(r["feats"], r["boxes"]), r["mask"])

    def pretrain_step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        batch = self.prepare(batch)
        r = self.regions(batch, generator, mask=True)
        h = self._encode(r)
        mrp = masked_mse(self.mrp(h), r["target"], r["picked"])
        return {"loss": mrp, "mrp": mrp.detach()}

    def embed_variants(self, batch: Batch) -> dict[str, torch.Tensor]:
        batch = self.prepare(batch)
        r = self.regions(batch, None, mask=False)
        h = self._encode(r)
        regions_only = r["mask"].clone()
        regions_only[:, 0] = False
        out = {"global": h[:, 0], "mean": mean_pool(h[:, 1:], regions_only[:, 1:])}
        out["default"] = out[self.embed_variant]
        return out

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.embed_variants(batch)[self.embed_variant]
