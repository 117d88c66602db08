"""``bench data synth | validate | stats | protocol``: make, check and describe catalogs, and write their evaluation protocol."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import typer

from bench.console import console, err_console
from bench.data.sources import usage as source_usage

data_app = typer.Typer(help="Generate, validate and describe listing catalogs.", no_args_is_help=True)

_SOURCE_HELP = f"{source_usage()}, or a path (see `bench ls sources`)."

#: ``--encoding``, shared by every command that loads a catalog.
ENCODING = typer.Option(None, "--encoding", metavar="CODEC",
                        help="Text encoding of a manifest or of a release's annotation files, e.g. gbk (default: UTF-8).")


def _source_for(path_or_source: str) -> str:
    """A source string from either a source (``m5product:...``) or a bare path (dir -> m5product, file -> manifest)."""
    from bench.data.sources import SOURCES

    if path_or_source == "synthetic" or path_or_source.split(":", 1)[0] in SOURCES:
        return path_or_source
    from bench.data.errors import CatalogError

    p = Path(path_or_source).expanduser()
    if not p.exists():
        raise CatalogError("no such file or directory", path=p)
    return f"m5product:{p}" if p.is_dir() else f"manifest:{p}"


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Directory to create (must not exist or be empty)."),
    size: str = typer.Option("default", "--size", help="mini (~1,500 listings), default (~5,000) or large (~50,000)."),
    seed: int = typer.Option(0, "--seed", help="Generator seed; same seed and version give byte-identical files."),
    n_listings: Optional[int] = typer.Option(None, "--n-listings", hidden=True, help="Override the listing count (tests)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes for rendering media (default: CPUs, max 4)."),
    official_lists: bool = typer.Option(False, "--official-lists",
                                        help="Write the split lists under the release's own names and in the official "
                                             "protocol's shape (separate coarse gallery, fine leave-one-out, the subset's "
                                             "own test set); load it as m5product:OUT."),
) -> None:
    """Generate the synthetic catalog (real JPEG / MP4 / MP3 files) in the M5Product release layout."""
    import time

    from bench.console import UserError
    from bench.data.synth import SIZES, config_for, generate

    if size not in SIZES:
        raise UserError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty")
    t0 = time.perf_counter()
    with err_console.status(f"generating synthetic {size} catalog (seed {seed}) ..."):
        info = generate(out, config_for(size, seed, n_listings, official_lists=official_lists), workers=workers)
    c = info["counts"]
    console.print(f"wrote {c['listings']} listings ({c['categories']} categories, {c['products']} products, "
                  f"{c['image']} images, {c['video']} videos, {c['audio']} audios) to {out} "
                  f"in {time.perf_counter() - t0:.1f} s")


@data_app.command("validate")
def validate(
    path: str = typer.Argument(..., help="A catalog: a release directory, a manifest file, or a source string "
                                         f"({source_usage()})."),
    list_reason: Optional[str] = typer.Option(None, "--list", metavar="REASON",
                                              help="Print the ids of the listings with this problem, one per line."),
    encoding: Optional[str] = ENCODING,
) -> None:
    """Check every listing and media file of a catalog.

    Exit 0 with per-reason counts when only listings have problems (they are skipped or lose a modality); exit 2 naming the file and line when a whole file is broken, or when no listing is usable (after printing why each was rejected).
    """
    from bench.data.catalog import load_catalog
    from bench.data.errors import CatalogError, EmptyCatalogError
    from bench.data.report import skips_table, unknown_columns_warning

    try:
        cat = load_catalog(_source_for(path), progress=False, encoding=encoding)
    except CatalogError as exc:
        if isinstance(exc, EmptyCatalogError):
            if list_reason is not None:
                _print_ids(exc.skips, exc.skips.ids, list_reason)
            elif exc.skips:
                console.print(skips_table(exc.skips, ids=exc.skips.ids))
        err_console.print(f"[bold red]invalid catalog:[/] {exc}")
        # SystemExit, not typer.Exit: bench.cli.main runs click with standalone_mode=False, which
        # turns typer.Exit into a return value and so would exit 0.
        raise SystemExit(exc.exit_code) from None
    if list_reason is not None:
        _print_ids(cat.skips, cat.problem_ids, list_reason)
        return
    if cat.skips:
        console.print(skips_table(cat.skips, ids=cat.problem_ids))
    warning = unknown_columns_warning(cat)
    if warning:
        err_console.print(f"[yellow]warning:[/] {warning}")
    pres = ", ".join(f"{k} {100 * v:.0f}%" for k, v in cat.modality_presence().items())
    console.print(f"modality presence: {pres}")
    n_problems = sum(cat.skips.values())
    console.print(f"{len(cat)} listings usable; {n_problems} listing-level problem(s); fingerprint {cat.fingerprint}")
    if cat.skips:
        console.print(f"list the affected listings with: bench data validate {path} --list REASON")


def _print_ids(skips: Counter, ids: dict[str, list[str]], reason: str) -> None:
    """Print the listings counted under ``reason`` (stdout, one per line); refuse an unknown reason."""
    import difflib

    from bench.console import UserError
    from bench.data.report import KNOWN_REASONS, normalize_reason

    r = normalize_reason(reason)
    if r not in KNOWN_REASONS and r not in skips:
        known = sorted(set(KNOWN_REASONS) | set(skips))
        close = difflib.get_close_matches(r, known, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown problem reason {reason!r}{hint}; known reasons: {', '.join(known)}")
    for item in ids.get(r, []):
        console.print(item, markup=False, highlight=False, soft_wrap=True)
    err_console.print(f"{skips.get(r, 0)} listing(s) with {r}")


@data_app.command("stats")
def stats(
    source: str = typer.Argument("synthetic", help=_SOURCE_HELP),
    encoding: Optional[str] = ENCODING,
) -> None:
    """Listings, categories, products, super-categories, modality presence, split sizes and skip counts."""
    from bench.data.catalog import load_catalog
    from bench.data.report import stats_tables, unknown_columns_warning

    cat = load_catalog(_source_for(source), progress=False, encoding=encoding)
    for t in stats_tables(cat):
        console.print(t)
    warning = unknown_columns_warning(cat)
    if warning:
        err_console.print(f"[yellow]warning:[/] {warning}")


@data_app.command("protocol")
def protocol(
    source: str = typer.Argument(..., help=_SOURCE_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Parquet file to write (one row per listing)."),
    split: str = typer.Option("full", "--split", help="The pretraining split whose cells' sets to write "
                              "(subset or full; they differ only where a release gives the subset its own test set)."),
    encoding: Optional[str] = ENCODING,
) -> None:
    """Write the catalog's evaluation protocol (item_id, category, product, split, coarse_query,
    fine_query, cls_split, and each task's gallery where the catalog's lists give one), the rows
    `bench run` evaluates by, for `bench eval --protocol`."""
    from bench.console import UserError
    from bench.data.catalog import load_catalog
    from bench.protocol import write_protocol

    if split not in ("subset", "full"):
        raise UserError(f"unknown split {split!r}; choose subset or full")
    cat = load_catalog(_source_for(source), progress=False, encoding=encoding)
    cols = write_protocol(cat, out, split)
    n_eval = int((cols["split"] == "eval").sum())
    console.print(f"wrote {out}: {len(cat)} listings ({n_eval} eval, {int(cols['coarse_query'].sum())} coarse / "
                  f"{int(cols['fine_query'].sum())} fine queries, {int((cols['cls_split'] == 'train').sum())} probe-train, "
                  f"{int((cols['cls_split'] == 'test').sum())} probe-test); catalog fingerprint {cat.fingerprint}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
