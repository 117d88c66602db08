"""``load_catalog``: every source becomes one :class:`Catalog` (a ``datasets.Dataset`` of listings).

Sources:

* ``None`` / ``"synthetic"`` / ``"synthetic:SIZE"`` / ``"synthetic:SIZE:SEED"``: the embedded
  synthetic catalog (``SIZE`` in mini, default, large; seed 0 by default), generated on first use
  into ``$M5BENCH_HOME/catalogs/synthetic-SIZE-seedN-vV/``;
* ``"m5product:PATH"``: the official M5Product release layout (meta_info records and/or the
  SCALE code's id_info JSON, media by item id, split id lists, fine-grained GT, precomputed features);
* ``"manifest:PATH"``: a CSV / TSV / JSONL / JSON / Parquet table of listings;
* any other kind registered in :mod:`bench.data.sources`.

Loading validates every media file (cached), applies the schema's split rules, fingerprints the
content and prints a summary with the per-reason counts of listing-level problems.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from bench.data.errors import CatalogError, EmptyCatalogError
from bench.data.loaders import Problems
from bench.data.schema import EVAL, FEATURES, PRETRAIN

SPLIT_NAMES = ("pretrain_subset", "pretrain_full", "cls_train", "cls_test", "coarse_query", "fine_query", "gallery")
#: Bumped when the fingerprint recipe changes, so old caches keyed by it are not reused.
FINGERPRINT_VERSION = "1"


@dataclass
class Catalog:
    """One catalog of listings, whatever its source.

    ``dataset`` has exactly :data:`bench.data.schema.FEATURES` columns with absolute media paths;
    ``fingerprint`` is a content hash (rows and media bytes) that keys everything downstream;
    ``skips`` counts listing-level problems by reason and ``problem_ids`` names the affected listings
    per reason (item ids; ``line N`` / ``record N`` for a row without one).
    """

    dataset: Any  # datasets.Dataset
    fingerprint: str
    source: str
    root: Path
    info: dict[str, Any]
    skips: Counter = field(default_factory=Counter)
    problem_ids: dict[str, list[str]] = field(default_factory=dict)
    category_names: list[str] = field(default_factory=list)
    product_names: list[str] = field(default_factory=list)
    #: ``{(task, split): TaskSet}`` and ``{split: (train rows, test rows)}`` from the source's id
    #: lists (:mod:`bench.data.tasks`); None: derived from the split columns.
    task_sets: dict[tuple[str, str], Any] | None = None
    cls_sets: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    #: The split columns as compact arrays and ``bool[N]`` per modality code, where the build kept
    #: them (None: read from the table when first asked).
    split_cols: dict[str, np.ndarray] | None = None
    presence: dict[str, np.ndarray] | None = None
    #: Whether the source named any media file (such a catalog is not kept by the table cache).
    media_listed: bool = False

    def __len__(self) -> int:
        return len(self.dataset)

    @cached_property
    def _columns(self) -> dict[str, np.ndarray]:
        """The split columns as compact arrays (shared strings, bools), from the build or the table."""
        if self.split_cols is not None:
            return self.split_cols
        cols = ("split", "subset", "cls_split", "coarse_query", "fine_query")
        return compact_split_columns({k: self.dataset.data.column(k).to_pylist() for k in cols})

    def _codes(self, column: str, names: list[str]) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        col = self.dataset.data.column(column) if self.dataset._indices is None else pa.chunked_array(
            [pa.array(self.dataset[column], pa.string())])
        codes = pc.index_in(col, value_set=pa.array(names, pa.string()))
        if codes.null_count:
            raise CatalogError(f"{self.source}: a {column} value is missing from the catalog's names")
        return codes.to_numpy().astype(np.int64)

    def category_ids(self) -> np.ndarray:
        """Contiguous category id per row (index into :attr:`category_names`), int64."""
        return self._codes("category", self.category_names)

    def product_ids(self) -> np.ndarray:
        """Contiguous product id per row (index into :attr:`product_names`), int64."""
        return self._codes("product_id", self.product_names)

    def split_indices(self, name: str) -> np.ndarray:
        """Sorted int64 row indices of a named split: ``pretrain_subset``, ``pretrain_full``,
        ``cls_train``, ``cls_test``, ``coarse_query``, ``fine_query`` or ``gallery`` (all eval rows)."""
        c = self._columns
        if name == "pretrain_subset":
            mask = (c["split"] == PRETRAIN) & c["subset"].astype(bool)
        elif name == "pretrain_full":
            mask = c["split"] == PRETRAIN
        elif name == "cls_train":
            mask = c["cls_split"] == "train"
        elif name == "cls_test":
            mask = c["cls_split"] == "test"
        elif name == "coarse_query":
            mask = c["coarse_query"].astype(bool)
        elif name == "fine_query":
            mask = c["fine_query"].astype(bool)
        elif name == "gallery":
            mask = c["split"] == EVAL
        else:
            import difflib

            close = difflib.get_close_matches(name, SPLIT_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CatalogError(f"unknown split {name!r}{hint}; choose one of {', '.join(SPLIT_NAMES)}")
        return np.flatnonzero(mask).astype(np.int64)

    def task_set(self, task: str, split: str) -> Any:
        """The :class:`bench.data.tasks.TaskSet` of retrieval ``task`` (``coarse`` / ``fine``) for
        the cells pretrained on ``split`` (``subset`` / ``full``): query rows, gallery rows, whether
        the gallery is the query set itself, and the [m5product] positive-set sizes."""
        from bench.data.tasks import EVAL_SPLITS, TASKS, default_task_sets

        if task not in TASKS or split not in EVAL_SPLITS:
            raise CatalogError(f"unknown task/split {task!r}/{split!r}; tasks: {', '.join(TASKS)}, "
                               f"splits: {', '.join(EVAL_SPLITS)}")
        if self.task_sets is None:
            self.task_sets = default_task_sets(self._columns)
        return self.task_sets[(task, split)]

    def task_rows(self, task: str, split: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """``(query_rows, gallery_rows, leave_one_out)`` of a retrieval task for a pretraining split
        (sorted int64 catalog rows; a query that is a gallery row never retrieves itself)."""
        ts = self.task_set(task, split)
        return ts.query, ts.gallery, ts.leave_one_out

    def cls_rows(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(train_rows, test_rows)`` of classification for a pretraining split."""
        if self.cls_sets is not None and split in self.cls_sets:
            return self.cls_sets[split]
        return self.split_indices("cls_train"), self.split_indices("cls_test")

    @property
    def super_categories(self) -> dict[str, str]:
        """Category -> super-category, where the source knows it (the synthetic catalog does)."""
        return dict(self.info.get("super_categories") or {})

    def has_modality(self, code: str) -> np.ndarray:
        """``bool[N]``: which listings carry modality ``code`` (I, T, Tab, V, A) by the catalog's own
        columns (a non-empty title or table, a media path), before any media is decoded."""
        col = {"I": "image", "T": "title", "Tab": "table", "V": "video", "A": "audio"}[code]
        if self.presence is not None:
            has = self.presence[code]
        else:
            values = self.dataset[col]
            test = bool if code in ("T", "Tab") else (lambda x: x is not None)
            has = np.fromiter((test(x) for x in values), dtype=bool, count=len(values))
        return has | self._precomputed_has(code)

    def _precomputed_has(self, code: str) -> np.ndarray | bool:
        """Listings a precomputed feature source covers: every listing for region TSVs (a listing
        missing from them is counted when features are built), the ``{item_id}.npy`` files for
        S3D / mel folders (one directory listing, nothing decoded)."""
        pre = self.info.get("precomputed") or {}
        if code == "I" and pre.get("image_tsv"):
            return True
        folder = pre.get({"V": "video_npy_dir", "A": "audio_npy_dir"}.get(code, ""))
        if not folder:
            return False
        cache = self.__dict__.setdefault("_npy_present", {})  # one directory listing per folder
        if folder not in cache:
            stems = {n[:-4] for n in os.listdir(folder) if n.endswith(".npy")}
            ids = self.dataset.data.column("item_id").to_pylist() if self.dataset._indices is None else self.dataset["item_id"]
            cache[folder] = np.fromiter((i in stems for i in ids), dtype=bool, count=len(self))
        return cache[folder]

    def modality_presence(self) -> dict[str, float]:
        """Fraction of listings that have each modality (I, T, Tab, V, A)."""
        n = max(len(self), 1)
        return {code: float(self.has_modality(code).sum()) / n for code in ("I", "T", "Tab", "V", "A")}

    def check_modalities(self, modalities: Iterable[Any]) -> None:
        """Refuse (:class:`CatalogError`, one line) when a requested modality has no listing at all.

        ``modalities``: :class:`bench.modalities.Modality` members (or their codes). The message names
        each empty modality, the likely fix where the loader saw unrecognised columns (``column
        'Title' is not recognised; did you mean 'title'?``) and otherwise the problem counts that
        emptied it (every listed image file missing, say). ``bench run`` calls this before any work.
        """
        from bench.data.report import empty_modality_reason
        from bench.modalities import Modality

        mods = [Modality(m) for m in modalities]
        pres = self.modality_presence()
        empty = [m for m in mods if pres[m.value] == 0]
        if empty:
            why = "; ".join(empty_modality_reason(self, m) for m in empty)
            raise CatalogError(f"{self.source}: {why}")


