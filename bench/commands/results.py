"""``bench results ls`` and ``bench results export``: the result files of a folder, as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bench.console import UserError, console

results_app = typer.Typer(help="List and export result files.", no_args_is_help=True)

_ROOT = typer.Option(None, "--results", help="folder of result files (default $M5BENCH_HOME/results)")
_MODEL = typer.Option(None, "--model", help="only this model")
_MODS = typer.Option(None, "--modalities", help="only this modality set, e.g. I,T")
_DATA = typer.Option(None, "--data", help="only this catalog: a source or a fingerprint prefix")
_SPLIT = typer.Option(None, "--split", help="only this split (subset or full)")
_SEED = typer.Option(None, "--seed", help="only this seed")
#: (column label, metric) that `ls` shows; `export` writes every metric
_SHOWN = (("coarse mAP@1", "pretrain/coarse/mAP@1[m5product]"), ("fine mAP@1", "pretrain/fine/mAP@1[m5product]"),
          ("probe", "pretrain/cls/accuracy[linear_probe]"), ("ft acc", "finetune/cls/accuracy[finetuned_head]"),
          ("NMI", "pretrain/cluster/NMI"))


def _frame(root: Optional[Path], model, modalities, data, split, seed):
    from bench.modalities import ModalityError
    from bench.pipeline import default_results_dir
    from bench.results_frame import load_results

    root = root or default_results_dir()
    if not root.is_dir():
        raise UserError(f"{root}: no such folder of results")
    try:
        return load_results(root, model=model, modalities=modalities, data=data, split=split, seed=seed), root
    except ModalityError as exc:
        raise UserError(str(exc)) from None


@results_app.command("ls")
def ls(results: Optional[Path] = _ROOT, model: Optional[str] = _MODEL, modalities: Optional[str] = _MODS,
       data: Optional[str] = _DATA, split: Optional[str] = _SPLIT, seed: Optional[int] = _SEED) -> None:
    """One line per result file: the cell, the catalog and the headline metrics (percent)."""
    import math

    from rich.table import Table

    frame, root = _frame(results, model, modalities, data, split, seed)
    t = Table(title=f"{len(frame)} result(s) under {root}", caption="metrics in percent, pre-trained features "
              "except ft acc (fine-tuned head); retrieval under [m5product]")
    t.add_column("cell")
    t.add_column("data")
    shown = [(label, col) for label, col in _SHOWN if col in frame.columns]
    for label, _ in shown:
        t.add_column(label, justify="right")
    for _, r in frame.iterrows():
        cell = f"{r['model']} {r['modalities']} {r['split']} {r['preset']} seed{r['seed']}" + \
            (f" {r['overrides']}" if r["overrides"] else "")
        vals = [r[col] for _, col in shown]
        t.add_row(cell, f"{r['data']} ({r['fingerprint'][:6]})",
                  *("n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}" for v in vals))
    console.print(t)


@results_app.command("export")
def export(out: Path = typer.Option(..., "--out", "-o", help="file to write (.csv or .parquet)"),
           fmt: Optional[str] = typer.Option(None, "--format", help="csv or parquet (default: from --out's suffix)"),
           results: Optional[Path] = _ROOT, model: Optional[str] = _MODEL, modalities: Optional[str] = _MODS,
           data: Optional[str] = _DATA, split: Optional[str] = _SPLIT, seed: Optional[int] = _SEED) -> None:
    """One row per result, one column per metric (fractions), written atomically."""
    import os

    from bench.results import atomic_tmp

    fmt = (fmt or out.suffix.lstrip(".")).lower()
    if fmt not in ("csv", "parquet"):
        raise UserError(f"unknown export format {fmt!r}; use --format csv or --format parquet")
    frame, _ = _frame(results, model, modalities, data, split, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = atomic_tmp(out, prefix=f".{out.name}.")
    os.close(fd)
    try:
        frame.to_csv(tmp, index=False) if fmt == "csv" else frame.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    console.print(f"wrote {len(frame)} result(s), {frame.shape[1]} columns, to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(results_app, name="results")
