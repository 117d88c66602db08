"""``bench ls models | sources | metrics | modalities``: what the registries hold."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from bench.console import UserError, console

ls_app = typer.Typer(help="List registered models, catalog sources, metric families or modality codes.",
                     no_args_is_help=True)


@ls_app.command("models")
def ls_models() -> None:
    """Every registered model adapter and the modalities it consumes, then the frozen encoder
    families (``PREFIX:ARGUMENT`` names one released model)."""
    from bench import registry

    t = Table(title="registered models")
    for col in ("name", "paper name", "consumes", "requires", "adapter", "summary"):
        t.add_column(col)
    try:
        entries = registry.entries()
    except registry.RegistryError as exc:  # a broken plugin is named in one line
        raise UserError(str(exc)) from None
    for e in entries:
        t.add_row(e.name, e.paper_name, str(e.consumes), str(e.requires) or "-", e.target, e.summary)
    for prefix, fam in registry.FAMILIES.items():
        t.add_row(escape(f"{prefix}:{fam.argument}"), f"{fam.paper_name} (frozen encoder family)", fam.consumes, "-",
                  fam.target, escape(fam.summary))
    console.print(t)


@ls_app.command("sources")
def ls_sources() -> None:
    """Every registered kind of catalog source (``--data KIND:ARG``)."""
    from bench.data.sources import SOURCES

    t = Table(title="catalog sources")
    for col in ("name", "spelling", "reader", "summary"):
        t.add_column(col)
    for e in SOURCES.values():
        t.add_row(e.name, e.usage, e.target, e.summary)
    console.print(t)


@ls_app.command("metrics")
def ls_metrics() -> None:
    """Every registered metric family: which names it owns, its direction and its definition."""
    from bench.eval.metrics import FAMILIES

    t = Table(title="metric families")
    for col in ("name", "names (pattern)", "better", "computed by", "definition"):
        t.add_column(col)
    for f in FAMILIES.values():
        better = {True: "higher", False: "lower", None: "- (diagnostic)"}[f.higher_is_better]
        t.add_row(f.name, f.pattern, better, f.target or "its task", f.definition)
    console.print(t)


@ls_app.command("tasks")
def ls_tasks() -> None:
    """Every registered evaluation task (``bench.eval.suite.evaluate(..., tasks=...)``)."""
    from bench.eval.tasks import TASKS

    t = Table(title="evaluation tasks")
    for col in ("name", "function", "summary"):
        t.add_column(col)
    for e in TASKS.values():
        t.add_row(e.name, e.target, e.summary)
    console.print(t)


@ls_app.command("modalities")
def ls_modalities() -> None:
    """The five modality codes, in canonical order."""
    from bench.modalities import ORDER, SEQUENTIAL

    t = Table(title="modalities")
    t.add_column("code")
    t.add_column("name")
    for m in ORDER:
        t.add_row(m.value, m.long_name)
    console.print(t)
    console.print("canonical order: " + ",".join(m.value for m in ORDER)
                  + "   paper's sequential order: " + " -> ".join(m.value for m in SEQUENTIAL))


def register(app: typer.Typer) -> None:
    app.add_typer(ls_app, name="ls")
