"""`bench check`: tier loading, recording tolerances, and the comparison (fake results; nothing trains)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from tables_fake import MINI, make_result
from typer.testing import CliRunner

from bench import check
from bench.tables import CellSpec

REPO = Path(__file__).resolve().parent.parent
TIER = REPO / "leaderboards" / "regression" / "tier.json"


def _tier(tmp_path: Path, **changes) -> check.Tier:
    raw = json.loads(TIER.read_text())
    raw.update(changes)
    p = tmp_path / "tier.json"
    p.write_text(json.dumps(raw))
    return check.load_tier(p)


def _runs(tier: check.Tier, seeds, shift: dict | None = None):
    """runs[cell][seed] = a fake mini-catalog result; ``shift`` adds to pretrain metrics (a change)."""
    out = {}
    for cell in tier.cells:
        for s in seeds:
            res = make_result(cell.model, cell.modalities, cell.split, s, data=MINI)
            for k, d in (shift or {}).items():
                if k in res["metrics"]["pretrain"]:
                    res["metrics"]["pretrain"][k] += d
            out.setdefault(cell, {})[s] = res
    return out


def test_committed_tier_is_valid_and_small():
    tier = check.load_tier(TIER)
    assert tier.data == "synthetic:mini" and tier.preset == "tiny"
    models = {c.model for c in tier.cells}
    assert {"scale", "bert", "clip"} <= models
    # SCALE on all five modalities, trained longer than the preset (a few hundred steps on mini)
    assert CellSpec.make("scale", "I,T,Tab,V,A", "subset", {"epochs": 24, "eval_fraction": 0.5}) in tier.cells
    # a larger evaluation split (not a larger catalog) gives the per-query comparisons their power
    assert all(c.overrides_dict.get("eval_fraction") == "0.5" for c in tier.cells)
    assert set(tier.seeds) <= set(tier.update_seeds) and len(tier.update_seeds) >= 2
    assert tier.wants("pretrain/coarse/mAP@1[m5product]") and not tier.wants("pretrain/cluster/NMI_std")


def test_bad_tiers_are_refused(tmp_path):
    with pytest.raises(check.CheckError, match="among update_seeds"):
        _tier(tmp_path, seeds=[5])
    with pytest.raises(check.CheckError, match="at least two"):
        _tier(tmp_path, seeds=[0], update_seeds=[0])
    with pytest.raises(check.CheckError, match="no tier file"):
        check.load_tier(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(check.CheckError, match="not valid JSON"):
        check.load_tier(tmp_path / "broken.json")


def test_recorded_tolerance_is_max_of_k_std_and_floor(tmp_path):
    tier = _tier(tmp_path)
    runs = _runs(tier, tier.update_seeds)
    doc = check.build_recorded(tier, runs)
    assert doc["schema"] == check.RECORDED_SCHEMA and doc["data"]["fingerprint"] == MINI["fingerprint"]
    cid = check.cell_id(tier.cells[0])
    m = doc["cells"][cid]["metrics"]["pretrain/coarse/mAP@1[m5product]"]
    vals = [runs[tier.cells[0]][s]["metrics"]["pretrain"]["coarse/mAP@1[m5product]"] for s in tier.update_seeds]
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    assert m["std"] == pytest.approx(std, abs=1e-6)
    assert m["tolerance"] == pytest.approx(max(tier.k * std, tier.floor), abs=1e-6)
    assert m["value"] == pytest.approx(sum(runs[tier.cells[0]][s]["metrics"]["pretrain"]["coarse/mAP@1[m5product]"]
                                           for s in tier.seeds) / len(tier.seeds), abs=1e-6)
    assert set(m["per_seed"]) == {str(s) for s in tier.update_seeds}
    assert "pretrain/cluster/NMI_std" not in doc["cells"][cid]["metrics"]
    with pytest.raises(check.CheckError, match="no result for seed"):
        check.build_recorded(tier, _runs(tier, tier.update_seeds[:1]))


def _recorded_fixed(tier, runs, tol=0.02):
    """A recorded doc with a fixed tolerance, so a shift of known size must pass or fail."""
    doc = check.build_recorded(tier, runs)
    for c in doc["cells"].values():
        for m in c["metrics"].values():
            m["tolerance"] = tol
    return doc


def test_same_results_pass(tmp_path):
    tier = _tier(tmp_path)
    doc = _recorded_fixed(tier, _runs(tier, tier.update_seeds))
    rows = check.compare(doc, tier, _runs(tier, tier.seeds))
    assert rows and all(r.status == "ok" for r in rows)
    assert all(r.delta == pytest.approx(0, abs=1e-6) for r in rows)


def test_a_deliberately_worse_metric_fails(tmp_path):
    tier = _tier(tmp_path)
    doc = _recorded_fixed(tier, _runs(tier, tier.update_seeds))
    worse = _runs(tier, tier.seeds, shift={"coarse/mAP@1[m5product]": -0.05})
    rows = check.compare(doc, tier, worse)
    bad = [r for r in rows if r.failed]
    assert len(bad) == len(tier.cells) and all(r.status == "REGRESSION" for r in bad)
    assert all(r.metric == "pretrain/coarse/mAP@1[m5product]" for r in bad)
    assert bad[0].delta == pytest.approx(-0.05, abs=1e-6)
    # inside the band: passes; above the band: passes with "improved"
    within = check.compare(doc, tier, _runs(tier, tier.seeds, shift={"coarse/mAP@1[m5product]": -0.015}))
    assert not any(r.failed for r in within)
    better = check.compare(doc, tier, _runs(tier, tier.seeds, shift={"coarse/mAP@1[m5product]": 0.05}))
    assert not any(r.failed for r in better) and sum(r.status == "improved" for r in better) == len(tier.cells)


def test_missing_metric_or_cell_fails_and_new_metric_is_reported(tmp_path):
    tier = _tier(tmp_path)
    doc = _recorded_fixed(tier, _runs(tier, tier.update_seeds))
    runs = _runs(tier, tier.seeds)
    first = tier.cells[0]
    for s in tier.seeds:
        del runs[first][s]["metrics"]["finetune"]["cls/accuracy[finetune]"]
        runs[first][s]["metrics"]["finetune"]["fine/mAP@R[pml]"] = 0.3
    del runs[tier.cells[1]]
    rows = check.compare(doc, tier, runs)
    missing = {(r.cell, r.metric) for r in rows if r.status == "missing"}
    assert (check.cell_id(first), "finetune/cls/accuracy[finetune]") in missing
    assert all((check.cell_id(tier.cells[1]), m) in missing for m in doc["cells"][check.cell_id(tier.cells[1])]["metrics"])
    assert any(r.status == "new" and r.metric == "finetune/fine/mAP@R[pml]" for r in rows)
    assert not any(r.failed for r in rows if r.status == "new")


def test_changed_catalog_is_noted(tmp_path):
    tier = _tier(tmp_path)
    doc = check.build_recorded(tier, _runs(tier, tier.update_seeds))
    runs = _runs(tier, tier.seeds)
    assert check.data_note(doc, runs) is None
    for seeds in runs.values():
        for r in seeds.values():
            r["data"] = dict(r["data"], fingerprint="ffffffffffffffff")
    assert "fingerprint changed" in check.data_note(doc, runs)
    assert check.tier_note(doc, tier) is None
    assert "preset" in check.tier_note(doc, _tier(tmp_path, preset="paper"))


def test_run_tier_through_an_injected_runner(tmp_path):
    from test_sweep import FakeRunner

    tier = _tier(tmp_path)
    runner = FakeRunner(fail={"image"})
    runs, statuses = check.run_tier(tier, tier.seeds, tmp_path / "res", runner=runner)
    assert len(runner.calls) == len(tier.cells) * len(tier.seeds)
    assert all("--data" in c and c[c.index("--data") + 1] == "synthetic:mini" for c in runner.calls)
    assert {c.model for c in runs} == {c.model for c in tier.cells} - {"image"}
    assert sum(s.state == "failed" for s in statuses) == 1


def test_cli_check_exit_codes(tmp_path, monkeypatch):
    from bench.cli import app

    tier = _tier(tmp_path)
    recorded = tmp_path / "recorded.json"
    good = _runs(tier, tier.update_seeds)
    state = {"runs": good}
    monkeypatch.setattr(check, "run_tier", lambda t, seeds, results, **kw: (
        {c: {s: r for s, r in v.items() if s in seeds} for c, v in state["runs"].items()}, []))
    cli = CliRunner()
    r = cli.invoke(app, ["check", "--tier", str(tmp_path / "tier.json")])
    assert r.exit_code != 0  # nothing recorded yet
    r = cli.invoke(app, ["check", "--update", "--tier", str(tmp_path / "tier.json"), "--results", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert json.loads(recorded.read_text())["schema"] == check.RECORDED_SCHEMA
    r = cli.invoke(app, ["check", "--tier", str(tmp_path / "tier.json"), "--results", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert "passed" in r.output
    worse = copy.deepcopy(good)
    for v in worse.values():
        for res in v.values():
            res["metrics"]["finetune"]["cls/accuracy[finetune]"] -= 0.2
    state["runs"] = worse
    r = cli.invoke(app, ["check", "--tier", str(tmp_path / "tier.json"), "--results", str(tmp_path / "r")])
    assert r.exit_code == 1
    assert "REGRESSION" in r.output


def test_metrics_the_tier_no_longer_compares_are_ignored(tmp_path):
    tier = _tier(tmp_path, metrics={"include": ["*"], "exclude": ["*_std"]})
    doc = _recorded_fixed(tier, _runs(tier, tier.update_seeds))
    narrow = _tier(tmp_path, metrics={"include": ["pretrain/coarse/*"], "exclude": []})
    rows = check.compare(doc, narrow, _runs(narrow, narrow.seeds))
    assert rows and all(r.metric.startswith("pretrain/coarse/") and r.status == "ok" for r in rows)
    assert "metrics" in check.tier_note(doc, narrow)
