"""What a new user hits first: results that are never lost or mixed up, refusals that say what to
do, interrupts that say what was kept, one meaning per setting, and a run that shows its numbers."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import cli

from bench.cli import main
from bench.console import UserError
from bench.modalities import ModalitySet
from bench.pipeline import CellSpec, plan_cell, resolve_setup
from bench.results import read_result

WORDS = ["red", "blue", "cotton", "steel", "phone", "shoe", "lamp", "cup", "bag", "desk", "pen", "hat"]


def write_text_manifest(path: Path, n: int, *, categories: int = 4, seed: int = 0, product: bool = False) -> Path:
    """A text-only manifest (``item_id, category, title[, product_id]``): titles carry words of
    their category, so a text model has something to learn."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "category", "title"] + (["product_id"] if product else []))
        for i in range(n):
            c = i % categories
            words = [WORDS[(3 * c + j) % len(WORDS)] for j in range(3)] + list(rng.choice(WORDS, 2))
            w.writerow([f"it{seed}-{i}", f"cat{c}", " ".join(words)] + ([f"p{i // 3}"] if product else []))
    return path


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """``bench ARGV`` in-process: (exit code, stdout + stderr with rich's line wrapping undone)."""
    rc, out, err = cli(argv, capsys)
    return rc, " ".join((out + err).split())


FAST = ["--set", "max_steps=2", "--set", "batch_size=16"]