# --------------------------------------------------------------------------- sources


def parse_source(source: str | None) -> tuple[str, str]:
    """``(kind, argument)`` of a source string; kind is a registered source (:mod:`bench.data.sources`)."""
    from bench.data.sources import parse_source as parse

    return parse(source)


def synthetic_dir(size: str, seed: int) -> Path:
    from bench.data.paths import catalogs_dir
    from bench.data.synth import GENERATOR_VERSION

    return catalogs_dir() / f"synthetic-{size}-seed{seed}-v{GENERATOR_VERSION}"


def ensure_synthetic(size: str, seed: int = 0, *, progress: bool = True) -> Path:
    """The synthetic catalog's directory, generating it on first use (atomically: temp dir + rename)."""
    from bench.console import err_console
    from bench.data.synth import SIZES, config_for, generate

    if size not in SIZES:
        raise CatalogError(f"unknown synthetic size {size!r}; choose one of {', '.join(SIZES)}")
    out = synthetic_dir(size, seed)
    if (out / "info.json").is_file():
        return out
    if progress:
        err_console.print(f"generating the synthetic {size} catalog (seed {seed}) into {out} ...")
    try:
        generate(out, config_for(size, seed))
    except OSError:
        # Another process finished the same catalog first: its rename won, ours was discarded.
        if not (out / "info.json").is_file():
            raise
    return out


