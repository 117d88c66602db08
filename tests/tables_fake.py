"""Hand-made result files for the leaderboard, sweep and check tests (no training anywhere).

Values are a deterministic function of (cell, seed, metric), so tables built from them are stable
byte for byte, and tests can compute the expected numbers independently.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from bench.modalities import ModalitySet
from bench.results import SCHEMA, cell_filename, write_json_atomic

RET = [f"{lvl}/{m}@{k}[m5product]" for lvl in ("coarse", "fine") for m in ("mAP", "Prec") for k in (1, 5, 10)]
RET_COS = [m[:-1] + "/cos]" for m in RET]  # the cosine rule's names (bench.eval.scoring.cos_name)
#: Per-query files: evaluation rows, scored queries (coarse: the first COARSE_Q, fine: the last FINE_Q),
#: classification test rows.
ROWS, COARSE_Q, FINE_Q, CLS_ROWS = 500, 300, 250, 200

SYNTH = {"source": "synthetic:default", "fingerprint": "f00dfeedbeef0123456789", "is_m5product": False,
         "description": "m5bench synthetic catalog default (seed 0, v1); NOT M5Product", "listings": 5000}
MINI = {"source": "synthetic:mini", "fingerprint": "0123abcdef99887766", "is_m5product": False,
        "description": "m5bench synthetic catalog mini (seed 0, v1); NOT M5Product", "listings": 400}


#: SCALE's defaults for the ablation settings, as `bench run` records them in result["config"]["model"].
SCALE_DEFAULTS = {"mem_span": "key_or_value", "harmonize": "learned", "share_text_table": False,
                  "pretext": True, "contrastive": True}


def fake_value(*parts: Any) -> float:
    """A value in [0.2, 0.9) from a hash, rounded to 4 decimals (so printed numbers are exact)."""
    h = int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)
    return round(0.2 + 0.7 * (h / 2**32), 4)


def _key(model: str, modalities: str, split: str, seed: int, overrides: dict | None) -> tuple:
    return (model, modalities, split, seed, sorted((overrides or {}).items()))


def fake_metrics(model: str, modalities: str, split: str, seed: int, overrides: dict | None = None) -> dict:
    key = _key(model, modalities, split, seed, overrides)
    pre = {m: fake_value(*key, "pre", m) for m in RET + RET_COS}
    pre["cls/accuracy[probe]"] = fake_value(*key, "probe")
    pre["cls/accuracy[linear_probe]"] = fake_value(*key, "linear_probe")  # the evaluator's name
    if {"I", "T"} <= set(modalities.split(",")):  # cross-modal retrieval between per-modality vectors
        for direction in ("T->I", "I->T"):
            pre[f"xmodal/{direction}/instance/Recall@1[cos]"] = fake_value(*key, "xmodal", direction)
    pre["cluster/NMI"] = fake_value(*key, "nmi")
    pre["cluster/NMI_std"] = 0.01
    pre["cluster/purity"] = fake_value(*key, "purity")
    ft = {m: fake_value(*key, "ft", m) for m in RET + RET_COS}
    ft["cls/accuracy[finetune]"] = fake_value(*key, "acc")
    return {"pretrain": pre, "finetune": ft}


def fake_hubness(model: str, modalities: str, split: str, seed: int, overrides: dict | None = None) -> dict:
    """The hubness block: the raw rule degenerate for about a fifth of the cells, cosine never."""
    key = _key(model, modalities, split, seed, overrides)
    out = {}
    for group in ("pretrain", "finetune"):
        share = fake_value(*key, "hub", group)
        out[group] = {"raw": {"queries": COARSE_Q, "top10_share": share, "distinct_top1": 40,
                              "degenerate": share > 0.76},
                      "cos": {"queries": COARSE_Q, "top10_share": 0.1, "distinct_top1": 200, "degenerate": False}}
    return out


def make_result(model: str, modalities: str, split: str = "subset", seed: int = 0, *, preset: str = "tiny",
                overrides: dict | None = None, data: dict | None = None, metrics: dict | None = None,
                extra: dict | None = None, config: dict | None = None, hubness: dict | None = None) -> dict:
    res = {
        "schema": SCHEMA,
        "cell": {"model": model, "modalities": str(ModalitySet.parse(modalities)), "split": split,
                 "preset": preset, "seed": seed, "overrides": dict(overrides or {})},
        "data": dict(data or SYNTH),
        "metrics": metrics if metrics is not None else fake_metrics(model, modalities, split, seed, overrides),
        "definitions": {}, "timings": {}, "provenance": {"created": "fixed"},
        "config": {"model": dict(SCALE_DEFAULTS, **(overrides or {})) if model == "scale" else {},
                   "pipeline": {"pretrain_incomplete": True}},
        "hubness": hubness if hubness is not None else fake_hubness(model, modalities, split, seed, overrides),
    }
    if extra is not None:
        res["extra"] = extra
    if config is not None:
        res["config"] = config
    return res


def fake_per_query(res: dict) -> dict[str, np.ndarray]:
    """Per-query arrays as ``bench run`` saves them, for ``res``'s per-query metrics: 0/1 values drawn
    with the metric's value as probability (so their mean is near it), NaN for unscored queries."""
    c = res["cell"]
    arrays: dict[str, np.ndarray] = {"item_id": np.array([f"it{i}" for i in range(ROWS)])}
    rows = np.arange(COARSE_Q + FINE_Q - 100, dtype=np.int64)  # 100 queries are both coarse and fine
    for group, accuracy in (("pretrain", "cls/correct[linear_probe]"), ("finetune", "cls/correct[finetuned_head]")):
        arrays[f"{group}/_query_rows"] = rows
        for name, value in res["metrics"][group].items():
            level = name.split("/", 1)[0]
            if not name.endswith(("mAP@1[m5product]", "mAP@1[m5product/cos]", "mAP@10[m5product]",
                                  "mAP@10[m5product/cos]")) or value is None:
                continue
            draw = _rng(c, group, name).random(len(rows)) < value
            scored = rows < COARSE_Q if level == "coarse" else rows >= len(rows) - FINE_Q
            arrays[f"{group}/{name}"] = np.where(scored, draw, np.nan).astype(np.float32)
        acc = res["metrics"]["finetune"].get("cls/accuracy[finetune]") or 0.5
        arrays[f"{group}/{accuracy}"] = (_rng(c, group, accuracy).random(CLS_ROWS) < acc).astype(np.float32)
    return arrays


def _rng(cell: dict, *parts: Any) -> np.random.Generator:
    h = hashlib.sha256("|".join(map(str, (cell["model"], cell["modalities"], cell["split"], cell["seed"],
                                          sorted(cell["overrides"].items()), *parts))).encode())
    return np.random.default_rng(int(h.hexdigest()[:8], 16))


def write_result(root: Path, res: dict, *, per_query: bool | dict = False) -> Path:
    """Write ``res``; with ``per_query``, a ``.per_query.npz`` beside it (True: :func:`fake_per_query`;
    a dict: those arrays)."""
    c = res["cell"]
    name = cell_filename(c["model"], ModalitySet.parse(c["modalities"]).key, c["split"], c["preset"], c["seed"],
                         c["overrides"])
    path = write_json_atomic(Path(root) / name, res)
    if per_query is not False:
        np.savez(path.with_suffix(".per_query.npz"), **(fake_per_query(res) if per_query is True else per_query))
    return path
