"""The M5Product release layout read as a stream of listing records.

:func:`open_m5product` returns an iterator of records (:func:`bench.data.loaders.new_record`) and
the source info; the records come one at a time, so a 6.3M-listing annotation is never held whole:

* ``id_info_dict.json`` alone (the SCALE code's file): read member by member
  (:mod:`bench.data.jsonstream`);
* ``meta_info.jsonl``: read line by line; ``meta_info.json`` (a list or an object) is parsed whole;
* both: meta_info is streamed and id_info, held in memory, fills what a meta_info record lacks
  (the synthetic catalog's layout), then adds its own listings.

The info's ``product_ids`` and ``unknown_columns`` are complete once the records are exhausted.
The rules are those of the whole-file reader this replaced: meta_info wins, a duplicate item id
keeps its first listing, an item id that differs from an earlier one only by surrounding blanks
counts as a duplicate.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from bench.data.errors import CatalogError
from bench.data.loaders import (
    FINE_GT_NAMES,
    ID_INFO_KEYS,
    ID_INFO_NAMES,
    LABEL_LIST_NAMES,
    MEDIA_DIRS,
    META_INFO_NAMES,
    META_KEYS,
    RELEASE_FILE_NAMES,
    Problems,
    _blank,
    _first,
    _FirstWins,
    _gt_labels,
    _meta_records,
    _note_unknown,
    clean_label,
    clean_table,
    clean_title,
    column_hints,
    jsonl_record,
    load_json,
    new_record,
    read_id_list,
    read_split_lists,
    read_text,
    release_folder_of,
    resolve_media,
)
from bench.data.pv_arrow import PvText
from bench.data.release import (
    SUBSET_GT_NAMES,
    find_precomputed_dirs,
    find_region_tsvs,
    find_release_lists,
    release_list_names,
    unrecognised_entries,
)

#: id_info members read (and their ids copied together, :func:`_compact_ids`) at a time.
COMPACT_EVERY = 20_000


def iter_jsonl_lines(path: Path, encoding: str | None = None) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` of a JSON-lines file, read line by line (lines as
    :meth:`str.splitlines` counts them; decoding as :func:`bench.data.loaders.read_text`)."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 (closed in the finally below)
    except OSError as exc:
        raise CatalogError(f"cannot read: {exc.strerror}", path=path) from None
    fh = io.TextIOWrapper(raw, encoding=encoding or "utf-8", errors="surrogateescape" if encoding is None else "strict",
                          newline="")
    lineno = 0
    try:
        for chunk in fh:
            if lineno == 0 and chunk.startswith("\ufeff"):
                chunk = chunk[1:]
            for line in chunk.splitlines() or [""]:
                lineno += 1
                if line.strip():
                    yield lineno, jsonl_record(line, path, lineno)
    except UnicodeDecodeError:
        read_text(path, encoding)  # raises the whole-file reader's error: line and byte offset
        raise
    finally:
        fh.close()


def _check_folder(root: Path) -> tuple[Path | None, Path | None]:
    if not root.is_dir():
        if root.is_file():
            folder = release_folder_of(root)
            hint = (f"pass the release folder instead: m5product:{folder}" if folder is not None
                    else "pass a release folder, or use manifest:PATH for a table of listings")
            raise CatalogError(f"is a file, not a release folder; {hint}", path=root)
        raise CatalogError("not a directory", path=root)
    meta_path, id_path = _first(root, META_INFO_NAMES), _first(root, ID_INFO_NAMES)
    if meta_path is None and id_path is None:
        raise CatalogError(f"no annotation file found (expected one of {', '.join(META_INFO_NAMES + ID_INFO_NAMES)})",
                           path=root)
    return meta_path, id_path


def _fill_from_id_info(r: dict[str, Any], rec: dict, titled: bool, defer_pv: bool = False) -> None:
    """id_info fills what the listing lacks (problems are counted once per listing). ``defer_pv``:
    leave a pv string to the batch (:class:`~bench.data.pv_arrow.PvText`)."""
    if r["title"] is None and "title" in rec:
        found: set[str] = set()
        r["title"] = clean_title(rec.get("title"), found)
        if titled:  # meta_info said "no title": id_info's "" is the same absence
            found.discard("title_empty")
        r["problems"] |= found
    if r["table"] is None and "pv" in rec:
        pv = rec.get("pv")
        r["table"] = PvText(pv) if defer_pv and type(pv) is str else clean_table(pv, r["problems"])
    if r["category"] is None:
        r["category"] = clean_label(rec.get("label"), r["problems"])


def _meta_record(rec: dict, root: Path) -> tuple[dict[str, Any], bool]:
    iid = str(rec.get("item_id")).strip()
    r = new_record(iid)
    r["title"] = clean_title(rec.get("caption", rec.get("title")), r["problems"])
    r["category"] = clean_label(rec.get("label"), r["problems"])
    tab = rec.get("tabular", rec.get("pv"))
    r["table"] = None if tab is None else clean_table(tab, r["problems"])
    for kind in ("image", "video", "audio"):
        if kind in rec:  # named (or explicitly null): do not look in the conventional folder
            r[kind] = resolve_media(rec[kind], root)
            r["media_explicit"].add(kind)
    return r, ("caption" in rec or "title" in rec)


class _Finisher:
    """The per-listing steps after the annotation: defaults, conventional media, product ids."""

    def __init__(self, root: Path, gt: dict[str, str] | None) -> None:
        self.gt, self.annotated = gt, 0
        self.dirs = {}
        for kind, (dirs, ext) in MEDIA_DIRS.items():
            d = next((root / x for x in dirs if (root / x).is_dir()), None)
            if d is not None:
                self.dirs[kind] = (d, ext)

    def __call__(self, r: dict[str, Any]) -> dict[str, Any]:
        if r["table"] is None:
            r["table"] = []
        if r["title"] is not None:
            r["problems"].discard("title_empty")  # another source gave the title
        if r["category"] is not None:
            r["problems"].discard("label_not_utf8")
        # Every M5Product listing has an image, so an image missing from the image folder is a broken
        # listing (its path is kept and the media check counts it); video and audio exist for some only.
        for kind, (d, ext) in self.dirs.items():
            if kind not in r["media_explicit"]:
                p = d / f"{r['item_id']}{ext}"
                if kind == "image" or p.exists():
                    r[kind] = str(p)
        if self.gt is not None:
            lab = self.gt.get(r["item_id"])
            if lab is not None:
                r["product_id"] = lab
                self.annotated += 1
        return r


def _id_info_whole(id_path: Path, encoding: str | None, unknown: dict[str, None]) -> _FirstWins:
    obj = load_json(id_path, encoding)
    if not isinstance(obj, dict):
        raise CatalogError("expected an object {item_id: {title, pv, label}}", path=id_path)
    for iid, rec in obj.items():
        if not isinstance(rec, dict):
            raise CatalogError(f"entry {str(iid).strip()!r} is not an object", path=id_path)
        _note_unknown(unknown, rec, ID_INFO_KEYS)
    return obj


def _records(root: Path, meta_path: Path | None, id_path: Path | None, skips: Problems, encoding: str | None,
             unknown: dict[str, None], unknown_id: dict[str, None], finish: _Finisher,
             defer_pv: bool) -> Iterator[dict[str, Any]]:
    seen: dict[str, None] = {}
    side = _id_info_whole(id_path, encoding, unknown_id) if meta_path is not None and id_path is not None else None
    if meta_path is not None:
        recs = (iter_jsonl_lines(meta_path, encoding) if meta_path.suffix == ".jsonl"
                else _meta_records(meta_path, encoding))
        for i, (lineno, rec) in enumerate(recs):
            _note_unknown(unknown, rec, META_KEYS)
            if _blank(rec.get("item_id")):
                skips.add("item_id_missing", f"line {lineno}" if lineno else f"record {i}")
                continue
            r, titled = _meta_record(rec, root)
            if r["item_id"] in seen or rec.get("__duplicate__"):
                skips.add("duplicate_item_id", r["item_id"])
                continue
            seen[r["item_id"]] = None
            if side is not None and r["item_id"] in side:
                _fill_from_id_info(r, side[r["item_id"]], titled)
            yield finish(r)
        if side is not None:
            for iid, rec in side.items():
                if iid.strip() not in seen:
                    seen[iid.strip()] = None
                    r = new_record(iid.strip())
                    _fill_from_id_info(r, rec, False)
                    yield finish(r)
            for iid in side.duplicates:
                skips.add("duplicate_item_id", str(iid).strip())
        return
    yield from _id_info_stream(id_path, encoding, unknown_id, seen, skips, finish, defer_pv)


def _id_info_stream(id_path: Path, encoding: str | None, unknown: dict[str, None], seen: dict[str, None],
                    skips: Problems, finish: _Finisher, defer_pv: bool) -> Iterator[dict[str, Any]]:
    from bench.data.jsonstream import iter_members, top_level_kind

    if top_level_kind(id_path) != "{":
        load_json(id_path, encoding)  # a syntax error is reported as the whole-file reader does
        raise CatalogError("expected an object {item_id: {title, pv, label}}", path=id_path)
    dups: list[str] = []
    members = iter_members(id_path, encoding, hook=_FirstWins)
    while chunk := list(islice(members, COMPACT_EVERY)):
        for iid, (_, rec) in zip(_compact_ids([k.strip() for k, _ in chunk]), chunk):
            if not isinstance(rec, dict):
                raise CatalogError(f"entry {iid!r} is not an object", path=id_path)
            _note_unknown(unknown, rec, ID_INFO_KEYS)
            if iid in seen:
                dups.append(iid)
                continue
            seen[iid] = None
            r = new_record(iid)
            _fill_from_id_info(r, rec, False, defer_pv)
            yield finish(r)
    for iid in dups:
        skips.add("duplicate_item_id", iid)


def _compact_ids(ids: list[str]) -> list[str]:
    """Fresh copies of ``ids``, allocated one after another: the ids live as long as the catalog,
    and left where the parser put them (between the batch's titles and tables, which are freed)
    they would keep nearly all of the parser's memory from being reused."""
    fresh = "\x00".join(ids).split("\x00")
    if len(fresh) != len(ids):  # an id holds the separator
        fresh = [i.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass") for i in ids]
    return fresh


def open_m5product(root: Path, skips: Problems, encoding: str | None = None, *,
                   defer_pv: bool = False) -> tuple[Iterator[dict[str, Any]], dict[str, Any]]:
    """``(records, info)`` of a release folder; ``records`` is lazy and fills the rest of ``info``
    (``product_ids``, ``unknown_columns``, ``column_hints``) when exhausted. ``defer_pv``: an
    id_info pv string is left to the catalog build, which parses a batch of them at once (the
    record's ``table`` is then a :class:`~bench.data.pv_arrow.PvText`)."""
    root = Path(root).expanduser().resolve()
    meta_path, id_path = _check_folder(root)
    info: dict[str, Any] = {"files": {}}
    if meta_path is not None:
        info["files"]["meta_info"] = str(meta_path)
    if id_path is not None:
        info["files"]["id_info"] = str(id_path)
    fine_path = _first(root, FINE_GT_NAMES)
    gt = None
    if fine_path is not None:
        info["files"]["fine_grained_gt"] = str(fine_path)
        gt = _gt_labels(fine_path, encoding)
        info["gt_labels"] = {"fine": gt}
    subset_gt = _first(root, SUBSET_GT_NAMES)
    if subset_gt is not None:
        # The subset's own ground truth: its keys are the subset, its labels count the positives of
        # the subset's coarse task (also where it is the annotation file read above).
        info["files"]["subset_gt"] = str(subset_gt)
        info.setdefault("gt_labels", {})["subset"] = _gt_labels(subset_gt, encoding)
    label_path = _first(root, LABEL_LIST_NAMES)
    if label_path is not None:
        labels = load_json(label_path, encoding)
        if not isinstance(labels, list):
            raise CatalogError("expected a JSON list of labels", path=label_path)
        info["label_list"] = [str(x) for x in labels]
        info["files"]["label_list"] = str(label_path)
    _release_files(root, info, encoding)
    finish = _Finisher(root, gt)
    unknown: dict[str, None] = {}
    unknown_id: dict[str, None] = {}

    def records() -> Iterator[dict[str, Any]]:
        n = 0
        for r in _records(root, meta_path, id_path, skips, encoding, unknown, unknown_id, finish, defer_pv):
            n += 1
            yield r
        if gt is not None:
            info["product_ids"] = ("annotated" if finish.annotated == n
                                   else f"annotated for {finish.annotated} of {n} listings; item_id elsewhere")
        else:
            info["product_ids"] = "item_id (the source has no product annotation)"
        names = list(unknown) + [k for k in unknown_id if k not in unknown]
        info["unknown_columns"] = names
        info["column_hints"] = column_hints(names, META_KEYS)

    return records(), info


def _release_files(root: Path, info: dict[str, Any], encoding: str | None) -> None:
    """Split lists, precomputed features, unrecognised entries and the generator's info.json."""
    lists, files = read_split_lists(root, encoding)
    release_lists = {}
    for role, path in find_release_lists(root).items():
        release_lists[role] = read_id_list(path, encoding)
        files.setdefault(role, str(path))
        lists.setdefault(role, release_lists[role])  # the harness's splits/ name wins where both exist
    info["split_lists"] = lists
    info["release_lists"] = sorted(release_lists)
    info["files"].update({f"split_{k}": v for k, v in files.items()})

    shards, _ = find_region_tsvs(root)
    pre: dict[str, Any] = {"image_tsv": shards[0] if shards else None, **find_precomputed_dirs(root)}
    if len(shards) > 1:
        pre["image_tsv_shards"] = shards
    info["precomputed"] = pre
    used = set(info["files"].values()) | set(shards) | {v for v in pre.values() if isinstance(v, str)}
    used |= {str(root / d) for dirs, _ in MEDIA_DIRS.values() for d in dirs} | {str(root / "splits"), str(root / "info.json")}
    used |= {str(root / n) for n in RELEASE_FILE_NAMES + release_list_names()}  # known names, read or shadowed
    info["unrecognised_files"] = unrecognised_entries(root, used)

    gen_info = root / "info.json"
    if gen_info.is_file():
        gi = load_json(gen_info)
        if isinstance(gi, dict):
            info["generator_info"] = dict(gi)