def compact_split_columns(cols: dict[str, Any]) -> dict[str, np.ndarray]:
    """Split columns as arrays: ``split`` / ``cls_split`` as object arrays of a few shared strings,
    the flags as ``bool``."""
    tokens = {"split": ("pretrain", "eval"), "cls_split": (None, "train", "test")}
    out: dict[str, np.ndarray] = {}
    for k, v in cols.items():
        if k in tokens:
            arr = np.asarray(v, dtype=object)
            code = np.zeros(len(arr), dtype=np.int8)
            for i, t in enumerate(tokens[k][1:], 1):
                code[arr == t] = i
            out[k] = np.array(tokens[k], dtype=object)[code]
        else:
            out[k] = np.asarray(v, dtype=bool)
    return out


def _rows_to_catalog(recs: Iterable[dict[str, Any]], src_info: dict[str, Any], *, source: str, root: Path,
                     skips: Problems, split_seed: int, progress: bool, eval_fraction: float | None = None,
                     work: Path | None = None, batch_rows: int | None = None) -> Catalog:
    """Records -> catalog, in batches (:mod:`bench.data.build`). ``work``: the folder a catalog of
    more than one batch is written to and memory-mapped from (None: the table stays in memory)."""
    import datasets

    from bench.data.build import BATCH_ROWS, run_pass1, run_pass2
    from bench.data.splits import DEFAULT_EVAL_FRACTION, assign_splits

    p1 = run_pass1(recs, root=root, progress=progress, work=work, batch_rows=batch_rows or BATCH_ROWS)
    p1.merge_skips(skips)
    if not p1.item_ids:
        raise _empty_catalog(source, p1.read, src_info, skips)
    item_ids, product_ids, categories = p1.item_ids, p1.product_ids, p1.categories
    if eval_fraction is None:
        eval_fraction = src_info.get("eval_fraction")
    split_kwargs = {} if eval_fraction is None else {"eval_fraction": eval_fraction}
    lists = src_info.get("split_lists") or {}
    cols = compact_split_columns(assign_splits(item_ids, product_ids, categories, seed=split_seed, lists=lists,
                                               **split_kwargs))

    # The fingerprint hashes the rows (media as path relative to the root + size + SHA-1), so it is
    # stable across runs and machines and changes when any listing, split or media byte changes.
    h = hashlib.sha256(f"m5bench-catalog-fp{FINGERPRINT_VERSION}\n".encode())
    table = run_pass2(p1, cols, h, None if work is None else work / "catalog.arrow")
    ds = datasets.Dataset.from_file(str(table)) if isinstance(table, Path) else datasets.Dataset(table)
    assert ds.features == FEATURES

    task_sets, cls_sets = _task_sets(item_ids, categories, product_ids, cols, src_info)
    if task_sets is not None:
        # Sets the split columns do not determine change every number: they key the caches too.
        h.update(_task_digest(task_sets, cls_sets).encode())

    label_list = src_info.get("label_list") or []
    present = set(categories)
    category_names = [c for c in dict.fromkeys(label_list) if c in present]
    category_names += sorted(present - set(category_names))
    product_names = sorted(set(product_ids))
    n_kept = len(item_ids)

    gi = src_info.get("generator_info") or {}
    info: dict[str, Any] = {
        "source": source,
        "root": str(root),
        "files": src_info.get("files", {}),
        "product_ids": src_info.get("product_ids"),
        "precomputed": src_info.get("precomputed") or {"image_tsv": None, "video_npy_dir": None, "audio_npy_dir": None},
        "split": {
            "method": "id lists from the source" + (" (hash for rows they do not cover)" if lists else "") if lists
            else "hash(product_id)+seed",
            "seed": split_seed,
            "roles_from_lists": sorted(lists),
            "eval_fraction": eval_fraction if eval_fraction is not None else DEFAULT_EVAL_FRACTION,
        },
        "counts": {
            "listings": n_kept,
            "categories": len(category_names),
            "products": len(product_names),
            "dropped": p1.read - n_kept,
        },
        "skips": dict(skips),
        "unknown_columns": list(src_info.get("unknown_columns") or []),
        "column_hints": dict(src_info.get("column_hints") or {}),
        "fingerprint_version": FINGERPRINT_VERSION,
        "release_lists": list(src_info.get("release_lists") or []),
        "unrecognised_files": list(src_info.get("unrecognised_files") or []),
    }
    if task_sets is not None:
        info["protocol"] = {f"{t}/{sp}": ts.describe() for (t, sp), ts in task_sets.items()}
    what = (f"synthetic {gi.get('size')} catalog (seed {gi.get('seed')}, generator v{gi.get('generator_version')})"
            if gi else source)
    info["description"] = (f"{what}: {n_kept} listings, {len(category_names)} categories, "
                           f"{len(product_names)} products")
    if gi:
        info["generator"] = {k: gi.get(k) for k in ("generator", "generator_version", "seed", "size", "config")}
        if "super_categories" in gi:
            info["super_categories"] = gi["super_categories"]
        if "groups" in gi:
            info["groups"] = gi["groups"]
    return Catalog(dataset=ds, fingerprint=h.hexdigest()[:32], source=source, root=root, info=info, skips=skips,
                   problem_ids=skips.ids, category_names=category_names, product_names=product_names,
                   task_sets=task_sets, cls_sets=cls_sets, split_cols=cols, presence=p1.presence_arrays(),
                   media_listed=p1.has_media)


