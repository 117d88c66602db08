"""Embeddings files and the evaluation protocol: what ``bench eval`` and :func:`bench.api.evaluate` share.

Accepted embeddings files:

* ``.npz`` with arrays ``embeddings`` (N, d), ``category`` (N,), ``product`` (N,), optional
  ``item_id``, ``split`` ("pretrain"/"eval"), ``coarse_query``/``fine_query`` (bool),
  ``cls_split`` ("train"/"test"/""). Strings must be stored as numpy unicode arrays (object arrays
  would need pickle, which is refused).
* ``.parquet`` with an ``embedding`` list column and the same columns.

Without a protocol, absent columns get defaults (:func:`build_evaluate_inputs`, each one reported):
no ``split`` -> every row not in the probe-train set is a gallery row; no query column -> every
gallery row is a query (leave-one-out); no ``cls_split`` -> a seeded 50/50 split of the gallery rows
into probe train/test.

With a protocol (``bench data protocol``, :mod:`bench.protocol`), the file needs only ``item_id`` and
``embeddings``; rows are joined on ``item_id`` and scored exactly as ``bench run`` scores its own
embeddings (:func:`build_protocol_inputs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.console import UserError

REQUIRED = ("category", "product")


def _load_npz(path: Path) -> dict[str, Any]:
    import zipfile

    import numpy as np

    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise UserError(f"{path}: contains object arrays; save strings as unicode arrays (np.array(x, dtype=str))") from exc
        raise UserError(f"{path}: not a readable .npz file ({exc})") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from exc
    if "embeddings" not in data:
        raise UserError(f"{path}: no 'embeddings' array (found: {', '.join(sorted(data)) or 'nothing'})")
    return data


def _load_parquet(path: Path) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({exc})") from exc
    if "embedding" not in table.column_names:
        raise UserError(f"{path}: no 'embedding' list column (found: {', '.join(table.column_names)})")
    col = table.column("embedding").combine_chunks()
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
        raise UserError(f"{path}: column 'embedding' must be a list of floats, got {col.type}")
    if col.null_count:
        raise UserError(f"{path}: column 'embedding' has {col.null_count} null rows")
    lengths = np.asarray(col.value_lengths()) if not pa.types.is_fixed_size_list(col.type) else None
    if lengths is not None and len(lengths) and (lengths != lengths[0]).any():
        raise UserError(f"{path}: 'embedding' rows have different lengths ({lengths.min()}..{lengths.max()})")
    n = len(col)
    flat = col.flatten().to_numpy(zero_copy_only=False)
    data: dict[str, Any] = {"embeddings": flat.reshape(n, -1) if n else flat.reshape(0, 0)}
    for name in table.column_names:
        if name != "embedding":
            data[name] = table.column(name).to_numpy(zero_copy_only=False)
    return data


def load_embeddings_file(path: Path, required: tuple[str, ...] = REQUIRED) -> dict[str, Any]:
    """Read an embeddings file into plain numpy arrays (``embeddings`` plus the per-row columns);
    ``required`` names the columns that must be there (``item_id`` alone when a protocol supplies the rest)."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        data = _load_npz(path)
    elif suffix in (".parquet", ".pq"):
        data = _load_parquet(path)
    else:
        raise UserError(f"{path}: unsupported file type {suffix!r}; use .npz or .parquet")
    return check_embeddings(data, str(path), required)


