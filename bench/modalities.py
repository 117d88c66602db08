"""The five M5Product modalities and parsing of modality sets.

Codes are the paper's: ``I`` image, ``T`` title text, ``Tab`` table, ``V`` video, ``A`` audio.
A set of modalities always prints in one canonical order, I, T, Tab, V, A (the order of the
headline ``--modalities I,T,Tab,V,A``), so two spellings of the same set give the same string,
cache key and result file name. :data:`SEQUENTIAL` is the different order in which the paper's
first table *adds* modalities.
"""

from __future__ import annotations

from enum import Enum
from typing import Iterable


class Modality(str, Enum):
    """One modality; the value is its command-line code."""

    I = "I"  # noqa: E741 - the paper's own code for image
    T = "T"
    Tab = "Tab"
    V = "V"
    A = "A"

    @property
    def long_name(self) -> str:
        return _LONG_NAMES[self]


_LONG_NAMES = {
    Modality.I: "image",
    Modality.T: "title",
    Modality.Tab: "table",
    Modality.V: "video",
    Modality.A: "audio",
}

#: Canonical printed order.
ORDER: tuple[Modality, ...] = (Modality.I, Modality.T, Modality.Tab, Modality.V, Modality.A)

#: The order in which the paper's Table 1 adds modalities: T, +I, +Tab, +V, +A.
SEQUENTIAL: tuple[Modality, ...] = (Modality.T, Modality.I, Modality.Tab, Modality.V, Modality.A)

_BY_CODE = {m.value.lower(): m for m in Modality}
_BY_CODE.update({name: m for m, name in _LONG_NAMES.items()})


class ModalityError(ValueError):
    """An unknown or empty modality specification."""


class ModalitySet(frozenset):
    """An immutable, canonically ordered set of modalities.

    ``str(ModalitySet.parse("A,T,I"))`` is ``"I,T,A"``; iteration follows :data:`ORDER`.
    """

    def __iter__(self):  # stable order, whatever the hash order is
        members = set(frozenset.__iter__(self))
        return iter([m for m in ORDER if m in members])

    def __str__(self) -> str:
        return ",".join(m.value for m in self)

    def __repr__(self) -> str:
        return f"ModalitySet({str(self)!r})"

    @property
    def key(self) -> str:
        """File-name-safe form, e.g. ``I+T+Tab``."""
        return "+".join(m.value for m in self)

    @classmethod
    def parse(cls, spec: "str | Iterable[str | Modality]") -> "ModalitySet":
        """Parse ``"I,T,Tab,V,A"`` (also ``+``-separated, case-insensitive, long names allowed)."""
        if isinstance(spec, str):
            parts = [p.strip() for p in spec.replace("+", ",").split(",")]
        else:
            parts = [p.value if isinstance(p, Modality) else str(p).strip() for p in spec]
        parts = [p for p in parts if p]
        if not parts:
            raise ModalityError(f"no modality given; valid codes are {valid_codes()}")
        found = []
        for p in parts:
            m = _BY_CODE.get(p.lower())
            if m is None:
                raise ModalityError(f"unknown modality {p!r}; valid codes are {valid_codes()}")
            found.append(m)
        return cls(found)


def valid_codes() -> str:
    return ", ".join(f"{m.value} ({m.long_name})" for m in ORDER)


ALL = ModalitySet(ORDER)


def all_subsets() -> list[ModalitySet]:
    """All 31 non-empty modality sets, smallest first, then canonical order."""
    out = []
    n = len(ORDER)
    for mask in range(1, 1 << n):
        out.append(ModalitySet(m for i, m in enumerate(ORDER) if mask >> i & 1))
    out.sort(key=lambda s: (len(s), [ORDER.index(m) for m in s]))
    return out
