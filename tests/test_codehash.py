"""Checkpoint cache keys hash the code a model imports: an edit elsewhere keeps its checkpoints."""

from __future__ import annotations

import shutil

import pytest

from bench import registry
from bench.codehash import TRAINING_MODULES, code_hash, import_closure, repo_root

PACKAGES = ("bench", "scale", "baselines")


@pytest.fixture()
def tree(tmp_path):
    """A copy of the repository's packages, to edit."""
    root = repo_root()
    for pkg in PACKAGES:
        shutil.copytree(root / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _key(module: str, root) -> list:
    return [(p.relative_to(root), p.read_bytes()) for p in import_closure([module, *TRAINING_MODULES], [root])]


def test_editing_a_module_the_model_does_not_import_keeps_its_key(tree):
    bert, uniter = _key("baselines.bert", tree), _key("baselines.uniter", tree)
    (tree / "bench" / "nn" / "ot.py").write_text((tree / "bench" / "nn" / "ot.py").read_text() + "\n# edited\n")
    assert _key("baselines.bert", tree) == bert  # BERT has no optimal transport
    assert _key("baselines.uniter", tree) != uniter  # UNITER's OT loss lives there


def test_editing_a_module_the_model_imports_changes_its_key(tree):
    for rel in (("bench", "nn", "layers.py"), ("baselines", "_common.py"), ("bench", "engine.py")):
        before = _key("baselines.bert", tree)
        path = tree.joinpath(*rel)
        path.write_text(path.read_text() + "\n# edited\n")
        assert _key("baselines.bert", tree) != before, rel


def test_names_taken_from_a_package_follow_its_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from pkg.a import f\n")
    (tmp_path / "pkg" / "a.py").write_text("from . import b\ndef f(): return b.g()\n")
    (tmp_path / "pkg" / "b.py").write_text("def g(): return 1\n")
    (tmp_path / "pkg" / "c.py").write_text("def h(): return 2\n")
    (tmp_path / "m1.py").write_text("import pkg.c\n")  # pkg/__init__ runs, but only its own text counts
    (tmp_path / "m2.py").write_text("from pkg import f\n")  # f comes through pkg/__init__: followed

    def names(module):
        return sorted(p.relative_to(tmp_path).as_posix() for p in import_closure([module], [tmp_path]))

    assert names("m1") == ["m1.py", "pkg/__init__.py", "pkg/c.py"]
    assert names("m2") == ["m2.py", "pkg/__init__.py", "pkg/a.py", "pkg/b.py"]


def test_every_registered_model_has_a_code_hash_of_its_own_closure():
    hashes = {e.name: code_hash(e.target) for e in registry.entries()}
    assert len(set(hashes.values())) == len(hashes)
    closure = import_closure(["baselines.bert", *TRAINING_MODULES], [repo_root()])
    assert repo_root() / "bench" / "nn" / "layers.py" in closure
    assert repo_root() / "bench" / "nn" / "harmonize.py" not in closure  # SCALE's, not BERT's
