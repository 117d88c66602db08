"""One rich console for all CLI output, and the error type that becomes a clean non-zero exit."""

from __future__ import annotations

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class UserError(Exception):
    """A problem with the user's input: printed as one clear message, exit status 2, no traceback."""

    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a command, with one line saying what was kept and how to go on."""
