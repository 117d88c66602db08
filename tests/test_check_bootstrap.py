"""`bench check` with power: per-query values and a paired bootstrap catch a 3-point drop that a
seed-spread band of several points would let through."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench import check
from bench.eval import evaluate

METRIC = "pretrain/coarse/mAP@1[m5product]"


def _embeddings(seed: int, n: int = 800, d: int = 32, noise: float = 1.1) -> tuple[np.ndarray, np.ndarray]:
    """Clustered embeddings; another seed moves the cluster centres too, as another training run
    would (so seeds differ by several points while one seed's queries are fixed)."""
    cat = np.arange(n) % 20
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(100).standard_normal((20, d)) + 0.6 * rng.standard_normal((20, d))
    x = centres[cat] + noise * rng.standard_normal((n, d))
    return x.astype(np.float32), cat


def _result(tmp: Path, name: str, x: np.ndarray, cat: np.ndarray) -> dict:
    """A result dict with its per-query file, as `bench run` writes them."""
    q = np.ones(len(x), dtype=bool)
    out = evaluate(x, category=cat, product=np.arange(len(x)) // 2, coarse_query=q, fine_query=q,
                   tasks=("retrieval",), per_query=("coarse/mAP@1[m5product]",))
    pq = {f"pretrain/{k}": v for k, v in out["per_query"].items()}
    path = tmp / f"{name}.per_query.npz"
    np.savez(path, item_id=np.array([f"i{i}" for i in range(len(x))]), **pq)
    return {"cell": {}, "data": {"fingerprint": "fp", "description": "test"},
            "metrics": {"pretrain": {"coarse/mAP@1[m5product]": out["metrics"]["coarse/mAP@1[m5product]"]}},
            "_per_query_path": str(path)}


def _perturb(x: np.ndarray, rows: int, seed: int = 7) -> np.ndarray:
    """Replace ``rows`` embeddings by random vectors: their queries (and their use as neighbours) degrade."""
    y = x.copy()
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(x), rows, replace=False)
    y[pick] = rng.standard_normal((rows, x.shape[1])).astype(np.float32) * float(np.linalg.norm(x, axis=1).mean()) / np.sqrt(x.shape[1])
    return y


def _tier(tmp: Path) -> check.Tier:
    raw = {"schema": check.TIER_SCHEMA, "data": "synthetic:mini", "preset": "tiny", "seeds": [0],
           "update_seeds": [0, 1, 2], "tolerance": {"k": 3, "floor": 0.01, "min_drop": 0.02},
           "cells": [{"model": "bert", "modalities": "T", "split": "subset"}],
           "metrics": {"include": ["pretrain/coarse/mAP@1?m5product?"]}}
    (tmp / "tier.json").write_text(json.dumps(raw))
    return check.load_tier(tmp / "tier.json")


def test_a_three_point_drop_fails_the_check_and_no_change_passes(tmp_path):
    tier = _tier(tmp_path)
    cell = tier.cells[0]
    x0, cat = _embeddings(0)
    update = {s: _result(tmp_path, f"seed{s}", *_embeddings(s)) for s in (0, 1, 2)}
    doc = check.build_recorded(tier, {cell: update}, per_query_dir=tmp_path / "per_query")
    rec = doc["cells"][check.cell_id(cell)]["metrics"][METRIC]
    assert rec["rule"] == "paired_bootstrap"

    same = check.compare(doc, tier, {cell: {0: _result(tmp_path, "same", x0, cat)}}, per_query_dir=tmp_path / "per_query")
    assert [r.status for r in same] == ["ok"] and same[0].interval.low == same[0].interval.high == 0.0

    broken = _result(tmp_path, "broken", _perturb(x0, 25), cat)
    drop = rec["value"] - broken["metrics"]["pretrain"]["coarse/mAP@1[m5product]"]
    assert 0.02 <= drop <= 0.04, drop  # about a 3-point drop
    rows = check.compare(doc, tier, {cell: {0: broken}}, per_query_dir=tmp_path / "per_query")
    assert [r.status for r in rows] == ["REGRESSION"], rows
    # the seed-spread band alone (k x std over seeds) would not have caught it: seed noise here is larger
    assert rec["tolerance"] > drop


def test_without_per_query_files_the_seed_band_still_judges(tmp_path):
    tier = _tier(tmp_path)
    cell = tier.cells[0]
    update = {s: _result(tmp_path, f"seed{s}", *_embeddings(s)) for s in (0, 1, 2)}
    doc = check.build_recorded(tier, {cell: update}, per_query_dir=tmp_path / "per_query")
    now = dict(update[0])
    now.pop("_per_query_path")
    rows = check.compare(doc, tier, {cell: {0: now}}, per_query_dir=tmp_path / "per_query")
    assert [r.status for r in rows] == ["ok"] and rows[0].interval is None
