"""The source files a model's pretrained weights depend on: its module's import graph in this repository.

A checkpoint's cache key hashes these files, so an edit to a block one model imports invalidates
that model's checkpoints and no other's. Imports are read from the source (``ast``, every import
statement, also those inside functions), never executed. A package's ``__init__.py`` counts with
its own text when a submodule of it is imported, and with its imports too when names are taken from
the package itself (``from bench.nn import Encoder``). Modules outside the searched roots (torch,
numpy, ...) are not followed: their versions are the environment's, recorded in each result.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from collections.abc import Iterable, Sequence
from pathlib import Path

#: Modules every pretraining run executes besides the model's own: the loop and the contract.
TRAINING_MODULES = ("bench.engine", "bench.adapter")


def repo_root() -> Path:
    """The directory holding the ``bench`` package (and ``scale``, ``baselines``)."""
    import bench

    return Path(bench.__file__).resolve().parent.parent


def _resolve(name: str, roots: Sequence[Path]) -> Path | None:
    parts = name.split(".")
    for root in roots:
        base = root.joinpath(*parts)
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
    return None


def _module_name(path: Path, roots: Sequence[Path]) -> str:
    for root in roots:
        if path.is_relative_to(root):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            return ".".join(parts)
    raise ValueError(f"{path} is under none of {list(roots)}")


def _imports(path: Path, name: str) -> Iterable[tuple[str, list[str] | None]]:
    """``(module, None)`` for ``import module`` and ``(module, names)`` for ``from module import names``,
    for every import statement in ``path`` (the source of module ``name``), relative ones resolved."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_pkg else name.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            yield base, [alias.name for alias in node.names]


def import_closure(modules: Iterable[str], roots: Sequence[Path]) -> list[Path]:
    """Every source file under ``roots`` that importing ``modules`` reads, sorted."""
    seen: dict[Path, bool] = {}  # path -> whether its imports were followed
    todo = [(m, True) for m in modules]
    while todo:
        name, follow = todo.pop()
        path = _resolve(name, roots)
        if path is None or seen.get(path, False) or (path in seen and not follow):
            continue
        seen[path] = follow
        parts = name.split(".")
        todo += [(".".join(parts[:i]), False) for i in range(1, len(parts))]  # parent packages' own text
        if not follow:
            continue
        for base, names in _imports(path, name):
            if names is None:
                todo.append((base, True))
                continue
            subs = [f"{base}.{n}" for n in names if _resolve(f"{base}.{n}", roots) is not None]
            todo += [(sub, True) for sub in subs]
            todo.append((base, len(subs) < len(names)))  # names read from the module itself: it runs
    return sorted(seen)


def model_roots(target: str) -> list[Path]:
    """The repository root, plus the root of the model's own module when it lives elsewhere."""
    module = target.partition(":")[0]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"cannot find the source of {module!r}")
    origin = Path(spec.origin).resolve()
    depth = module.count(".") + (1 if origin.name == "__init__.py" else 0)
    roots = [repo_root()]
    own = origin.parents[depth]
    return roots if own == roots[0] else roots + [own]


def code_hash(target: str) -> str:
    """Hash of the source that determines a model's pretrained weights: the import closure of its
    module (``module:Class``) and of the training loop, under the repository (and the model's own root)."""
    roots = model_roots(target)
    h = hashlib.sha1()
    for path in import_closure([target.partition(":")[0], *TRAINING_MODULES], roots):
        h.update(_module_name(path, roots).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]
