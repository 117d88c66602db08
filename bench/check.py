"""``bench check``: the CI regression tier.

The tier (``leaderboards/regression/tier.json``) is data: a small synthetic catalog, a preset, the
cells (model, modalities, split), the seeds a check runs and the seeds ``--update`` records. A check
runs those cells through ``bench run`` into a temporary results directory and compares every
metric with ``leaderboards/regression/recorded.json``.

Two rules, recorded per metric:

* ``paired_bootstrap`` (every metric with per-query values: retrieval mAP under both scoring rules,
  probe and fine-tuned accuracy). The update runs' per-query values (mean over the check seeds)
  are kept beside ``recorded.json``; a check pairs its own per-query values with them query by
  query and takes the 95 % bootstrap interval of the mean difference (1,000 resamples of the
  queries, seeded). A regression is a drop whose interval lies below 0 and whose size is at least
  ``min_drop``: the band comes from the evaluation queries themselves, so a few points of real
  change are caught even where seed-to-seed spread is larger; ``min_drop`` keeps last-digit
  differences between machines (float summation order, thread counts) from failing a check.
* ``seed_spread`` (the rest: NMI, purity, ...): ``max(k * std, floor)``, where ``std`` is the
  sample standard deviation over ``update_seeds``; a value below ``recorded - tolerance`` is a
  regression.

The recorded value is the mean over the *check* seeds of the update runs, so a check compares like
with like (same seeds). Which way is worse is the metric family's declared direction
(:mod:`bench.eval.metrics`); a metric that disappears is a failure too;
a significant rise passes with a hint to re-record.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bench.eval.bootstrap import Interval, paired_bootstrap, seed_mean
from bench.eval.metrics import higher_is_better
from bench.results import write_json_atomic
from bench.tables import CellSpec

TIER_SCHEMA = "m5bench.tier/1"
RECORDED_SCHEMA = "m5bench.regression/1"
REGRESSION_DIR = Path(__file__).resolve().parent.parent / "leaderboards" / "regression"


class CheckError(ValueError):
    pass


@dataclass(frozen=True)
class Tier:
    data: str
    preset: str
    seeds: tuple[int, ...]
    update_seeds: tuple[int, ...]
    k: float
    floor: float
    min_drop: float
    cells: tuple[CellSpec, ...]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    raw: dict[str, Any]

    def wants(self, metric: str) -> bool:
        return any(fnmatch.fnmatchcase(metric, p) for p in self.include) and \
            not any(fnmatch.fnmatchcase(metric, p) for p in self.exclude)


def cell_id(cell: CellSpec) -> str:
    """Stable id of a tier cell in recorded.json."""
    ov = ",".join(f"{k}={v}" for k, v in cell.overrides)
    return f"{cell.model}|{cell.modalities}|{cell.split}" + (f"|{ov}" if ov else "")


def load_tier(path: str | Path) -> Tier:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckError(f"no tier file at {path}") from None
    except json.JSONDecodeError as exc:
        raise CheckError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    try:
        if raw.get("schema") != TIER_SCHEMA:
            raise CheckError(f"{path}: schema {raw.get('schema')!r}, expected {TIER_SCHEMA!r}")
        tol = raw["tolerance"]
        tier = Tier(
            data=str(raw["data"]), preset=str(raw["preset"]),
            seeds=tuple(int(s) for s in raw["seeds"]), update_seeds=tuple(int(s) for s in raw["update_seeds"]),
            k=float(tol["k"]), floor=float(tol["floor"]), min_drop=float(tol.get("min_drop", tol["floor"])),
            cells=tuple(CellSpec.make(c["model"], c["modalities"], c.get("split", "subset"), c.get("overrides"))
                        for c in raw["cells"]),
            include=tuple(raw.get("metrics", {}).get("include", ["*"])),
            exclude=tuple(raw.get("metrics", {}).get("exclude", [])),
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckError):
            raise
        raise CheckError(f"{path}: malformed tier ({type(exc).__name__}: {exc})") from None
    if not tier.seeds or not set(tier.seeds) <= set(tier.update_seeds):
        raise CheckError(f"{path}: seeds {list(tier.seeds)} must be non-empty and among update_seeds "
                         f"{list(tier.update_seeds)} (the recorded value is the update runs' mean over the check seeds)")
    if len(tier.update_seeds) < 2:
        raise CheckError(f"{path}: update_seeds needs at least two seeds to derive a spread")
    return tier


def flat_metrics(result: Mapping[str, Any], tier: Tier) -> dict[str, float]:
    """``group/metric -> value`` for the finite numeric metrics the tier compares."""
    out: dict[str, float] = {}
    for group, vals in sorted((result.get("metrics") or {}).items()):
        if not isinstance(vals, Mapping):
            continue
        for k, v in vals.items():
            name = f"{group}/{k}"
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and tier.wants(name):
                out[name] = float(v)
    return out


def per_query_key(metric: str) -> str:
    """``pretrain/cls/accuracy[linear_probe]`` -> ``pretrain/cls/correct[linear_probe]``; retrieval
    metrics keep their name."""
    return metric.replace("/cls/accuracy[", "/cls/correct[")


def load_per_query(result: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The per-query arrays saved beside a result (``run_tier`` notes where), or None."""
    path = result.get("_per_query_path")
    if not path or not Path(path).is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _seed_mean_per_query(results: list[Mapping[str, Any]]) -> dict[str, np.ndarray] | None:
    """Per-query arrays averaged over ``results`` (the check seeds); None unless all have them on
    the same rows."""
    loaded = [load_per_query(r) for r in results]
    if not loaded or any(x is None for x in loaded):
        return None
    first = loaded[0]
    if any(not np.array_equal(x.get("item_id"), first.get("item_id")) for x in loaded[1:]):
        return None
    out = {"item_id": first["item_id"]}
    for key in first:
        if key == "item_id" or any(key not in x or x[key].shape != first[key].shape for x in loaded):
            continue
        out[key] = first[key] if key.endswith("_query_rows") else seed_mean([x[key] for x in loaded])
    return out


