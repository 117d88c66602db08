"""Listing records -> the catalog's Arrow table, in bounded batches.

Pass 1 takes the records :data:`BATCH_ROWS` at a time: drops unlabelled listings, counts problems,
checks media, writes the listing columns as Arrow record batches (in memory for a catalog of one
batch, else to ``staging.arrow`` in the work folder) and keeps only compact per-row arrays (ids,
category codes, modality presence). The split columns need every row, so pass 2 reads the
batches back, adds them and writes ``catalog.arrow``, which the catalog then memory-maps.

The fingerprint hashes, per row, the JSON text ``json.dumps(row, sort_keys=True,
ensure_ascii=False)`` of the finished row (media as ``[relative path, size, sha1]``). Pass 1 writes
the parts of that text that it knows (everything but the split columns, three strings per row) and
pass 2 joins them with the split values in Arrow, so the bytes hashed are those of the row-by-row
recipe and existing fingerprints stay as they were.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench.data.loaders import Problems
from bench.data.pv_arrow import TABLE_TYPE, PvText, merge_tables, parse_pv_batch
from bench.data.schema import FEATURES, MEDIA_COLUMNS

BATCH_ROWS = 20_000
LISTING_COLUMNS = ("item_id", "product_id", "category", "title", "table", "image", "video", "audio")
_ENC = json.encoder.encode_basestring  # what json.dumps(..., ensure_ascii=False) applies to a str
_SEGMENTS = ("_fp_a", "_fp_b", "_fp_c")


def _listing_schema() -> pa.Schema:
    full = FEATURES.arrow_schema
    return pa.schema([full.field(c) for c in LISTING_COLUMNS])


def _staging_schema() -> pa.Schema:
    return _listing_schema().append(pa.field("_fp_a", pa.string())).append(pa.field("_fp_b", pa.string())) \
        .append(pa.field("_fp_c", pa.string()))


def _js(v: Any) -> str:
    return "null" if v is None else _ENC(v) if type(v) is str else json.dumps(v, sort_keys=True, ensure_ascii=False)


def _js_table(tab: list) -> str:
    try:
        if all(type(e) is dict and len(e) == 2 and type(e["key"]) is str and type(e["value"]) is str for e in tab):
            return "[" + ", ".join(['{"key": ' + _ENC(e["key"]) + ', "value": ' + _ENC(e["value"]) + "}"
                                    for e in tab]) + "]"
    except KeyError:
        pass
    return json.dumps(tab, sort_keys=True, ensure_ascii=False)


def fp_segments(row: dict[str, Any], media: dict[str, Any]) -> tuple[str, str, str]:
    """The three pieces of the row's fingerprint text around the split values (``media``: the
    fingerprint value of each present media column)."""
    a = '{"audio": ' + _js(media.get("audio")) + ', "category": ' + _js(row["category"]) + ', "cls_split": '
    b = (', "image": ' + _js(media.get("image")) + ', "item_id": ' + _js(row["item_id"]) + ', "product_id": '
         + _js(row["product_id"]) + ', "split": ')
    c = ', "table": ' + _js_table(row["table"]) + ', "title": ' + _js(row["title"]) + ', "video": ' \
        + _js(media.get("video")) + "}"
    return a, b, c


def row_text(a: str, b: str, c: str, cls_split: str | None, coarse: bool, fine: bool, split: str, subset: bool) -> str:
    """One row's fingerprint text from its pieces (the join pass 2 does in Arrow, for tests)."""
    return (a + _js(cls_split) + ', "coarse_query": ' + json.dumps(coarse) + ', "fine_query": ' + json.dumps(fine)
            + b + _js(split) + ', "subset": ' + json.dumps(subset) + c)


