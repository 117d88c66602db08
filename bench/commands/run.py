"""``bench run``: one benchmark cell end to end (catalog, features, pretrain, embed, evaluate, result)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bench.console import UserError, console
from bench.data.sources import usage as source_usage


def _plan(model: str, modalities: str, data: Optional[str], split: str, preset: str, seed: int,
          sets: list[str], encoding: Optional[str], results: Optional[Path] = None):
    """The checked plan of one cell (:func:`bench.api.plan`, the same call the Python API makes)."""
    from bench.api import plan
    from bench.settings import parse_overrides

    return plan(model, modalities, data, split, preset, seed, parse_overrides(sets), results, encoding=encoding)


# the options `bench run` and `bench pretrain` share (same cell, same checkpoint)
_MODEL = typer.Option(..., "--model", "-m", help="registered model name (see `bench ls models`)")
_MODALITIES = typer.Option(..., "--modalities", help="comma-separated codes, e.g. I,T,Tab,V,A")
_DATA = typer.Option(None, "--data", help=f"catalog: {source_usage()} (see `bench ls sources`)")
_SPLIT = typer.Option("full", "--split", help="pretraining split: subset or full")
_PRESET = typer.Option("tiny", "--preset", help="model size preset: tiny (CPU) or paper")
_SEED = typer.Option(0, "--seed", help="seeds everything (model init, batch order, training, evaluation); same as --set seed=N")
_SETS = typer.Option([], "--set", help="setting key=value (repeatable): model.*, train.*, features.*, pipeline.* "
                                       "or a flat name that is unambiguous, e.g. harmonize=uniform, train.lr=3e-4")
from bench.commands.data import ENCODING as _ENCODING  # noqa: E402 - one declaration of the shared option


def run(
    model: str = _MODEL,
    modalities: str = _MODALITIES,
    data: Optional[str] = _DATA,
    split: str = _SPLIT,
    preset: str = _PRESET,
    seed: int = _SEED,
    sets: list[str] = _SETS,
    encoding: Optional[str] = _ENCODING,
    results: Optional[Path] = typer.Option(None, "--results", help="directory for result files (default $M5BENCH_HOME/results)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and what is cached, do nothing"),
    force: bool = typer.Option(False, "--force", help="recompute even if the result file exists"),
) -> None:
    """Pretrain MODEL on MODALITIES, embed the evaluation listings, score them, write a result file."""
    from bench.pipeline import describe_cache, run_cell

    plan = _plan(model, modalities, data, split, preset, seed, sets, encoding, results)
    console.print(f"[bold]cell[/] {plan.cell.describe()}")
    if dry_run:
        for line in describe_cache(plan, force=force):
            console.print("  " + line)
        return
    run_cell(plan, force=force)


def pretrain(
    model: str = _MODEL,
    modalities: str = _MODALITIES,
    data: Optional[str] = _DATA,
    split: str = _SPLIT,
    preset: str = _PRESET,
    seed: int = _SEED,
    sets: list[str] = _SETS,
    encoding: Optional[str] = _ENCODING,
) -> None:
    """Only the pretraining stage of `bench run` (catalog, features, pretrain); prints the checkpoint.

    The checkpoint is the one `bench run` with the same arguments reuses. Ctrl-C saves a checkpoint;
    running the same command again resumes it.
    """
    from bench.pipeline import run_cell

    plan = _plan(model, modalities, data, split, preset, seed, sets, encoding)
    if plan.pipeline["untrained"]:
        raise UserError("untrained=true skips pretraining; nothing to do")
    if not plan.pretrains:
        raise UserError(f"{plan.cell.model} has no pretraining stage (pretrains = False: a frozen encoder, or a model "
                        "evaluated as built); `bench run` evaluates it")
    console.print(f"[bold]cell[/] {plan.cell.describe()}")
    run_cell(plan, pretrain_only=True)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("pretrain")(pretrain)
