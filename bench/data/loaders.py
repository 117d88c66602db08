"""Readers that turn a source on disk into raw listing records (before media checks and splits).

A record is a dict: ``item_id``, ``product_id`` (or None), ``category`` (or None), ``title`` (or None),
``table`` (list of entities, ``[]`` when missing), ``image`` / ``video`` / ``audio`` (absolute path
strings or None) and ``media_explicit`` (the media kinds whose path the source named explicitly: a
missing file there is a counted problem, while a missing file at a conventional location is just
an absent modality). Listing-level problems are counted into ``skips`` (a :class:`Problems`, which also keeps the affected
ids per reason); whole-file problems raise :class:`CatalogError` naming the file and line.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from bench.data.errors import CatalogError
from bench.data.pv import PvError, table_from_any
from bench.data.release import SUBSET_GT_NAMES
from bench.data.splits import SPLIT_FILES

META_INFO_NAMES = ("meta_info.jsonl", "meta_info.json")
ID_INFO_NAMES = ("id_info_dict.json", "id_info.json", "subset_v2_id_label.json")
FINE_GT_NAMES = ("product1m_product5m_test_id_label.json", "fine_grained_id_label.json")
LABEL_LIST_NAMES = ("label_list.json", "subset_v2_label_list.json")
MEDIA_DIRS = {"image": (("images", "image"), ".jpg"), "video": (("videos", "video"), ".mp4"), "audio": (("audios", "audio"), ".mp3")}


# --------------------------------------------------------------------------- helpers


class Problems(Counter):
    """Listing-level problems: a count per reason (a plain ``Counter`` to its readers) plus, in
    :attr:`ids`, the affected item ids per reason (what ``bench data validate --list`` prints)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ids: dict[str, list[str]] = {}

    def add(self, reason: str, item: str) -> None:
        """Count one listing (``item``: its id, or ``line N`` where it has none) under ``reason``."""
        self[reason] += 1
        self.ids.setdefault(reason, []).append(item)


class _FirstWins(dict):
    """A JSON object that keeps the first of duplicate keys and remembers the duplicates."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.duplicates: list[str] = []
        for k, v in pairs:
            if k in self:
                self.duplicates.append(k)
            else:
                self[k] = v


def check_encoding(encoding: str) -> str:
    """The codec's canonical name, or :class:`CatalogError` for an unknown encoding."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise CatalogError(f"unknown text encoding {encoding!r} (e.g. utf-8, gbk, gb18030, big5, latin-1)") from None


