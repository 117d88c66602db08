"""The on-disk catalog table of a release folder, reused while the folder is unchanged.

A release's annotation is parsed once into ``$M5BENCH_HOME/catalogs/tables/KEY/``: ``catalog.arrow``
(the table, memory-mapped), ``catalog.json`` (fingerprint, info, problems, category names),
``arrays.npz`` (split columns, modality presence, the evaluation sets) and ``products.arrow``.
``KEY`` hashes :data:`LOADER_VERSION`, the read options and the name, size and mtime of every
entry at the folder's top level and in its ``splits/`` and ``features/`` folders, so any change
there builds a new table. Catalogs with media files are not kept: their media checks belong to
every load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

#: Bumped when what the loader writes for the same files changes.
LOADER_VERSION = "1"
_MANIFEST = "catalog.json"
#: Files up to this size are keyed by their content too.
SMALL_FILE = 1 << 20


def folder_key(root: Path, options: dict[str, Any]) -> str:
    """The cache key of release folder ``root`` read with ``options`` (see the module docstring)."""
    from bench.data.catalog import FINGERPRINT_VERSION

    entries = []
    for folder in (root, root / "splits", root / "features"):
        if not folder.is_dir():
            continue
        with os.scandir(folder) as it:
            for e in sorted(it, key=lambda e: e.name):
                st = e.stat()
                row = [str(Path(e.path).relative_to(root)), e.is_dir(), st.st_size if e.is_file() else 0, st.st_mtime_ns]
                if e.is_file() and st.st_size <= SMALL_FILE:  # a quick rewrite may keep size and mtime
                    row.append(hashlib.sha256(Path(e.path).read_bytes()).hexdigest())
                entries.append(row)
    blob = json.dumps({"loader": LOADER_VERSION, "fingerprint": FINGERPRINT_VERSION, "root": str(root),
                       "options": options, "entries": entries}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def tables_dir() -> Path:
    from bench.data.paths import catalogs_dir

    return catalogs_dir() / "tables"


def work_dir(key: str) -> Path:
    """A fresh folder to build ``key``'s table in (renamed into place by :func:`save`)."""
    d = tables_dir() / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def load(key: str) -> Any | None:
    """The cached :class:`~bench.data.catalog.Catalog` of ``key``, or None."""
    import datasets
    import pyarrow as pa

    from bench.data.catalog import Catalog, compact_split_columns
    from bench.data.loaders import Problems
    from bench.data.tasks import TaskSet

    d = tables_dir() / key
    try:
        meta = json.loads((d / _MANIFEST).read_text(encoding="utf-8"))
        arrays = dict(np.load(d / "arrays.npz"))
        ds = datasets.Dataset.from_file(str(d / "catalog.arrow"))
        with pa.memory_map(str(d / "products.arrow")) as src:
            products = pa.ipc.open_file(src).read_all().column(0).to_pylist()
    except (OSError, ValueError, KeyError):
        return None
    skips = Problems()
    for reason, n in meta["skips"]:
        skips[reason] = n
    skips.ids = {r: list(v) for r, v in meta["problem_ids"].items()}
    split = {"split": np.array(["pretrain", "eval"], dtype=object)[arrays["split"]],
             "cls_split": np.array([None, "train", "test"], dtype=object)[arrays["cls_split"]]}
    split.update({k: arrays[k] for k in ("subset", "coarse_query", "fine_query")})
    task_sets = None
    if meta["task_sets"] is not None:
        task_sets = {}
        for i, ts in enumerate(meta["task_sets"]):
            pos = arrays.get(f"ts{i}_positives")
            task_sets[(ts["task"], ts["split"])] = TaskSet(arrays[f"ts{i}_query"], arrays[f"ts{i}_gallery"],
                                                           ts["leave_one_out"], pos, ts["rule"], ts["positives_from"],
                                                           ts["listed_absent"])
    cls_sets = None if meta["cls_sets"] is None else {
        sp: (arrays[f"cls_{sp}_train"], arrays[f"cls_{sp}_test"]) for sp in meta["cls_sets"]}
    info = dict(meta["info"], table_cache={"path": str(d), "reused": True})
    return Catalog(dataset=ds, fingerprint=meta["fingerprint"], source=meta["source"], root=Path(meta["root"]),
                   info=info, skips=skips, problem_ids=skips.ids, category_names=meta["category_names"],
                   product_names=products, task_sets=task_sets, cls_sets=cls_sets,
                   split_cols=compact_split_columns(split),
                   presence={k[len("has_"):]: arrays[k] for k in arrays if k.startswith("has_")})


def save(cat: Any, key: str, work: Path) -> Any:
    """Write ``cat``'s side files into ``work`` (which holds its ``catalog.arrow``), move the folder
    into place and return the catalog memory-mapped from there."""
    import datasets
    import pyarrow as pa

    from bench.data.schema import FEATURES

    if not (work / "catalog.arrow").is_file():  # a catalog of one batch was built in memory
        with pa.OSFile(str(work / "catalog.arrow"), "wb") as sink, pa.ipc.new_stream(sink, FEATURES.arrow_schema) as w:
            w.write_table(cat.dataset.data.table)
    c = cat.split_cols
    arrays: dict[str, np.ndarray] = {"split": (c["split"] == "eval").astype(np.int8),
                                     "cls_split": np.where(c["cls_split"] == "train", 1,
                                                           np.where(c["cls_split"] == "test", 2, 0)).astype(np.int8)}
    arrays.update({k: np.asarray(c[k], dtype=bool) for k in ("subset", "coarse_query", "fine_query")})
    arrays.update({f"has_{k}": v for k, v in (cat.presence or {}).items()})
    sets = None
    if cat.task_sets is not None:
        sets = []
        for i, ((task, split), ts) in enumerate(sorted(cat.task_sets.items())):
            sets.append({"task": task, "split": split, "leave_one_out": ts.leave_one_out, "rule": ts.rule,
                         "positives_from": ts.positives_from, "listed_absent": ts.listed_absent})
            arrays[f"ts{i}_query"], arrays[f"ts{i}_gallery"] = ts.query, ts.gallery
            if ts.positives is not None:
                arrays[f"ts{i}_positives"] = ts.positives
    if cat.cls_sets is not None:
        for sp, (tr, te) in cat.cls_sets.items():
            arrays[f"cls_{sp}_train"], arrays[f"cls_{sp}_test"] = tr, te
    np.savez(work / "arrays.npz", **arrays)
    with pa.OSFile(str(work / "products.arrow"), "wb") as sink, \
            pa.ipc.new_file(sink, pa.schema([("product", pa.string())])) as w:
        w.write_table(pa.table({"product": pa.array(cat.product_names, pa.string())}))
    info = {k: v for k, v in cat.info.items() if k != "table_cache"}
    meta = {"fingerprint": cat.fingerprint, "source": cat.source, "root": str(cat.root), "info": info,
            "skips": [[r, n] for r, n in cat.skips.items()], "problem_ids": cat.problem_ids,
            "category_names": cat.category_names, "task_sets": sets,
            "cls_sets": None if cat.cls_sets is None else sorted(cat.cls_sets)}
    (work / _MANIFEST).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8", errors="surrogatepass")
    final = tables_dir() / key
    shutil.rmtree(final, ignore_errors=True)
    try:
        os.replace(work, final)
    except OSError:  # another process kept the same table meanwhile: use its copy
        other = load(key)
        if other is None:
            raise
        return other
    cat.dataset = datasets.Dataset.from_file(str(final / "catalog.arrow"))
    cat.info["table_cache"] = {"path": str(final), "reused": False}
    return cat
