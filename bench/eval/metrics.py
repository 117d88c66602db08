"""The registry of metric families: each declares its definition text, which metric names it owns
(a pattern), and whether higher is better. Tables and ``bench check`` read the direction from here;
the retrieval evaluator computes every family that names a function (``target``) from the shared
ranked lists (:mod:`bench.eval.retrieval`).

Adding a retrieval metric is one function ``f(block, ks, put) -> tallies`` (see
:mod:`bench.eval.retrieval_families`) plus one :func:`register` call naming it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.registries import Registry, load_target


@dataclass(frozen=True)
class MetricFamily:
    """One family of metrics.

    ``pattern`` (a regular expression searched in a metric's name, e.g. ``coarse/mAP@1[m5product/cos]``)
    says which names belong to it. ``higher_is_better`` is None for a diagnostic that ranks nothing
    (a spread over seeds). A retrieval family also names ``target`` (``module:function``), the names
    it writes per query (``fixed``, and ``per_k`` templates with ``{k}``), and ``tallies``, the
    per-label-set counts it adds up (e.g. short ranked lists).
    """

    name: str
    pattern: str
    definition: str
    higher_is_better: bool | None = True
    target: str | None = None
    fixed: tuple[str, ...] = ()
    per_k: tuple[str, ...] = ()
    tallies: tuple[str, ...] = field(default=())

    def matches(self, metric: str) -> bool:
        return re.search(self.pattern, metric) is not None

    def names(self, k: int | None = None) -> list[str]:
        """The k-independent names (``k`` None) or the names at cut-off ``k``."""
        return list(self.fixed) if k is None else [t.format(k=k) for t in self.per_k]

    def compute(self) -> Any:
        """The function that computes a retrieval family from a ranked-list block."""
        if self.target is None:
            raise TypeError(f"metric family {self.name!r} is not computed from ranked lists")
        return load_target(self.target)


FAMILIES: Registry[MetricFamily] = Registry("metric family")


def register(name: str, pattern: str, *, definition: str, higher_is_better: bool | None = True,
             target: str | None = None, fixed: Sequence[str] = (), per_k: Sequence[str] = (),
             tallies: Sequence[str] = ()) -> MetricFamily:
    """Register a metric family (see :class:`MetricFamily`); a name already taken is an error."""
    re.compile(pattern)
    return FAMILIES.add(name, MetricFamily(name, pattern, definition, higher_is_better, target, tuple(fixed),
                                           tuple(per_k), tuple(tallies)))


def family_of(metric: str) -> MetricFamily | None:
    """The family a metric name belongs to (the first registered whose pattern matches), or None."""
    return next((f for f in FAMILIES.values() if f.matches(metric)), None)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better. A metric of no registered family, and a
    diagnostic (``higher_is_better=None``), are compared as every metric was before families
    declared a direction: higher first."""
    fam = family_of(metric)
    return fam is None or fam.higher_is_better is not False


def retrieval_families() -> list[MetricFamily]:
    """The families the retrieval evaluator computes, in registration order."""
    return [f for f in FAMILIES.values() if f.target is not None]


_NOT_XMODAL = r"^(?!(?:[^/]+/)?xmodal/)"
_RF = "bench.eval.retrieval_families:"

register("m5product", _NOT_XMODAL + r".*\[m5product(/cos)?\]$", target=_RF + "m5product",
         per_k=("mAP@{k}[m5product]", "Prec@{k}[m5product]"),
         tallies=("m5product_short_lists", "m5product_empty_lists"), definition=(
             "official M5Product/SCALE evaluate_unit_v2.py: list = top max_topk of the gallery incl. the query, "
             "query removed; P includes the query; k'=min(K,|P|,|list|); Prec@K=hits@k'/k'; "
             "mAP@K=(1/hits@k') sum_{hit i<=k'} hits@i/i (0 if no hit); mean over all queries (lone queries score 0)"))
register("pml", _NOT_XMODAL + r".*\[pml(/cos)?\]$", target=_RF + "pml",
         fixed=("mAP@R[pml]", "R-precision[pml]"), definition=(
             "pytorch-metric-learning AccuracyCalculator: mAP@R = (1/R) sum_{hit i<=R} hits@i/i, "
             "R-precision = hits@R/R, R = positives excluding the query; lone queries excluded"))
register("Recall@K", _NOT_XMODAL + r".*/Recall@\d+(\[cos\])?$", target=_RF + "recall", per_k=("Recall@{k}",),
         definition="fraction of queries with at least one positive in the top K; lone queries excluded")
register("std", _NOT_XMODAL + r".*\[std(/cos)?\]$", target=_RF + "std_precision", per_k=("Prec@{k}[std]",),
         definition="Prec@K = hits@K/K; lone queries excluded")
register("min_k_r", _NOT_XMODAL + r".*\[min_k_r(/cos)?\]$", target=_RF + "min_k_r", per_k=("mAP@{k}[min_k_r]",),
         definition="AP@K = (1/min(K,R)) sum_{hit i<=K} hits@i/i (classic IR AP@k); lone queries excluded")
register("crossmodal", r"(^|/)xmodal/", definition=(
    "retrieval between two modalities' own vectors under cosine (bench.eval.crossmodal): Recall@K, MRR, mAP@R, "
    "R-precision at instance and category level"))
register("linear_probe", r"\[linear_probe\]$", definition="top-1 accuracy of a linear probe on the cls_test rows")
register("finetuned_head", r"\[finetuned?(_head)?\]$",
         definition="top-1 accuracy of the fine-tuned head's predictions on cls_test rows")
register("clustering", r"(^|/)cluster/(NMI|purity)$",
         definition="k-means on the gallery rows, one cluster per category: NMI and purity, mean over seeds")
register("clustering_spread", r"(^|/)cluster/(NMI|purity)_std$", higher_is_better=None,
         definition="standard deviation over the k-means seeds of NMI / purity (a diagnostic, ranks nothing)")
