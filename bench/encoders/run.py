"""The run of a frozen encoder: no pretraining; embed raw media, then score as every model.

:func:`score_frozen` returns exactly what the pipeline's score stage returns, so the result file,
embeddings and per-query values are written by the same code; :func:`run_frozen` is the whole run
after the catalog and feature stages (the pipeline dispatches to it for ``pretrains = False``).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from bench.encoders.cache import encode_catalog


#: What a frozen encoder's result records in place of a pretraining log.
NO_PRETRAIN = {"pretrained": False, "reason": "frozen encoder: released weights, no pretraining stage"}


def build_frozen(plan: Any, catalog: Any, store: Any, setup: Any, fcfg: Any, *, progress: bool = False,
                 say: Callable[[Any], None] = lambda *_: None) -> Any:
    """The encoder of ``plan`` with its weights, its vectors of every catalog row installed."""
    mods = plan.cell.modalities
    torch.manual_seed(plan.cell.seed)  # random-weight models (no checkpoint) follow the seed
    model = plan.entry.load()(setup.model_cfg, store.spec, mods)
    model.video = {"fps": fcfg.video_fps, "max_frames": fcfg.max_frames, "min_frames": fcfg.video_min_frames}
    model.raw = {m.value: list(catalog.dataset[m.long_name]) for m in mods}
    present = {m.value: store.present(m) for m in mods}
    model.set_vectors(encode_catalog(model, catalog, present, progress=progress, say=say))
    return model


def score_frozen(plan: Any, catalog: Any, store: Any, setup: Any, fcfg: Any, sw: Any, *, progress: bool = False,
                 say: Callable[[Any], None] = lambda *_: None) -> tuple[Any, dict[str, Any]]:
    """(model, scored): ``scored`` is the structure of ``bench.pipeline._score`` (metrics before and
    after the fine-tuned head, embedding variants, rows), computed by that same function."""
    from bench.pipeline import _score

    with sw("encode"):
        model = build_frozen(plan, catalog, store, setup, fcfg, progress=progress, say=say)
    return model, _score(plan, catalog, store, model, setup.train_cfg, sw, progress)


def run_frozen(plan: Any, catalog: Any, store: Any, fcfg: Any, setup: Any, checked: Any, sw: Any, t_start: float, *,
               progress: bool = False, say: Callable[[Any], None] = print) -> dict[str, Any]:
    """Score a frozen encoder and write its result, embeddings and per-query values. Returns the result."""
    from bench import pipeline as pl
    from bench.summary import headline_table

    model, scored = score_frozen(plan, catalog, store, setup, fcfg, sw, progress=progress, say=say)
    sw.timings["total"] = round(time.perf_counter() - t_start, 3)
    result = pl._result(plan, catalog, store, fcfg, setup, checked, np.zeros(0, dtype=np.int64), scored, model,
                        dict(NO_PRETRAIN), sw)
    path = pl._write_result(checked.result_path, result)
    pl._save_embeddings(path.with_suffix(".embeddings.npz"), scored["variants"], plan.cell.modalities, catalog,
                        scored["eval_rows"], scored["cat_ids"], scored["prod_ids"])
    pl._save_per_query(path.with_suffix(".per_query.npz"), scored, catalog)
    say(headline_table(result))
    for w in result.get("warnings", []):
        say(f"[yellow]warning[/] {w}")
    say(f"[bold green]result[/] {path}")
    return result



