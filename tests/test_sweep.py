"""`bench sweep`: plan, resume, failure records; with an injected runner (nothing trains)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from tables_fake import MINI, make_result, write_result
from typer.testing import CliRunner

from bench import sweep
from bench.tables import CellSpec, get_table


def _args(cmd: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    i = cmd.index("run") + 1
    while i < len(cmd):
        out.setdefault(cmd[i].lstrip("-"), []).append(cmd[i + 1])
        i += 2
    return out


class FakeRunner:
    """Writes the result `bench run` would write; fails for the models in ``fail``."""

    def __init__(self, fail=(), write=True):
        self.calls: list[list[str]] = []
        self.fail = set(fail)
        self.write = write

    def __call__(self, cmd: list[str], log_path: Path) -> sweep.Outcome:
        self.calls.append(cmd)
        a = _args(cmd)
        if a["model"][0] in self.fail:
            return sweep.Outcome(3, "Traceback ...\nRuntimeError: boom")
        if self.write:
            ov = dict(kv.split("=", 1) for kv in a.get("set", []))
            write_result(Path(a["results"][0]), make_result(a["model"][0], a["modalities"][0], a["split"][0],
                                                            int(a["seed"][0]), preset=a["preset"][0], overrides=ov))
        return sweep.Outcome(0, "")


def test_command_line_of_a_cell(tmp_path):
    p = sweep.Planned(CellSpec.make("scale", "I,T,Tab,V,A", "subset", {"share_text_table": True}), 2, "synthetic", "tiny")
    cmd = p.command(tmp_path)
    assert cmd[:3] == [sys.executable, "-m", "bench.cli"]
    assert cmd[3:] == ["run", "--model", "scale", "--modalities", "I,T,Tab,V,A", "--data", "synthetic",
                       "--split", "subset", "--preset", "tiny", "--seed", "2", "--set", "share_text_table=true",
                       "--results", str(tmp_path)]
    assert p.stem.startswith("scale__I+T+Tab+V+A__subset__tiny__seed2__")


def test_sweep_runs_missing_resumes_and_records_failures(tmp_path):
    spec = get_table("baselines")
    res = tmp_path / "results"
    # two cells already present: they must not run again
    write_result(res, make_result("clip", "I,T", "subset", 0))
    write_result(res, make_result("bert", "T", "full", 0))
    dry = sweep.sweep_table(spec, res, seeds=[0], data="synthetic", preset="tiny", dry_run=True)
    assert len(dry) == 18 and sum(s.state == "present" for s in dry) == 2

    runner = FakeRunner(fail={"uniter"})
    events = []
    sts = sweep.sweep_table(spec, res, seeds=[0], data="synthetic", preset="tiny", runner=runner,
                            on_event=lambda st, i, n: events.append((st.state, i, n)))
    assert [e[0] for e in events[:2]] == ["running", "ran"]
    assert len(runner.calls) == 16 and events[-1][1:] == (16, 16)
    states = {(s.planned.cell.model, s.planned.cell.split): s.state for s in sts}
    assert states[("clip", "subset")] == "present" and states[("bert", "full")] == "present"
    assert states[("uniter", "subset")] == "failed" and states[("scale", "full")] == "ran"
    failed = sorted((res / "failed").glob("*.json"))
    assert len(failed) == 2
    rec = json.loads(failed[0].read_text())
    assert rec["exit_code"] == 3 and "RuntimeError: boom" in rec["stderr_tail"]
    assert rec["command"][rec["command"].index("--model") + 1] == "uniter"

    # resume: only the failed cells run again; a success clears their failure records
    runner2 = FakeRunner()
    sts2 = sweep.sweep_table(spec, res, seeds=[0], data="synthetic", preset="tiny", runner=runner2)
    assert len(runner2.calls) == 2 and all(s.state in ("present", "ran") for s in sts2)
    assert not list((res / "failed").glob("*.json"))
    runner3 = FakeRunner()
    sweep.sweep_table(spec, res, seeds=[0], data="synthetic", preset="tiny", runner=runner3)
    assert runner3.calls == []


def test_exit_zero_without_a_result_counts_as_failure(tmp_path):
    spec = get_table("combinations")
    sts = sweep.run_missing(sweep.plan(spec.cells()[:1], [0], data="synthetic", preset="tiny"), tmp_path,
                            runner=FakeRunner(write=False))
    assert sts[0].state == "failed" and "no result file" in sts[0].note


def test_seeds_and_presets_are_separate_cells(tmp_path):
    write_result(tmp_path, make_result("scale", "T", seed=0))
    planned = sweep.plan([CellSpec.make("scale", "T", "subset")], [0, 1], data="synthetic", preset="tiny")
    assert [s.state for s in sweep.status(planned, tmp_path)] == ["present", "missing"]
    planned = sweep.plan([CellSpec.make("scale", "T", "subset")], [0], data="synthetic", preset="paper")
    assert [s.state for s in sweep.status(planned, tmp_path)] == ["missing"]


def test_present_result_on_other_data_is_flagged_not_rerun(tmp_path):
    write_result(tmp_path, make_result("scale", "T", seed=0, data=MINI))
    planned = sweep.plan([CellSpec.make("scale", "T", "subset")], [0], data="synthetic", preset="tiny")
    st = sweep.status(planned, tmp_path)[0]
    assert st.state == "present" and "synthetic:mini" in st.note


def test_real_subprocess_runner_with_a_stand_in_bench(tmp_path):
    """The default runner end to end: a tiny script stands in for `bench run` (writes a result or fails)."""
    script = tmp_path / "fake_bench.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from pathlib import Path
        from tables_fake import make_result, write_result
        a = sys.argv[1:]
        get = lambda k: a[a.index(k) + 1]
        if get("--model") == "vilbert":
            print("loading...", flush=True)
            sys.stderr.write("ValueError: no such thing\\n")
            sys.exit(7)
        write_result(Path(get("--results")), make_result(get("--model"), get("--modalities"), get("--split"),
                                                         int(get("--seed")), preset=get("--preset")))
    """))
    cells = [CellSpec.make("clip", "I,T", "subset"), CellSpec.make("vilbert", "I,T", "subset")]
    sts = sweep.run_missing(sweep.plan(cells, [0], data="synthetic", preset="tiny"), tmp_path,
                            bench=[sys.executable, str(script)])
    assert [s.state for s in sts] == ["ran", "failed"]
    rec = json.loads(sts[1].path.read_text())
    assert rec["exit_code"] == 7 and "ValueError: no such thing" in rec["stderr_tail"]
    assert (tmp_path / "logs" / f"{sts[1].planned.stem}.log").exists()


