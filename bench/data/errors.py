"""Errors raised by the catalog layer."""

from __future__ import annotations

from bench.console import UserError


class CatalogError(UserError):
    """A whole file of a catalog is unusable (unparseable JSON, a missing required column, no
    annotation file...). The message names the file and, where known, the line."""

    def __init__(self, message: str, *, path: object = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = None if path is None else str(path)
        self.line = line


class EmptyCatalogError(CatalogError):
    """The source was read but no listing is usable. ``skips`` (a
    :class:`~bench.data.loaders.Problems`) says why each listing was rejected, so ``bench data
    validate`` can still print the table and list the ids."""

    def __init__(self, message: str, *, skips: object, read: int) -> None:
        super().__init__(message)
        self.skips = skips
        self.read = read
