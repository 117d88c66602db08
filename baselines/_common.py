"""Pieces every baseline adapter shares: the base config, input preparation and masking glue.

Only glue lives here (packing text segments, region masking plus the global token, presence
filtering). Layers, heads, losses and masking themselves are the shared ``bench.nn`` blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from bench.adapter import Adapter, AdapterConfig
from bench.features.batch import Batch, FeatureSpec
from bench.modalities import Modality, ModalitySet
from bench.nn.embeddings import RunningStandardizer, masked_mean, prepend_global
from bench.nn.layers import init_bert_weights, init_lecun_linears
from bench.nn.losses import mlm_ce
from bench.nn.masking import mask_regions, mask_tokens


@dataclass
class BaselineConfig(AdapterConfig):
    """Fields every baseline has; each model adds its layer counts and presets."""

    d: int = 128  # hidden width of every stream
    heads: int = 4
    ffn_dim: int = 512
    dropout: float = 0.0  # tiny: off, as SCALE's tiny preset (paper: 0.1)
    mlm_prob: float = 0.15
    region_mask_prob: float = 0.15
    region_zero_prob: float = 0.9  # ViLBERT-style: 90 % of picked regions zeroed, 10 % kept
    # region features standardised per dimension with running statistics, as SCALE does by default
    # (the same documented deviation for every model, so preprocessing is not what tells them apart)
    standardize_features: bool = True
    standardize_momentum: float = 0.01
    # training hints the pipeline reads (the same as SCALE's presets, so every model trains alike)
    batch_size: int = 64
    lr: float = 1e-3
    epochs: int = 6
    warmup_ratio: float = 0.1
    # "lecun": the model's own init, then every Linear re-drawn N(0, 1/fan_in) (bench.nn.layers.
    # init_lecun_linears), as SCALE's tiny preset does: at width 128 BERT's fixed 0.02 leaves first
    # tokens listing-independent and pooled embeddings collapse. "bert": the model's own init only
    # (BERT's 0.02; the paper preset, where 0.02 is what BERT chose for width 768). Same rule for every
    # model, so initialisation is not what separates them in a table.
    init: str = "lecun"

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        # paper: the BERT-base family (hidden 768, 12 heads, FFN 3072); models add layer counts
        return {"tiny": {}, "paper": dict(d=768, heads=12, ffn_dim=3072, dropout=0.1, batch_size=64, lr=1e-4,
                                          epochs=5, init="bert")}


class BaselineAdapter(Adapter):
    """Adapter base with the common helpers; subclasses build modules then call :meth:`_init_weights`."""

    def __init__(self, config: BaselineConfig, spec: FeatureSpec, modalities: ModalitySet):
        super().__init__(config, spec, modalities)
        self.region_std = (RunningStandardizer(spec.region_dim, config.standardize_momentum)
                           if config.standardize_features and Modality.I in modalities else None)

    def prepare(self, batch: Batch) -> Batch:
        """The batch with region features standardised (statistics updated in training mode only).

        Every ``pretrain_step`` and ``embed`` starts here; padding and absent images stay exactly 0
        (the mean), so zero imputation and zeroed masked regions keep their meaning.
        """
        if self.region_std is None or batch.region_feats is None:
            return batch
        mask = batch.region_mask.bool()
        if self.training:
            self.region_std.update(batch.region_feats, mask)
        return replace(batch, region_feats=self.region_std(batch.region_feats, mask))

    # --- construction --------------------------------------------------------------------------
    def _init_weights(self) -> None:
        """BERT initialisation of everything, the width-aware re-draw where ``config.init == "lecun"``,
        then each model's special inits (``_post_init``)."""
        if self.config.init not in ("lecun", "bert"):
            raise ValueError(f"{type(self).__name__} init must be 'lecun' or 'bert', not {self.config.init!r}")
        self.apply(init_bert_weights)
        if self.config.init == "lecun":
            init_lecun_linears(self, skip=self._lecun_skip())
        self._post_init()

    def _lecun_skip(self) -> tuple[nn.Module, ...]:
        """Modules the width-aware re-draw leaves at 0.02 (pre-LN stacks that should start near identity)."""
        return ()

    def _post_init(self) -> None:
        pass

    @property
    def special_ids(self) -> tuple[int, ...]:
        s = self.spec
        return (s.pad_id, s.cls_id, s.sep_id, s.mask_id, s.unk_id)

    # --- text ----------------------------------------------------------------------------------
    def mask_title(self, ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor | None,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT 15 % / 80-10-10 masking on real, non-special tokens of present rows."""
        return mask_tokens(ids, mask, vocab_size=self.spec.vocab_size, mask_id=self.spec.mask_id,
                           special_ids=self.special_ids, generator=generator,
                           prob=self.config.mlm_prob, rows=rows)

    @staticmethod
    def mlm_loss(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy at the selected positions only (the vocabulary projection is the costly op)."""
        sel = labels != -100
        return mlm_ce(head(hidden[sel]), labels[sel])

    # --- regions -------------------------------------------------------------------------------
    def regions(self, batch: Batch, generator: torch.Generator | None, *, mask: bool,
                zero_prob: float | None = None, global_token: bool = True) -> dict[str, torch.Tensor]:
        """Region inputs (optionally masked), with the global mean token prepended *after* masking.

        Returns feats / boxes / mask (the model's input), ``target`` (the original features),
        ``picked`` (regions to predict, False on the global token) and ``zeroed`` (picked and zeroed).
        A listing without an image has zero features and no real region; its global token stays
        attendable (zero-imputed), as the originals impute a missing image.
        """
        feats, boxes, rmask = batch.region_feats, batch.region_boxes, batch.region_mask.bool()
        target = feats
        picked = torch.zeros_like(rmask)
        if mask:
            zp = self.config.region_zero_prob if zero_prob is None else zero_prob
            feats, picked = mask_regions(feats, rmask, generator=generator, prob=self.config.region_mask_prob,
                                         zero_prob=zp, rows=batch.present[Modality.I])
        zeroed = picked & (feats.abs().sum(-1) == 0)
        if global_token:
            feats, rmask, boxes = prepend_global(feats, rmask, boxes)
            pad = torch.zeros_like(picked[:, :1])
            target = torch.cat([torch.zeros_like(target[:, :1]), target], dim=1)
            picked = torch.cat([pad, picked], dim=1)
            zeroed = torch.cat([pad, zeroed], dim=1)
        return dict(feats=feats, boxes=boxes, mask=rmask, target=target, picked=picked, zeroed=zeroed)


def mean_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens (shared ``masked_mean``)."""
    return masked_mean(h, mask)


def pack_segments(parts: list[tuple[torch.Tensor, torch.Tensor, int]]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate token segments per row with no padding in between.

    ``parts``: ``(ids [B, L_i], mask [B, L_i], segment_id)``. Returns ``(ids, mask, segments)`` of
    width ``sum L_i`` where each row's real tokens come first, in order, then padding (id of the
    first part's padding), so learned positions stay contiguous (BERT's segment A + B input).
    """
    ids = torch.cat([p[0] for p in parts], dim=1)
    mask = torch.cat([p[1].bool() for p in parts], dim=1)
    seg = torch.cat([torch.full_like(p[0], p[2]) for p in parts], dim=1)
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    ids, mask, seg = ids.gather(1, order), mask.gather(1, order), seg.gather(1, order)
    width = max(int(mask.sum(1).max()), 1)
    return ids[:, :width], mask[:, :width], seg[:, :width]


def zero_like_loss(*tensors: torch.Tensor) -> torch.Tensor:
    """A zero that belongs to the graph (for a term with no target in this batch)."""
    return sum(t.sum() for t in tensors) * 0.0