@dataclass
class Pass1:
    """What pass 1 keeps in memory: per-row ids, categories and modality presence, the problems by
    phase, and the staged batches (in memory, or a file)."""

    item_ids: list[str] = field(default_factory=list)
    product_ids: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    presence: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in ("T", "Tab", "I", "V", "A")})
    read: int = 0
    labels: Problems = field(default_factory=Problems)
    problems: Problems = field(default_factory=Problems)
    media: Problems = field(default_factory=Problems)
    batches: list[pa.RecordBatch] = field(default_factory=list)
    staging: Path | None = None
    has_media: bool = False

    def merge_skips(self, skips: Problems) -> None:
        """Add the problems to ``skips`` in the order the one-pass loader counted them."""
        for phase in (self.labels, self.problems, self.media):
            for reason, n in phase.items():
                skips[reason] += n
                skips.ids.setdefault(reason, []).extend(phase.ids.get(reason, []))

    def presence_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if v else np.zeros(0, dtype=bool) for k, v in self.presence.items()}


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector. The build makes millions of short-lived, acyclic
    objects (records, their sets and tables) next to a few ever-growing containers (the ids); every
    full collection walks those containers, so with collection on, the build's time grows with the
    square of the listings (a third of pass 1 at 1.6M listings). Nothing it makes is cyclic, so
    reference counting frees all of it anyway."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def batched(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(records)
    while batch := list(islice(it, size)):
        yield batch


def run_pass1(records: Iterable[dict[str, Any]], *, root: Path, progress: bool, work: Path | None,
              batch_rows: int = BATCH_ROWS) -> Pass1:
    """Pass 1 over ``records`` (see the module docstring). ``work``: the folder a catalog of more
    than one batch is staged in (None: keep every batch in memory)."""
    from bench.data.media import ValidationCache

    p = Pass1()
    canon: dict[str, str] = {}
    writer = None
    cache = ValidationCache()
    try:
        for batch in batched(records, batch_rows):
            rb = _batch(p, batch, cache, canon, root=root, progress=progress)
            if rb is None:
                continue
            p.batches.append(rb)
            if work is not None and (writer is not None or len(p.batches) > 1):
                if writer is None:
                    work.mkdir(parents=True, exist_ok=True)
                    p.staging = work / "staging.arrow"
                    writer = pa.ipc.new_file(str(p.staging), _staging_schema())
                for b in p.batches:
                    writer.write_batch(b)
                p.batches = []
    finally:
        cache.close()
        if writer is not None:
            writer.close()
    return p


def _batch(p: Pass1, batch: list[dict[str, Any]], cache: Any, canon: dict[str, str], *, root: Path,
           progress: bool) -> pa.RecordBatch | None:
    p.read += len(batch)
    kept = []
    for r in batch:  # listings without a label cannot be evaluated or trained on: dropped, counted
        if r["category"] is None:
            p.labels.add("label_not_utf8" if "label_not_utf8" in r["problems"] else "label_missing", r["item_id"])
        else:
            kept.append(r)
    if not kept:
        return None
    deferred, parsed = _parse_deferred(kept)
    for r in kept:
        for reason in sorted(r["problems"]):
            p.problems.add(reason, r["item_id"])
    items = [(r[k], k) for r in kept for k in MEDIA_COLUMNS if r[k] is not None]
    checks = cache.check(items, progress=progress and len(items) > 500) if items else {}
    segs: tuple[list[str], list[str], list[str]] = ([], [], [])
    for r in kept:
        media = _checked_media(p, r, checks, root) if items else {}
        r["product_id"] = r["product_id"] or r["item_id"]
        r["category"] = canon.setdefault(r["category"], r["category"])
        if not isinstance(r["table"], PvText):
            r["table"] = r["table"] or []
        if items:
            for s, part in zip(segs, fp_segments(r, media)):
                s.append(part)
    cols: dict[str, Any] = {c: [r[c] for r in kept] for c in LISTING_COLUMNS}
    p.item_ids += cols["item_id"]
    p.product_ids += cols["product_id"]
    p.categories += cols["category"]
    cols["table"] = merge_tables(cols["table"], deferred, parsed)
    p.presence["Tab"].append(pc.greater(pc.list_value_length(cols["table"]), 0).to_numpy(zero_copy_only=False))
    for code, col in (("T", "title"), ("I", "image"), ("V", "video"), ("A", "audio")):
        test = bool if col == "title" else (lambda v: v is not None)
        p.presence[code].append(np.fromiter((test(v) for v in cols[col]), dtype=bool, count=len(kept)))
    p.has_media = p.has_media or bool(items)
    listing = pa.RecordBatch.from_arrays([cols[c] if isinstance(cols[c], pa.Array) else pa.array(cols[c], f.type)
                                          for c, f in zip(LISTING_COLUMNS, _listing_schema())], schema=_listing_schema())
    if not items:  # no media: the fingerprint pieces from the Arrow columns, without a loop per row
        segs = arrow_segments(listing)
    return pa.RecordBatch.from_arrays(listing.columns + [x if isinstance(x, pa.Array) else pa.array(x, pa.string())
                                                        for x in segs],
                                      schema=_staging_schema())


