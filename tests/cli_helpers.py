"""Running the real ``bench`` entry point in-process, as the tests of user-facing behaviour do."""

from __future__ import annotations

import pytest


@pytest.fixture
def wide_console(monkeypatch):
    """A console wide enough that a one-line message stays on one line (rich wraps at 80 columns
    when the output is not a terminal)."""
    from bench.console import console, err_console

    for c in (console, err_console):
        monkeypatch.setattr(c, "_width", 2000)


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``bench ARGV`` in-process; returns (exit code, stdout, stderr). A traceback fails the test."""
    from bench.cli import main

    try:
        main(argv)
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    return rc, out, err
