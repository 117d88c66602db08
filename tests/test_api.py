"""bench.api: the README example, the run signature, and evaluate on arrays and on files."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_run_signature_matches_the_cli():
    from bench import api

    params = list(inspect.signature(api.run).parameters)
    assert params[:8] == ["model", "modalities", "data", "split", "preset", "seed", "overrides", "results"]
    defaults = {k: p.default for k, p in inspect.signature(api.run).parameters.items()}
    assert defaults["split"] == "full" and defaults["preset"] == "tiny" and defaults["seed"] == 0


def test_readme_example_runs_with_run_cell_stubbed(monkeypatch, tmp_path):
    """The README code with the training replaced: it plans the cell exactly as `bench run` would."""
    import bench.pipeline

    seen = {}

    def fake_run_cell(plan, **kw):
        seen["plan"], seen["kw"] = plan, kw
        return {"metrics": {"pretrain": {"coarse/mAP@10[m5product]": 0.5}}}

    monkeypatch.setattr(bench.pipeline, "run_cell", fake_run_cell)
    exec(compile(_readme_example(), "README.md", "exec"), {})
    plan = seen["plan"]
    assert plan.cell.model == "clip" and str(plan.cell.modalities) == "I,T" and plan.cell.data == "synthetic:mini"
    assert seen["kw"]["force"] is False
    # the CLI makes the same plan
    from bench.commands.run import _plan

    cli_plan = _plan("clip", "I,T", "synthetic:mini", "full", "tiny", 0,
                     ["max_steps=2", "batch_size=32", "finetune_epochs=1"], None)
    assert cli_plan.cell == plan.cell


def test_run_refusals_are_user_errors():
    from bench import api
    from bench.console import UserError

    with pytest.raises(UserError):
        api.plan("no-such-model", "I,T")
    with pytest.raises(UserError):
        api.plan("clip", "I,T,Tab")


def test_evaluate_arrays_equals_file(tmp_path):
    from bench import api

    rng = np.random.default_rng(0)
    cat = rng.integers(0, 4, 200)
    x = (np.eye(4)[cat] * 3 + rng.normal(size=(200, 4))).astype(np.float32)
    prod = cat * 100 + rng.integers(0, 20, 200)
    a = api.evaluate(x, category=cat, product=prod, knn_backend="select")
    np.savez(tmp_path / "e.npz", embeddings=x, category=cat, product=prod)
    b = api.evaluate(tmp_path / "e.npz", knn_backend="select")
    assert a["metrics"] == b["metrics"] and set(a["input_defaults"]) == {"gallery", "cls_split", "coarse_query", "fine_query"}


@pytest.mark.slow
def test_readme_example_trains():
    """The README example for real (trains two steps on the mini catalog)."""
    exec(compile(_readme_example(), "README.md", "exec"), {})
