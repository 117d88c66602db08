"""``bench table``, ``bench sweep``, ``bench check`` and ``bench plot``: leaderboards from result files."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape as esc

from bench.console import UserError, console, err_console

DEFAULT_RESULTS = Path("leaderboards/results")
DEFAULT_OUT = Path("leaderboards")


def _specs(names: Optional[List[str]]):
    from bench.tables import select_tables

    try:
        return select_tables(names)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None


def _collect(results: Path, data: Optional[str], preset: Optional[str]):
    from bench.leaderboard import TableError, collect

    try:
        col = collect(results, data=data, preset=preset)
    except TableError as exc:
        raise UserError(str(exc)) from None
    for why in col.skipped:
        err_console.print(f"[yellow]skipped[/] {esc(why)}")
    return col


def table_cmd(
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="Directory of result files (searched recursively)."),
    out: Path = typer.Option(DEFAULT_OUT, "--out", help="Leaderboard directory; its README.md gets the tables."),
    table: Optional[List[str]] = typer.Option(None, "--table", help="Only this table (repeatable); default: all."),
    data: Optional[str] = typer.Option(None, "--data", help="Only results of this data source (or fingerprint prefix)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Only results of this preset."),
    no_paper: bool = typer.Option(False, "--no-paper", help="Leave out the paper's published columns."),
    stdout: bool = typer.Option(False, "--stdout", help="Print the Markdown instead of writing README.md."),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 if README.md is not up to date."),
) -> None:
    """Regenerate the leaderboard tables (Markdown) from result files, between m5bench markers."""
    from bench.leaderboard import TableError, render_all, skeleton, update_page
    from bench.plots import figures_block
    from bench.tables import PaperError, table_names

    specs = _specs(table)
    col = _collect(results, data, preset)
    try:
        blocks = render_all(specs, col, with_paper=not no_paper)
    except (TableError, PaperError) as exc:
        raise UserError(str(exc)) from None
    if stdout:
        # Plain stdout, not rich: the Markdown must come out byte for byte (no emoji or wrapping).
        for spec in specs:
            sys.stdout.write(blocks[spec.name])
        sys.stdout.flush()
        return
    blocks["figures"] = figures_block(out / "figures")
    page = out / "README.md"
    try:
        _text, changed = update_page(page, blocks, skeleton=skeleton(table_names()), write=not check)
    except TableError as exc:
        raise UserError(f"{page}: {exc}") from None
    n_results = sum(len(s) for s in col.runs.values())
    if check:
        if changed:
            err_console.print(f"[red]{page} is not up to date[/] with {results}: run `bench table`")
            raise typer.Exit(1)
        console.print(f"{page} is up to date ({n_results} result files)")
        return
    console.print(f"{'wrote' if changed else 'unchanged'} {page}: {len(specs)} table(s) from {n_results} result files")


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise UserError(f"--seeds takes integers separated by commas, got {text!r}") from None
    if not seeds:
        raise UserError("--seeds is empty")
    return sorted(set(seeds))


def sweep_cmd(
    table: str = typer.Option(..., "--table", help="Table whose cells to run (see `bench table`)."),
    data: str = typer.Option("synthetic", "--data", help="Data source passed to `bench run --data`."),
    preset: str = typer.Option("tiny", "--preset", help="Model preset."),
    seeds: str = typer.Option("0", "--seeds", help="Seeds, comma-separated, e.g. 0,1,2."),
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="Results directory."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and which exist; run nothing."),
) -> None:
    """Run exactly the missing cells of a table, one `bench run` each; resumable; failures recorded."""
    from rich.table import Table

    from bench import sweep

    spec = _specs([table])[0]
    seed_list = _parse_seeds(seeds)
    if dry_run:
        sts = sweep.sweep_table(spec, results, seeds=seed_list, data=data, preset=preset, dry_run=True)
        t = Table(title=f"bench sweep --table {table} (dry run): {results}")
        for c in ("model", "modalities", "split", "overrides", "seed", "status", "file"):
            t.add_column(c, overflow="fold")
        for st in sts:
            c = st.planned.cell
            t.add_row(c.model, c.modalities, c.split, esc(" ".join(f"{k}={v}" for k, v in c.overrides)) or "-",
                      str(st.planned.seed), esc(st.state + (f" ({st.note})" if st.note else "")),
                      esc(st.path.name if st.path else ""))
        console.print(t)
        missing = sum(st.state == "missing" for st in sts)
        console.print(f"{len(sts) - missing}/{len(sts)} present, {missing} to run")
        return

    def on_event(st, i, n):
        if st.state == "running":
            console.print(f"\\[{i}/{n}] running {esc(st.planned.cell.describe())} seed {st.planned.seed} "
                          f"[dim](log {esc(str(st.path))})[/]")
            return
        colour = "green" if st.state == "ran" else "red"
        console.print(f"\\[{i}/{n}] [{colour}]{st.state}[/] {esc(st.planned.cell.describe())} seed {st.planned.seed}"
                      + (esc(f": {st.note}, see {st.path}") if st.state == "failed" else ""))

    sts = sweep.sweep_table(spec, results, seeds=seed_list, data=data, preset=preset, on_event=on_event)
    counts = {k: sum(st.state == k for st in sts) for k in ("present", "ran", "failed")}
    console.print(f"sweep {table}: {counts['present']} present, {counts['ran']} ran, {counts['failed']} failed "
                  f"(of {len(sts)} runs)")
    if counts["failed"]:
        err_console.print(f"[red]{counts['failed']} cell(s) failed[/]; records in {results / 'failed'}")
        raise typer.Exit(1)


def check_cmd(
    update: bool = typer.Option(False, "--update", help="Re-record the values (runs update_seeds); on purpose only."),
    tier_path: Optional[Path] = typer.Option(None, "--tier", help="Tier file (default leaderboards/regression/tier.json)."),
    recorded_path: Optional[Path] = typer.Option(None, "--recorded", help="Recorded values (default beside the tier)."),
    results: Optional[Path] = typer.Option(None, "--results", help="Keep the runs here (default: a temp dir)."),
    problems_only: bool = typer.Option(False, "--problems-only", help="List only metrics that are not ok."),
) -> None:
    """Run the CI tier through `bench run` and compare with the recorded values; exit 1 on a regression."""
    from rich.table import Table

    from bench import check

    tier_path = tier_path or check.REGRESSION_DIR / "tier.json"
    recorded_path = recorded_path or tier_path.parent / "recorded.json"
    try:
        tier = check.load_tier(tier_path)
        recorded = None if update else check.load_recorded(recorded_path)
    except check.CheckError as exc:
        raise UserError(str(exc)) from None

    tmp = None
    if results is None:
        tmp = Path(tempfile.mkdtemp(prefix="m5bench-check-"))
        results = tmp
    seeds = tier.update_seeds if update else tier.seeds

    def on_event(st, i, n):
        if st.state == "running":
            return
        colour = "green" if st.state == "ran" else "red"
        console.print(f"\\[{i}/{n}] [{colour}]{st.state}[/] {esc(st.planned.cell.describe())} seed {st.planned.seed}")

    console.print(f"bench check: {len(tier.cells)} cells x seeds {list(seeds)} on {tier.data}, preset {tier.preset} "
                  f"-> {results}")
    runs, statuses = check.run_tier(tier, seeds, results, on_event=on_event)
    failed = [st for st in statuses if st.state == "failed"]
    for st in failed:
        err_console.print(f"[red]run failed[/] {esc(st.planned.cell.describe())} seed {st.planned.seed}: "
                          + esc(f"{st.note} ({st.path})"))
    if update:
        if failed:
            raise UserError(f"not recording: {len(failed)} run(s) failed; results kept in {results}")
        try:
            doc = check.build_recorded(tier, runs, per_query_dir=recorded_path.parent / "per_query")
        except check.CheckError as exc:
            raise UserError(str(exc)) from None
        check.save_recorded(recorded_path, doc)
        n = sum(len(c["metrics"]) for c in doc["cells"].values())
        console.print(f"recorded {n} metrics over {len(doc['cells'])} cells -> {recorded_path}")
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        return

    try:
        rows = check.compare(recorded, tier, runs, per_query_dir=recorded_path.parent / "per_query")
    except check.CheckError as exc:
        raise UserError(str(exc)) from None
    t = Table(title=f"bench check vs {recorded_path}")
    for c in ("cell", "metric", "recorded", "now", "delta", "band", "ok"):
        t.add_column(c, justify="right" if c in ("recorded", "now", "delta", "band") else "left",
                     overflow="fold")  # CI logs are 80 columns wide: wrap names, never cut them
    fmt = lambda v, sign=False: "—" if v is None else (f"{v * 100:+.2f}" if sign else f"{v * 100:.2f}")  # noqa: E731
    for r in rows:
        if problems_only and r.status == "ok":
            continue
        mark = {"ok": "[green]ok[/]", "improved": "[cyan]improved[/]", "new": "[dim]new[/]"}.get(
            r.status, f"[bold red]{r.status}[/]")
        band = (f"[{fmt(r.interval.low, True)}, {fmt(r.interval.high, True)}]" if r.interval is not None
                else f"±{fmt(r.tolerance)}" if r.tolerance is not None else "—")
        t.add_row(esc(r.cell), esc(r.metric), fmt(r.recorded), fmt(r.now), fmt(r.delta, True), esc(band), mark)
    console.print(t)
    for note in (check.tier_note(recorded, tier), check.data_note(recorded, runs)):
        if note:
            err_console.print(f"[yellow]note:[/] {esc(note)}")
    bad = [r for r in rows if r.failed]
    if any(r.status == "improved" for r in rows):
        console.print("some metrics improved beyond their band: if intended, re-record with `bench check --update`")
    if bad or failed:
        err_console.print(f"[bold red]bench check failed[/]: {len(bad)} metric(s) regressed or missing, "
                          f"{len(failed)} run(s) failed; results kept in {results}")
        raise typer.Exit(1)
    console.print(f"[green]bench check passed[/]: {len(rows)} comparisons")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


def plot_cmd(
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="Directory of result files."),
    out: Path = typer.Option(DEFAULT_OUT, "--out", help="Leaderboard directory; figures go to OUT/figures."),
    data: Optional[str] = typer.Option(None, "--data", help="Only results of this data source."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Only results of this preset."),
    max_points: int = typer.Option(2000, "--max-points", help="t-SNE subsample size."),
    seed: int = typer.Option(0, "--seed", help="t-SNE and subsample seed."),
    threads: int = typer.Option(1, "--threads", help="CPU threads for t-SNE (0: the libraries' default)."),
) -> None:
    """Draw the figures (t-SNE, image-title similarity, harmonisation matrix) as PNGs."""
    from bench.leaderboard import TableError, skeleton, update_page
    from bench.plots import figures_block, make_figures
    from bench.tables import table_names

    col = _collect(results, data, preset)
    for fig in make_figures(col, out / "figures", max_points=max_points, seed=seed, threads=threads or None):
        if fig.path:
            console.print(f"[green]drew[/] {esc(f'{fig.path} ({fig.message})')}")
        else:
            console.print(f"[yellow]{fig.name}[/] {esc(fig.message)}")
    page = out / "README.md"
    try:
        update_page(page, {"figures": figures_block(out / "figures")}, skeleton=skeleton(table_names()))
    except TableError as exc:
        raise UserError(f"{page}: {exc}") from None


def register(app: typer.Typer) -> None:
    app.command("table")(table_cmd)
    app.command("sweep")(sweep_cmd)
    app.command("check")(check_cmd)
    app.command("plot")(plot_cmd)
