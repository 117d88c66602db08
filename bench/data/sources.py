"""The registry of catalog sources: ``KIND:ARG`` strings, each kind an entry naming its reader.

A source turns its argument (a size, a folder, a file) into listing records; :func:`bench.data.load_catalog`
does the rest (validation, splits, fingerprint) the same way for every kind. Adding a source is one
module with a :class:`Source` subclass plus one :func:`register` call; ``bench ls sources`` lists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

from bench.data.errors import CatalogError
from bench.registries import Registry, load_target


@dataclass(frozen=True)
class ReadOptions:
    """How to read: the text ``encoding`` (None: the source's default), the ``split_seed`` asked for
    (None: the source's), whether the caller asked for its own split (``resplit``), and whether to
    show progress."""

    encoding: str | None = None
    split_seed: int | None = None
    resplit: bool = False
    progress: bool = True


@dataclass
class SourceRead:
    """What a source read: the records (each made by :func:`bench.data.loaders.new_record`, then
    filled; a list, or an iterator that completes ``info`` when exhausted) and source info (``files`` read, optional ``split_lists``, ``precomputed``),
    the catalog's canonical source string, the folder media paths are relative to, and the seed of
    the hash split for rows that the source gives no split lists for."""

    records: Iterable[dict[str, Any]]
    info: dict[str, Any]
    name: str
    root: Path
    split_seed: int


class Source:
    """A kind of catalog source. Subclasses implement :meth:`read`; :meth:`cached` says whether
    reading needs no long build first (``--dry-run`` and the catalog stage ask), :meth:`slug` gives
    the short name result files carry."""

    #: how the argument is spelled in help texts, e.g. ``PATH``
    usage: ClassVar[str] = "ARG"
    #: the argument when the source is given without one (``None``: one is required)
    default_arg: ClassVar[str | None] = None

    def read(self, arg: str, skips: Any, opts: ReadOptions) -> SourceRead:
        """Read the listings of ``arg``; ``skips`` (a :class:`~bench.data.loaders.Problems`) counts
        listing-level problems by reason."""
        raise NotImplementedError

    def cached(self, arg: str) -> bool:
        return True

    def cache_key(self, arg: str, options: dict[str, Any]) -> str | None:
        """The key under which the built table of ``arg`` read with ``options`` is kept on disk
        (:mod:`bench.data.table_cache`), or None: built at every load."""
        return None

    def slug(self, arg: str) -> str:
        return arg


class SyntheticSource(Source):
    """The embedded synthetic catalog, generated on first use (``SIZE[:SEED]``)."""

    usage, default_arg = "[:mini|default|large[:SEED]]", "default"

    @staticmethod
    def _size_seed(arg: str) -> tuple[str, int]:
        size, _, seed_s = arg.partition(":")
        try:
            return size, int(seed_s) if seed_s else 0
        except ValueError:
            raise CatalogError(f"synthetic seed must be an integer, got {seed_s!r}") from None

    def read(self, arg: str, skips: Any, opts: ReadOptions) -> SourceRead:
        from bench.data.catalog import ensure_synthetic
        from bench.data.release_read import open_m5product

        size, seed = self._size_seed(arg)
        root = ensure_synthetic(size, seed, progress=opts.progress)
        recs, info = open_m5product(root, skips, opts.encoding, defer_pv=True)
        if opts.resplit:
            # The generator's id lists are its hash draw at its own fraction and seed; asked for
            # another split, draw it by the same rule instead of keeping the written lists.
            info["split_lists"] = {}
        return SourceRead(recs, info, f"synthetic:{size}" + (f":{seed}" if seed else ""), root,
                          seed if opts.split_seed is None else opts.split_seed)

    def cached(self, arg: str) -> bool:
        from bench.data.catalog import synthetic_dir

        return (synthetic_dir(*self._size_seed(arg)) / "info.json").is_file()


class M5ProductSource(Source):
    """The official M5Product release layout (a folder)."""

    usage = "PATH"

    def read(self, arg: str, skips: Any, opts: ReadOptions) -> SourceRead:
        from bench.data.release_read import open_m5product

        root = Path(arg).expanduser().resolve()
        recs, info = open_m5product(root, skips, opts.encoding, defer_pv=True)
        return SourceRead(recs, info, f"m5product:{root}", root, opts.split_seed or 0)

    def cache_key(self, arg: str, options: dict[str, Any]) -> str | None:
        from bench.data.table_cache import folder_key

        root = Path(arg).expanduser().resolve()
        return folder_key(root, options) if root.is_dir() else None

    def slug(self, arg: str) -> str:
        return Path(arg).stem or Path(arg).name


class ManifestSource(Source):
    """One table of listings (CSV, TSV, JSONL, JSON or Parquet)."""

    usage = "PATH"

    def read(self, arg: str, skips: Any, opts: ReadOptions) -> SourceRead:
        from bench.data.loaders import read_manifest, release_folder_of

        path = Path(arg).expanduser().resolve()
        folder = release_folder_of(path) if path.is_file() else None
        if folder is not None:
            # A release's meta_info.json read as a manifest loses its caption/tabular fields.
            raise CatalogError(f"{path.name} is a file of an M5Product release, not a manifest; "
                               f"pass its folder instead: m5product:{folder}", path=path)
        recs, info = read_manifest(path, skips, opts.encoding)
        return SourceRead(recs, info, f"manifest:{path}", path.parent, opts.split_seed or 0)

    def slug(self, arg: str) -> str:
        return Path(arg).stem or Path(arg).name


@dataclass(frozen=True)
class SourceEntry:
    name: str
    target: str  # "module:Class" of a Source subclass
    summary: str

    def load(self) -> Source:
        """A fresh instance of the source's class (imported on first use)."""
        return load_target(self.target)()

    @property
    def usage(self) -> str:
        """``name:ARG`` as help texts spell it."""
        cls = load_target(self.target)
        sep = "" if cls.usage.startswith("[") else ":"
        return f"{self.name}{sep}{cls.usage}"


SOURCES: Registry[SourceEntry] = Registry("catalog source")


def register(name: str, target: str, *, summary: str) -> SourceEntry:
    """Register a kind of catalog source: ``name:ARG`` is then read by ``target`` (``module:Class``)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"a source name is lower-case letters, digits and _, got {name!r}")
    return SOURCES.add(name, SourceEntry(name, target, summary))


def usage() -> str:
    """Every source as help texts spell it: ``synthetic[...], m5product:PATH or manifest:PATH``."""
    spelled = [e.usage for e in SOURCES.values()]
    return spelled[0] if len(spelled) == 1 else ", ".join(spelled[:-1]) + " or " + spelled[-1]


def parse_source(source: str | None) -> tuple[str, str]:
    """``(kind, argument)`` of a source string; an unknown kind is a :class:`CatalogError`."""
    if source is None or source == "synthetic":
        return "synthetic", "default"
    kind, _, arg = source.partition(":")
    entry = SOURCES.get(kind)
    default = None if entry is None else load_target(entry.target).default_arg
    if entry is None or not (arg or default):
        hint = SOURCES.hint(kind) if entry is None else ""
        raise CatalogError(f"unknown catalog source {source!r}: use {usage()}.{hint}".rstrip("."))
    return kind, arg or default


def get(kind: str) -> Source:
    """An instance of the registered source ``kind``."""
    return SOURCES.lookup(kind).load()


register("synthetic", "bench.data.sources:SyntheticSource", summary="the embedded synthetic catalog, generated on first use")
register("m5product", "bench.data.sources:M5ProductSource", summary="the official M5Product release layout (a folder)")
register("manifest", "bench.data.sources:ManifestSource", summary="one table of listings: CSV, TSV, JSONL, JSON or Parquet")