def _parse_deferred(kept: list[dict[str, Any]]) -> tuple[np.ndarray, pa.ListArray]:
    """Parse the batch's pv strings left to it (:class:`~bench.data.pv_arrow.PvText`) at once:
    their positions and tables; a malformed one is counted on its listing."""
    deferred = np.fromiter((i for i, r in enumerate(kept) if isinstance(r["table"], PvText)), dtype=np.int64)
    if not len(deferred):
        return deferred, pa.array([], TABLE_TYPE)
    parsed, bad = parse_pv_batch([str(kept[i]["table"]) for i in deferred.tolist()])
    for j in np.flatnonzero(bad).tolist():
        kept[int(deferred[j])]["problems"].add("pv_malformed")
    if any(r[k] is not None for r in kept for k in MEDIA_COLUMNS):  # the row-by-row path wants lists
        for i, t in zip(deferred.tolist(), parsed.to_pylist()):
            kept[i]["table"] = t
        return np.zeros(0, dtype=np.int64), pa.array([], TABLE_TYPE)
    return deferred, parsed


def _checked_media(p: Pass1, r: dict[str, Any], checks: dict[str, Any], root: Path) -> dict[str, Any]:
    """The fingerprint value of each media file of ``r`` that passed its check; a failed one is
    counted and dropped from the listing."""
    media: dict[str, Any] = {}
    for k in MEDIA_COLUMNS:
        path = r[k]
        if path is None:
            continue
        chk = checks[path]
        if not chk.ok:
            p.media.add(chk.reason, r["item_id"])
            r[k] = None
            continue
        try:
            rel = os.path.relpath(path, root)
        except ValueError:
            rel = path
        media[k] = [rel, chk.size, chk.sha1]
    return media


def json_strings(arr: pa.Array) -> pa.Array:
    """``json.dumps(s, ensure_ascii=False)`` of every string (``null`` for a null), in Arrow: quote
    and backslash escaped in bulk, the rare string with a control character encoded in Python."""
    esc = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
    out = pc.binary_join_element_wise('"', esc, '"', "").fill_null("null")
    ctrl = pc.match_substring_regex(arr, "[\\x00-\\x1f]").fill_null(False)
    if pc.any(ctrl).as_py():
        vals = out.to_pylist()
        for i in np.flatnonzero(ctrl.to_numpy(zero_copy_only=False)).tolist():
            vals[i] = _ENC(arr[i].as_py())
        out = pa.array(vals, pa.string())
    return out


def _json_tables(col: pa.ListArray) -> pa.Array:
    ents = col.flatten()
    text = pc.binary_join_element_wise('{"key": ', json_strings(ents.field("key")), ', "value": ',
                                       json_strings(ents.field("value")), "}", "")
    joined = pc.binary_join(pa.ListArray.from_arrays(col.offsets, text), ", ")
    return pc.binary_join_element_wise("[", joined, "]", "")


