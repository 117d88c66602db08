"""The result stage: one JSON per cell, with the evaluation embeddings and per-query values beside it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from bench.console import console
from bench.stages.base import Context, Decision, Stage
from bench.stages.score import modality_vectors


class ResultStage(Stage):
    """Write the result file atomically (reused as the whole run's output when it exists and the run
    is not forced), then the ``.embeddings.npz`` and ``.per_query.npz`` beside it."""

    name, ends_run = "result", True
    kept = "the pretrained checkpoint was kept in {run_dir}; no result was written"

    def key(self, ctx: Context) -> Any:
        return None if ctx.catalog is None else ctx.plan.result_path(ctx.catalog.source, ctx.catalog.fingerprint)

    def cached(self, ctx: Context) -> bool:
        return not ctx.force and self.key(ctx).exists()

    def detail(self, ctx: Context) -> str:
        path = self.key(ctx)
        return f"{path}, {'exists' if path.exists() else 'new'}"

    def decide(self, ctx: Context) -> Decision:
        if ctx.catalog is None:
            return Decision(self.name, "run", f"under {ctx.plan.results_dir}")
        return super().decide(ctx)

    def load(self, ctx: Context) -> None:
        from bench.results import read_result

        ctx.say(f"[green]result exists[/] {self.key(ctx)} (use --force to recompute)")
        ctx.result = read_result(self.key(ctx))

    def run(self, ctx: Context, decision: Decision) -> None:
        from bench.summary import headline_table

        ctx.sw.timings["total"] = round(time.perf_counter() - ctx.t0, 3)
        ctx.result = result = build_result(ctx)
        path = write_result(ctx.checked.result_path, result)
        s = ctx.scored
        save_embeddings(path.with_suffix(".embeddings.npz"), s["variants"], ctx.plan.cell.modalities, ctx.catalog,
                        s["eval_rows"], s["cat_ids"], s["prod_ids"])
        save_per_query(path.with_suffix(".per_query.npz"), s, ctx.catalog)
        ctx.say(headline_table(result))
        for w in result.get("warnings", []):
            ctx.say(f"[yellow]warning[/] {w}")
        ctx.say(f"[bold green]result[/] {path}")


def null_reasons(metrics: dict[str, dict[str, Any]], query_counts: dict[str, Any]) -> dict[str, str]:
    """Why each metric that is not a finite number has no value (``group/name -> reason``)."""
    import math

    out: dict[str, str] = {}
    for group, values in metrics.items():
        for name, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                continue
            task = name.split("/", 1)[0]
            if query_counts.get(f"{task}/queries") == 0:
                what = "no product annotation" if task == "fine" else "no category annotation"
                out[f"{group}/{name}"] = f"no {task} retrieval queries in the evaluation split ({what})"
            else:
                out[f"{group}/{name}"] = "not defined on this data (no query or row could be scored)"
    return out


def build_result(ctx: Context) -> dict[str, Any]:
    """The result dict of a finished run (:func:`bench.results.new_result`)."""
    from bench.results import new_result

    plan, catalog, store, setup, checked, s = ctx.plan, ctx.catalog, ctx.store, ctx.setup, ctx.checked, ctx.scored
    cell, mods = plan.cell, plan.cell.modalities
    pre, fin, eval_rows = s["pre"], s["fin"], s["eval_rows"]
    metrics = {"pretrain": pre["metrics"], "finetune": fin["metrics"]}
    nulls = null_reasons(metrics, checked.health.counts)
    warnings = list(checked.health.warnings)
    if nulls:
        warnings.append(f"{len(nulls)} metric(s) have no value and are written as null (see 'null_metrics')")
    missing = {m.value: int((~store.present(m)[eval_rows]).sum()) for m in mods}
    return new_result(
        cell={"model": cell.model, "modalities": str(mods), "split": cell.split, "preset": cell.preset,
              "seed": cell.seed, "overrides": cell.overrides},
        data={"source": catalog.source, "fingerprint": catalog.fingerprint,
              "description": catalog.info.get("description", catalog.source),
              "is_m5product": catalog.source.startswith("m5product"), "listings": len(catalog.dataset)},
        config={"model": setup.model_cfg.to_dict(), "train": dataclasses.asdict(setup.train_cfg),
                "finetune": dataclasses.asdict(s["ft_cfg"]), "features": ctx.fcfg.to_dict(),
                "spec": store.spec.to_dict(), "pipeline": plan.pipeline},
        metrics=metrics,
        null_metrics=nulls,
        warnings=warnings,
        eval_health=checked.health.counts,
        hubness={"pretrain": pre.get("hubness", {}), "finetune": fin.get("hubness", {})},
        definitions={**pre.get("definitions", {}), **fin.get("definitions", {})},
        counts={"pretrain_listings": len(ctx.rows), "eval_listings": len(eval_rows),
                "cls_train_listings": len(s["cls_train_rows"]), "missing_in_eval": missing,
                "null_metrics": len(nulls), "features": store.info.get("counts", {}), **pre.get("counts", {})},
        extra={**ctx.model.extra_state(), "train": ctx.train_info, "finetune": s["ft_schedule"]},
        timings=ctx.sw.timings,
    )


def write_result(path: Path, result: dict[str, Any]) -> Path:
    """Write ``result`` at ``path``, unless ``path`` holds another cell's or another catalog's
    result: that file is never replaced; this one goes beside it under a suffixed name."""
    from bench.results import ResultError, read_result, write_json_atomic

    if path.exists():
        try:
            old = read_result(path)
        except ResultError:
            old = None
        same = old is not None and old.get("cell") == result["cell"] and \
            (old.get("data") or {}).get("fingerprint") == result["data"]["fingerprint"]
        if not same:
            path = path.with_name(f"{path.stem}__{time.strftime('%Y%m%dT%H%M%S')}.json")
            console.print(f"[yellow]warning[/] a different result already has that name; writing {path.name} beside it")
    return write_json_atomic(path, result)


def _save_npz(path: Path, arrays: dict[str, Any]) -> None:
    import numpy as np

    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def save_embeddings(path: Path, variants: dict, mods: Any, catalog: Any, rows: Any, cat_ids: Any, prod_ids: Any) -> None:
    """Evaluation embeddings beside the result (for ``bench eval`` and the figures), written atomically.

    ``emb_<code>`` holds each modality's own pooled vector where the model exposes one."""
    import numpy as np

    arrays = {"embeddings": variants["default"].astype("float32"),
              "item_id": np.asarray(catalog.dataset.select(rows.tolist())["item_id"]),
              "category": np.asarray([catalog.category_names[c] for c in cat_ids[rows]]),
              "product": np.asarray([catalog.product_names[p] for p in prod_ids[rows]])}
    for code, vec in modality_vectors(variants, mods).items():
        arrays[f"emb_{code}"] = vec.astype("float32")
    _save_npz(path, arrays)


def save_per_query(path: Path, scored: dict[str, Any], catalog: Any) -> None:
    """Per-query metric values of the pre-trained (``pretrain/...``) and fine-tuned (``finetune/...``)
    features beside the result, with the evaluation rows' item ids, written atomically.
    ``<group>/_query_rows`` index the evaluation rows; ``cls/correct[...]`` runs over the cls_test rows."""
    import numpy as np

    eval_rows = scored["eval_rows"]
    arrays: dict[str, Any] = {"item_id": np.asarray(catalog.dataset.select(eval_rows.tolist())["item_id"])}
    for group in ("pre", "fin"):
        for name, values in (scored[group].get("per_query") or {}).items():
            arrays[f"{'pretrain' if group == 'pre' else 'finetune'}/{name}"] = values
    _save_npz(path, arrays)
