"""`bench run`: refusals before any work, override parsing, and one end-to-end cell on the mini catalog."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli import app, main
from bench.console import UserError
from bench.modalities import ModalitySet
from bench.pipeline import CellSpec, plan_cell, run_cell
from bench.settings import parse_overrides
from bench.results import SCHEMA, read_result


def test_parse_overrides_types():
    assert parse_overrides(["epochs=2", "harmonize=uniform", "share_text_table=true", "lr=1e-3"]) == {
        "epochs": 2, "harmonize": "uniform", "share_text_table": True, "lr": 1e-3}
    with pytest.raises(UserError):
        parse_overrides(["epochs"])


def test_refusals_happen_before_any_work(tmp_path, monkeypatch):
    # If planning touched the catalog, this would raise instead of the refusal we expect.
    import bench.data.catalog as catalog_mod

    monkeypatch.setattr(catalog_mod, "load_catalog", lambda *a, **k: pytest.fail("catalog loaded"))
    with pytest.raises(Exception, match="CLIP .*cannot consume Tab"):
        plan_cell(CellSpec("clip", ModalitySet.parse("I,T,Tab")), tmp_path)
    with pytest.raises(Exception, match="Did you mean 'scale'"):
        plan_cell(CellSpec("scal", ModalitySet.parse("I")), tmp_path)
    with pytest.raises(UserError, match="Did you mean 'harmonize'"):
        plan_cell(CellSpec("scale", ModalitySet.parse("I,T"), overrides={"harmonise": "uniform"}), tmp_path)
    with pytest.raises(UserError, match="unknown split"):
        plan_cell(CellSpec("scale", ModalitySet.parse("I,T"), split="half"), tmp_path)


def test_feature_settings_reach_the_feature_config(tmp_path):
    plan = plan_cell(CellSpec("scale", ModalitySet.parse("I,T"), overrides={
        "features.image_backbone": "mobilenetv3_small_100", "features.vocab_size": 2000}), tmp_path)
    assert plan.pipeline["features"] == {"image_backbone": "mobilenetv3_small_100", "vocab_size": 2000}
    assert plan.model_overrides == {} and plan.train_overrides == {}
    with pytest.raises(UserError, match="features.image_backbone"):
        plan_cell(CellSpec("scale", ModalitySet.parse("I,T"), overrides={"features.image_bakbone": "x"}), tmp_path)


def test_cli_refusal_exit_code(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--model", "clip", "--modalities", "I,T,Tab"])
    assert e.value.code == 2
    assert "CLIP" in capsys.readouterr().err


def test_plan_names_result_by_cell(tmp_path):
    plan = plan_cell(CellSpec("scale", ModalitySet.parse("A,T,I"), split="subset", seed=3,
                              overrides={"harmonize": "uniform"}), tmp_path)
    path = plan.result_path("manifest:/data/shop.csv", "0123456789abcdef")
    assert path.parent == tmp_path
    assert path.name.startswith("scale__I+T+A__subset__tiny__seed3__")
    assert path.name.endswith("__manifest-shop-01234567.json")
    assert plan.model_overrides == {"harmonize": "uniform"}


@pytest.mark.slow
def test_run_cell_end_to_end_on_mini(mini_catalog, tmp_path):
    """A real (short) run: catalog, features, pretraining, embedding, evaluation, fine-tuning, result."""
    cell = CellSpec("scale", ModalitySet.parse("I,T,A"), data="synthetic:mini", seed=1,
                    overrides={"max_steps": 3, "batch_size": 32})
    plan = plan_cell(cell, tmp_path)
    res = run_cell(plan, progress=False, say=lambda s: None)
    (path,) = tmp_path.glob("*.json")
    on_disk = read_result(path)
    assert on_disk["schema"] == SCHEMA
    assert on_disk["cell"]["modalities"] == "I,T,A"
    assert on_disk["data"]["fingerprint"] == mini_catalog.fingerprint
    assert on_disk["provenance"]["libraries"]["torch"]
    for group in ("pretrain", "finetune"):
        assert "coarse/mAP@1[m5product]" in on_disk["metrics"][group]
        for v in on_disk["metrics"][group].values():
            assert np.isfinite(v)
    # m5product definition: mAP@1 == Prec@1
    pm = on_disk["metrics"]["pretrain"]
    assert pm["coarse/mAP@1[m5product]"] == pm["coarse/Prec@1[m5product]"]
    # a model with per-modality vectors: cross-modal retrieval in both directions, every result
    for key in ("xmodal/T->I/instance/Recall@1[cos]", "xmodal/I->T/instance/Recall@1[cos]",
                "xmodal/T->A/category/MRR[cos]"):
        assert 0.0 <= pm[key] <= 1.0, key
    assert res["extra"]["harmonize"]["mode"] == "learned"
    npz = np.load(path.with_suffix(".embeddings.npz"))
    assert npz["embeddings"].shape[0] == on_disk["counts"]["eval_listings"]
    assert {"emb_I", "emb_T", "emb_A"} <= set(npz.files)
    assert not list(tmp_path.glob("*.tmp*")), "no temporary files left behind"

    # the second run reuses the pretrained checkpoint and reproduces the metrics exactly (same seed, CPU)
    said = []
    plan2 = plan_cell(cell, tmp_path / "again")
    res2 = run_cell(plan2, progress=False, say=said.append)
    assert any("pretrain[/] cached" in s for s in said if isinstance(s, str))
    assert res2["metrics"] == res["metrics"]


@pytest.mark.slow
def test_dry_run_reports_cache(mini_catalog, tmp_path):
    r = CliRunner().invoke(app, ["run", "--model", "bert", "--modalities", "T", "--data", "synthetic:mini",
                                 "--results", str(tmp_path), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "catalog  : cached" in r.output
    assert "pretrain : will run" in r.output
    assert not list(tmp_path.iterdir())


def test_pretrain_lock_serialises_processes_on_one_run_dir(tmp_path):
    import multiprocessing as mp

    from filelock import FileLock, Timeout

    from bench.stages.pretrain import pretrain_lock as _pretrain_lock

    run_dir = tmp_path / "runs" / "scale-I-abc"
    said: list[str] = []
    with _pretrain_lock(run_dir, 1, said.append):
        # another holder cannot take it while we train
        with pytest.raises(Timeout):
            FileLock(str(run_dir) + ".lock").acquire(timeout=0.05)
    assert said == []
    held = FileLock(str(run_dir) + ".lock")
    held.acquire()
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def child():
        with _pretrain_lock(run_dir, 1, q.put):
            q.put("entered")

    p = ctx.Process(target=child)
    p.start()
    assert "waiting" in q.get(timeout=10)  # it says why it waits, and waits
    held.release()
    assert q.get(timeout=10) == "entered"
    p.join(10)
    held.acquire()
    with _pretrain_lock(run_dir, 2, said.append):  # multi-process launches never take it (no wait here)
        pass
    held.release()
    assert said == []


@pytest.mark.parametrize("model", ["scale", "clip", "vilbert", "capture"])
def test_models_with_per_modality_vectors_give_title_and_image(model):
    """Cross-modal retrieval needs each modality's own vector: the title stream is `title` in SCALE
    and `text` in the two-stream baselines; both are found."""
    from bench.pipeline import modality_vectors
    from bench.registry import create_model
    from bench.testing import random_batch, tiny_spec

    spec, mods = tiny_spec(), ModalitySet.parse("I,T")
    variants = create_model(model, mods, spec).embed_variants(random_batch(spec, mods, batch_size=4, seed=0))
    assert set(modality_vectors(variants, mods)) == {"I", "T"}
