"""UNITER baseline: one stream, conditional masking, MLM + MRFR + ITM (+ WRA) (Chen et al., 2020).

Text: BERT embeddings (segment 0). Regions: :class:`bench.nn.vl_embeddings.UniterImageEmbedding`
(``LN(Linear(feat)) + LN(Linear(box7)) + type(1)``, the type table shared with text, a learned mask
vector added to masked regions). Post-LN BERT stack; ``dense + tanh`` pooler on ``[CLS]``.

Objectives, with **conditional masking** (one modality masked at a time, the other intact):

* MLM: 15 % of title tokens, 80/10/10, regions intact;
* MRFR: 15 % of regions (at least one per listing with an image), zeroed, text intact; the output
  layer is the transpose of the image input projection (tied) plus a bias; MSE to the original;
* ITM: with p 0.5 the **image** is replaced by another listing's; CE on the pooler;
* WRA (``wra_ot``, on by default, as published): IPOT optimal transport between word and region
  states on the ITM forward, ``0.1 * (OT(pos) - OT(neg)) / n``, added to the ITM loss.

MRC / MRC-kl are left out: product features carry no detector class distributions.
``task_sampling`` (default, as UNITER) runs one task per step, drawn from the generator with ratios
itm : mlm : mrfr = 2 : 2 : 1 (UNITER's in-domain ratio with MRC-kl dropped); only that task's
loss is returned. With ``task_sampling=False`` every step sums the three (three forwards).

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
from torch import nn

from baselines._common import BaselineAdapter, BaselineConfig, mean_pool, zero_like_loss
from bench.features.batch import Batch, FeatureSpec
from bench.modalities import Modality, ModalitySet
from bench.nn.embeddings import TextEmbedding
from bench.nn.heads import MLMHead, Pooler
from bench.nn.itm import ITMHead, sample_itm_pairs, swap_modality
from bench.nn.layers import Encoder
from bench.nn.losses import masked_mse
from bench.nn.masking import mask_features
from bench.nn.ot import ot_distance, wra_loss
from bench.nn.vl_embeddings import UniterImageEmbedding

TASKS = ("itm", "mlm", "mrfr")


@dataclass
class UniterConfig(BaselineConfig):
    layers: int = 2
    task_sampling: bool = True
    task_ratio: tuple[float, float, float] = (2.0, 2.0, 1.0)  # itm : mlm : mrfr
    itm_neg_prob: float = 0.5
    wra_ot: bool = True  # word-region alignment by optimal transport, part of UNITER's pretraining
    ot_lambda: float = 0.1
    ot_iterations: int = 50

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        p = super().presets()
        p["paper"].update(layers=12)
        return p

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UniterConfig":
        d = dict(d)
        if "task_ratio" in d:
            d["task_ratio"] = tuple(d["task_ratio"])  # JSON gives a list
        return super().from_dict(d)  # type: ignore[return-value]


class Uniter(BaselineAdapter):
    """UNITER (module docstring). Retrieval vector: the final ``[CLS]`` hidden state (single-stream
    convention), not the ITM-trained tanh pooler (the ``pooler`` variant)."""

    config_cls = UniterConfig
    embed_variant = "cls"
    retrieval_vector = "final [CLS] hidden state of the joint title + image stream"

    def __init__(self, config: UniterConfig, spec: FeatureSpec, modalities: ModalitySet):
        super().__init__(config, spec, modalities)
        c = config
        if len(c.task_ratio) != 3 or min(c.task_ratio) < 0 or sum(c.task_ratio) <= 0:
            raise ValueError(f"task_ratio must be three non-negative weights (itm, mlm, mrfr), got {c.task_ratio}")
        self.text = TextEmbedding(spec.vocab_size, c.d, spec.title_len, type_vocab_size=2, dropout=c.dropout,
                                  pad_id=spec.pad_id)
        self.image = UniterImageEmbedding(spec.region_dim, c.d, self.text.token_type, dropout=c.dropout)
        self.encoder = Encoder(c.layers, c.d, c.heads, c.ffn_dim, norm="post", dropout=c.dropout)
        self.pooler = Pooler(c.d, c.d, activation="tanh")
        self.mlm = MLMHead(c.d, spec.vocab_size, self.text.word)
        # MRFR: Linear-GELU-LN transform, then the tied output (transpose of image.img_linear)
        self.mrfr_transform = nn.Sequential(nn.Linear(c.d, c.d), nn.GELU(), nn.LayerNorm(c.d, eps=1e-12))
        self.mrfr_bias = nn.Parameter(torch.zeros(spec.region_dim))
        self.itm_head = ITMHead(c.d, c.dropout)
        self._init_weights()

    def _post_init(self) -> None:
        with torch.no_grad():
            self.image.mask_embedding.weight[0].zero_()

    def encode(self, ids: torch.Tensor, t_mask: torch.Tensor, feats: torch.Tensor, boxes: torch.Tensor,
               r_mask: torch.Tensor, masked: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.text(ids, 0), self.image(feats, boxes, masked)], dim=1)
        mask = torch.cat([t_mask.bool(), r_mask.bool()], dim=1)
        return self.encoder(x, mask), mask

    # --- tasks -----------------------------------------------------------------------------------
    def _mlm(self, batch: Batch, generator: torch.Generator | None) -> torch.Tensor:
        ids, labels = self.mask_title(batch.title_ids, batch.title_mask, batch.present[Modality.T], generator)
        h, _ = self.encode(ids, batch.title_mask, batch.region_feats, batch.region_boxes, batch.region_mask)
        return self.mlm_loss(self.mlm, h[:, :ids.shape[1]], labels)

    def _mask_regions(self, batch: Batch, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        rmask = batch.region_mask.bool()
        rows = batch.present[Modality.I]
        feats, picked = mask_features(batch.region_feats, rmask, generator=generator,
                                      prob=self.config.region_mask_prob, zero_prob=1.0, rows=rows)
        # UNITER masks at least one region of every image
        need = rows & rmask.any(1) & ~picked.any(1)
        if bool(need.any()):
            gdev = generator.device if generator is not None else torch.device("cpu")
            keys = torch.rand(rmask.shape, generator=generator, device=gdev).to(rmask.device)
            one = F.one_hot(keys.masked_fill(~rmask, -1.0).argmax(1), rmask.shape[1]).bool()
            extra = one & need[:, None]
            picked = picked | extra
            feats = feats.masked_fill(extra[..., None], 0.0)
        return feats, picked

    def _mrfr(self, batch: Batch, generator: torch.Generator | None) -> torch.Tensor:
        feats, picked = self._mask_regions(batch, generator)
        h, _ = self.encode(batch.title_ids, batch.title_mask, feats, batch.region_boxes, batch.region_mask, picked)
        hr = h[:, batch.title_ids.shape[1]:]
        pred = self.image.tied_output(self.mrfr_transform(hr[picked]), self.mrfr_bias)
        return masked_mse(pred, batch.region_feats[picked])

    def _itm(self, batch: Batch, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        c = self.config
        pairs = sample_itm_pairs(batch, Modality.I, generator, c.itm_neg_prob)
        sb = swap_modality(batch, Modality.I, pairs.donor)
        h, _ = self.encode(sb.title_ids, sb.title_mask, sb.region_feats, sb.region_boxes, sb.region_mask)
        logits = self.itm_head(self.pooler(h))
        v = pairs.valid
        if not bool(v.any()):
            return {"itm": zero_like_loss(logits)}
        out = {"itm": F.cross_entropy(logits[v], pairs.label[v])}
        if c.wra_ot:
            Lt = sb.title_ids.shape[1]
            words = sb.title_mask.bool().clone()
            words[:, 0] = False  # [CLS] is the pooled summary, not a word
            dist = ot_distance(h[v, :Lt], h[v, Lt:], words[v], sb.region_mask.bool()[v],
                               iterations=c.ot_iterations)
            out["ot"] = wra_loss(dist, pairs.label[v].bool(), c.ot_lambda)
        return out

    def pretrain_step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        batch = self.prepare(batch)
        c = self.config
        if c.task_sampling:
            gdev = generator.device if generator is not None else torch.device("cpu")
            w = torch.tensor(c.task_ratio, dtype=torch.float, device=gdev)
            tasks = [TASKS[int(torch.multinomial(w, 1, generator=generator))]]
        else:
            tasks = [t for t, r in zip(TASKS, c.task_ratio) if r > 0]
        losses: dict[str, torch.Tensor] = {}
        for task in tasks:
            if task == "mlm":
                losses["mlm"] = self._mlm(batch, generator)
            elif task == "mrfr":
                losses["mrfr"] = self._mrfr(batch, generator)
            else:
                losses.update(self._itm(batch, generator))
        total = sum(losses.values())
        out = {k: v.detach() for k, v in losses.items()}
        out["loss"] = total
        return out

    def embed_variants(self, batch: Batch) -> dict[str, torch.Tensor]:
        batch = self.prepare(batch)
        h, mask = self.encode(batch.title_ids, batch.title_mask, batch.region_feats, batch.region_boxes,
                              batch.region_mask)
        out = {"cls": h[:, 0], "pooler": self.pooler(h), "mean": mean_pool(h, mask)}
        out["default"] = out[self.embed_variant]
        return out

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.embed_variants(batch)[self.embed_variant]