def test_cli_dry_run_lists_cells(tmp_path):
    from bench.cli import app

    write_result(tmp_path, make_result("scale", "I,Tab", seed=0))
    r = CliRunner().invoke(app, ["sweep", "--table", "combinations", "--results", str(tmp_path), "--dry-run",
                                 "--seeds", "0,1"])
    assert r.exit_code == 0, r.output
    assert "1/26 present, 25 to run" in r.output
    r = CliRunner().invoke(app, ["sweep", "--table", "combinations", "--seeds", "a,b", "--dry-run"])
    assert r.exit_code != 0


@pytest.mark.slow
def test_end_to_end_real_bench_run_into_a_table(tmp_path):
    """One real `bench run` (bert on titles, mini catalog, tiny preset) through the sweep, then the table."""
    from bench.leaderboard import collect, render_table

    cell = CellSpec.make("bert", "T", "subset")
    sts = sweep.run_missing(sweep.plan([cell], [0], data="synthetic:mini", preset="tiny"), tmp_path)
    assert sts[0].state == "ran", (tmp_path / "logs" / f"{sts[0].planned.stem}.log").read_text()[-3000:]
    md = render_table(get_table("baselines"), collect(tmp_path))
    row = next(ln for ln in md.splitlines() if ln.startswith("| BERT |"))
    assert "—" not in row, row  # mAP@1, Accuracy, NMI and Purity all measured
    assert "Coverage: 1/9 cells; seeds 0." in md and "not M5Product" in md
    again = sweep.run_missing(sweep.plan([cell], [0], data="synthetic:mini", preset="tiny"), tmp_path)
    assert again[0].state == "present"


def test_results_from_two_catalog_versions_are_named(tmp_path):
    old = dict(make_result("scale", "T")["data"], fingerprint="0ld0ld0ld0ld0ld")
    write_result(tmp_path, make_result("scale", "T", seed=0, data=old))
    write_result(tmp_path, make_result("scale", "T", seed=1))
    planned = sweep.plan([CellSpec.make("scale", "T", "subset")], [0, 1], data="synthetic", preset="tiny")
    notes = [s.note for s in sweep.status(planned, tmp_path)]
    assert notes[0].startswith("catalog 0ld0ld0ld0ld;") and "2 catalog versions" in notes[1]
