"""BERT baseline: a text-only post-LN transformer pretrained by masked language modelling.

Input: the title as segment A (``[CLS] title [SEP]``); with ``use_table`` (and ``Tab`` requested)
the table follows as segment B, packed with no padding in between, as BERT's sentence pairs.
Objective: MLM only (15 %, 80/10/10, tied decoder). NSP is dropped: single product titles have no
"next sentence". Retrieval vector: the final ``[CLS]`` state, the single-stream convention (the
token every layer lets attend to the whole input; BERT has no pooler here, NSP being dropped). With
MLM alone nothing trains ``[CLS]`` directly, so the mean over real tokens is exposed as the ``mean``
variant (and as ``pooling="mean"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from baselines._common import BaselineAdapter, BaselineConfig, mean_pool, pack_segments
from bench.features.batch import Batch, FeatureSpec
from bench.modalities import Modality, ModalitySet
from bench.nn.embeddings import TextEmbedding
from bench.nn.heads import MLMHead
from bench.nn.layers import Encoder


@dataclass
class BertConfig(BaselineConfig):
    layers: int = 2
    use_table: bool = True  # allow the table as segment B; it is used when Tab is requested
    pooling: str = "cls"  # the canonical embedding: "cls" or "mean"

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        p = super().presets()
        p["paper"].update(layers=12)  # BERT-base
        return p


class Bert(BaselineAdapter):
    """BERT (module docstring). Retrieval vector: the final ``[CLS]`` state (single-stream
    convention); ``pooling="mean"`` picks the mean over real tokens instead."""

    config_cls = BertConfig
    retrieval_vector = "final [CLS] hidden state of the title (+ table as segment B)"

    @property
    def embed_variant(self) -> str:  # type: ignore[override]
        return self.config.pooling

    def __init__(self, config: BertConfig, spec: FeatureSpec, modalities: ModalitySet):
        super().__init__(config, spec, modalities)
        if config.pooling not in ("cls", "mean"):
            raise ValueError(f"BERT pooling must be 'cls' or 'mean', not {config.pooling!r}")
        c = config
        if Modality.Tab in modalities and not c.use_table:
            raise ValueError("BERT was asked for the table (Tab) with use_table=False; request T alone "
                             "for the title-only baseline, or set use_table=True")
        self.with_table = Modality.Tab in modalities
        max_len = spec.title_len + (spec.table_len if self.with_table else 0)
        self.text = TextEmbedding(spec.vocab_size, c.d, max_len, type_vocab_size=2, dropout=c.dropout,
                                  pad_id=spec.pad_id)
        self.encoder = Encoder(c.layers, c.d, c.heads, c.ffn_dim, norm="post", dropout=c.dropout)
        self.mlm = MLMHead(c.d, spec.vocab_size, self.text.word)
        self._init_weights()

    def extra_state(self) -> dict[str, Any]:
        return {"input": "title [SEP] table (segments A, B)" if self.with_table else "title (segment A)"}

    def _inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        parts = [(batch.title_ids, batch.title_mask, 0)]
        if self.with_table and batch.table_ids is not None:
            # the table's own [CLS] is dropped: segment B is "table tokens [SEP]"
            parts.append((batch.table_ids[:, 1:], batch.table_mask[:, 1:], 1))
        if len(parts) == 1:
            return batch.title_ids, batch.title_mask.bool(), torch.zeros_like(batch.title_ids)
        ids, mask, seg = pack_segments(parts)
        return ids, mask, seg

    def _encode(self, ids: torch.Tensor, mask: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.text(ids, seg), mask)

    def pretrain_step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        ids, mask, seg = self._inputs(batch)
        masked, labels = self.mask_title(ids, mask, None, generator)  # padding / absent parts never masked
        h = self._encode(masked, mask, seg)
        mlm = self.mlm_loss(self.mlm, h, labels)
        return {"loss": mlm, "mlm": mlm.detach()}

    def embed_variants(self, batch: Batch) -> dict[str, torch.Tensor]:
        ids, mask, seg = self._inputs(batch)
        h = self._encode(ids, mask, seg)
        out = {"cls": h[:, 0], "mean": mean_pool(h, mask)}
        out["default"] = out[self.embed_variant]
        return out

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.embed_variants(batch)[self.embed_variant]
