"""``bench eval --embeddings FILE``: score saved embeddings with the shared evaluator.

Accepted files:

* ``.npz`` with arrays ``embeddings`` (N, d), ``category`` (N,), ``product`` (N,), optional
  ``item_id``, ``split`` ("pretrain"/"eval"), ``coarse_query``/``fine_query`` (bool),
  ``cls_split`` ("train"/"test"/""). Strings must be stored as numpy unicode arrays (object arrays
  would need pickle, which is refused).
* ``.parquet`` with an ``embedding`` list column and the same columns.

Defaults when columns are absent (all recorded under ``"input_defaults"`` in the JSON):
no ``split`` -> every row not in the probe-train set is a gallery row; no query column -> every
gallery row is a query (leave-one-out); no ``cls_split`` -> a seeded 50/50 split of the gallery rows
into probe train/test.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import typer

from bench.console import UserError, console

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


def load_embeddings_file(path: Path) -> dict[str, Any]:
    """Read an embeddings file into plain numpy arrays (``embeddings`` plus the per-row columns)."""
    import numpy as np

    if not path.exists():
        raise UserError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        data = _load_npz(path)
    elif suffix in (".parquet", ".pq"):
        data = _load_parquet(path)
    else:
        raise UserError(f"{path}: unsupported file type {suffix!r}; use .npz or .parquet")
    emb = np.asarray(data["embeddings"])
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise UserError(f"{path}: embeddings must be a non-empty (rows x dim) array, got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.number):
        raise UserError(f"{path}: embeddings must be numeric, got {emb.dtype}")
    if not np.isfinite(emb).all():
        raise UserError(f"{path}: embeddings contain NaN or inf (first bad row {int(np.flatnonzero(~np.isfinite(emb).all(1))[0])})")
    for name in REQUIRED:
        if name not in data:
            raise UserError(f"{path}: missing required column {name!r}")
    for name, arr in data.items():
        if name != "embeddings" and np.asarray(arr).shape[:1] != (emb.shape[0],):
            raise UserError(f"{path}: column {name!r} has {np.asarray(arr).shape[:1]} rows, embeddings have {emb.shape[0]}")
    if "item_id" in data:
        from collections import Counter

        dup, times = Counter(str(v) for v in np.asarray(data["item_id"]).tolist()).most_common(1)[0] \
            if len(data["item_id"]) else ("", 0)
        if times > 1:
            raise UserError(f"{path}: duplicate item_id {dup!r}; each row must be one listing")
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


def print_result(result: dict[str, Any], title: str) -> None:
    """A rich table of every metric (fraction and percent) plus the query counts."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("x100", justify="right")
    for name, val in result["metrics"].items():
        ok = isinstance(val, float) and math.isfinite(val)
        t.add_row(name, f"{val:.4f}" if ok else "n/a", f"{100 * val:.2f}" if ok else "n/a")
    console.print(t)
    c = result["counts"]
    console.print(", ".join(f"{k}={v}" for k, v in c.items()))


def eval_command(
    embeddings: Path = typer.Option(..., "--embeddings", "-e", help="embeddings file (.npz or .parquet)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write the result JSON here (atomically)"),
    normalize: bool = typer.Option(False, "--normalize/--dot", help="--normalize: cosine similarity; --dot: raw dot product (the official protocol)"),
    seed: int = typer.Option(0, help="seed for the probe, k-means seeds (seed..seed+2) and the default probe split"),
    max_topk: int = typer.Option(10, help="official list length before the query is removed"),
    knn_backend: str = typer.Option("auto", help="auto (the faster of select and faiss here, timed once), select, faiss or torch"),
    kmeans_backend: str = typer.Option("sklearn", help="sklearn (default) or faiss"),
) -> None:
    """Score saved embeddings: retrieval (official + standard definitions), linear probe, clustering."""
    import torch

    from bench.eval import evaluate

    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    data = load_embeddings_file(embeddings)
    kwargs, notes = build_evaluate_inputs(data, seed)
    try:
        result = evaluate(**kwargs, normalize=normalize, max_topk=max_topk, knn_backend=knn_backend,
                          kmeans_backend=kmeans_backend)
    except ValueError as exc:
        raise UserError(f"{embeddings}: {exc}") from exc
    result = {"source": str(embeddings), "input_defaults": notes, **result}
    print_result(result, f"evaluation of {embeddings.name}")
    for note in notes.values():
        console.print(f"[dim]default: {note}[/]")
    if out is not None:
        from bench.results import write_json_atomic

        write_json_atomic(out, result)
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