@pytest.fixture(scope="module")
def two_catalog_runs(tmp_path_factory):
    """The same BERT cell run on two text-only catalogs without product annotation, into one folder."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("reliability")
    results = root / "results"
    outputs = []
    for seed in (0, 1):
        manifest = write_text_manifest(root / f"shop{seed}.csv", 400, seed=seed)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                main(["run", "--model", "bert", "--modalities", "T", "--data", f"manifest:{manifest}",
                      "--results", str(results), *FAST])
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
        outputs.append((code, buf.getvalue()))
    return results, outputs


@pytest.mark.slow
def test_run_without_product_annotation_writes_null_fine_metrics(two_catalog_runs):
    """Item 1: no fine-grained queries -> fine metrics null with a reason, the run completes."""
    results, outputs = two_catalog_runs
    assert outputs[0][0] == 0, outputs[0][1]
    res = read_result(sorted(results.glob("*shop0*.json"))[0])
    fine = {k: v for k, v in res["metrics"]["pretrain"].items() if k.startswith("fine/")}
    assert fine and all(v is None for v in fine.values())
    assert res["metrics"]["pretrain"]["coarse/mAP@1[m5product]"] is not None
    assert res["null_metrics"]["pretrain/fine/mAP@1[m5product]"].startswith("no fine retrieval queries")
    assert res["counts"]["null_metrics"] == len(res["null_metrics"])
    assert any("no fine retrieval queries" in w for w in res["warnings"])


@pytest.mark.slow
def test_results_from_two_catalogs_never_share_a_file(two_catalog_runs):
    """Item 2: the same cell on two catalogs gives two files, named by source and fingerprint."""
    results, outputs = two_catalog_runs
    assert outputs[1][0] == 0, outputs[1][1]
    assert "result exists" not in outputs[1][1]
    files = sorted(p.name for p in results.glob("*.json"))
    assert len(files) == 2 and any("manifest-shop0-" in f for f in files) and any("manifest-shop1-" in f for f in files)
    fps = {read_result(results / f)["data"]["fingerprint"] for f in files}
    assert len(fps) == 2


@pytest.mark.slow
def test_run_prints_headline_table(two_catalog_runs):
    """Item 12: the run ends with the headline metrics on screen, then the result path."""
    _, outputs = two_catalog_runs
    text = outputs[0][1]
    for label in ("coarse mAP@1", "fine Prec@1", "linear probe accuracy", "fine-tuned accuracy", "clustering NMI",
                  "purity", "pre-trained features", "fine-tuned features"):
        assert label in text, label
    assert text.index("coarse mAP@1") < text.index("result")


@pytest.mark.slow
def test_second_run_on_same_catalog_reuses_result(two_catalog_runs, capsys):
    results, _ = two_catalog_runs
    code, out = run_cli(capsys, ["run", "--model", "bert", "--modalities", "T", "--data",
                                 f"manifest:{results.parent / 'shop0.csv'}", "--results", str(results), *FAST])
    assert code == 0 and "result exists" in out
    assert len(list(results.glob("*.json"))) == 2


def test_existing_result_of_another_catalog_is_not_replaced(tmp_path):
    """Item 2: even under one name, a result of another catalog is kept and the new one goes beside it."""
    from bench.stages.result import write_result as _write_result
    from bench.results import write_json_atomic

    path = tmp_path / "cell.json"
    old = {"schema": "m5bench.result/1", "cell": {"model": "bert"}, "data": {"fingerprint": "aaa"}}
    write_json_atomic(path, old)
    new = dict(old, data={"fingerprint": "bbb"})
    written = _write_result(path, new)
    assert written != path and json.loads(path.read_text())["data"]["fingerprint"] == "aaa"
    assert json.loads(written.read_text())["data"]["fingerprint"] == "bbb"
    assert _write_result(path, dict(old)) == path  # the same cell on the same catalog is replaced (--force)


def test_atomic_writes_keep_the_permissions_of_a_plain_write(tmp_path):
    """Result files, the leaderboard page and exports are readable by whoever may read a file written
    with open(): the temporary file of an atomic write starts owner-only, the rename would keep that."""
    import os
    import stat

    from bench.leaderboard import write_text_atomic
    from bench.results import write_json_atomic

    old = os.umask(0o022)
    try:
        for path in (write_json_atomic(tmp_path / "r.json", {"a": 1}), write_text_atomic(tmp_path / "p.md", "x\n")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_nan_is_written_as_null():
    """Item 1 at its root: the one JSON writer writes non-finite numbers as null, never crashes."""
    from bench.results import json_safe

    assert json_safe({"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32(0.5)}) == \
        {"a": None, "b": [1.0, None], "c": 0.5}


def test_degenerate_evaluation_is_flagged(tmp_path):
    """Item 7: few queries or few positives per query are warned about (and recorded by the run)."""
    from bench.data import load_catalog
    from bench.preflight import eval_health

    cat = load_catalog(f"manifest:{write_text_manifest(tmp_path / 'small.csv', 80)}", progress=False)
    health = eval_health(cat)
    assert health.counts["coarse/queries"] < 100
    assert any("coarse retrieval has" in w and "cannot separate models" in w for w in health.warnings)
    assert any("no fine retrieval queries" in w for w in health.warnings)


def test_eval_fraction_and_split_seed_reach_the_catalog(tmp_path):
    """Item 7: the split fraction and seed can be set from the CLI and change the evaluation split."""
    from bench.pipeline import load_cell_catalog

    manifest = write_text_manifest(tmp_path / "m.csv", 200)
    sizes = {}
    for frac in (0.2, 0.5):
        plan = plan_cell(CellSpec("bert", ModalitySet.parse("T"), data=f"manifest:{manifest}",
                                  overrides={"eval_fraction": frac, "split_seed": 3}), tmp_path)
        assert plan.pipeline["eval_fraction"] == frac and plan.pipeline["split_seed"] == 3
        sizes[frac] = len(load_cell_catalog(plan).split_indices("gallery"))
    assert sizes[0.2] < sizes[0.5]
    with pytest.raises(UserError, match="eval_fraction"):
        plan_cell(CellSpec("bert", ModalitySet.parse("T"), overrides={"eval_fraction": 1.5}), tmp_path)


def test_too_few_pretraining_listings_suggests_the_fix_in_dry_run_too(tmp_path, capsys):
    """Item 8: the refusal names the settings that fix it, and --dry-run refuses the same way."""
    manifest = write_text_manifest(tmp_path / "m.csv", 60)
    for extra in (["--dry-run"], []):
        code, out = run_cli(capsys, ["run", "--model", "bert", "--modalities", "T", "--data", f"manifest:{manifest}",
                                     "--results", str(tmp_path / "r"), *extra])
        assert code == 2, out
        assert "need at least one batch of 64" in out and "--set batch_size=N" in out
        assert "Traceback" not in out
    assert not (tmp_path / "r").exists()


def test_interrupt_outside_pretraining_says_what_was_kept(tmp_path, capsys, monkeypatch):
    """Item 9: Ctrl-C while loading data prints one line with what was kept and how to resume."""
    import bench.pipeline as pipeline

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "load_cell_catalog", interrupted)
    code, out = run_cli(capsys, ["run", "--model", "bert", "--modalities", "T", "--data", "synthetic:mini",
                                 "--results", str(tmp_path)])
    assert code == 130
    assert "stopped during catalog" in out and "run the same command again" in out
    assert "Traceback" not in out
    from bench.stages import Context
    from bench.stages import interrupted as stage_interrupted
    from bench.stages.score import EmbedStage

    ctx = Context(plan_cell(CellSpec("bert", ModalitySet.parse("T")), tmp_path))
    ctx._setup = dataclasses.replace(resolve_setup(ctx.plan, "fp", "fh"), run_dir=tmp_path / "run")
    ctx.catalog = object()
    later = str(stage_interrupted(EmbedStage(), ctx))
    assert "stopped during embed" in later and str(tmp_path / "run") in later and "no result was written" in later


def test_eval_refuses_overflowing_embeddings(tmp_path, capsys):
    """Item 10: finite but huge embeddings are refused in one line instead of scored as 0."""
    rng = np.random.default_rng(0)
    emb = (rng.standard_normal((60, 8)) * 1e30).astype(np.float32)
    path = tmp_path / "e.npz"
    np.savez(path, embeddings=emb, category=np.array([f"c{i % 3}" for i in range(60)]),
             product=np.array([f"p{i % 20}" for i in range(60)]))
    code, out = run_cli(capsys, ["eval", "--embeddings", str(path)])
    assert code == 2 and "too large for float32" in out and "rescale" in out


def test_set_seed_is_the_cell_seed(tmp_path):
    """Item 11: --set seed=N seeds everything (it is --seed); a disagreement is refused."""
    plan = plan_cell(CellSpec("scale", ModalitySet.parse("I,T"), overrides={"seed": 3}), tmp_path)
    assert plan.cell.seed == 3 and "seed" not in plan.cell.overrides
    setup = resolve_setup(plan, "fp", "fh")
    assert setup.train_cfg.seed == 3
    assert "seed3" in plan.result_path("synthetic:mini", "f" * 32).name
    with pytest.raises(UserError, match="disagree"):
        plan_cell(CellSpec("scale", ModalitySet.parse("I,T"), seed=4, overrides={"seed": 3}), tmp_path)


def _names() -> list[str]:
    from bench import registry

    return registry.names()


@pytest.mark.parametrize("model", _names())
def test_every_key_in_two_places_means_one_setting_or_is_refused(model, tmp_path):
    """Item 11: a name that exists in two config classes is either one setting under every
    spelling (the training hints) or refused with the dotted choices."""
    from bench import registry
    from bench.settings import TRAIN_HINTS, section_fields

    entry = registry.get(model)
    cls = entry.load().config_cls
    sections = section_fields(cls)
    model_names = {f.name for f in dataclasses.fields(cls)}
    mods = entry.requires or entry.consumes
    for name in sorted(set(TRAIN_HINTS) & model_names):
        value = {"batch_size": 8, "lr": 3e-4, "epochs": 2, "warmup_ratio": 0.2}[name]
        setups = [resolve_setup(plan_cell(CellSpec(model, mods, overrides={key: value}), tmp_path), "fp", "fh")
                  for key in (name, f"train.{name}")]
        for s in setups:
            assert getattr(s.train_cfg, name) == value and getattr(s.model_cfg, name) == value, (name, s)
        with pytest.raises(UserError, match=f"train.{name}"):
            plan_cell(CellSpec(model, mods, overrides={f"model.{name}": value}), tmp_path)
    seen: dict[str, list[str]] = {}
    for sec, names in sections.items():
        for n in names:
            seen.setdefault(n, []).append(sec)
    for name, secs in seen.items():
        if len(secs) > 1:
            with pytest.raises(UserError, match=" or ".join(f"{s}.{name}" for s in secs)):
                plan_cell(CellSpec(model, mods, overrides={name: 1}), tmp_path)


def test_two_spellings_of_one_setting_name_one_result(tmp_path):
    a = plan_cell(CellSpec("scale", ModalitySet.parse("I,T"), overrides={"lr": 1e-3}), tmp_path)
    b = plan_cell(CellSpec("scale", ModalitySet.parse("I,T"), overrides={"train.lr": 1e-3}), tmp_path)
    assert a.cell.overrides == b.cell.overrides == {"lr": 1e-3}
    assert a.result_path("s", "f" * 8) == b.result_path("s", "f" * 8)


def test_results_ls_and_export(tmp_path, capsys):
    """`bench results ls` filters result files; `export` writes one row per result, one column per metric."""
    import pandas as pd
    from tables_fake import make_result, write_result

    for model, mods, seed in (("scale", "I,T", 0), ("scale", "I,T", 1), ("bert", "T", 0)):
        write_result(tmp_path, make_result(model, mods, "full", seed))
    code, out = run_cli(capsys, ["results", "ls", "--results", str(tmp_path), "--model", "scale", "--seed", "1"])
    assert code == 0 and "1 result(s)" in out and "seed1" in out
    for fmt in ("csv", "parquet"):
        dest = tmp_path / "out" / f"all.{fmt}"
        code, out = run_cli(capsys, ["results", "export", "--results", str(tmp_path), "--out", str(dest)])
        assert code == 0, out
        frame = pd.read_csv(dest) if fmt == "csv" else pd.read_parquet(dest)
        assert len(frame) == 3 and "pretrain/coarse/mAP@1[m5product]" in frame.columns
        assert sorted(frame["model"]) == ["bert", "scale", "scale"]
    code, out = run_cli(capsys, ["results", "export", "--results", str(tmp_path), "--out", str(tmp_path / "x.xlsx")])
    assert code == 2 and "unknown export format" in out


def test_a_name_in_two_sections_is_refused_flat_and_accepted_dotted():
    """A model field that shares its name with a training setting (here ``log_every``) cannot be
    set by the flat name; each dotted spelling reaches its own section."""
    from bench.adapter import AdapterConfig
    from bench.settings import resolve

    @dataclasses.dataclass
    class Cfg(AdapterConfig):
        log_every: int = 3
        width: int = 8

    with pytest.raises(UserError, match="model.log_every or train.log_every"):
        resolve(Cfg, {"log_every": 5})
    s = resolve(Cfg, {"model.log_every": 5, "train.log_every": 7, "width": 16})
    assert s.model == {"log_every": 5, "width": 16} and s.train == {"log_every": 7}
    assert s.canonical == {"model.log_every": 5, "train.log_every": 7, "width": 16}
    with pytest.raises(UserError, match="given twice"):
        resolve(Cfg, {"width": 16, "model.width": 8})


@pytest.mark.parametrize("setting,message", [
    ("harmonize=bogus", "invalid setting for scale: ScaleConfig.harmonize must be one of"),
    ("hidden=abc", "setting 'hidden' expects an integer"),
    ("epochs=0", "TrainConfig.epochs must be >= 1"),
    ("finetune_epochs=0", "finetune_epochs must be a positive integer"),
    ("split_seed=1.5", "split_seed must be an integer"),
])
def test_a_value_the_model_or_loop_refuses_is_one_line_before_any_work(setting, message, tmp_path, capsys, monkeypatch):
    """Bad values are refused at planning time (no catalog is read), in one line, never a traceback."""
    import bench.pipeline as pipeline

    monkeypatch.setattr(pipeline, "load_cell_catalog", lambda *a, **k: pytest.fail("catalog loaded"))
    code, out = run_cli(capsys, ["run", "--model", "scale", "--modalities", "T", "--set", setting,
                                 "--results", str(tmp_path)])
    assert code == 2 and message in out, out
