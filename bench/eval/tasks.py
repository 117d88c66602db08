"""The registry of evaluation tasks :func:`bench.eval.suite.evaluate` runs: retrieval (under both
scoring rules), classification (linear probe and the fine-tuned head's predictions), clustering.

A task is a function ``task(inp, out) -> bool`` over the checked inputs (:class:`TaskInput`) that
adds its metrics, counts and definitions to ``out`` (:class:`TaskOutput`) and returns False when it
does not apply to these inputs (e.g. classification without test rows). Adding a task is one such
function plus one :func:`register` call; ``evaluate(..., tasks=(..., "name"))`` then runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.registries import Registry, load_target


@dataclass
class TaskInput:
    """The checked inputs of one evaluation: embeddings ``x`` (N, d), labels and row masks, and the
    options :func:`bench.eval.suite.evaluate` was called with."""

    x: np.ndarray
    category: np.ndarray
    product: np.ndarray
    coarse_query: np.ndarray
    fine_query: np.ndarray
    cls_train: np.ndarray
    cls_test: np.ndarray | None
    gallery: np.ndarray
    options: dict[str, Any]


@dataclass
class TaskOutput:
    """What the tasks produced so far: metric values, counts, definitions, and other entries of the
    returned dict (``extra``: probe details, hubness, per-query values)."""

    metrics: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    definitions: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskEntry:
    name: str
    target: str  # "module:function"
    summary: str

    def load(self) -> Any:
        return load_target(self.target)


TASKS: Registry[TaskEntry] = Registry("evaluation task")


def register(name: str, target: str, *, summary: str) -> TaskEntry:
    """Register an evaluation task ``name`` computed by ``target`` (``module:function``)."""
    return TASKS.add(name, TaskEntry(name, target, summary))


def check_names(names: Sequence[str]) -> None:
    """Refuse unknown task names before any work (a ValueError naming them)."""
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        hints = "".join(TASKS.hint(n) for n in unknown)
        raise ValueError(f"unknown evaluation task(s): {', '.join(unknown)}.{hints} Registered: {', '.join(TASKS)}")


register("retrieval", "bench.eval.suite:retrieval_task",
         summary="coarse (category) and fine (product) retrieval, every registered metric family, both scoring rules")
register("classification", "bench.eval.suite:classification_task",
         summary="linear probe on the cls_test rows, and the fine-tuned head's accuracy when its predictions are given")
register("clustering", "bench.eval.suite:clustering_task", summary="k-means on the gallery rows: NMI and purity over seeds")
