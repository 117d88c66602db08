"""The ``bench`` command line. Commands live in :mod:`bench.commands`; this module only mounts them."""

from __future__ import annotations

import importlib
import sys

import typer

from bench.console import UserError, err_console

app = typer.Typer(
    name="bench",
    help="m5bench: benchmark multimodal e-commerce pretraining (SCALE and baselines) on M5Product-style catalogs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its commands; a module that is not built yet is simply absent.
_COMMAND_MODULES = ("ls", "data", "features", "evaluate", "run", "tables", "adapters")

for _name in _COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"bench.commands.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"bench.commands.{_name}":
            raise
        continue
    _mod.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors print one line and exit non-zero, never a traceback."""
    try:
        rc = app(args=argv, standalone_mode=False)
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click's own usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise
    # standalone_mode=False returns typer.Exit codes instead of exiting with them
    if isinstance(rc, int) and rc != 0:
        sys.exit(rc)


if __name__ == "__main__":
    main()
