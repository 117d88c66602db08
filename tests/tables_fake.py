"""Hand-made result files for the leaderboard, sweep and check tests (no training anywhere).

Values are a deterministic function of (cell, seed, metric), so tables built from them are stable
byte for byte, and tests can compute the expected numbers independently.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from bench.modalities import ModalitySet
from bench.results import SCHEMA, cell_filename, write_json_atomic

RET = [f"{lvl}/{m}@{k}[m5product]" for lvl in ("coarse", "fine") for m in ("mAP", "Prec") for k in (1, 5, 10)]

SYNTH = {"source": "synthetic:default", "fingerprint": "f00dfeedbeef0123456789", "is_m5product": False,
         "description": "m5bench synthetic catalog default (seed 0, v1); NOT M5Product", "listings": 5000}
MINI = {"source": "synthetic:mini", "fingerprint": "0123abcdef99887766", "is_m5product": False,
        "description": "m5bench synthetic catalog mini (seed 0, v1); NOT M5Product", "listings": 400}


#: SCALE's defaults for the ablation settings, as `bench run` records them in result["config"]["model"].
SCALE_DEFAULTS = {"mem_span": "key_or_value", "harmonize": "learned", "share_text_table": False}


def fake_value(*parts: Any) -> float:
    """A value in [0.2, 0.9) from a hash, rounded to 4 decimals (so printed numbers are exact)."""
    h = int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)
    return round(0.2 + 0.7 * (h / 2**32), 4)


def fake_metrics(model: str, modalities: str, split: str, seed: int, overrides: dict | None = None) -> dict:
    key = (model, modalities, split, seed, sorted((overrides or {}).items()))
    pre = {m: fake_value(*key, "pre", m) for m in RET}
    pre["cls/accuracy[probe]"] = fake_value(*key, "probe")
    pre["cluster/NMI"] = fake_value(*key, "nmi")
    pre["cluster/NMI_std"] = 0.01
    pre["cluster/purity"] = fake_value(*key, "purity")
    ft = {m: fake_value(*key, "ft", m) for m in RET}
    ft["cls/accuracy[finetune]"] = fake_value(*key, "acc")
    return {"pretrain": pre, "finetune": ft}


def make_result(model: str, modalities: str, split: str = "subset", seed: int = 0, *, preset: str = "tiny",
                overrides: dict | None = None, data: dict | None = None, metrics: dict | None = None,
                extra: dict | None = None, config: dict | None = None) -> dict:
    res = {
        "schema": SCHEMA,
        "cell": {"model": model, "modalities": str(ModalitySet.parse(modalities)), "split": split,
                 "preset": preset, "seed": seed, "overrides": dict(overrides or {})},
        "data": dict(data or SYNTH),
        "metrics": metrics if metrics is not None else fake_metrics(model, modalities, split, seed, overrides),
        "definitions": {}, "timings": {}, "provenance": {"created": "fixed"},
        "config": {"model": dict(SCALE_DEFAULTS) if model == "scale" else {}, "pipeline": {"pretrain_incomplete": True}},
    }
    if extra is not None:
        res["extra"] = extra
    if config is not None:
        res["config"] = config
    return res


def write_result(root: Path, res: dict) -> Path:
    c = res["cell"]
    name = cell_filename(c["model"], ModalitySet.parse(c["modalities"]).key, c["split"], c["preset"], c["seed"],
                         c["overrides"])
    return write_json_atomic(Path(root) / name, res)
