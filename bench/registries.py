"""One small registry class behind every extension point (models, data sources, evaluation tasks,
metric families): entries by name, duplicates refused, an unknown name answered with the closest
match and the list, and entries that name their code as ``module:attr`` so it is imported on first
use (one broken plugin cannot break the others, and listing stays fast)."""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or duplicate registry name (a :class:`KeyError` whose message prints plainly)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def load_target(target: str) -> Any:
    """The object a ``"module:attr"`` string names, imported now."""
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class Registry(dict, Generic[T]):
    """``{name: entry}`` of one kind of extension; still a plain dict for reading.

    :meth:`add` refuses a name twice; :meth:`lookup` answers an unknown name with the closest
    registered one. ``describe(entry)`` (default: its ``target``) names who registered an entry.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a name already taken is a :class:`RegistryError`."""
        if name in self:
            who = getattr(self[name], "target", None)
            raise RegistryError(f"{self.kind} {name!r} is already registered" + (f" (by {who})" if who else ""))
        self[name] = entry
        return entry

    def lookup(self, name: str) -> T:
        """The entry of ``name``; an unknown name is a :class:`RegistryError` with the closest match."""
        try:
            return self[name]
        except KeyError:
            raise RegistryError(f"unknown {self.kind} {name!r}.{self.hint(name)} Registered: {', '.join(self)}") from None

    def hint(self, name: str) -> str:
        """`` Did you mean 'x'?`` for the closest registered name, or an empty string."""
        close = difflib.get_close_matches(name, list(self), n=1)
        return f" Did you mean {close[0]!r}?" if close else ""

    def remove(self, name: str) -> T:
        """Take an entry out again (a test's throwaway plugin)."""
        return self.pop(name)
