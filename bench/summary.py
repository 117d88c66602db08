"""The headline metrics of a result, as one rich table (what ``bench run`` ends with)."""

from __future__ import annotations

import math
from typing import Any, Mapping

#: (label, metric name) of the headline rows; each is shown for pre-trained and fine-tuned features.
HEADLINE_RETRIEVAL = (
    ("coarse mAP@1", "coarse/mAP@1[m5product]"),
    ("coarse mAP@10", "coarse/mAP@10[m5product]"),
    ("coarse Prec@1", "coarse/Prec@1[m5product]"),
    ("fine mAP@1", "fine/mAP@1[m5product]"),
    ("fine mAP@10", "fine/mAP@10[m5product]"),
    ("fine Prec@1", "fine/Prec@1[m5product]"),
)
#: (label, metric group, metric name) of the rows with one value.
HEADLINE_SINGLE = (
    ("linear probe accuracy", "pretrain", "cls/accuracy[linear_probe]"),
    ("fine-tuned accuracy", "finetune", "cls/accuracy[finetuned_head]"),
    ("clustering NMI", "pretrain", "cluster/NMI"),
    ("clustering purity", "pretrain", "cluster/purity"),
)


def _pct(v: Any) -> str:
    """A fraction as a percentage with two decimals; "n/a" where the metric has no value."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return f"{100 * v:.2f}"
    return "n/a"


def headline_table(result: Mapping[str, Any]) -> Any:
    """A rich Table of the headline metrics (percent) of a result dict."""
    from rich.table import Table

    cell, data = result.get("cell", {}), result.get("data", {})
    metrics = result.get("metrics", {})
    pre, fin = metrics.get("pretrain", {}), metrics.get("finetune", {})
    title = (f"{cell.get('model')} on {cell.get('modalities')} | {cell.get('split')} split, "
             f"{cell.get('preset')} preset, seed {cell.get('seed')}")
    t = Table(title=title, caption=f"data: {data.get('description', data.get('source', '?'))}; "
                                   "retrieval under the official M5Product definition \\[m5product]; percent")
    t.add_column("metric")
    t.add_column("pre-trained features", justify="right")
    t.add_column("fine-tuned features", justify="right")
    for label, name in HEADLINE_RETRIEVAL:
        t.add_row(label, _pct(pre.get(name)), _pct(fin.get(name)))
    for label, group, name in HEADLINE_SINGLE:
        v = _pct(metrics.get(group, {}).get(name))
        t.add_row(label, v if group == "pretrain" else "", v if group == "finetune" else "")
    return t
