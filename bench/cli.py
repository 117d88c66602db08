"""The ``bench`` command line. Commands live in :mod:`bench.commands`; this module only mounts them."""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any, Callable

import typer

from bench.console import Interrupted, UserError, err_console

app = typer.Typer(
    name="bench",
    help="m5bench: benchmark multimodal e-commerce pretraining (SCALE and baselines) on M5Product-style catalogs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its commands.
_COMMAND_MODULES = ("ls", "data", "features", "evaluate", "run", "tables", "adapters", "results")


class _Stop(Exception):
    """Carries a Ctrl-C out of a command: typer turns a KeyboardInterrupt into a bare exit 130,
    which would lose the message of what was kept."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__(str(interrupt))
        self.interrupt = interrupt


def _passing_interrupts(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)  # typer reads the options from the wrapped signature
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as exc:
            raise _Stop(exc) from None
    return wrapper


def _wrap_commands(typer_app: typer.Typer) -> None:
    for cmd in typer_app.registered_commands:
        cmd.callback = _passing_interrupts(cmd.callback)
    for group in typer_app.registered_groups:
        _wrap_commands(group.typer_instance)


for _name in _COMMAND_MODULES:
    importlib.import_module(f"bench.commands.{_name}").register(app)
_wrap_commands(app)


def _interrupted(exc: KeyboardInterrupt) -> None:
    """One line on Ctrl-C: what was kept and how to go on; exit 130."""
    if isinstance(exc, Interrupted):
        err_console.print(f"[yellow]interrupted:[/] {exc}")
    else:
        err_console.print("[yellow]interrupted:[/] every file is written whole or not at all, so what finished "
                          "before the interrupt was kept; run the same command again to continue")
    sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors print one line and exit non-zero, never a traceback."""
    try:
        rc = app(args=argv, standalone_mode=False)
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(exc.exit_code)
    except _Stop as stop:
        _interrupted(stop.interrupt)
    except KeyboardInterrupt as exc:  # outside any command (e.g. while parsing)
        _interrupted(exc)
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