def read_text(path: Path, encoding: str | None = None, *, strict: bool = False) -> str:
    """A text file's contents, decoded with ``encoding`` (default UTF-8; a UTF-8 BOM is dropped).

    Lenient (``strict`` false and no ``encoding``): invalid UTF-8 bytes survive as lone surrogates, so
    one bad title in a release file spoils only itself. Strict (a manifest, or any explicit
    ``encoding``): a decode failure raises :class:`CatalogError` with the line and byte offset and
    suggests ``--encoding``, since a whole file in another encoding otherwise turns into a catalog of
    garbled labels.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"cannot read: {exc.strerror}", path=path) from None
    if encoding is None and not strict:
        text = data.decode("utf-8", errors="surrogateescape")
    else:
        enc = check_encoding(encoding or "utf-8")
        try:
            text = data.decode(enc)
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            bad = data[exc.start : min(exc.end, exc.start + 4)].hex(" ")
            raise CatalogError(f"not valid {enc} text at byte {exc.start} (bytes {bad}); if the file uses another "
                               f"encoding, pass it with --encoding (e.g. --encoding gbk)", path=path, line=line) from None
    return text[1:] if text.startswith("\ufeff") else text


def load_json(path: Path, encoding: str | None = None, *, strict: bool = False) -> Any:
    """Parse a JSON file, raising :class:`CatalogError` with the line of a syntax error."""
    try:
        return json.loads(read_text(path, encoding, strict=strict), object_pairs_hook=_FirstWins)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=exc.lineno) from None


def jsonl_record(line: str, path: Path, lineno: int) -> dict:
    """One JSON Lines record (first of a repeated key wins); a bad line raises a one-line CatalogError."""
    try:
        rec = json.loads(line, object_pairs_hook=_FirstWins)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=lineno) from None
    if not isinstance(rec, dict):
        raise CatalogError(f"expected a JSON object per line, got {type(rec).__name__}", path=path, line=lineno)
    return rec


def iter_jsonl(path: Path, encoding: str | None = None, *, strict: bool = False) -> Iterator[tuple[int, dict]]:
    text = read_text(path, encoding, strict=strict)
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield lineno, jsonl_record(line, path, lineno)


def is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a lone surrogate: invalid bytes in the file, or a \udcxx escape
        return False


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def clean_title(v: Any, problems: set[str]) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None  # no title given: an absent modality, not a problem
    s = v if isinstance(v, str) else str(v)
    if not s.strip():
        problems.add("title_empty")  # a title field that is there but blank: a broken listing
        return None
    if not is_utf8(s):
        problems.add("title_not_utf8")
        return None
    return s.strip()


def clean_label(v: Any, problems: set[str] | None = None) -> str | None:
    if _blank(v):
        return None
    s = str(int(v)) if isinstance(v, float) and v.is_integer() else str(v).strip()
    if is_utf8(s):
        return s
    if problems is not None:
        problems.add("label_not_utf8")
    return None


def clean_table(v: Any, problems: set[str]) -> list[dict[str, str]]:
    # A pv string's keys and values are its own substrings: one check of the whole string decides
    # (a JSON text's escapes can produce invalid text, so its entities are checked one by one).
    whole = isinstance(v, str) and v.strip()[:1] not in ("{", "[")
    if whole and len(v) > 1 and not is_utf8(v):
        problems.add("pv_malformed")
        return []
    try:
        ents = table_from_any(v)
    except PvError:
        problems.add("pv_malformed")
        return []
    if not whole and not all(is_utf8(e["key"]) and is_utf8(e["value"]) for e in ents):
        problems.add("pv_malformed")
        return []
    return ents


def resolve_media(v: Any, base: Path) -> str | None:
    if _blank(v):
        return None
    # normpath, not Path.resolve: resolving symlinks costs a syscall per path component and a
    # catalog has one path per listing and modality; ``base`` is already absolute.
    return os.path.normpath(os.path.join(str(base), os.path.expanduser(str(v))))


def new_record(item_id: str) -> dict[str, Any]:
    return {"item_id": item_id, "product_id": None, "category": None, "title": None, "table": None,
            "image": None, "video": None, "audio": None, "media_explicit": set(), "problems": set()}


def _first(root: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (root / n).is_file():
            return root / n
    return None


def read_id_list(path: Path, encoding: str | None = None) -> set[str]:
    """An id list: a JSON list, a JSON object keyed by id, or one id per line (first CSV/TSV field)."""
    if path.suffix == ".json":
        obj = load_json(path, encoding)
        if isinstance(obj, (list, dict)):
            return {str(x) for x in obj}
        raise CatalogError("expected a JSON list or object of ids", path=path)
    ids = set()
    for line in read_text(path, encoding).splitlines():
        tok = line.strip().split("\t")[0].split(",")[0].strip()
        if tok and tok.lower() not in ("item_id", "id"):
            ids.add(tok)
    return ids


def read_split_lists(root: Path, encoding: str | None = None) -> tuple[dict[str, set[str]], dict[str, str]]:
    """Split id lists under ``root/splits`` (names in :data:`SPLIT_FILES`, ``.txt``/``.json``/``.csv``)."""
    lists: dict[str, set[str]] = {}
    files: dict[str, str] = {}
    d = root / "splits"
    if not d.is_dir():
        return lists, files
    for role, names in SPLIT_FILES.items():
        for n in names:
            hit = next((d / f"{n}{ext}" for ext in (".txt", ".json", ".csv", ".tsv") if (d / f"{n}{ext}").is_file()), None)
            if hit is not None:
                lists[role] = read_id_list(hit, encoding)
                files[role] = str(hit)
                break
    return lists, files


def closest_column(name: str, known: tuple[str, ...]) -> str | None:
    """The known column an unrecognised one most likely meant (``Title`` -> ``title``,
    ``img_path`` -> ``image``), or None. Case, separators and path/url suffixes are ignored first,
    then difflib picks the closest remaining name."""
    import re

    low = name.strip().lower()
    if low in known:
        return low
    stem = re.sub(r"[\s\-]+", "_", low)
    stem = re.sub(r"_?(path|paths|file|filename|url|uri|name|str|text)$", "", stem) or stem
    by_alias = {"img": "image", "pic": "image", "picture": "image", "photo": "image", "vid": "video",
                "clip": "video", "sound": "audio", "wav": "audio", "mp3": "audio", "id": "item_id", "item": "item_id",
                "product": "product_id", "sku": "product_id", "cat": "category", "class": "category",
                "name": "title", "caption": "title", "pv": "table", "tab": "table", "attributes": "table",
                "properties": "table", "specs": "table"}
    for cand in (stem, stem.replace("_", "")):
        if cand in known:
            return cand
        if by_alias.get(cand) in known:
            return by_alias[cand]
    close = difflib.get_close_matches(stem, known, n=1, cutoff=0.6)
    return close[0] if close else None


def column_hints(unknown: list[str], known: tuple[str, ...]) -> dict[str, str | None]:
    """Unrecognised column -> the closest known column (or None), in the order first seen."""
    return {c: closest_column(c, known) for c in unknown}


# --------------------------------------------------------------------------- M5Product layout

#: Keys a release record may carry (meta_info, then the SCALE code's id_info); others are reported.
META_KEYS = ("item_id", "caption", "title", "label", "tabular", "pv", "image", "video", "audio")
ID_INFO_KEYS = ("title", "pv", "label")
#: The files of a release, so one passed where the release folder is expected is recognised.
RELEASE_FILE_NAMES = META_INFO_NAMES + ID_INFO_NAMES + FINE_GT_NAMES + LABEL_LIST_NAMES + SUBSET_GT_NAMES


def release_folder_of(path: Path) -> Path | None:
    """The release folder ``path`` (a file) belongs to, when it is one of a release's own files
    (an annotation file, ``info.json`` or a split list next to an annotation file), else None."""
    if path.name in RELEASE_FILE_NAMES:
        return path.parent
    for folder in (path.parent, path.parent.parent if path.parent.name == "splits" else None):
        if folder is not None and _first(folder, META_INFO_NAMES + ID_INFO_NAMES) is not None and \
                (path.name == "info.json" or folder != path.parent):
            return folder
    return None


def _meta_records(path: Path, encoding: str | None) -> Iterator[tuple[int | None, dict]]:
    if path.suffix == ".jsonl":
        yield from iter_jsonl(path, encoding)
        return
    obj = load_json(path, encoding)
    if isinstance(obj, dict) and isinstance(obj.get("meta_info"), list):
        obj = obj["meta_info"]
    if isinstance(obj, list):
        for i, rec in enumerate(obj):
            if not isinstance(rec, dict):
                raise CatalogError(f"record {i} is not a JSON object", path=path)
            yield None, rec
    elif isinstance(obj, dict):
        for iid, rec in obj.items():
            if not isinstance(rec, dict):
                raise CatalogError(f"record {iid!r} is not a JSON object", path=path)
            yield None, dict(rec, item_id=rec.get("item_id", iid))
        for iid in getattr(obj, "duplicates", []):
            yield None, {"item_id": iid, "__duplicate__": True}
    else:
        raise CatalogError("expected a list of records or an object keyed by item_id", path=path)


def _gt_labels(path: Path, encoding: str | None) -> dict[str, str]:
    """``{item_id: label}`` of a ground-truth file (``{item_id: {"label": ...}}`` or ``{item_id: label}``);
    entries without a usable label are left out (they are nobody's positive)."""
    gt = load_json(path, encoding)
    if not isinstance(gt, dict):
        raise CatalogError("expected an object {item_id: {title, label}}", path=path)
    out: dict[str, str] = {}
    for iid, rec in gt.items():
        lab = clean_label(rec.get("label") if isinstance(rec, dict) else rec)
        if lab is not None:
            out[str(iid).strip()] = lab
    return out


def _note_unknown(seen: dict[str, None], rec: dict, known: tuple[str, ...]) -> None:
    for k in rec:
        if k not in known and k != "__duplicate__" and k not in seen:
            seen[k] = None


def read_m5product(root: Path, skips: Problems, encoding: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read the official release layout (also what ``bench data synth`` writes) into a list of records.

    ``encoding``: the annotation files' text encoding; without it they are read as UTF-8, leniently
    (a bad title or label is one listing's problem). :func:`bench.data.release_read.open_m5product`
    gives the same records as a stream."""
    from bench.data.release_read import open_m5product

    recs, info = open_m5product(root, skips, encoding)
    return list(recs), info


# --------------------------------------------------------------------------- manifests

MANIFEST_REQUIRED = ("item_id", "category")
MANIFEST_COLUMNS = ("item_id", "product_id", "category", "title", "table", "image", "video", "audio")
#: What a manifest may name: its columns plus ``label``, accepted for ``category``.
MANIFEST_KNOWN = MANIFEST_COLUMNS + ("label",)


def _manifest_rows(path: Path, encoding: str | None) -> tuple[list[str], Iterator[tuple[int | None, dict]]]:
    suf = path.suffix.lower()
    if suf in (".csv", ".tsv"):
        text = read_text(path, encoding, strict=True)
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suf == ".tsv" else ",")
        try:
            cols = [c.strip() for c in (reader.fieldnames or [])]
        except csv.Error as exc:
            raise CatalogError(f"unreadable header: {exc}", path=path, line=1) from None

        def gen() -> Iterator[tuple[int | None, dict]]:
            try:
                for row in reader:
                    # Extra cells beyond the header land under the key None: ignored.
                    yield reader.line_num, {k.strip(): v for k, v in row.items() if k is not None}
            except csv.Error as exc:
                raise CatalogError(f"unreadable CSV row: {exc}", path=path, line=reader.line_num) from None

        return cols, gen()
    if suf in (".jsonl", ".ndjson"):
        recs = list(iter_jsonl(path, encoding, strict=True))
        cols = list(dict.fromkeys(k for _, r in recs for k in r))
        return cols, iter(recs)
    if suf == ".json":
        obj = load_json(path, encoding, strict=True)
        if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
            raise CatalogError("expected a JSON list of records", path=path)
        return list(dict.fromkeys(k for r in obj for k in r)), iter((None, r) for r in obj)
    if suf == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise CatalogError(f"unreadable Parquet file: {exc}", path=path) from None
        return list(table.column_names), iter((i + 1, r) for i, r in enumerate(table.to_pylist()))
    raise CatalogError("unsupported manifest type (use .csv, .tsv, .jsonl, .json or .parquet)", path=path)


def _missing_column(req: str, cols: list[str], path: Path) -> CatalogError:
    accepted = ("category", "label") if req == "category" else (req,)
    guess = next(((c, closest_column(c, MANIFEST_KNOWN)) for c in cols
                  if c not in MANIFEST_KNOWN and closest_column(c, MANIFEST_KNOWN) in accepted), None)
    hint = f"; column {guess[0]!r} is not recognised, did you mean {guess[1]!r}?" if guess else ""
    return CatalogError(f"missing required column {req!r} (columns: {', '.join(cols) or 'none'}){hint}", path=path, line=1)


def read_manifest(path: Path, skips: Problems, encoding: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A user's catalog as one table with columns ``item_id, product_id, category, title, table,
    image, video, audio`` (``label`` is accepted for ``category``). Media paths may be relative to the
    manifest; ``table`` is a JSON object/list or a pv string. Text files are decoded with ``encoding``
    (default UTF-8), strictly: a decode error names the file, line and byte offset."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise CatalogError("manifest not found" if not path.exists() else "not a file", path=path)
    cols, rows = _manifest_rows(path, encoding)
    label_col = "category" if "category" in cols else "label" if "label" in cols else None
    for req in MANIFEST_REQUIRED:
        if (req == "category" and label_col is None) or (req != "category" and req not in cols):
            raise _missing_column(req, cols, path)
    unknown = [c for c in cols if c not in MANIFEST_KNOWN]
    base = path.parent
    recs: dict[str, dict[str, Any]] = {}
    has_product = "product_id" in cols
    for i, (lineno, row) in enumerate(rows):
        iid = row.get("item_id")
        if _blank(iid):
            skips.add("item_id_missing", f"line {lineno}" if lineno else f"record {i}")
            continue
        iid = str(int(iid)) if isinstance(iid, float) and iid.is_integer() else str(iid).strip()
        if iid in recs:
            skips.add("duplicate_item_id", iid)
            continue
        r = new_record(iid)
        r["category"] = clean_label(row.get(label_col), r["problems"])
        r["product_id"] = clean_label(row.get("product_id")) if has_product else None
        r["title"] = clean_title(row.get("title"), r["problems"]) if "title" in cols else None
        r["table"] = clean_table(row.get("table"), r["problems"]) if not _blank(row.get("table")) else []
        for kind in ("image", "video", "audio"):
            r[kind] = resolve_media(row.get(kind), base)
            r["media_explicit"].add(kind)
        recs[iid] = r
    info = {"files": {"manifest": str(path)},
            "product_ids": "annotated" if has_product else "item_id (the manifest has no product_id column)",
            "precomputed": {"image_tsv": None, "video_npy_dir": None, "audio_npy_dir": None},
            "unknown_columns": unknown, "column_hints": column_hints(unknown, MANIFEST_KNOWN)}
    lists, files = read_split_lists(base, encoding)
    info["split_lists"], info["files"] = lists, dict(info["files"], **{f"split_{k}": v for k, v in files.items()})
    return list(recs.values()), info
