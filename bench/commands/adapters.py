"""``bench check-adapter``: the smoke test every registered model must pass."""

from __future__ import annotations

import typer
from rich.table import Table

from bench.console import UserError, console


def check_adapter(
    model: list[str] = typer.Option([], "--model", "-m", help="model name (repeatable); default: every registered model"),
    data: str = typer.Option("synthetic:mini", "--data", help="catalog whose features feed the check"),
    steps: int = typer.Option(3, "--steps", help="pretraining steps per modality set"),
) -> None:
    """Build the tiny preset, take a few pretraining steps and an embedding pass, for every modality
    set each model supports; print a pass/fail table (exit 1 on any failure)."""
    from bench import registry
    from bench.check_adapter import check_adapter as run_checks
    from bench.registry import RegistryError

    try:
        names = model or registry.names()
        for n in names:
            if not getattr(registry.get(n).load(), "pretrains", True):
                raise UserError(f"{n} is a frozen encoder (no pretraining objective to check); "
                                "`bench run` exercises it end to end")
    except RegistryError as exc:
        raise UserError(str(exc)) from None
    rows = []
    for n in names:
        rows += run_checks(n, data=data, steps=steps, progress=False)
    t = Table(title=f"check-adapter on {data}")
    for col in ("model", "modalities", "result", "seconds", "detail"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.model, r.modalities, "[green]pass[/]" if r.ok else "[bold red]FAIL[/]", f"{r.seconds:.1f}", r.detail)
    console.print(t)
    failed = sum(not r.ok for r in rows)
    console.print(f"{len(rows) - failed}/{len(rows)} passed")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("check-adapter")(check_adapter)
