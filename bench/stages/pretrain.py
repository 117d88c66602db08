"""The pretraining stage: the adapter's own objectives on the pretraining pool, cached per key."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.stages.base import Context, Decision, Stage


class PretrainStage(Stage):
    """Pretrain the adapter (``accelerate`` loop with resume), or load the checkpoint of the same key.

    Keyed by :func:`bench.pipeline.resolve_setup`: data, features, model, configs, split and the code
    the model imports. Skipped for the untrained control (the weights stay at their seeded start).
    """

    name, timer, all_ranks = "pretrain", "pretrain", True
    kept = "the pretraining checkpoint of the last finished epoch (or of the interrupt) was kept in {run_dir}"

    def key(self, ctx: Context) -> Any:
        return None if ctx.catalog is None else ctx.setup.run_dir

    def cached(self, ctx: Context) -> bool:
        return (self.key(ctx) / "final" / "model.safetensors").exists()

    def detail(self, ctx: Context) -> str:
        t = ctx.setup.train_cfg
        return f"{ctx.setup.run_dir}; {len(ctx.rows)} listings, {t.epochs} epochs, batch {t.batch_size}, lr {t.lr}"

    def decide(self, ctx: Context) -> Decision:
        if ctx.plan.pipeline["untrained"]:
            return Decision(self.name, "skip", "untrained control")
        return super().decide(ctx)

    def run(self, ctx: Context, decision: Decision) -> None:
        from accelerate import PartialState

        model, run_dir = ctx.model, ctx.setup.run_dir
        final = run_dir / "final"
        if decision.action == "skip":
            ctx.say("[yellow]pretrain[/] skipped: untrained control (weights at their seeded initialisation)")
            return
        dist = PartialState()
        with pretrain_lock(run_dir, dist.num_processes, ctx.say):
            if self.cached(ctx):  # decided so, or another process finished it while this one waited
                model.load_weights(final)
                ctx.say(f"[green]pretrain[/] cached: {final}")
                summary = run_dir / "train_summary.json"
                ctx.train_info = json.loads(summary.read_text()) if summary.exists() else {}
            else:
                ctx.train_info = _train(ctx, model, run_dir)
                if dist.is_main_process:
                    from bench.results import write_json_atomic

                    model.save_pretrained(final, cell=ctx.plan.cell.describe())
                    write_json_atomic(run_dir / "train_summary.json", ctx.train_info)


def _train(ctx: Context, model: Any, run_dir: Path) -> dict[str, Any]:
    from bench.engine import pretrain
    from bench.seeds import epoch_seed

    cell, tcfg, store, rows = ctx.plan.cell, ctx.setup.train_cfg, ctx.store, ctx.rows

    def batches_for_epoch(epoch: int):
        return store.batches(rows, cell.modalities, tcfg.batch_size, shuffle=True,
                             seed=epoch_seed(cell.seed, "pretrain-batches", epoch), drop_last=True)

    res = pretrain(model, batches_for_epoch, len(rows) // tcfg.batch_size, tcfg, run_dir, resume=True,
                   progress=ctx.progress)
    return {"global_step": res.global_step, "epochs": res.epochs_completed, "seconds": round(res.seconds, 2),
            "last_log": res.last_log, "mixed_precision": res.mixed_precision, "resumed_from_step": res.resumed_from_step}


@contextlib.contextmanager
def pretrain_lock(run_dir: Path, num_processes: int, say: Callable[[Any], None]) -> Iterator[None]:
    """An exclusive lock on one pretraining run directory, so parallel sweeps that need the same
    checkpoint train it once: the second process waits, then finds it cached. Not taken under a
    multi-process launch, whose ranks must enter pretraining together (one launch is one job)."""
    from filelock import FileLock, Timeout

    if num_processes > 1:
        yield
        return
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"[yellow]pretrain[/] another process is training {run_dir.name}; waiting for it")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