def _interval(now: dict[str, np.ndarray] | None, rec: dict[str, np.ndarray] | None, metric: str) -> Interval | None:
    """Paired bootstrap of ``now - recorded`` for one metric, when both sides hold it on the same rows."""
    key = per_query_key(metric)
    if now is None or rec is None or key not in now or key not in rec:
        return None
    if not np.array_equal(now.get("item_id"), rec.get("item_id")) or now[key].shape != rec[key].shape:
        return None
    group = key.split("/", 1)[0]
    rows = f"{group}/_query_rows"
    if "/cls/" not in key and not np.array_equal(now.get(rows), rec.get(rows)):
        return None
    return paired_bootstrap(now[key], rec[key])


def _cell_file(cid: str) -> str:
    """A file name for a tier cell id (which holds ``|``, ``,`` and ``=``)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", cid) + ".npz"


def _mean(xs: list[float]) -> float:
    return math.fsum(xs) / len(xs)


def _std(xs: list[float]) -> float:
    m = _mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0


def build_recorded(tier: Tier, runs: Mapping[CellSpec, Mapping[int, Mapping[str, Any]]],
                   per_query_dir: Path | None = None) -> dict[str, Any]:
    """The recorded.json document from update runs: ``runs[cell][seed] = result``.

    Only metrics present in every update seed are recorded (a metric that comes and goes cannot be
    guarded). Values are rounded to 6 decimals so the file diffs cleanly. With ``per_query_dir``,
    the check seeds' per-query values are written there (one ``.npz`` per cell) and the metrics
    they cover are guarded by the paired bootstrap rule.
    """
    cells: dict[str, Any] = {}
    data_seen: set[tuple[str, str]] = set()
    for cell in tier.cells:
        per_seed = runs.get(cell, {})
        missing = [s for s in tier.update_seeds if s not in per_seed]
        if missing:
            raise CheckError(f"cannot record {cell.describe()}: no result for seed(s) {missing}")
        flats = {s: flat_metrics(per_seed[s], tier) for s in tier.update_seeds}
        for s in tier.update_seeds:
            d = per_seed[s].get("data") or {}
            data_seen.add((str(d.get("fingerprint")), str(d.get("description"))))
        common = sorted(set.intersection(*(set(f) for f in flats.values())))
        pq = _seed_mean_per_query([per_seed[s] for s in tier.seeds]) if per_query_dir is not None else None
        metrics = {}
        for m in common:
            vals = [flats[s][m] for s in tier.update_seeds]
            std = _std(vals)
            tol = max(tier.k * std, tier.floor)
            metrics[m] = {
                "value": round(_mean([flats[s][m] for s in tier.seeds]), 6),
                "per_seed": {str(s): round(flats[s][m], 6) for s in tier.update_seeds},
                "std": round(std, 6),
                "tolerance": round(tol, 6),
                "rule": "seed_spread",
                "derived": f"max({tier.k:g} x std over seeds {','.join(map(str, tier.update_seeds))} "
                           f"= {tier.k * std:.6f}, floor {tier.floor:g})",
            }
            if pq is not None and per_query_key(m) in pq:
                metrics[m]["rule"] = "paired_bootstrap"
                metrics[m]["derived"] = (f"regression when the 95 % paired-bootstrap interval of now - recorded over "
                                         f"the {int(np.isfinite(pq[per_query_key(m)]).sum())} scored queries lies "
                                         f"below 0 and the drop is at least {tier.min_drop:g}")
        cid = cell_id(cell)
        if pq is not None:
            per_query_dir.mkdir(parents=True, exist_ok=True)
            keep = {k: v for k, v in pq.items() if k == "item_id" or k.endswith("_query_rows")
                    or any(per_query_key(m) == k for m in common)}
            tmp = per_query_dir / f".{_cell_file(cid)}.tmp.npz"
            np.savez_compressed(tmp, **keep)
            tmp.replace(per_query_dir / _cell_file(cid))
        cells[cid] = {"cell": {"model": cell.model, "modalities": cell.modalities, "split": cell.split,
                               "overrides": cell.overrides_dict}, "metrics": metrics,
                      **({"per_query": _cell_file(cid)} if pq is not None else {})}
    if len(data_seen) > 1:
        raise CheckError(f"update runs used several datasets: {sorted(data_seen)}")
    fp, desc = next(iter(data_seen)) if data_seen else (None, None)
    return {
        "schema": RECORDED_SCHEMA,
        "tier": {k: tier.raw.get(k) for k in ("data", "preset", "seeds", "update_seeds", "tolerance", "metrics")},
        "data": {"fingerprint": fp, "description": desc},
        "rule": "paired_bootstrap metrics: regression when the 95 % paired-bootstrap interval of now - recorded "
                "(per query, 1000 resamples, seed 0) lies below 0 and the drop is at least min_drop; seed_spread "
                "metrics: regression when now < value - tolerance, tolerance = max(k * sample std over "
                "update_seeds, floor); value = mean over the check seeds of the update runs",
        "cells": cells,
    }


@dataclass(frozen=True)
class CheckRow:
    cell: str
    metric: str
    recorded: float | None
    now: float | None
    tolerance: float | None
    status: str  # "ok" | "improved" | "REGRESSION" | "missing" | "new"
    interval: Interval | None = None  # paired bootstrap of now - recorded (paired_bootstrap metrics)

    @property
    def delta(self) -> float | None:
        return None if self.recorded is None or self.now is None else self.now - self.recorded

    @property
    def failed(self) -> bool:
        return self.status in ("REGRESSION", "missing")


def compare(recorded: Mapping[str, Any], tier: Tier,
            runs: Mapping[CellSpec, Mapping[int, Mapping[str, Any]]],
            per_query_dir: Path | None = None) -> list[CheckRow]:
    """One row per recorded (cell, metric), plus ``new`` rows for metrics not recorded yet.

    ``now`` is the mean over the check seeds; a cell or seed without a result makes its metrics
    ``missing`` (a failure), as does a metric absent from any check seed. Metrics recorded under
    the ``paired_bootstrap`` rule are judged by the interval of the per-query differences (the
    recorded per-query values are read from ``per_query_dir``); where either side lacks per-query
    values they fall back to the seed-spread band.
    """
    if recorded.get("schema") != RECORDED_SCHEMA:
        raise CheckError(f"recorded values have schema {recorded.get('schema')!r}, expected {RECORDED_SCHEMA!r}")
    rows: list[CheckRow] = []
    by_id = {cell_id(c): c for c in tier.cells}
    for cid in sorted(set(recorded.get("cells", {})) | set(by_id)):
        rec = (recorded.get("cells", {}).get(cid) or {}).get("metrics", {})
        cell = by_id.get(cid)
        per_seed = runs.get(cell, {}) if cell is not None else {}
        have = [s for s in tier.seeds if s in per_seed]
        flats = [flat_metrics(per_seed[s], tier) for s in have] if len(have) == len(tier.seeds) else None
        now_vals: dict[str, float] = {}
        if flats:
            for m in set.intersection(*(set(f) for f in flats)):
                now_vals[m] = _mean([f[m] for f in flats])
        pq_file = (recorded.get("cells", {}).get(cid) or {}).get("per_query")
        rec_pq = _load_npz(per_query_dir / pq_file) if per_query_dir is not None and pq_file else None
        now_pq = _seed_mean_per_query([per_seed[s] for s in tier.seeds]) if flats and rec_pq is not None else None
        for m in sorted(k for k in rec if tier.wants(k)):
            r = rec[m]
            v, tol = float(r["value"]), float(r["tolerance"])
            now = now_vals.get(m)
            iv = _interval(now_pq, rec_pq, m) if r.get("rule") == "paired_bootstrap" else None
            st = "missing" if now is None else _status(m, v, now, tol, iv, tier.min_drop)
            rows.append(CheckRow(cid, m, v, now, tol, st, iv))
        for m in sorted(set(now_vals) - set(rec)):
            rows.append(CheckRow(cid, m, None, now_vals[m], None, "new"))
    return rows


def _status(metric: str, value: float, now: float, tol: float, iv: Interval | None, min_drop: float) -> str:
    """REGRESSION, improved or ok: by the paired interval where there is one, else by the tolerance
    band; "worse" is the direction the metric's family declares (lower, for a higher-is-better one)."""
    d = 1.0 if higher_is_better(metric) else -1.0
    if iv is not None:
        low, high = sorted((d * iv.low, d * iv.high))
        return ("REGRESSION" if high < 0 and d * iv.diff <= -min_drop
                else "improved" if low > 0 and d * iv.diff >= min_drop else "ok")
    below, above = now < value - tol, now > value + tol
    worse, better = (below, above) if d > 0 else (above, below)
    return "REGRESSION" if worse else "improved" if better else "ok"


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_recorded(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckError(f"no recorded values at {path}; record them once with `bench check --update`") from None
    except json.JSONDecodeError as exc:
        raise CheckError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None


def save_recorded(path: str | Path, doc: Mapping[str, Any]) -> Path:
    return write_json_atomic(path, doc)


def tier_note(recorded: Mapping[str, Any], tier: Tier) -> str | None:
    """A warning when the tier (catalog, preset, seeds, tolerance rule) changed since recording."""
    rec = recorded.get("tier") or {}
    now = {k: tier.raw.get(k) for k in ("data", "preset", "seeds", "update_seeds", "tolerance", "metrics")}
    changed = sorted(k for k in now if rec.get(k) != now[k])
    if changed:
        return (f"the tier changed since the values were recorded ({', '.join(changed)}): "
                "re-record with `bench check --update`")
    return None


def data_note(recorded: Mapping[str, Any], runs: Mapping[CellSpec, Mapping[int, Mapping[str, Any]]]) -> str | None:
    """A warning when the check ran on a different catalog than the recorded values."""
    rec_fp = (recorded.get("data") or {}).get("fingerprint")
    now = {str((r.get("data") or {}).get("fingerprint")) for seeds in runs.values() for r in seeds.values()}
    if rec_fp and now and now != {rec_fp}:
        return (f"catalog fingerprint changed (recorded {rec_fp[:12]}, now {', '.join(sorted(x[:12] for x in now))}): "
                "if the catalog generator changed on purpose, re-record with `bench check --update`")
    return None


def run_tier(tier: Tier, seeds: tuple[int, ...], results: Path, *, runner=None, bench=None, on_event=None):
    """Run the tier's cells at ``seeds`` into ``results`` via ``bench run``.

    Returns ``(runs, statuses)``: ``runs[cell][seed] = result`` for the cells that produced one, and
    the sweep statuses (failed runs are recorded under ``results/failed/`` as in ``bench sweep``).
    """
    from bench import sweep

    planned = sweep.plan(tier.cells, seeds, data=tier.data, preset=tier.preset)
    kwargs = {"runner": runner} if runner is not None else {}
    statuses = sweep.run_missing(planned, Path(results), bench=bench, on_event=on_event, **kwargs)
    runs: dict[CellSpec, dict[int, Mapping[str, Any]]] = {}
    have = sweep.existing(Path(results))
    for p in planned:
        hit = have.get((p.cell, p.seed, p.preset))
        if hit is not None:
            path, res = hit
            runs.setdefault(p.cell, {})[p.seed] = {**res, "_per_query_path": str(path.with_suffix(".per_query.npz"))}
    return runs, statuses
