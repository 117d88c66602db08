"""VisualBERT baseline: one stream over ``text ++ regions`` (Li et al., 2019).

Text: BERT embeddings. Regions: ``Linear(feat)`` + a visual segment embedding + a visual position
embedding (id 0 for every region) and **no boxes**; one LayerNorm over the whole sequence. A post-LN
BERT stack and a ``dense + tanh`` pooler on ``[CLS]``. The module layout mirrors Hugging Face's
``VisualBertModel`` so that weights copy one-to-one (``tests/test_parity_visualbert.py``).

Objectives: MLM on text only (regions are never masked) + image-text matching on the pooler. The
original's second objective is sentence-image prediction over *two captions* of an image; a
product has one title, so the adaptation is ITM with a random title swapped in with p 0.5
(documented). MLM counts only on rows whose title is not swapped.

Retrieval vector: the final ``[CLS]`` hidden state, the single-stream convention (the token every
layer lets attend to the whole title and image). Why not the pooler: ``tanh(Linear([CLS]))`` is
trained only by the ITM head, to separate matched from swapped pairs; its saturating outputs keep
what ITM needs, not what tells products apart. The pooler (``pooler``) and the mean over real
tokens (``mean``) stay available as variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from baselines._common import BaselineAdapter, BaselineConfig, mean_pool, zero_like_loss
from bench.features.batch import Batch, FeatureSpec
from bench.modalities import Modality, ModalitySet
from bench.nn.embeddings import TextEmbedding
from bench.nn.heads import MLMHead, Pooler
from bench.nn.itm import ITMHead, itm_title_swap
from bench.nn.layers import Encoder
from bench.nn.vl_embeddings import VisualBertVisualEmbedding


@dataclass
class VisualBertConfig(BaselineConfig):
    layers: int = 2
    itm_neg_prob: float = 0.5
    itm: bool = True
    max_position: int = 0  # text position table size; 0 = the spec's title_len

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        p = super().presets()
        p["paper"].update(layers=12)
        return p


class VisualBert(BaselineAdapter):
    """VisualBERT (module docstring). Retrieval vector: the final ``[CLS]`` hidden state
    (single-stream convention), not the ITM-trained tanh pooler (the ``pooler`` variant)."""

    config_cls = VisualBertConfig
    embed_variant = "cls"
    retrieval_vector = "final [CLS] hidden state of the joint title + region stream"

    def __init__(self, config: VisualBertConfig, spec: FeatureSpec, modalities: ModalitySet):
        super().__init__(config, spec, modalities)
        c = config
        self.text = TextEmbedding(spec.vocab_size, c.d, c.max_position or spec.title_len, type_vocab_size=2,
                                  dropout=c.dropout, pad_id=spec.pad_id)
        self.visual = VisualBertVisualEmbedding(self.text, spec.region_dim, c.d)
        self.encoder = Encoder(c.layers, c.d, c.heads, c.ffn_dim, norm="post", dropout=c.dropout)
        self.pooler = Pooler(c.d, c.d, activation="tanh")
        self.mlm = MLMHead(c.d, spec.vocab_size, self.text.word)
        self.itm_head = ITMHead(c.d, c.dropout)
        self._init_weights()

    def _post_init(self) -> None:
        self.visual.copy_text_tables()  # VisualBERT's special_visual_initialize

    def encode(self, ids: torch.Tensor, t_mask: torch.Tensor, feats: torch.Tensor, r_mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint hidden states [B, Lt+R, d] and their key mask (boxes are never read)."""
        x = torch.cat([self.text(ids, 0), self.visual(feats)], dim=1)
        mask = torch.cat([t_mask.bool(), r_mask.bool()], dim=1)
        return self.encoder(x, mask), mask

    def pretrain_step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        batch = self.prepare(batch)
        c = self.config
        batch, pairs, matched = itm_title_swap(batch, c.itm, generator, c.itm_neg_prob)
        ids, labels = self.mask_title(batch.title_ids, batch.title_mask, batch.present[Modality.T] & matched,
                                      generator)
        h, _ = self.encode(ids, batch.title_mask, batch.region_feats, batch.region_mask)
        mlm = self.mlm_loss(self.mlm, h[:, :ids.shape[1]], labels)
        out = {"mlm": mlm.detach()}
        total = mlm
        if pairs is not None:
            logits = self.itm_head(self.pooler(h))
            itm = (F.cross_entropy(logits[pairs.valid], pairs.label[pairs.valid]) if bool(pairs.valid.any())
                   else zero_like_loss(logits))
            total = total + itm
            out["itm"] = itm.detach()
        out["loss"] = total
        return out

    def embed_variants(self, batch: Batch) -> dict[str, torch.Tensor]:
        batch = self.prepare(batch)
        h, mask = self.encode(batch.title_ids, batch.title_mask, batch.region_feats, batch.region_mask)
        out = {"cls": h[:, 0], "pooler": self.pooler(h), "mean": mean_pool(h, mask)}
        out["default"] = out[self.embed_variant]
        return out

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.embed_variants(batch)[self.embed_variant]
