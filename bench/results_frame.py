"""Result files as one pandas DataFrame: one row per result, one column per metric.

``bench results ls`` and ``bench results export`` read results through :func:`load_results`, and
so can any script or notebook.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.modalities import ModalitySet
from bench.results import iter_results
from bench.tables import same_source

#: Columns that describe a result (before the metric columns).
ID_COLUMNS = ("model", "modalities", "split", "preset", "seed", "overrides", "data", "fingerprint",
              "created", "commit", "path")


def _row(path: Path, res: dict[str, Any]) -> dict[str, Any]:
    cell, data, prov = res.get("cell") or {}, res.get("data") or {}, res.get("provenance") or {}
    ov = cell.get("overrides") or {}
    row: dict[str, Any] = {
        "model": cell.get("model"), "modalities": cell.get("modalities"), "split": cell.get("split"),
        "preset": cell.get("preset"), "seed": cell.get("seed"),
        "overrides": " ".join(f"{k}={v}" for k, v in sorted(ov.items())),
        "data": data.get("source"), "fingerprint": str(data.get("fingerprint") or "")[:12],
        "created": prov.get("created"), "commit": str((prov.get("git") or {}).get("commit") or "")[:10],
        "path": str(path),
    }
    for group, values in (res.get("metrics") or {}).items():
        for name, v in (values or {}).items():
            row[f"{group}/{name}"] = v
    return row


def load_results(root: str | Path, *, model: str | None = None, modalities: str | None = None,
                 data: str | None = None, split: str | None = None, seed: int | None = None) -> Any:
    """Every result file under ``root`` as a DataFrame (sorted by path), filtered on the cell's
    fields; ``data`` matches a source (``synthetic:mini``, ``manifest:PATH``) or a fingerprint
    prefix. Metric columns are ``pretrain/<metric>`` and ``finetune/<metric>``, fractions, NaN where
    a result has no value."""
    import pandas as pd

    mods = str(ModalitySet.parse(modalities)) if modalities else None
    rows = []
    for path, res in iter_results(root):
        cell = res.get("cell") or {}
        if (model and cell.get("model") != model) or (mods and cell.get("modalities") != mods) \
                or (split and cell.get("split") != split) or (seed is not None and cell.get("seed") != seed) \
                or not same_source(data, res.get("data") or {}):
            continue
        rows.append(_row(path, res))
    frame = pd.DataFrame(rows, columns=None if rows else list(ID_COLUMNS))
    metric_cols = sorted(c for c in frame.columns if c not in ID_COLUMNS)
    return frame[list(ID_COLUMNS) + metric_cols]
