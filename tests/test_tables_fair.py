"""Fair comparison in the leaderboards: rule columns, hubness marks, the SIMCL table, intervals and bold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tables_fake import CLS_ROWS, fake_metrics, fake_per_query, make_result, write_result

from bench.eval.bootstrap import paired_bootstrap, seed_mean
from bench.leaderboard import DEGENERATE_MARK, MISSING, REFERENCE, collect, interval_text, render_table
from bench.tables import PER_QUERY_METRICS, TABLES, CellSpec, get_table

FULL = "I,T,Tab,V,A"


def _row(md: str, label: str, after: str | None = None) -> list[str]:
    text = md if after is None else md[md.index(after):]
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {_esc(label)} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _esc(label: str) -> str:
    return label.replace("|", "\\|")


def _header(md: str, after: str | None = None) -> list[str]:
    text = md if after is None else md[md.index(after):]
    line = next(ln for ln in text.splitlines() if ln.startswith("| ") and "seeds" in ln)
    return [c.strip() for c in line.strip("|").split("|")]


# --- rules and hubness -------------------------------------------------------------------------

def test_every_retrieval_column_names_its_rule_and_reads_the_matching_metric():
    for spec in TABLES.values():
        for sec in spec.sections:
            for c in sec.columns:
                is_ret = any("[m5product" in k for m in c.parts for k in m.keys)
                assert is_ret == (c.rule is not None), (spec.name, c.name)
                if c.rule:
                    assert c.name.endswith(f"({c.rule})")
                    assert all(k.endswith("/cos]") == (c.rule == "cos") for m in c.parts for k in m.keys)
                    assert c.rule in sec.cell_note or "(cos)" in sec.cell_note
    base = get_table("baselines").sections[0]
    assert [c.name for c in base.columns[:2]] == ["mAP@1 (cos)", "mAP@1 (raw)"]
    assert base.columns[0].paper_key is None and base.columns[1].paper_key == "mAP@1"  # paper beside raw


def test_per_query_keys_are_the_ones_bench_run_saves():
    from bench.pipeline import PER_QUERY

    keys = {m.per_query for s in TABLES.values() for sec in s.sections for c in sec.columns for m in c.parts}
    keys.discard(None)
    assert "finetune/cls/correct[finetuned_head]" in keys
    saved = {f"{g}/{m}" for g in ("pretrain", "finetune") for m in PER_QUERY}
    assert keys - {"finetune/cls/correct[finetuned_head]"} <= saved
    assert all(any(f"/{n}[" in k for n in PER_QUERY_METRICS) for k in keys if "cls/" not in k)


def test_hubness_note_matches_the_evaluator_threshold():
    from bench.eval.scoring import DEGENERATE_TOP10_SHARE, HUBS

    assert DEGENERATE_TOP10_SHARE == 0.5 and HUBS == 10  # the legend says "10 ... more than 50 %"


def test_degenerate_cells_are_marked_under_their_rule_only(tmp_path):
    hub = {"pretrain": {"raw": {"degenerate": True}, "cos": {"degenerate": False}},
           "finetune": {"raw": {"degenerate": False}, "cos": {"degenerate": False}}}
    write_result(tmp_path, make_result("clip", "I,T", hubness=hub))
    write_result(tmp_path, make_result("bert", "T", hubness={}))  # older result: no hubness, no mark
    hub1 = {"pretrain": {"cos": {"degenerate": True}}}
    write_result(tmp_path, make_result("scale", "I,T", seed=0, hubness={}))
    write_result(tmp_path, make_result("scale", "I,T", seed=1, hubness=hub1))  # one seed suffices
    md = render_table(get_table("baselines"), collect(tmp_path))
    sub = md[:md.index("whole dataset")]
    clip, bert, scale = _row(sub, "CLIP"), _row(sub, "BERT"), _row(sub, "SCALE")
    assert not clip[2].endswith(DEGENERATE_MARK) and clip[3].endswith(DEGENERATE_MARK)  # cos | raw
    assert DEGENERATE_MARK not in "".join(bert)
    assert scale[2].endswith(DEGENERATE_MARK) and not scale[3].endswith(DEGENERATE_MARK)
    assert "more than 50 % of the coarse queries" in md

    # in a pre-trained / fine-tuned pair, only the degenerate part is marked
    write_result(tmp_path / "s", make_result("scale", "T", hubness={"finetune": {"cos": {"degenerate": True}}}))
    seq = render_table(get_table("sequential"), collect(tmp_path / "s"))
    pre, ft = _row(seq, "T")[4].split(" / ")
    assert not pre.endswith(DEGENERATE_MARK) and ft.endswith(DEGENERATE_MARK)


# --- Table 6 -----------------------------------------------------------------------------------

def test_simcl_table_rows_and_the_overrides_they_run():
    spec = get_table("simcl")
    sec = spec.sections[0]
    cells = {r.label: r.cell.overrides_dict for r in sec.rows}
    assert cells == {"pretext tasks only": {"contrastive": "false"},
                     "IMCL only (contrastive, uniform weights)": {"pretext": "false", "harmonize": "uniform"},
                     "SIMCL only": {"pretext": "false"},
                     "pretext + IMCL": {"harmonize": "uniform"},
                     "pretext + SIMCL": {"pretext": "true", "contrastive": "true", "harmonize": "learned"}}
    assert sec.reference.label == "pretext + SIMCL"
    assert sec.reference.default_cell == CellSpec.make("scale", FULL, "subset")
    assert all(dict(r.settings).keys() == {"pretext", "contrastive", "harmonize"} for r in sec.rows)
    # the headline run is swept once, and pretext + IMCL shares the harmonisation ablation's uniform cell
    assert CellSpec.make("scale", FULL, "subset") in spec.cells() and len(spec.cells()) == 5
    assert CellSpec.make("scale", FULL, "subset", {"harmonize": "uniform"}) in get_table("ablations").cells()
    assert [c.name for c in sec.columns] == ["Accuracy", "coarse mAP@1 (cos)", "coarse mAP@1 (raw)",
                                             "fine mAP@1 (cos)", "fine mAP@1 (raw)", "NMI"]


def test_simcl_default_row_needs_all_three_settings_confirmed(tmp_path):
    spec = get_table("simcl")
    write_result(tmp_path / "ok", make_result("scale", FULL))
    md = render_table(spec, collect(tmp_path / "ok"))
    acc = fake_metrics("scale", FULL, "subset", 0)["finetune"]["cls/accuracy[finetune]"]
    assert _row(md, "pretext + SIMCL")[2] == f"{acc * 100:.2f}" and "Not shown" not in md

    # a headline run from before the switches existed (no pretext / contrastive recorded) is not used
    old = make_result("scale", FULL, config={"model": {"harmonize": "learned"}, "pipeline": {}})
    write_result(tmp_path / "old", old)
    md = render_table(spec, collect(tmp_path / "old"))
    assert _row(md, "pretext + SIMCL")[2] == MISSING
    assert "Not shown: pretext + SIMCL: the headline run" in md
    assert "recorded contrastive=unrecorded, pretext=unrecorded, not contrastive=true, pretext=true" in md

    # a default that changed (harmonize=feature) cannot relabel the row, nor rows relying on it
    changed = dict(make_result("scale", FULL)["config"], model={"pretext": True, "contrastive": True,
                                                                "harmonize": "feature"})
    write_result(tmp_path / "chg", make_result("scale", FULL, config=changed))
    only = make_result("scale", FULL, overrides={"pretext": False})
    only["config"]["model"]["harmonize"] = "feature"
    write_result(tmp_path / "chg", only)
    md = render_table(spec, collect(tmp_path / "chg"))
    assert _row(md, "pretext + SIMCL")[2] == MISSING and _row(md, "SIMCL only")[2] == MISSING
    assert "SIMCL only: its results (scale I,T,Tab,V,A subset [pretext=false]) recorded harmonize=feature" in md


def test_simcl_paper_file_is_a_labelled_prose_statement():
    from bench.tables import load_paper

    doc = load_paper(get_table("simcl"))
    assert doc["sections"]["simcl"]["rows"] == {} and "no table numbers" in doc["status"]
    assert any(c.startswith("Prose statement, not table numbers") and "+2 points" in c for c in doc["caveats"])
    md = render_table(get_table("simcl"), collect(Path("/nonexistent")))
    assert "(paper)" not in _header(md) and "Prose statement, not table numbers" in md


# --- intervals and bold ------------------------------------------------------------------------

def _pq(res: dict, **values: np.ndarray) -> dict:
    arrays = fake_per_query(res)
    arrays.update(values)
    return arrays


def test_delta_column_is_the_paired_bootstrap_of_seed_means(tmp_path):
    spec = get_table("ablations")
    default, token = {}, {}
    for seed in (0, 1):
        res = make_result("scale", FULL, seed=seed)
        default[seed] = fake_per_query(res)
        write_result(tmp_path, res, per_query=default[seed])
    res = make_result("scale", FULL, overrides={"mem_span": "token"})
    token[0] = fake_per_query(res)
    write_result(tmp_path, res, per_query=token[0])
    md = render_table(spec, collect(tmp_path))
    key = "finetune/cls/correct[finetuned_head]"
    want = paired_bootstrap(token[0][key], seed_mean([default[0][key], default[1][key]]))
    q = "pretrain/coarse/mAP@1[m5product/cos]"
    want_q = paired_bootstrap(token[0][q], seed_mean([default[0][q], default[1][q]]))
    row = _row(md, "token masking")
    assert row[-2:] == [interval_text(want), interval_text(want_q)]
    assert _row(md, "MEM (key or value)")[-2:] == [REFERENCE, REFERENCE]
    assert _row(md, "MEM (whole entity)")[-2:] == [MISSING, MISSING]
    assert _header(md)[-2:] == ["Δ Accuracy (95 % CI)", "Δ coarse mAP@1 (cos), pre-trained (95 % CI)"]
    assert render_table(spec, collect(tmp_path)) == md  # seeded: byte-stable


def test_bold_only_where_the_interval_against_the_runner_up_excludes_zero(tmp_path):
    spec = get_table("baselines")
    rng = np.random.default_rng(0)
    acc_good = (rng.random(CLS_ROWS) < 0.9).astype(np.float32)
    acc_bad = (rng.random(CLS_ROWS) < 0.3).astype(np.float32)
    acc_close = acc_good.copy()
    acc_close[:2] = 1 - acc_close[:2]  # two answers differ: an interval around 0
    for model, mods, acc in (("scale", "I,T", acc_good), ("clip", "I,T", acc_close), ("bert", "T", acc_bad)):
        res = make_result(model, mods)
        res["metrics"]["finetune"]["cls/accuracy[finetune]"] = float(acc.mean())
        write_result(tmp_path, res, per_query=_pq(res, **{"finetune/cls/correct[finetuned_head]": acc}))
    md = render_table(spec, collect(tmp_path))
    sub = md[:md.index("whole dataset")]
    accs = {lab: _row(sub, lab)[5] for lab in ("SCALE", "CLIP", "BERT")}
    assert not any("**" in v for v in accs.values())  # SCALE vs CLIP: the interval contains 0
    assert "- Accuracy: SCALE - CLIP = " in sub
    # NMI and Purity have no per-query values: never bold, whatever the numbers
    assert not any("**" in _row(sub, lab)[7] + _row(sub, lab)[9] for lab in ("SCALE", "CLIP", "BERT"))

    # with CLIP gone, SCALE against the best other row (BERT) is a clear win: bold
    (tmp_path / "clip__I+T__subset__tiny__seed0.json").unlink()
    md2 = render_table(spec, collect(tmp_path))
    sub2 = md2[:md2.index("whole dataset")]
    assert _row(sub2, "SCALE")[5].startswith("**") and "**" not in _row(sub2, "BERT")[5]
    iv = paired_bootstrap(acc_good, acc_bad)
    assert f"- Accuracy: SCALE - BERT = {interval_text(iv)} ({CLS_ROWS} queries)" in sub2


def test_best_baseline_is_bold_when_it_beats_scale(tmp_path):
    spec = get_table("baselines")
    ones, zeros = np.ones(CLS_ROWS, np.float32), np.zeros(CLS_ROWS, np.float32)
    zeros[:20] = 1
    for model, mods, acc in (("scale", "I,T", zeros), ("clip", "I,T", ones), ("bert", "T", ones * 0.5)):
        res = make_result(model, mods)
        res["metrics"]["finetune"]["cls/accuracy[finetune]"] = float(acc.mean())
        write_result(tmp_path, res, per_query=_pq(res, **{"finetune/cls/correct[finetuned_head]": acc}))
    sub = render_table(spec, collect(tmp_path)).split("whole dataset")[0]
    assert _row(sub, "CLIP")[5] == "**100.00**" and "**" not in _row(sub, "SCALE")[5]


def test_missing_or_unpaired_per_query_files_give_no_interval_and_no_bold(tmp_path):
    spec = get_table("ablations")
    write_result(tmp_path, make_result("scale", FULL), per_query=True)
    write_result(tmp_path, make_result("scale", FULL, overrides={"mem_span": "token"}))  # no per-query file
    res = make_result("scale", FULL, overrides={"mem_span": "both"})
    other_rows = fake_per_query(res)
    other_rows["item_id"] = np.array([f"x{i}" for i in range(len(other_rows["item_id"]))])  # another catalog
    write_result(tmp_path, res, per_query=other_rows)
    (tmp_path / "broken").mkdir()
    res = make_result("scale", FULL, overrides={"share_text_table": True})
    path = write_result(tmp_path / "broken", res)
    path.with_suffix(".per_query.npz").write_bytes(b"not a zip file")
    md = render_table(spec, collect(tmp_path))
    assert _row(md, "token masking")[-2:] == [MISSING, MISSING]
    assert _row(md, "MEM (whole entity)")[-2:] == [MISSING, MISSING]
    assert _row(md, "merged T+Tab encoder")[-2:] == [MISSING, MISSING]
    masking = md[:md.index("Ablation: Title")]
    assert "**" not in masking


def test_seeds_scored_on_different_queries_give_no_interval(tmp_path):
    spec = get_table("ablations")
    for seed in (0, 1):
        res = make_result("scale", FULL, seed=seed)
        arrays = fake_per_query(res)
        if seed == 1:
            arrays["pretrain/_query_rows"] = arrays["pretrain/_query_rows"] + 1
        write_result(tmp_path, res, per_query=arrays)
    write_result(tmp_path, make_result("scale", FULL, overrides={"mem_span": "token"}), per_query=True)
    row = _row(render_table(spec, collect(tmp_path)), "token masking")
    assert row[-1] == MISSING and row[-2] != MISSING  # retrieval rows differ; accuracy still pairs


@pytest.mark.parametrize("x,text", [(0.0123, "+1.23"), (-0.00001, "+0.00"), (-0.5, "-50.00")])
def test_interval_text_is_signed_points(x, text):
    from bench.eval.bootstrap import Interval

    assert interval_text(Interval(x, x, x, 1)) == f"{text} [{text}, {text}]"
