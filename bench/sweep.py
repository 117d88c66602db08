"""``bench sweep``: run exactly the result cells a table still lacks, one ``bench run`` each.

Resumable by construction: a cell whose result is already in the results directory is skipped
(matched on the result's own ``cell`` block, not on the file name, so the check does not depend on
how ``bench run`` spells override values). A failed cell is recorded as
``DIR/failed/<cell stem>.json`` (command, exit code, stderr tail) and the sweep goes on; the caller
exits non-zero at the end. The command runner is injectable so tests never train anything.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from bench.modalities import ModalitySet
from bench.results import cell_filename, iter_results, write_json_atomic
from bench.tables import CellSpec, TableSpec, same_source

TAIL_CHARS = 4000
FAILED_SCHEMA = "m5bench.failed/1"


@dataclass(frozen=True)
class Planned:
    """One run to make: a table cell at a seed, on a dataset and preset."""

    cell: CellSpec
    seed: int
    data: str
    preset: str

    @property
    def stem(self) -> str:
        return cell_filename(self.cell.model, ModalitySet.parse(self.cell.modalities).key, self.cell.split,
                             self.preset, self.seed, self.cell.overrides_dict)[:-len(".json")]

    def command(self, results: Path, bench: Sequence[str] | None = None) -> list[str]:
        """The ``bench run`` command line for this cell."""
        cmd = list(bench or (sys.executable, "-m", "bench.cli"))
        cmd += ["run", "--model", self.cell.model, "--modalities", self.cell.modalities, "--data", self.data,
                "--split", self.cell.split, "--preset", self.preset, "--seed", str(self.seed)]
        for k, v in self.cell.overrides:
            cmd += ["--set", f"{k}={v}"]
        return cmd + ["--results", str(results)]


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output_tail: str  # last TAIL_CHARS of stderr (and stdout) for the failure record


Runner = Callable[[list[str], Path], Outcome]


def subprocess_runner(cmd: list[str], log_path: Path) -> Outcome:
    """Run ``cmd``; its stdout and stderr go to ``log_path`` (kept), the tail comes back."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        text = ""
    return Outcome(proc.returncode, text[-TAIL_CHARS:])


def plan(cells: Iterable[CellSpec], seeds: Iterable[int], *, data: str, preset: str) -> list[Planned]:
    """Every (cell, seed) in table order, seeds inner."""
    seeds = list(seeds)
    return [Planned(c, s, data, preset) for c in cells for s in seeds]


def existing(results: Path) -> dict[tuple[CellSpec, int, str], tuple[Path, dict[str, Any]]]:
    """Results present under ``results``, keyed by (cell, seed, preset); failed/ records are not results."""
    out: dict[tuple[CellSpec, int, str], tuple[Path, dict[str, Any]]] = {}
    if not results.exists():
        return out
    for path, res in iter_results(results):
        try:
            c = res["cell"]
            key = (CellSpec.from_result(res), int(c["seed"]), str(c["preset"]))
        except (KeyError, TypeError, ValueError):
            continue
        out.setdefault(key, (path, res))
    return out


@dataclass
class Status:
    planned: Planned
    state: str  # "present" | "missing" | "running" | "ran" | "failed"
    path: Path | None = None
    note: str = ""


def status(planned: list[Planned], results: Path) -> list[Status]:
    """Which planned runs already have a result (``present``) and which are ``missing``."""
    have = existing(results)
    out = []
    for p in planned:
        hit = have.get((p.cell, p.seed, p.preset))
        if hit is None:
            out.append(Status(p, "missing"))
            continue
        d = hit[1].get("data") or {}
        note = "" if same_source(p.data, d) else f"data {d.get('source')!r}"
        out.append(Status(p, "present", hit[0], note))
    # Results of one source made by different catalog versions cannot share a table; name them so
    # the stale ones can be deleted and rerun (the sweep itself never overwrites a result).
    def fingerprint(st: Status) -> str:
        res = have[(st.planned.cell, st.planned.seed, st.planned.preset)][1]
        return str((res.get("data") or {}).get("fingerprint"))

    same = [st for st in out if st.state == "present" and not st.note]
    fps = {fingerprint(st) for st in same}
    if len(fps) > 1:
        for st in same:
            st.note = f"catalog {fingerprint(st)[:12]}; {len(fps)} catalog versions present"
    return out


def failed_path(results: Path, p: Planned) -> Path:
    return results / "failed" / f"{p.stem}.json"


def run_missing(planned: list[Planned], results: Path, *, runner: Runner = subprocess_runner,
                bench: Sequence[str] | None = None,
                on_event: Callable[[Status, int, int], None] | None = None) -> list[Status]:
    """Run each missing cell once; record failures under ``results/failed/`` and carry on.

    A run that exits 0 but leaves no result for its cell also counts as failed. A success removes
    an old failure record of the same cell. ``on_event(status, i, n)`` reports progress: once with
    state ``running`` (``path`` = the log file) before each run, once with the outcome after it.
    """
    results = Path(results)
    todo = status(planned, results)
    n = sum(1 for s in todo if s.state == "missing")
    i = 0
    for st in todo:
        if st.state != "missing":
            continue
        i += 1
        p = st.planned
        cmd = p.command(results, bench)
        log = results / "logs" / f"{p.stem}.log"
        if on_event:
            on_event(Status(p, "running", log), i, n)
        t0 = time.perf_counter()
        outcome = runner(cmd, log)
        elapsed = time.perf_counter() - t0
        hit = existing(results).get((p.cell, p.seed, p.preset)) if outcome.returncode == 0 else None
        if hit is not None:
            st.state, st.path = "ran", hit[0]
            failed_path(results, p).unlink(missing_ok=True)
        else:
            st.state = "failed"
            why = (f"exit code {outcome.returncode}" if outcome.returncode != 0
                   else "exit code 0 but no result file for this cell was written")
            st.note = why
            st.path = write_json_atomic(failed_path(results, p), {
                "schema": FAILED_SCHEMA, "cell": {"model": p.cell.model, "modalities": p.cell.modalities,
                                                  "split": p.cell.split, "preset": p.preset, "seed": p.seed,
                                                  "overrides": p.cell.overrides_dict},
                "data": p.data, "command": cmd, "exit_code": outcome.returncode, "reason": why,
                "seconds": round(elapsed, 3), "stderr_tail": outcome.output_tail[-TAIL_CHARS:],
            })
        if on_event:
            on_event(st, i, n)
    return todo


def sweep_table(spec: TableSpec, results: Path, *, seeds: Iterable[int], data: str, preset: str,
                dry_run: bool = False, runner: Runner = subprocess_runner,
                bench: Sequence[str] | None = None,
                on_event: Callable[[Status, int, int], None] | None = None) -> list[Status]:
    """Plan ``spec``'s cells over ``seeds`` and run the missing ones (or only report, ``dry_run``)."""
    planned = plan(spec.cells(), seeds, data=data, preset=preset)
    if dry_run:
        return status(planned, Path(results))
    return run_missing(planned, Path(results), runner=runner, bench=bench, on_event=on_event)
