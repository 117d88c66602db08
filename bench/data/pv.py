"""The M5Product ``pv`` table string: ``"key1#:#value1#;#key2#:#value2"``.

The released SCALE code stores a listing's table in one string per item in ``id_info`` JSON files;
entities are separated by ``#;#`` and a key from its value by ``#:#``. A string of at most one
character means "no table" (the official loader tests ``len(pv) > 1``). No library parses this
format, so it is done here.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

ENTITY_SEP = "#;#"
KV_SEP = "#:#"


class PvError(ValueError):
    """A malformed pv string (the listing's table is then treated as missing)."""


def parse_pv(pv: Any) -> list[dict[str, str]]:
    """Parse a pv string into ``[{"key": k, "value": v}, ...]`` in original order.

    ``None`` and strings of length <= 1 are an empty table. Empty entities (a trailing ``#;#``) are
    ignored. An entity without exactly one ``#:#``, or with an empty key, raises :class:`PvError`,
    as does a non-string input.
    """
    if pv is None:
        return []
    if not isinstance(pv, str):
        raise PvError(f"pv must be a string, got {type(pv).__name__}")
    if len(pv) <= 1:
        return []
    out: list[dict[str, str]] = []
    for i, part in enumerate(pv.split(ENTITY_SEP)):
        pieces = part.split(KV_SEP)
        if len(pieces) == 2:  # the common case first; a blank part cannot hold a separator
            key = pieces[0].strip()
            if key:
                out.append({"key": key, "value": pieces[1].strip()})
                continue
        elif not part.strip():
            continue
        if len(pieces) != 2:
            raise PvError(f"entity {i} {part[:40]!r} has {len(pieces) - 1} '{KV_SEP}' separators, expected 1")
        raise PvError(f"entity {i} {part[:40]!r} has an empty key")
    return out


def format_pv(entities: Iterable[Mapping[str, str]] | Iterable[tuple[str, str]]) -> str:
    """Serialise entities (dicts with key/value or (key, value) pairs) to a pv string.

    Keys and values must not contain the separators; this is the inverse of :func:`parse_pv`.
    """
    parts = []
    for e in entities:
        k, v = (e["key"], e["value"]) if isinstance(e, Mapping) else e
        for s in (k, v):
            if ENTITY_SEP in s or KV_SEP in s:
                raise PvError(f"{s!r} contains a pv separator")
        parts.append(f"{k}{KV_SEP}{v}")
    return ENTITY_SEP.join(parts)


def table_from_any(value: Any) -> list[dict[str, str]]:
    """A table given as a pv string, a ``{key: value}`` mapping, a list of ``{key, value}`` dicts or
    ``[key, value]`` pairs, or a JSON text of one of those. Raises :class:`PvError` when malformed."""
    import json

    if value is None:
        return []
    if isinstance(value, float) and value != value:  # NaN from pandas: an empty cell
        return []
    if isinstance(value, str):
        s = value.strip()
        if s[:1] in "{[" and s:
            try:
                value = json.loads(s)
            except json.JSONDecodeError as exc:
                raise PvError(f"table is neither JSON nor a pv string: {exc.msg}") from None
        else:
            return parse_pv(value)
    if isinstance(value, Mapping):
        out = []
        for k, v in value.items():
            if not isinstance(k, str) or not k.strip():
                raise PvError(f"table key {k!r} is not a non-empty string")
            if isinstance(v, (dict, list)):
                raise PvError(f"table value for {k!r} is not a scalar")
            out.append({"key": k.strip(), "value": "" if v is None else str(v).strip()})
        return out
    if isinstance(value, list):
        out = []
        for e in value:
            if isinstance(e, Mapping) and "key" in e and "value" in e:
                k, v = e["key"], e["value"]
            elif isinstance(e, (list, tuple)) and len(e) == 2:
                k, v = e
            else:
                raise PvError(f"table entity {e!r} is not a key/value pair")
            if not isinstance(k, str) or not k.strip():
                raise PvError(f"table key {k!r} is not a non-empty string")
            out.append({"key": k.strip(), "value": "" if v is None else str(v).strip()})
        return out
    raise PvError(f"table of type {type(value).__name__} is not supported")
