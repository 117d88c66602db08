"""A run is a recipe: a list of stages walked in order, for real or as a dry run.

:func:`walk` is the one loop: it takes each stage's :meth:`~bench.stages.base.Stage.decide` and
either acts on it (:func:`execute`) or only records it (:func:`dry_run`, which runs the cheap stages
that write nothing, so the later keys are known). Both therefore reach the same decisions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from bench.console import Interrupted
from bench.stages.base import Context, Decision, Stage
from bench.stages.data import CatalogStage, FeaturesStage, PreflightStage
from bench.stages.pretrain import PretrainStage
from bench.stages.result import ResultStage
from bench.stages.score import (
    EmbedStage,
    EvaluateFinetunedStage,
    EvaluateStage,
    FinetuneStage,
)

#: The default recipe of a cell, in order.
DEFAULT_STAGES: tuple[type[Stage], ...] = (CatalogStage, PreflightStage, FeaturesStage, PretrainStage, EmbedStage,
                                           EvaluateStage, FinetuneStage, EvaluateFinetunedStage, ResultStage)


def recipe_for(plan: Any, *, until: str | None = None) -> list[Stage]:
    """The stages of ``plan``'s cell, up to and including ``until`` (default: all).

    The adapter class shapes it: ``pretrains = False`` drops the pretrain stage, and
    ``stage_overrides`` (``{stage name: Stage subclass}``) substitutes stages by name, e.g. an embed
    stage that reads raw media for a frozen encoder.
    """
    cls = plan.entry.load()
    overrides: dict[str, type[Stage]] = dict(getattr(cls, "stage_overrides", {}) or {})
    names = {s.name for s in DEFAULT_STAGES}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}.stage_overrides names no stage: {unknown}; stages are {sorted(names)}")
    stages = [overrides.get(s.name, s)() for s in DEFAULT_STAGES if s is not PretrainStage or cls.pretrains]
    if until is not None:
        if until not in [s.name for s in stages]:
            raise ValueError(f"the recipe of {plan.cell.model} has no stage {until!r}")
        stages = stages[:[s.name for s in stages].index(until) + 1]
    return stages


def walk(recipe: list[Stage], ctx: Context, act: Callable[[Stage, Decision], bool]) -> None:
    """Decide each stage in order and hand it to ``act`` (which returns False to stop the walk).

    After a gate stage (the pre-flight), a final stage that is cached ends the walk: its output is
    the run's, and the stages between are recorded as skipped."""
    final = recipe[-1] if recipe and recipe[-1].ends_run else None
    for i, stage in enumerate(recipe):
        ctx.stage = stage.name
        decision = stage.decide(ctx)
        ctx.decisions.append(decision)
        if not act(stage, decision):
            return
        if stage.gate and final is not None and final.key(ctx) is not None and final.cached(ctx):
            ctx.decisions += [Decision(s.name, "skip", "the result exists") for s in recipe[i + 1:-1]]
            ctx.decisions.append(final.decide(ctx))
            ctx.stage = final.name
            act(final, ctx.decisions[-1])
            return


def execute(recipe: list[Stage], ctx: Context) -> Context:
    """Run ``recipe`` for real. Under ``accelerate launch`` every process walks it: the ``main_first``
    stages run on the main process first (the others then find their output cached), the
    ``all_ranks`` stages on every process, the rest on the main process only. Ctrl-C raises
    :class:`~bench.console.Interrupted` naming what the interrupted stage kept."""
    from accelerate import PartialState

    dist = PartialState()
    ctx.is_main = dist.is_main_process
    if not dist.is_main_process:
        ctx.say, ctx.progress = (lambda *_: None), False  # one voice on the console
    synced = [False]

    def act(stage: Stage, decision: Decision) -> bool:
        if not stage.all_ranks and not synced[0]:
            dist.wait_for_everyone()
            synced[0] = True
            if not dist.is_main_process:
                return False
        with dist.main_process_first() if stage.main_first else contextlib.nullcontext():
            if decision.action == "reuse" and stage.ends_run:
                stage.load(ctx)
            else:
                with ctx.sw(stage.timer) if stage.timer else contextlib.nullcontext():
                    stage.run(ctx, decision)
        return True

    try:
        walk(recipe, ctx, act)
        if not synced[0]:
            dist.wait_for_everyone()
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise interrupted(next((s for s in recipe if s.name == ctx.stage), recipe[0]), ctx) from None
    return ctx


def dry_run(recipe: list[Stage], ctx: Context) -> list[Decision]:
    """The decisions of ``recipe`` without doing the work: the cheap stages that write nothing (the
    catalog when cached, the pre-flight) run, so a dry run refuses what the real run would refuse."""

    def act(stage: Stage, decision: Decision) -> bool:
        if stage.dry and decision.action in ("reuse", "check") and stage.key(ctx) is not None:
            stage.run(ctx, decision)
        return True

    walk(recipe, ctx, act)
    return ctx.decisions


def interrupted(stage: Stage, ctx: Context) -> Interrupted:
    """The one-line message of Ctrl-C during ``stage``: what was kept, and how to go on."""
    kept = stage.kept.format(run_dir=ctx.run_dir or "the run directory")
    return Interrupted(f"stopped during {stage.name}: {kept}; run the same command again to resume")
