"""Readers that turn a source on disk into raw listing records (before media checks and splits).

A record is a dict: ``item_id``, ``product_id`` (or None), ``category`` (or None), ``title`` (or None),
``table`` (list of entities, ``[]`` when missing), ``image`` / ``video`` / ``audio`` (absolute path
strings or None) and ``media_explicit`` (the media kinds whose path the source named explicitly: a
missing file there is a counted problem, while a missing file at a conventional location is just
an absent modality). Listing-level problems are counted into ``skips``; whole-file problems raise
:class:`CatalogError` naming the file and line.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from bench.data.errors import CatalogError
from bench.data.pv import PvError, table_from_any
from bench.data.splits import SPLIT_FILES

META_INFO_NAMES = ("meta_info.jsonl", "meta_info.json")
ID_INFO_NAMES = ("id_info_dict.json", "id_info.json", "subset_v2_id_label.json")
FINE_GT_NAMES = ("product1m_product5m_test_id_label.json", "fine_grained_id_label.json")
LABEL_LIST_NAMES = ("label_list.json", "subset_v2_label_list.json")
MEDIA_DIRS = {"image": (("images", "image"), ".jpg"), "video": (("videos", "video"), ".mp4"), "audio": (("audios", "audio"), ".mp3")}
PRECOMPUTED_DIRS = {
    "video_npy_dir": ("video_feature", "video_features", "video_npy", "features/video"),
    "audio_npy_dir": ("audio_feature", "audio_features", "audio_npy", "features/audio"),
}


# --------------------------------------------------------------------------- helpers


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


def read_text(path: Path) -> str:
    """File text; invalid UTF-8 bytes survive as lone surrogates so one bad title spoils only itself."""
    try:
        return path.read_bytes().decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise CatalogError(f"cannot read: {exc.strerror}", path=path) from None


def load_json(path: Path) -> Any:
    """Parse a JSON file, raising :class:`CatalogError` with the line of a syntax error."""
    try:
        return json.loads(read_text(path), object_pairs_hook=_FirstWins)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=exc.lineno) from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    text = read_text(path)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line, object_pairs_hook=_FirstWins)
        except json.JSONDecodeError as exc:
            raise CatalogError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=lineno) from None
        if not isinstance(rec, dict):
            raise CatalogError(f"expected a JSON object per line, got {type(rec).__name__}", path=path, line=lineno)
        yield lineno, rec


def is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a lone surrogate: invalid bytes in the file, or a \udcxx escape
        return False


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def clean_title(v: Any, problems: set[str]) -> str | None:
    if _blank(v):
        return None
    s = v if isinstance(v, str) else str(v)
    if not is_utf8(s):
        problems.add("title_not_utf8")
        return None
    return s.strip()


def clean_label(v: Any) -> str | None:
    if _blank(v):
        return None
    s = str(int(v)) if isinstance(v, float) and v.is_integer() else str(v).strip()
    return s if is_utf8(s) else None


def clean_table(v: Any, problems: set[str]) -> list[dict[str, str]]:
    try:
        ents = table_from_any(v)
    except PvError:
        problems.add("pv_malformed")
        return []
    if not all(is_utf8(e["key"]) and is_utf8(e["value"]) for e in ents):
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


def read_id_list(path: Path) -> set[str]:
    """An id list: a JSON list, a JSON object keyed by id, or one id per line (first CSV/TSV field)."""
    if path.suffix == ".json":
        obj = load_json(path)
        if isinstance(obj, (list, dict)):
            return {str(x) for x in obj}
        raise CatalogError("expected a JSON list or object of ids", path=path)
    ids = set()
    for line in read_text(path).splitlines():
        tok = line.strip().split("\t")[0].split(",")[0].strip()
        if tok and tok.lower() not in ("item_id", "id"):
            ids.add(tok)
    return ids


def read_split_lists(root: Path) -> tuple[dict[str, set[str]], dict[str, str]]:
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
                lists[role] = read_id_list(hit)
                files[role] = str(hit)
                break
    return lists, files


# --------------------------------------------------------------------------- M5Product layout


def _meta_records(path: Path) -> Iterator[tuple[int | None, dict]]:
    if path.suffix == ".jsonl":
        yield from iter_jsonl(path)
        return
    obj = load_json(path)
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


def read_m5product(root: Path, skips: Counter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read the official release layout (also what ``bench data synth`` writes)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise CatalogError("not a directory", path=root)
    meta_path, id_path = _first(root, META_INFO_NAMES), _first(root, ID_INFO_NAMES)
    if meta_path is None and id_path is None:
        raise CatalogError(f"no annotation file found (expected one of {', '.join(META_INFO_NAMES + ID_INFO_NAMES)})", path=root)
    recs: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {"files": {}}

    if meta_path is not None:
        info["files"]["meta_info"] = str(meta_path)
        for lineno, rec in _meta_records(meta_path):
            iid = rec.get("item_id")
            if _blank(iid):
                raise CatalogError("record without item_id", path=meta_path, line=lineno)
            iid = str(iid).strip()
            if iid in recs or rec.get("__duplicate__"):
                skips["duplicate_item_id"] += 1
                continue
            r = new_record(iid)
            r["title"] = clean_title(rec.get("caption", rec.get("title")), r["problems"])
            r["category"] = clean_label(rec.get("label"))
            tab = rec.get("tabular", rec.get("pv"))
            r["table"] = None if tab is None else clean_table(tab, r["problems"])
            for kind in ("image", "video", "audio"):
                if kind in rec:  # named (or explicitly null): do not look in the conventional folder
                    r[kind] = resolve_media(rec[kind], root)
                    r["media_explicit"].add(kind)
            recs[iid] = r

    if id_path is not None:
        info["files"]["id_info"] = str(id_path)
        obj = load_json(id_path)
        if not isinstance(obj, dict):
            raise CatalogError("expected an object {item_id: {title, pv, label}}", path=id_path)
        for iid, rec in obj.items():
            iid = str(iid).strip()
            if not isinstance(rec, dict):
                raise CatalogError(f"entry {iid!r} is not an object", path=id_path)
            r = recs.get(iid)
            if r is None:
                r = recs[iid] = new_record(iid)
            # meta_info wins; id_info fills what it lacks (problems are counted once per listing).
            if r["title"] is None and "title" in rec:
                r["title"] = clean_title(rec.get("title"), r["problems"])
            if r["table"] is None and "pv" in rec:
                r["table"] = clean_table(rec.get("pv"), r["problems"])
            if r["category"] is None:
                r["category"] = clean_label(rec.get("label"))
        if getattr(obj, "duplicates", None):
            skips["duplicate_item_id"] += len(obj.duplicates)

    for r in recs.values():
        if r["table"] is None:
            r["table"] = []

    # Conventional media locations for kinds the annotation did not name.
    for kind, (dirs, ext) in MEDIA_DIRS.items():
        d = next((root / x for x in dirs if (root / x).is_dir()), None)
        if d is None:
            continue
        for r in recs.values():
            if kind not in r["media_explicit"]:
                p = d / f"{r['item_id']}{ext}"
                if p.exists():
                    r[kind] = str(p)

    fine_path = _first(root, FINE_GT_NAMES)
    if fine_path is not None:
        info["files"]["fine_grained_gt"] = str(fine_path)
        gt = load_json(fine_path)
        if not isinstance(gt, dict):
            raise CatalogError("expected an object {item_id: {title, label}}", path=fine_path)
        n = 0
        for iid, rec in gt.items():
            r = recs.get(str(iid).strip())
            lab = clean_label(rec.get("label") if isinstance(rec, dict) else rec)
            if r is not None and lab is not None:
                r["product_id"] = lab
                n += 1
        info["product_ids"] = "annotated" if n == len(recs) else f"annotated for {n} of {len(recs)} listings; item_id elsewhere"
    else:
        info["product_ids"] = "item_id (the source has no product annotation)"

    label_path = _first(root, LABEL_LIST_NAMES)
    if label_path is not None:
        labels = load_json(label_path)
        if not isinstance(labels, list):
            raise CatalogError("expected a JSON list of labels", path=label_path)
        info["label_list"] = [str(x) for x in labels]
        info["files"]["label_list"] = str(label_path)

    lists, files = read_split_lists(root)
    info["split_lists"] = lists
    info["files"].update({f"split_{k}": v for k, v in files.items()})

    pre: dict[str, Any] = {"image_tsv": None, "video_npy_dir": None, "audio_npy_dir": None}
    tsvs = sorted(list(root.glob("*.tsv")) + list((root / "features").glob("*.tsv")))
    if tsvs:
        pre["image_tsv"] = str(tsvs[0])
    for key, names in PRECOMPUTED_DIRS.items():
        for n in names:
            if (root / n).is_dir() and any((root / n).glob("*.npy")):
                pre[key] = str(root / n)
                break
    info["precomputed"] = pre

    gen_info = root / "info.json"
    if gen_info.is_file():
        gi = load_json(gen_info)
        if isinstance(gi, dict):
            info["generator_info"] = dict(gi)
    return list(recs.values()), info


# --------------------------------------------------------------------------- manifests

MANIFEST_REQUIRED = ("item_id", "category")
MANIFEST_COLUMNS = ("item_id", "product_id", "category", "title", "table", "image", "video", "audio")


def _manifest_rows(path: Path) -> tuple[list[str], Iterator[tuple[int | None, dict]]]:
    suf = path.suffix.lower()
    if suf in (".csv", ".tsv"):
        text = read_text(path)
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suf == ".tsv" else ",")
        cols = [c.strip() for c in (reader.fieldnames or [])]

        def gen() -> Iterator[tuple[int | None, dict]]:
            for row in reader:
                yield reader.line_num, {k.strip(): v for k, v in row.items() if k is not None}

        return cols, gen()
    if suf in (".jsonl", ".ndjson"):
        recs = list(iter_jsonl(path))
        cols = sorted({k for _, r in recs for k in r})
        return cols, iter(recs)
    if suf == ".json":
        obj = load_json(path)
        if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
            raise CatalogError("expected a JSON list of records", path=path)
        return sorted({k for r in obj for k in r}), iter((None, r) for r in obj)
    if suf == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise CatalogError(f"unreadable Parquet file: {exc}", path=path) from None
        return list(table.column_names), iter((i + 1, r) for i, r in enumerate(table.to_pylist()))
    raise CatalogError("unsupported manifest type (use .csv, .tsv, .jsonl, .json or .parquet)", path=path)


def read_manifest(path: Path, skips: Counter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A user's catalog as one table with columns ``item_id, product_id, category, title, table,
    image, video, audio`` (``label`` is accepted for ``category``). Media paths may be relative to the
    manifest; ``table`` is a JSON object/list or a pv string."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise CatalogError("manifest not found", path=path)
    cols, rows = _manifest_rows(path)
    label_col = "category" if "category" in cols else "label" if "label" in cols else None
    for req in MANIFEST_REQUIRED:
        if (req == "category" and label_col is None) or (req != "category" and req not in cols):
            raise CatalogError(f"missing required column {req!r} (columns: {', '.join(cols) or 'none'})", path=path, line=1)
    base = path.parent
    recs: dict[str, dict[str, Any]] = {}
    has_product = "product_id" in cols
    for lineno, row in rows:
        iid = row.get("item_id")
        if _blank(iid):
            skips["item_id_missing"] += 1
            continue
        iid = str(int(iid)) if isinstance(iid, float) and iid.is_integer() else str(iid).strip()
        if iid in recs:
            skips["duplicate_item_id"] += 1
            continue
        r = new_record(iid)
        r["category"] = clean_label(row.get(label_col))
        r["product_id"] = clean_label(row.get("product_id")) if has_product else None
        r["title"] = clean_title(row.get("title"), r["problems"])
        r["table"] = clean_table(row.get("table"), r["problems"]) if not _blank(row.get("table")) else []
        for kind in ("image", "video", "audio"):
            r[kind] = resolve_media(row.get(kind), base)
            r["media_explicit"].add(kind)
        recs[iid] = r
    info = {"files": {"manifest": str(path)},
            "product_ids": "annotated" if has_product else "item_id (the manifest has no product_id column)",
            "precomputed": {"image_tsv": None, "video_npy_dir": None, "audio_npy_dir": None}}
    lists, files = read_split_lists(base)
    info["split_lists"], info["files"] = lists, dict(info["files"], **{f"split_{k}": v for k, v in files.items()})
    return list(recs.values()), info