def check_embeddings(data: dict[str, Any], origin: str, required: tuple[str, ...] = REQUIRED) -> dict[str, Any]:
    """Refuse (one line, naming ``origin``) embeddings that cannot be scored: shape, dtype, NaN/inf,
    missing or short columns, duplicate ``item_id``. Returns ``data`` with ``embeddings`` as an array."""
    import numpy as np

    emb = np.asarray(data["embeddings"])
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise UserError(f"{origin}: embeddings must be a non-empty (rows x dim) array, got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.number):
        raise UserError(f"{origin}: embeddings must be numeric, got {emb.dtype}")
    if not np.isfinite(emb).all():
        raise UserError(f"{origin}: embeddings contain NaN or inf (first bad row {int(np.flatnonzero(~np.isfinite(emb).all(1))[0])})")
    for name in required:
        if name not in data:
            raise UserError(f"{origin}: missing required column {name!r}")
    for name, arr in data.items():
        if name != "embeddings" and np.asarray(arr).shape[:1] != (emb.shape[0],):
            raise UserError(f"{origin}: column {name!r} has {np.asarray(arr).shape[:1]} rows, embeddings have {emb.shape[0]}")
    if "item_id" in data:
        from collections import Counter

        dup, times = Counter(str(v) for v in np.asarray(data["item_id"]).tolist()).most_common(1)[0] \
            if len(data["item_id"]) else ("", 0)
        if times > 1:
            raise UserError(f"{origin}: duplicate item_id {dup!r}; each row must be one listing")
    data["embeddings"] = emb
    return data


def build_evaluate_inputs(data: dict[str, Any], seed: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Turn file columns into :func:`bench.eval.evaluate` keyword arguments, filling documented defaults."""
    import numpy as np

    n = len(data["embeddings"])
    notes: dict[str, str] = {}

    def bool_col(name: str) -> np.ndarray | None:
        if name not in data:
            return None
        arr = np.asarray(data[name])
        if arr.dtype != bool:
            if arr.dtype.kind in "iuf" and np.isin(arr, (0, 1)).all():
                return arr.astype(bool)
            raise UserError(f"column {name!r} must be boolean, got {arr.dtype}")
        return arr

    def str_col(name: str) -> np.ndarray | None:
        if name not in data:
            return None
        return np.array(["" if v is None else str(v) for v in np.asarray(data[name]).tolist()])

    cls_split = str_col("cls_split")
    if cls_split is not None:
        bad = sorted(set(cls_split) - {"train", "test", "", "None"})
        if bad:
            raise UserError(f"column 'cls_split' has values other than train/test/empty: {bad[:5]}")
        cls_train, cls_test = cls_split == "train", cls_split == "test"
    split = str_col("split")
    if split is not None:
        bad = sorted(set(split) - {"pretrain", "eval"})
        if bad:
            raise UserError(f"column 'split' has values other than pretrain/eval: {bad[:5]}")
        gallery = split == "eval"
    else:
        if cls_split is not None:
            gallery = ~cls_train
            notes["gallery"] = "no 'split' column: every row not marked cls_split=='train' is a gallery row"
        else:
            gallery = np.ones(n, dtype=bool)
            notes["gallery"] = "no 'split' column: every row is a gallery row"
    if not gallery.any():
        raise UserError("no gallery rows (no row has split == 'eval')")
    if cls_split is None:
        rng = np.random.default_rng(seed)
        g_rows = np.flatnonzero(gallery)
        perm = rng.permutation(len(g_rows))
        cls_train = np.zeros(n, dtype=bool)
        cls_test = np.zeros(n, dtype=bool)
        cls_train[g_rows[perm[: len(g_rows) // 2]]] = True
        cls_test[g_rows[perm[len(g_rows) // 2 :]]] = True
        notes["cls_split"] = f"no 'cls_split' column: seeded (seed={seed}) 50/50 split of the gallery rows into probe train/test"
    queries = {}
    for name in ("coarse_query", "fine_query"):
        col = bool_col(name)
        if col is None:
            col = gallery.copy()
            notes[name] = "column absent: every gallery row is a query (leave-one-out)"
        queries[name] = col
    kwargs = dict(
        embeddings=np.asarray(data["embeddings"], dtype=np.float32),
        category=str_col("category"),
        product=str_col("product"),
        coarse_query=queries["coarse_query"],
        fine_query=queries["fine_query"],
        cls_train=cls_train,
        cls_test=cls_test,
        gallery=gallery,
        seed=seed,
    )
    return kwargs, notes




def _ids(values: Any) -> list[str]:
    import numpy as np

    return [str(v) for v in np.asarray(values).tolist()]


def build_protocol_inputs(data: dict[str, Any], protocol: dict[str, Any], seed: int, *,
                          probe: bool = True) -> tuple[dict[str, Any], dict[str, int]]:
    """:func:`bench.eval.evaluate` keyword arguments for embeddings joined to a protocol on ``item_id``,
    passed the way ``bench run`` passes its own embeddings: the protocol's eval rows (in protocol
    order, which is the catalog's) are the gallery, their query flags the queries, their
    ``cls_split == "test"`` rows the probe's test rows, and the ``cls_split == "train"`` rows (the
    pretraining pool) go in as ``train_embeddings``. Category and product come from the protocol.

    Refuses in one line, with counts, embedding ids absent from the protocol, and protocol eval rows
    (and, with ``probe``, probe-train rows) absent from the embeddings. Returns the keyword arguments
    and the join's counts.
    """
    import numpy as np

    if "item_id" not in data:
        raise UserError("the embeddings have no 'item_id' column, which a protocol join needs")
    emb_ids = _ids(data["item_id"])
    pos = {item: i for i, item in enumerate(emb_ids)}
    p_ids = _ids(protocol["item_id"])
    known = set(p_ids)
    unknown = [i for i in emb_ids if i not in known]
    if unknown:
        raise UserError(f"{len(unknown)} of {len(emb_ids)} embedding item_ids are not in the protocol "
                        f"(first: {unknown[0]!r}); was it written for another catalog?")
    split = np.asarray(_ids(protocol["split"]))
    cls_split = np.asarray(["" if v in ("None", "nan") else v for v in _ids(protocol["cls_split"])])
    eval_rows = np.flatnonzero(split == "eval")
    train_rows = np.flatnonzero(cls_split == "train") if probe else np.zeros(0, dtype=np.int64)
    for what, rows in (("eval", eval_rows), ("probe-train (cls_split == 'train')", train_rows)):
        missing = [p_ids[r] for r in rows if p_ids[r] not in pos]
        if missing:
            hint = "" if what == "eval" else "; pass --no-probe to score retrieval and clustering only"
            raise UserError(f"{len(missing)} of {len(rows)} protocol {what} rows have no embedding "
                            f"(first: {missing[0]!r}){hint}")
    if not len(eval_rows):
        raise UserError("the protocol has no eval rows (split == 'eval')")
    emb = np.asarray(data["embeddings"], dtype=np.float32)
    take = lambda rows: np.fromiter((pos[p_ids[r]] for r in rows), dtype=np.int64, count=len(rows))
    category = np.asarray(_ids(protocol["category"]))
    product = np.asarray(_ids(protocol["product"]))
    kwargs: dict[str, Any] = dict(
        embeddings=emb[take(eval_rows)],
        category=category[eval_rows], product=product[eval_rows],
        coarse_query=np.asarray(protocol["coarse_query"], dtype=bool)[eval_rows],
        fine_query=np.asarray(protocol["fine_query"], dtype=bool)[eval_rows],
        seed=seed,
    )
    if "coarse_gallery" in protocol:  # each task's own sets (bench.protocol.TASK_COLUMNS)
        kwargs["task_galleries"] = {t: np.asarray(protocol[f"{t}_gallery"], dtype=bool)[eval_rows] for t in ("coarse", "fine")}
        pos = {t: np.asarray(protocol[f"{t}_positives"], dtype=np.int64)[eval_rows] for t in ("coarse", "fine")}
        kwargs["positive_counts"] = {t: np.maximum(p, 0) for t, p in pos.items() if (p >= 0).any()} or None
        kwargs["gallery"] = kwargs["task_galleries"]["coarse"] | kwargs["coarse_query"]
        kwargs["protocol"] = {t: {"queries": int(kwargs[f"{t}_query"].sum()), "gallery": int(g.sum()),
                                  "leave_one_out": bool(np.array_equal(kwargs[f"{t}_query"], g))}
                              for t, g in kwargs["task_galleries"].items()}
    if probe:
        kwargs.update(cls_test=cls_split[eval_rows] == "test", train_embeddings=emb[take(train_rows)],
                      train_category=category[train_rows])
    else:
        kwargs["tasks"] = ("retrieval", "clustering")
    counts = {"embedding_rows": len(emb_ids), "protocol_rows": len(p_ids), "eval_rows": len(eval_rows),
              "probe_train_rows": len(train_rows),
              "unused_embedding_rows": len(emb_ids) - len({p_ids[r] for r in np.concatenate([eval_rows, train_rows])})}
    return kwargs, counts


def score_embeddings(embeddings: str | Path | dict[str, Any], protocol: str | Path | dict[str, Any] | None = None, *,
                     seed: int = 0, probe: bool = True, normalize: bool = False, max_topk: int = 10,
                     knn_backend: str = "auto", kmeans_backend: str = "auto") -> dict[str, Any]:
    """Score embeddings (a file path, or a dict of arrays in the file's layout) with the shared
    evaluator; with ``protocol`` (a path written by ``bench data protocol`` or its columns as a dict)
    exactly as ``bench run`` scores its own embeddings, else with the documented defaults, which are
    listed under ``"input_defaults"`` of the result. Raises :class:`~bench.console.UserError`."""
    from bench.eval import evaluate
    from bench.protocol import read_protocol

    origin = str(embeddings) if isinstance(embeddings, (str, Path)) else "embeddings"
    required = ("item_id",) if protocol is not None else REQUIRED
    if isinstance(embeddings, (str, Path)):
        data = load_embeddings_file(Path(embeddings), required)
    else:
        data = check_embeddings(dict(embeddings), origin, required)
    notes: dict[str, str] = {}
    join: dict[str, int] | None = None
    if protocol is not None:
        table = read_protocol(Path(protocol)) if isinstance(protocol, (str, Path)) else protocol
        kwargs, join = build_protocol_inputs(data, table, seed, probe=probe)
    else:
        kwargs, notes = build_evaluate_inputs(data, seed)
        if not probe:
            kwargs.pop("cls_test"), kwargs.pop("cls_train")
            kwargs["tasks"] = ("retrieval", "clustering")
    try:
        result = evaluate(**kwargs, normalize=normalize, max_topk=max_topk, knn_backend=knn_backend,
                          kmeans_backend=kmeans_backend)
    except ValueError as exc:
        raise UserError(f"{origin}: {exc}") from exc
    head: dict[str, Any] = {"source": origin, "input_defaults": notes}
    if protocol is not None:
        head.update(protocol=str(protocol) if isinstance(protocol, (str, Path)) else "arrays", protocol_join=join)
    return {**head, **result}
