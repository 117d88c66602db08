"""A run is a recipe of stages: ``--dry-run`` walks the same recipe and takes the real run's
decisions, and the adapter class shapes the recipe (no pretrain stage, substituted stages)."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest

from bench.modalities import ModalitySet
from bench.pipeline import CellSpec, plan_cell
from bench.stages import Context, Stage, dry_run, execute, recipe_for
from bench.stages.score import EmbedStage


def _manifest(path, n=240, categories=4):
    """A text-only manifest whose titles carry words of their category."""
    words = ["red", "blue", "cotton", "steel", "phone", "shoe", "lamp", "cup", "bag", "desk", "pen", "hat"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "category", "title", "product_id"])
        for i in range(n):
            c = i % categories
            w.writerow([f"it{i}", f"cat{c}", " ".join(words[(3 * c + j + i) % len(words)] for j in range(4)), f"p{i // 3}"])
    return path


def _decisions(plan, *, force, real):
    ctx = Context(plan, say=lambda *_: None, progress=False, force=force)
    if real:
        return [(d.stage, d.action) for d in execute(recipe_for(plan), ctx).decisions]
    return [(d.stage, d.action) for d in dry_run(recipe_for(plan), ctx)]


def test_dry_run_and_real_run_take_the_same_decisions(tmp_path):
    cell = CellSpec("bert", ModalitySet.parse("T"), data=f"manifest:{_manifest(tmp_path / 'shop.csv')}",
                    overrides={"max_steps": 2, "batch_size": 16, "finetune_epochs": 1})
    plan = plan_cell(cell, tmp_path / "results")
    expected = {"uncached": {"features": "run", "pretrain": "run", "result": "run"},
                "cached": {"features": "reuse", "pretrain": "reuse", "result": "run"}}
    for state, wanted in expected.items():
        dry = _decisions(plan, force=True, real=False)
        real = _decisions(plan, force=True, real=True)
        assert dry == real, state
        got = dict(real)
        assert {k: got[k] for k in wanted} == wanted, (state, got)
        assert got["catalog"] == "reuse" and got["preflight"] == "check" and got["embed"] == "run"
    # without --force the existing result is the run's output: both stop there, nothing is recomputed
    dry, real = _decisions(plan, force=False, real=False), _decisions(plan, force=False, real=True)
    assert dry == real
    assert dict(real)["result"] == "reuse" and dict(real)["pretrain"] == "skip" and dict(real)["embed"] == "skip"


def test_dry_run_before_the_catalog_exists_says_what_will_run(tmp_path):
    plan = plan_cell(CellSpec("bert", ModalitySet.parse("T"), data="synthetic:mini:987"), tmp_path)
    got = dict(_decisions(plan, force=True, real=False))
    assert got["catalog"] == "run" and got["features"] == "run" and got["pretrain"] == "run"
    assert got["preflight"] == "check"
    assert not list(tmp_path.iterdir())


class _RawEmbed(EmbedStage):
    name = "embed"


def _plan_for(cls, untrained=False):
    entry = SimpleNamespace(load=lambda: cls)
    return SimpleNamespace(entry=entry, cell=SimpleNamespace(model="m"), pipeline={"untrained": untrained})


def test_a_model_that_does_not_pretrain_gets_no_pretrain_stage_and_its_own_embed():
    from bench.adapter import Adapter

    class Frozen(Adapter):
        pretrains = False
        stage_overrides = {"embed": _RawEmbed}

    default = [s.name for s in recipe_for(_plan_for(Adapter))]
    assert default == ["catalog", "preflight", "features", "pretrain", "embed", "evaluate", "finetune",
                       "evaluate-finetuned", "result"]
    frozen = recipe_for(_plan_for(Frozen))
    assert [s.name for s in frozen] == [n for n in default if n != "pretrain"]
    assert isinstance(frozen[3], _RawEmbed)
    assert [s.name for s in recipe_for(_plan_for(Adapter), until="pretrain")][-1] == "pretrain"

    class Typo(Adapter):
        stage_overrides = {"embedd": _RawEmbed}

    with pytest.raises(ValueError, match="embedd"):
        recipe_for(_plan_for(Typo))


def test_every_stage_says_what_an_interrupt_keeps():
    for stage in recipe_for(_plan_for(__import__("bench.adapter").adapter.Adapter)):
        assert isinstance(stage, Stage) and stage.name and stage.kept


def _frozen_class():
    from test_engine_helpers import TinyAdapter

    class FrozenTiny(TinyAdapter):
        """Never pretrained: its recipe has no pretrain stage, the run embeds its initial weights."""

        pretrains = False

        def pretrain_step(self, batch, generator=None):
            raise AssertionError("a model that does not pretrain is never asked for a pretraining step")

    return FrozenTiny


FrozenTiny = _frozen_class()


def test_a_model_that_does_not_pretrain_runs_end_to_end(tmp_path):
    from bench import registry

    registry.register("frozen-tiny", f"{__name__}:FrozenTiny", "T", "T", paper_name="FrozenTiny", summary="test")
    try:
        plan = plan_cell(CellSpec("frozen-tiny", ModalitySet.parse("T"), data=f"manifest:{_manifest(tmp_path / 's.csv')}",
                                  overrides={"finetune_epochs": 1}), tmp_path / "results")
        assert not plan.pretrains
        ctx = execute(recipe_for(plan), Context(plan, say=lambda *_: None, progress=False))
        assert "pretrain" not in dict((d.stage, d.action) for d in ctx.decisions)
        assert ctx.result["extra"]["train"] == {} and ctx.result["metrics"]["pretrain"]["coarse/mAP@1[m5product]"] >= 0
        assert [d.stage for d in dry_run(recipe_for(plan), Context(plan, progress=False))] == [d.stage for d in ctx.decisions]
    finally:
        registry._REGISTRY.remove("frozen-tiny")
