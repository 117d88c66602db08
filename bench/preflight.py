"""Checks a run makes on its catalog before any feature, model or training work.

``bench run`` and ``bench run --dry-run`` call the same functions, so a dry run refuses exactly
what the real run would refuse, and warns about exactly what it would warn about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.console import UserError
from bench.modalities import ModalitySet

#: An evaluation with fewer queries than this, or fewer positives per query on average than
#: ``MIN_POSITIVES``, cannot separate models: its numbers are flagged as unreliable.
MIN_QUERIES = 100
MIN_POSITIVES = 2.0


@dataclass
class EvalHealth:
    """Query and positive counts of the evaluation split, and the warnings they raise."""

    counts: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def pretrain_rows(catalog: Any, split: str, mods: ModalitySet, incomplete: bool,
                  present: Any = None) -> np.ndarray:
    """Row indices of the pretraining pool; without ``incomplete``, only listings with every
    requested modality (``present(mod) -> bool[N]`` from the feature store when it exists, else
    the catalog's own columns)."""
    rows = catalog.split_indices("pretrain_subset" if split == "subset" else "pretrain_full")
    if incomplete:
        return rows
    keep = np.ones(len(rows), dtype=bool)
    for m in mods:
        keep &= (present(m) if present is not None else catalog.has_modality(m.value))[rows]
    return rows[keep]


def check_batch(n_rows: int, batch_size: int, mods: ModalitySet, incomplete: bool) -> None:
    """Refuse a pretraining pool smaller than one batch, naming the settings that fix it."""
    if n_rows >= batch_size:
        return
    fixes = [f"--set batch_size=N with N <= {n_rows}" if n_rows else None,
             "--set pretrain_incomplete=true" if not incomplete else None,
             "--set eval_fraction=F with a smaller F (more listings for pretraining)",
             "--set untrained=true (score the model at its initialisation)"]
    raise UserError(f"only {n_rows} pretraining listings for {mods}; need at least one batch of {batch_size}. "
                    f"Try {'; or '.join(f for f in fixes if f)}")


def check_modalities(catalog: Any, mods: ModalitySet) -> None:
    """Refuse a request for a modality the catalog does not carry at all (the data layer names
    the unrecognised columns or the problems that emptied it)."""
    catalog.check_modalities(list(mods))


def _positives(labels: np.ndarray, query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Per query: other gallery listings with the query's label."""
    g_labels, g_counts = np.unique(labels[gallery], return_counts=True)
    lut = dict(zip(g_labels.tolist(), g_counts.tolist()))
    q = np.flatnonzero(query)
    return np.asarray([lut.get(labels[i], 0) - int(gallery[i]) for i in q], dtype=np.int64)


def eval_health(catalog: Any, split: str = "full") -> EvalHealth:
    """Queries and positives per task on the sets the cells pretrained on ``split`` are scored on
    (``Catalog.task_set``); warns where they are too few for the numbers to mean anything."""
    n = len(catalog)
    every = np.zeros(n, dtype=bool)
    every[catalog.split_indices("gallery")] = True
    out = EvalHealth(counts={"gallery": int(every.sum())})
    for task, labels in (("coarse", catalog.category_ids()), ("fine", catalog.product_ids())):
        ts = catalog.task_set(task, split)
        query, gallery = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        query[ts.query], gallery[ts.gallery] = True, True
        query &= every
        pos = _positives(labels, query, gallery)
        mean_pos = float(pos.mean()) if len(pos) else 0.0
        out.counts[f"{task}/queries"] = int(query.sum())
        out.counts[f"{task}/mean_positives"] = round(mean_pos, 3)
        if not query.any():
            what = "no product annotation" if task == "fine" else "no category annotation"
            out.warnings.append(f"no {task} retrieval queries ({what}): the {task} metrics are written as null")
        elif query.sum() < MIN_QUERIES or mean_pos < MIN_POSITIVES:
            out.warnings.append(
                f"{task} retrieval has {int(query.sum())} queries with {mean_pos:.2f} positives each on average "
                f"(reliable needs >= {MIN_QUERIES} queries and >= {MIN_POSITIVES:g} positives): "
                f"its numbers cannot separate models; use a larger catalog or --set eval_fraction=F")
    return out
