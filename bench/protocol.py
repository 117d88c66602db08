"""The evaluation protocol of a catalog as a table, for scoring embeddings made outside the benchmark.

``bench data protocol SOURCE --out FILE.parquet`` writes one row per listing of the catalog, in
catalog order, with exactly the columns ``bench run`` evaluates by (:data:`COLUMNS`):

* ``item_id`` -- the listing; embeddings are joined on it;
* ``category``, ``product`` -- the coarse and fine labels (names, as in the run's embeddings file);
* ``split`` -- ``"pretrain"`` or ``"eval"``; the eval rows are the retrieval gallery and the clustering points;
* ``coarse_query``, ``fine_query`` -- bool, the eval rows used as coarse / fine queries;
* ``cls_split`` -- ``"train"`` (probe training, from the pretraining pool), ``"test"`` (probe test,
  eval rows) or ``""``.

Where the catalog's id lists give each task its own sets (:mod:`bench.data.tasks`: the release's
official protocol, or gallery lists of its own), the file is written for one pretraining split
(``--split``) and also carries :data:`TASK_COLUMNS`: ``coarse_gallery`` / ``fine_gallery`` (bool,
each task's gallery rows) and ``coarse_positives`` / ``fine_positives`` (|P| under ``[m5product]``
counted in the ground truth, -1 where the gallery counts it); the query columns then hold every
listed query, lone ones included.

``bench eval --embeddings F --protocol FILE`` then scores F as a run would (:func:`bench.eval.files.build_protocol_inputs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.console import UserError

#: The protocol's columns, in file order.
COLUMNS = ("item_id", "category", "product", "split", "coarse_query", "fine_query", "cls_split")
#: Columns of a catalog whose tasks have their own sets (present only then).
TASK_COLUMNS = ("coarse_gallery", "fine_gallery", "coarse_positives", "fine_positives")


def protocol_columns(catalog: Any, split: str = "full") -> dict[str, Any]:
    """The protocol of a loaded catalog (:func:`bench.data.load_catalog`) as numpy columns in catalog
    order, for the cells pretrained on ``split``; the masks come from the same catalog calls
    ``bench run`` scores by (``split_indices``, ``task_set``, ``cls_rows``)."""
    import numpy as np

    n = len(catalog)

    def mask(rows: Any) -> np.ndarray:
        m = np.zeros(n, dtype=bool)
        m[rows] = True
        return m

    train, test = catalog.cls_rows(split)
    cls_split = np.full(n, "", dtype=object)
    cls_split[mask(train)] = "train"
    cls_split[mask(test)] = "test"
    cols = {
        "item_id": np.asarray([str(i) for i in catalog.dataset["item_id"]]),
        "category": np.asarray([catalog.category_names[c] for c in catalog.category_ids()]),
        "product": np.asarray([catalog.product_names[p] for p in catalog.product_ids()]),
        "split": np.where(mask(catalog.split_indices("gallery")), "eval", "pretrain"),
        "coarse_query": mask(catalog.split_indices("coarse_query")),
        "fine_query": mask(catalog.split_indices("fine_query")),
        "cls_split": cls_split.astype(str),
    }
    if catalog.task_sets is not None:
        for task in ("coarse", "fine"):
            ts = catalog.task_set(task, split)
            cols[f"{task}_query"], cols[f"{task}_gallery"] = mask(ts.query), mask(ts.gallery)
            pos = np.full(n, -1, dtype=np.int64)
            if ts.positives is not None:
                pos[ts.query] = ts.positives
            cols[f"{task}_positives"] = pos
    return cols


def write_protocol(catalog: Any, path: Path, split: str = "full") -> dict[str, Any]:
    """Write the catalog's protocol (for cells pretrained on ``split``) as Parquet (atomically) and
    return its columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = protocol_columns(catalog, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table({k: cols[k] for k in COLUMNS + TASK_COLUMNS if k in cols}), tmp)
    tmp.replace(path)
    return cols


def read_protocol(path: Path) -> dict[str, Any]:
    """A protocol file's columns as numpy arrays; a missing file or column is a one-line error."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise UserError(f"{path}: no such protocol file")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise UserError(f"{path}: not a protocol file: missing column(s) {', '.join(missing)} "
                        f"(write one with `bench data protocol SOURCE --out FILE.parquet`)")
    cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in COLUMNS + TASK_COLUMNS if c in table.column_names}
    for c in ("coarse_query", "fine_query", "coarse_gallery", "fine_gallery"):
        if c in cols:
            cols[c] = np.asarray(cols[c], dtype=bool)
    for c in ("coarse_positives", "fine_positives"):
        if c in cols:
            cols[c] = np.asarray(cols[c], dtype=np.int64)
    bad = sorted(set(str(v) for v in cols["split"]) - {"pretrain", "eval"})
    if bad:
        raise UserError(f"{path}: column 'split' has values other than pretrain/eval: {bad[:5]}")
    ids = [str(v) for v in cols["item_id"]]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path}: duplicate item_id in the protocol ({len(ids) - len(set(ids))} repeats)")
    return cols
