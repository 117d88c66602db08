"""The catalog layer: every source (synthetic, M5Product layouts, manifests) becomes one
:class:`Catalog` of listings with the columns of :mod:`bench.data.schema`.

Import cost matters (``bench ls`` imports the CLI), so the heavy pieces load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Catalog", "CatalogError", "EmptyCatalogError", "load_catalog", "SPLIT_NAMES"]

if TYPE_CHECKING:
    from bench.data.catalog import SPLIT_NAMES, Catalog, load_catalog
    from bench.data.errors import CatalogError, EmptyCatalogError


def __getattr__(name: str) -> Any:
    if name in ("Catalog", "load_catalog", "SPLIT_NAMES"):
        from bench.data import catalog

        return getattr(catalog, name)
    if name in ("CatalogError", "EmptyCatalogError"):
        from bench.data import errors

        return getattr(errors, name)
    raise AttributeError(name)
