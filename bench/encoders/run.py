"""The run of a frozen encoder: the standard recipe without the pretrain stage (``pretrains = False``)
and with :class:`FrozenEmbedStage` as its embed stage, which first builds the encoder on the catalog's
raw media (:func:`build_frozen`) and then embeds as every model does; the standard evaluate,
fine-tune and result stages write the result, embeddings and per-query values.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from bench.stages.base import Context, Decision
from bench.stages.score import EmbedStage

#: What a frozen encoder's result records in place of a pretraining log.
NO_PRETRAIN = {"pretrained": False, "reason": "frozen encoder: released weights, no pretraining stage"}


def build_frozen(plan: Any, catalog: Any, store: Any, setup: Any, fcfg: Any, *, progress: bool = False,
                 say: Callable[[Any], None] = lambda *_: None) -> Any:
    """The encoder of ``plan`` with its weights, its vectors of every catalog row installed."""
    from bench.encoders.cache import encode_catalog  # imports this package's base, which names this module

    mods = plan.cell.modalities
    torch.manual_seed(plan.cell.seed)  # random-weight models (no checkpoint) follow the seed
    model = plan.entry.load()(setup.model_cfg, store.spec, mods)
    model.video = {"fps": fcfg.video_fps, "max_frames": fcfg.max_frames, "min_frames": fcfg.video_min_frames}
    model.raw = {m.value: list(catalog.dataset[m.long_name]) for m in mods}
    present = {m.value: store.present(m) for m in mods}
    model.set_vectors(encode_catalog(model, catalog, present, progress=progress, say=say))
    return model


class FrozenEmbedStage(EmbedStage):
    """Encode the raw media once (cached under ``$M5BENCH_HOME/encoders``), install the vectors in
    the run's model, then the standard embed stage. The result records no pretraining pool and
    :data:`NO_PRETRAIN` as its pretraining log."""

    timer = None  # timed apart: "encode" (raw media through the encoder), "embed" (the standard stage)

    def detail(self, ctx: Context) -> str:
        return "raw media encoded first, cached under $M5BENCH_HOME/encoders"

    def run(self, ctx: Context, decision: Decision) -> None:
        with ctx.sw("encode"):
            ctx.model = build_frozen(ctx.plan, ctx.catalog, ctx.store, ctx.setup, ctx.fcfg, progress=ctx.progress,
                                     say=ctx.say)
        ctx.rows = np.zeros(0, dtype=np.int64)  # nothing was pretrained on
        ctx.train_info = dict(NO_PRETRAIN)
        with ctx.sw("embed"):
            super().run(ctx, decision)
