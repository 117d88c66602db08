"""The stages before any model work: the catalog, the pre-flight checks, the feature store."""

from __future__ import annotations

from typing import Any

from bench.stages.base import Context, Decision, Stage


class CatalogStage(Stage):
    """Every source becomes one table of listings (a synthetic catalog is generated on first use)."""

    name, timer, main_first, dry, all_ranks = "catalog", "catalog", True, True, True

    def key(self, ctx: Context) -> Any:
        p = ctx.plan
        return {"source": p.cell.data, "encoding": p.cell.encoding,
                **{k: p.pipeline[k] for k in ("split_seed", "eval_fraction")}}

    def cached(self, ctx: Context) -> bool:
        from bench.data import sources

        kind, arg = sources.parse_source(ctx.plan.cell.data)
        return sources.get(kind).cached(arg)

    def detail(self, ctx: Context) -> str:
        if not self.cached(ctx):
            return "it will be built; the checks that need it run then"
        return ctx.plan.cell.data or "synthetic"

    def run(self, ctx: Context, decision: Decision) -> None:
        from bench import pipeline

        ctx.catalog = cat = pipeline.load_cell_catalog(ctx.plan, progress=ctx.progress)
        ctx.say(f"[bold]catalog[/] {cat.source}: {len(cat.dataset)} listings, fingerprint {cat.fingerprint[:12]}")


class PreflightStage(Stage):
    """Requested modalities present, one pretraining batch, a usable evaluation (warned, not refused)."""

    name, main_first, dry, all_ranks, gate = "preflight", True, True, True, True

    def key(self, ctx: Context) -> Any:
        return None if ctx.catalog is None else ctx.catalog.fingerprint

    def decide(self, ctx: Context) -> Decision:
        return Decision(self.name, "check", "" if self.key(ctx) is not None else "once the catalog exists")

    def run(self, ctx: Context, decision: Decision) -> None:
        from bench.pipeline import preflight

        ctx.checked = preflight(ctx.plan, ctx.catalog, ctx.setup)
        ctx.rows = ctx.checked.pretrain_rows
        for w in ctx.checked.health.warnings:
            ctx.say(f"[yellow]warning[/] {w}")


class FeaturesStage(Stage):
    """Token ids and region/frame/audio features of every listing, in a memory-mapped store."""

    # Not main_first: under a multi-process launch every rank builds its share of the shards at once.
    name, timer, all_ranks = "features", "features", True
    kept = "feature shards already finished were kept"

    def key(self, ctx: Context) -> Any:
        from bench.features import store_dir

        return None if ctx.catalog is None else store_dir(ctx.catalog, ctx.fcfg)

    def cached(self, ctx: Context) -> bool:
        return (self.key(ctx) / "info.json").exists()

    def detail(self, ctx: Context) -> str:
        return str(self.key(ctx))

    def run(self, ctx: Context, decision: Decision) -> None:
        from bench import preflight as pf
        from bench.features import build_features

        ctx.store = build_features(ctx.catalog, ctx.fcfg, progress=ctx.progress)
        ctx.say(f"[bold]features[/] {'cached' if decision.action == 'reuse' else 'built'}: {ctx.store.path}")
        # the pretraining pool, exact now that the store knows which media decoded
        p, mods = ctx.plan, ctx.plan.cell.modalities
        incomplete = bool(p.pipeline["pretrain_incomplete"])
        ctx.rows = pf.pretrain_rows(ctx.catalog, p.cell.split, mods, incomplete, ctx.store.present)
        if p.pretrains:
            pf.check_batch(len(ctx.rows), ctx.setup.train_cfg.batch_size, mods, incomplete)
