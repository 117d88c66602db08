"""The shared evaluator: retrieval (official M5Product and standard definitions), linear probe, clustering.

Call :func:`bench.eval.suite.evaluate` (also reachable as ``bench.eval.evaluate``) with one model's
embeddings. The re-export is lazy so that importing a light submodule (e.g. ``bench.eval.labels``)
does not pull in torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from bench.eval.suite import evaluate

        return evaluate
    raise AttributeError(f"module 'bench.eval' has no attribute {name!r}")