def _task_sets(item_ids: list[str], categories: list[str], products: list[str], cols: dict[str, np.ndarray],
               src_info: dict[str, Any]) -> tuple[dict | None, dict | None]:
    """The evaluation sets from the source's lists, or ``(None, None)`` where they are exactly the
    ones the split columns give (then nothing about the catalog changes)."""
    from bench.data.tasks import (
        EVAL_SPLITS,
        RowIndex,
        build_task_sets,
        cls_rows,
        default_task_sets,
    )

    lists = src_info.get("split_lists") or {}
    if not lists:
        return None, None
    index = RowIndex(item_ids)
    sets = build_task_sets(item_ids, categories, products, cols, lists, src_info.get("release_lists") or (),
                           src_info.get("gt_labels") or {}, index=index)
    cls = {sp: cls_rows(cols, lists, item_ids, categories, sp, index=index) for sp in EVAL_SPLITS}
    plain = default_task_sets(cols)
    same = all(a.positives is None and b.leave_one_out == a.leave_one_out and np.array_equal(a.query, b.query)
               and np.array_equal(a.gallery, b.gallery) for k, a in sets.items() for b in [plain[k]])
    cs = cols["cls_split"]
    same = same and all(np.array_equal(cls[sp][0], np.flatnonzero(cs == "train"))
                        and np.array_equal(cls[sp][1], np.flatnonzero(cs == "test")) for sp in EVAL_SPLITS)
    return (None, None) if same else (sets, cls)


