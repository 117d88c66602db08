"""A rich progress bar that can be switched off (tests, ``progress=False``)."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def track(it: Iterable[T], description: str, *, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate ``it``, showing a transient progress bar on the shared console when ``enabled``."""
    if not enabled:
        yield from it
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bench.console import err_console

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as p:
        task = p.add_task(description, total=total)
        for x in it:
            yield x
            p.advance(task)
