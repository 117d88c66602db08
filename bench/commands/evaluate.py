"""``bench eval --embeddings FILE [--protocol PROTOCOL]``: score saved embeddings with the shared evaluator.

File formats, defaults and the protocol join are in :mod:`bench.eval.files`; this command only parses
options and prints.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import typer

from bench.console import console, err_console
from bench.eval.files import build_evaluate_inputs, load_embeddings_file  # noqa: F401 - the command's library


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
    protocol: Path | None = typer.Option(None, "--protocol", "-p", help="protocol file from `bench data protocol`: "
                                         "join on item_id and score as `bench run` does (no defaults)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write the result JSON here (atomically)"),
    normalize: bool = typer.Option(False, "--normalize/--dot", help="--normalize: cosine similarity; --dot: raw dot product (the official protocol)"),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="--no-probe: retrieval and clustering only (no probe-train rows needed)"),
    seed: int = typer.Option(0, help="seed for the probe, k-means seeds (seed..seed+2) and the default probe split"),
    max_topk: int = typer.Option(10, help="official list length before the query is removed"),
    knn_backend: str = typer.Option("auto", help="auto (the fastest of select, bf16 and faiss here, timed once), select, bf16, faiss or torch"),
    kmeans_backend: str = typer.Option("auto", help="auto (sklearn for small sets, faiss when k > 1000 or n > 200000), sklearn or faiss"),
) -> None:
    """Score saved embeddings: retrieval (official + standard definitions), linear probe, clustering."""
    import torch

    from bench.eval.files import score_embeddings

    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    result = score_embeddings(embeddings, protocol, seed=seed, probe=probe, normalize=normalize, max_topk=max_topk,
                              knn_backend=knn_backend, kmeans_backend=kmeans_backend)
    print_result(result, f"evaluation of {embeddings.name}")
    if result.get("protocol_join"):
        console.print("protocol join: " + ", ".join(f"{k}={v}" for k, v in result["protocol_join"].items()))
    for note in result["input_defaults"].values():
        # a default decides which rows are queries, gallery and probe rows: say so loudly, not only in the JSON
        err_console.print(f"[yellow]WARNING:[/] default used: {note} (pass --protocol FILE to score as `bench run` does)")
    if out is not None:
        from bench.results import write_json_atomic

        write_json_atomic(out, result)
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