def _task_digest(task_sets: dict, cls_sets: dict) -> str:
    h = hashlib.sha256(b"m5bench-task-sets\n")
    for key in sorted(task_sets):
        ts = task_sets[key]
        h.update(repr((key, ts.leave_one_out, ts.rule)).encode())
        for arr in (ts.query, ts.gallery, ts.positives):
            h.update(b"-" if arr is None else np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    for sp in sorted(cls_sets):
        for arr in cls_sets[sp]:
            h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    return "\ntask-sets " + h.hexdigest() + "\n"


def validate_hint(source: str, reason: str) -> str:
    """The command that lists the listings a reason affected, for a message about ``source``."""
    kind, arg = parse_source(source)
    return f"bench data validate {arg if kind != 'synthetic' else source} --list {reason}"


def _empty_catalog(source: str, n_records: int, src_info: dict[str, Any], skips: Problems) -> EmptyCatalogError:
    """The one-line refusal of a source with no usable listing: what was read, why it was rejected."""
    read = n_records + skips.get("item_id_missing", 0) + skips.get("duplicate_item_id", 0)
    files = ", ".join(Path(f).name for f in (src_info.get("files") or {}).values()) or "the source"
    if read == 0:
        return EmptyCatalogError(f"{source}: no listings: {files} has no records", skips=skips, read=0)
    top = skips.most_common(3)
    reasons = ", ".join(f"{r} {n}" for r, n in top)
    msg = (f"{source}: no usable listing: {read} read from {files}, all rejected ({reasons}); "
           f"see `{validate_hint(source, top[0][0])}`")
    if any(r.endswith("_not_utf8") for r in skips):
        msg += "; the files may use another encoding: pass --encoding"
    return EmptyCatalogError(msg, skips=skips, read=read)


def load_catalog(source: str | None = None, *, progress: bool = True, split_seed: int | None = None,
                 eval_fraction: float | None = None, encoding: str | None = None) -> Catalog:
    """Load (and for ``synthetic``, generate on first use) a catalog.

    ``source``: ``None``/``"synthetic"`` (default size), ``"synthetic:mini|default|large[:SEED]"``,
    ``"m5product:PATH"`` or ``"manifest:PATH"``. ``progress`` shows bars, the summary table and a
    warning naming unrecognised columns. ``split_seed`` (default: the synthetic seed, else 0) seeds
    the hash split where the source has no id lists, and ``eval_fraction`` (in (0, 1); default: the
    generator's, else :data:`bench.data.splits.DEFAULT_EVAL_FRACTION`) is the fraction of products
    that split draws into evaluation; both change the split columns and so the fingerprint.
    ``encoding`` is the text encoding of a manifest (default UTF-8, strictly: a decode error names the
    file, line and byte offset and suggests ``--encoding``) or of a release's annotation files
    (default: UTF-8, leniently). Listing-level problems are counted in ``catalog.skips`` (affected ids
    in ``catalog.problem_ids``); a broken whole file, or a source with no usable listing, raises
    :class:`~bench.data.errors.CatalogError` (:class:`~bench.data.errors.EmptyCatalogError` for the latter).
    """
    from bench.data import sources, table_cache
    from bench.data.loaders import check_encoding

    kind, arg = parse_source(source)
    if eval_fraction is not None and not 0.0 < float(eval_fraction) < 1.0:
        raise CatalogError(f"eval fraction must be between 0 and 1 (exclusive), got {eval_fraction}")
    if encoding is not None:
        encoding = check_encoding(encoding)
    skips = Problems()
    opts = sources.ReadOptions(encoding=encoding, split_seed=split_seed, progress=progress,
                               resplit=eval_fraction is not None or split_seed is not None)
    src = sources.get(kind)
    key = src.cache_key(arg, {"encoding": encoding, "split_seed": split_seed, "eval_fraction": eval_fraction})
    cat = None if key is None else table_cache.load(key)
    if cat is None:
        cat = _build(src, arg, skips, opts, eval_fraction, key)
    if progress:
        from bench.console import err_console
        from bench.data.report import load_summary, unknown_columns_warning

        err_console.print(load_summary(cat))
        warning = unknown_columns_warning(cat)
        if warning:
            err_console.print(f"[yellow]warning:[/] {warning}")
    return cat


def _build(src: Any, arg: str, skips: Problems, opts: Any, eval_fraction: float | None, key: str | None) -> Catalog:
    """Read the source and build its catalog; with a cache ``key``, in a work folder that becomes
    the cached table (unless the source names media files)."""
    import shutil

    from bench.data import table_cache
    from bench.data.build import gc_paused

    read = src.read(arg, skips, opts)
    recs, src_info, name, root, sseed = read.records, read.info, read.name, read.root, read.split_seed
    gi = src_info.get("generator_info") or {}
    if isinstance(gi.get("split"), dict) and "eval_fraction" in gi["split"]:
        src_info["eval_fraction"] = gi["split"]["eval_fraction"]
    work = None if key is None else table_cache.work_dir(key)
    try:
        with gc_paused():
            cat = _rows_to_catalog(recs, src_info, source=name, root=root, skips=skips, split_seed=sseed,
                                   progress=opts.progress,
                                   eval_fraction=None if eval_fraction is None else float(eval_fraction), work=work)
        if work is None:
            return cat
        if not cat.media_listed:
            return table_cache.save(cat, key, work)
        if cat.dataset.cache_files:  # staged to disk: media checks belong to every load, so keep it in memory
            import datasets

            cat.dataset = datasets.Dataset(cat.dataset.data.table.combine_chunks())
        return cat
    finally:
        if work is not None and work.exists():
            shutil.rmtree(work, ignore_errors=True)