def arrow_segments(listing: pa.RecordBatch) -> tuple[pa.Array, pa.Array, pa.Array]:
    """:func:`fp_segments` of every row of a batch without media files, computed on its columns."""
    col = {c: listing.column(c) for c in LISTING_COLUMNS}
    a = pc.binary_join_element_wise('{"audio": null, "category": ', json_strings(col["category"]), ', "cls_split": ', "")
    b = pc.binary_join_element_wise(', "image": null, "item_id": ', json_strings(col["item_id"]), ', "product_id": ',
                                    json_strings(col["product_id"]), ', "split": ', "")
    c = pc.binary_join_element_wise(', "table": ', _json_tables(col["table"]), ', "title": ',
                                    json_strings(col["title"]), ', "video": null}', "")
    return a, b, c


_TOK = {"cls_split": ("null", '"train"', '"test"'), "split": ('"pretrain"', '"eval"')}


def _split_tokens(cols: dict[str, np.ndarray], lo: int, hi: int) -> list[pa.Array]:
    cs = cols["cls_split"][lo:hi]
    cls_code = np.where(cs == "train", 1, np.where(cs == "test", 2, 0))
    tf = np.array(["false", "true"], dtype=object)

    def tok(values: np.ndarray) -> pa.Array:
        return pa.array(values.tolist(), pa.string())

    split_code = (cols["split"][lo:hi] == "eval").astype(np.int64)
    return [tok(np.array(_TOK["cls_split"], dtype=object)[cls_code]), tok(tf[cols["coarse_query"][lo:hi].astype(int)]),
            tok(tf[cols["fine_query"][lo:hi].astype(int)]), tok(np.array(_TOK["split"], dtype=object)[split_code]),
            tok(tf[cols["subset"][lo:hi].astype(int)])]


def _hash_rows(h: Any, rb: pa.RecordBatch, cols: dict[str, np.ndarray], lo: int) -> None:
    hi = lo + rb.num_rows
    cls, cq, fq, sp, sub = _split_tokens(cols, lo, hi)
    text = pc.binary_join_element_wise(rb.column("_fp_a"), cls, ', "coarse_query": ', cq, ', "fine_query": ', fq,
                                       rb.column("_fp_b"), sp, ', "subset": ', sub, rb.column("_fp_c"), "\n", "")
    width = np.int64 if text.type == pa.large_string() else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=width)[text.offset : text.offset + len(text) + 1]
    h.update(memoryview(text.buffers()[2])[int(offsets[0]) : int(offsets[-1])])


def _with_splits(rb: pa.RecordBatch, cols: dict[str, np.ndarray], lo: int) -> pa.RecordBatch:
    hi = lo + rb.num_rows
    arrays = [rb.column(c) for c in LISTING_COLUMNS]
    arrays += [pa.array(cols["split"][lo:hi].tolist(), pa.string()), pa.array(cols["subset"][lo:hi], pa.bool_()),
               pa.array(cols["cls_split"][lo:hi].tolist(), pa.string()),
               pa.array(cols["coarse_query"][lo:hi], pa.bool_()), pa.array(cols["fine_query"][lo:hi], pa.bool_())]
    return pa.RecordBatch.from_arrays(arrays, schema=FEATURES.arrow_schema)


def _staged(p: Pass1) -> Iterator[pa.RecordBatch]:
    if p.staging is None:
        yield from p.batches
        return
    # Read, not memory-map: pages of a mapped file would stay in the process's resident set.
    with pa.OSFile(str(p.staging)) as f:
        reader = pa.ipc.open_file(f)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


def run_pass2(p: Pass1, cols: dict[str, np.ndarray], h: Any, out: Path | None) -> pa.Table | Path:
    """Hash every row into ``h`` and add the split columns: the finished table in memory, or
    written to ``out`` (``catalog.arrow``) when pass 1 staged to disk."""
    lo, done = 0, []
    writer = pa.ipc.new_stream(str(out), FEATURES.arrow_schema) if p.staging is not None and out is not None else None
    try:
        for rb in _staged(p):
            _hash_rows(h, rb, cols, lo)
            fin = _with_splits(rb, cols, lo)
            lo += rb.num_rows
            if writer is not None:
                writer.write_batch(fin)
            else:
                done.append(fin)
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        p.staging.unlink()
        return out
    return pa.Table.from_batches(done, schema=FEATURES.arrow_schema)
