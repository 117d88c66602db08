"""Read one big JSON object (or array) member by member, never holding the whole file.

A release's ``id_info_dict.json`` is one object ``{item_id: {...}}`` of several GB; :func:`iter_members`
yields ``(key, value)`` pairs while only a window of the text (:data:`CHUNK_BYTES`) is in memory.
Each value is parsed by the standard library's C scanner (``raw_decode``), with the same
first-key-wins hook as :func:`bench.data.loaders.load_json`, so a value comes out exactly as a
whole-file ``json.loads`` would give it. Text is decoded as :func:`bench.data.loaders.read_text`
does (UTF-8 leniently, or a named codec strictly). A syntax error or a truncated file is one
:class:`CatalogError` naming the file, line and byte offset.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.data.errors import CatalogError

CHUNK_BYTES = 1 << 24
_WS = re.compile(r"[ \t\n\r]*")
#: A key and its colon; in a string value ``\"`` followed by ``:`` matches too, which only errs
#: towards the slow path below.
_KEY_COLON = re.compile(r'"[ \t\n\r]*:')
_PLAIN = json.JSONDecoder()
#: Characters that must follow a value before it is taken as complete (a number's cut-off
#: continuation, ``.`` or ``e+``, is shorter).
_MARGIN = 8


class _Window:
    """A decoded window onto the file: ``text[pos:]`` is what is not consumed yet."""

    def __init__(self, path: Path, encoding: str | None, chunk: int, hook: Callable[[list], Any]) -> None:
        self.path, self.chunk = path, chunk
        self.codec = codecs.lookup(encoding or "utf-8").name
        self.errors = "surrogateescape" if encoding is None else "strict"
        self.decoder = codecs.getincrementaldecoder(self.codec)(errors=self.errors)
        try:
            self.fh = open(path, "rb")  # noqa: SIM115 (closed by the generator that owns it)
        except OSError as exc:
            raise CatalogError(f"cannot read: {exc.strerror}", path=path) from None
        self.text, self.pos, self.read_bytes, self.eof, self.first = "", 0, 0, False, True
        self.json = json.JSONDecoder(object_pairs_hook=hook)
        self.hooked = hook is not dict

    def close(self) -> None:
        self.fh.close()

    def fill(self) -> bool:
        """Append the next chunk; False at the end of the file."""
        if self.eof:
            return False
        data = self.fh.read(self.chunk)
        try:
            new = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise self._decode_error(self.read_bytes - len(self.decoder.getstate()[0]) + exc.start, exc) from None
        self.read_bytes += len(data)
        if self.first and new:
            new, self.first = new.removeprefix("\ufeff"), False
        self.text, self.pos = self.text[self.pos:] + new, 0
        self.eof = not data
        return True

    def byte_offset(self, pos: int) -> int:
        """The file offset of ``text[pos]`` (computed only for an error message)."""
        pending = len(self.decoder.getstate()[0])
        return self.read_bytes - pending - len(self.text[pos:].encode(self.codec, self.errors))

    def line_of(self, offset: int) -> int:
        with open(self.path, "rb") as f:
            n, left = 1, offset
            while left > 0:
                block = f.read(min(left, 1 << 22))
                if not block:
                    break
                n += block.count(b"\n")
                left -= len(block)
        return n

    def _decode_flat(self) -> tuple[Any, int]:
        """``raw_decode`` with the hook, fast for a flat object: decoded without the hook (in C)
        and kept when the text holds no more key-colon pairs than the object has keys, so no key
        was repeated (a repeat is where the hook's first-wins rule differs); otherwise decoded again
        with the hook."""
        val, end = _PLAIN.raw_decode(self.text, self.pos)
        if type(val) is dict and not any(type(v) in (dict, list) for v in val.values()) \
                and len(_KEY_COLON.findall(self.text, self.pos, end)) == len(val):
            return val, end  # no repeated key: the hook would build the same mapping
        return self.json.raw_decode(self.text, self.pos)

    def _decode_error(self, offset: int, exc: UnicodeDecodeError) -> CatalogError:
        bad = exc.object[exc.start : min(exc.end, exc.start + 4)].hex(" ")
        return CatalogError(f"not valid {self.codec} text at byte {offset} (bytes {bad}); if the file uses another "
                            f"encoding, pass it with --encoding (e.g. --encoding gbk)", path=self.path,
                            line=self.line_of(offset))

    def error(self, msg: str, pos: int) -> CatalogError:
        off = self.byte_offset(pos)
        return CatalogError(f"invalid JSON: {msg} (byte offset {off})", path=self.path, line=self.line_of(off))

    def skip_ws(self) -> str:
        """The next non-blank character (consumed: no), ``""`` at the end of the file."""
        while True:
            self.pos = _WS.match(self.text, self.pos).end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.fill():
                return ""

    def expect(self, chars: str, what: str) -> str:
        c = self.skip_ws()
        if not c or c not in chars:
            raise self.error(f"expected {what}" + ("" if c else ", found the end of the file (truncated?)"), self.pos)
        self.pos += 1
        return c

    def value(self, *, key: bool = False) -> Any:
        """The next JSON value (a string where ``key``), consumed; refills the window as needed."""
        c = self.skip_ws()
        if key and c != '"':
            raise self.error("expected a string key" + ("" if c else ", found the end of the file (truncated?)"), self.pos)
        while True:
            try:
                if key:
                    val, end = json.decoder.scanstring(self.text, self.pos + 1)
                elif self.hooked:
                    val, end = self._decode_flat()
                else:
                    val, end = self.json.raw_decode(self.text, self.pos)
                # A number near the window's edge may be cut ("1." of "1.5"): read on to be sure.
                if end + _MARGIN <= len(self.text) or self.eof:
                    self.pos = end
                    return val
                err: tuple[str, int] | None = None
            except json.JSONDecodeError as exc:
                # Keep the message, not the exception: its traceback and text would form a cycle
                # that keeps this window's text alive while the build pauses the collector.
                err = (exc.msg, exc.pos)
            if not self.fill():
                assert err is not None
                msg, pos = err
                truncated = pos >= len(self.text) - 1 or "Unterminated" in msg
                raise self.error(msg + (" (the file ends inside it: truncated?)" if truncated else ""), pos)


def _members(w: _Window) -> Iterator[tuple[str, Any]]:
    w.expect("{", "a JSON object '{'")
    if w.skip_ws() == "}":
        w.pos += 1
        return
    while True:
        k = w.value(key=True)
        w.expect(":", "':'")
        yield k, w.value()
        if w.expect(",}", "',' or '}'") == "}":
            return


def _items(w: _Window) -> Iterator[Any]:
    w.expect("[", "a JSON array '['")
    if w.skip_ws() == "]":
        w.pos += 1
        return
    while True:
        yield w.value()
        if w.expect(",]", "',' or ']'") == "]":
            return


def _run(path: Path, encoding: str | None, chunk: int | None, hook: Callable[[list], Any], body: Callable) -> Iterator[Any]:
    w = _Window(Path(path), encoding, chunk or CHUNK_BYTES, hook)
    try:
        w.fill()
        yield from body(w)
        if w.skip_ws():
            raise w.error("extra data after the top-level value", w.pos)
    finally:
        w.close()


def iter_members(path: Path, encoding: str | None = None, *, hook: Callable[[list], Any] = dict,
                 chunk: int | None = None) -> Iterator[tuple[str, Any]]:
    """``(key, value)`` of each member of the file's top-level JSON object, in file order
    (duplicate keys included: the caller decides). ``hook``: ``object_pairs_hook`` for nested objects;
    ``chunk``: bytes read at a time (default :data:`CHUNK_BYTES`)."""
    return _run(path, encoding, chunk, hook, _members)


def iter_items(path: Path, encoding: str | None = None, *, hook: Callable[[list], Any] = dict,
               chunk: int | None = None) -> Iterator[Any]:
    """Each element of the file's top-level JSON array, in file order."""
    return _run(path, encoding, chunk, hook, _items)


def top_level_kind(path: Path) -> str:
    """``"{"``, ``"["`` or another first non-blank character of a JSON file (after a BOM)."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1].decode("latin-1")
