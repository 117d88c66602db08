"""Which listings each evaluation task ranks, per pretraining split: the protocol as data.

:func:`build_task_sets` turns a catalog's split columns and its source's id lists into one
:class:`TaskSet` per (task, split), ``task`` in ``coarse`` / ``fine`` and ``split`` in ``subset`` /
``full``. Three layouts:

* **No lists** (a hash split): queries are the rows the split columns mark (``coarse_query`` /
  ``fine_query``: their category / product has another evaluation listing); the gallery is every
  evaluation row; a query never retrieves its own row. The subset and full cells share the sets.
* **The harness's own lists** (``splits/coarse_gallery_ids.txt``, ...): the same queries, ranked
  against the task's gallery list (every evaluation row where the task has none).
* **The release's own lists** (:data:`bench.data.release.RELEASE_LISTS`), as the official scripts
  use them: coarse ranks the ``query_c`` list against the separate ``gallery_c`` list; with a
  ``subset_v2_test`` list the subset cells instead rank that set leave-one-out (query set ==
  gallery set); fine-grained ranks the ``query_fg`` list leave-one-out. Every listed query is kept,
  also one with no other matching listing ("lone"). The positive set P of the ``[m5product]``
  definition is counted in the ground truth, as the official code does: every listing with the
  query's label in the task's ground-truth file (the query included, whether or not it is a
  gallery row): the fine-grained GT file for fine, ``subset_v2_id_label.json`` for the subset's
  coarse task, and the whole annotation for the full coarse task (the released scripts name no
  file for it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

TASKS = ("coarse", "fine")
EVAL_SPLITS = ("subset", "full")


@dataclass(frozen=True)
class TaskSet:
    """One task's rows for one pretraining split (catalog row indices, sorted int64)."""

    query: np.ndarray
    gallery: np.ndarray
    leave_one_out: bool  # the gallery is the query set itself
    positives: np.ndarray | None  # |P| per query row (ground-truth count, query included), or None:
    #                               the gallery's own positives plus the query where it is a gallery row
    rule: str  # how the sets were chosen, in words
    positives_from: str  # where |P| is counted
    listed_absent: int = 0  # ids on the task's lists with no listing in the catalog (dropped, or never there)

    def describe(self) -> dict[str, Any]:
        """What a result records about the protocol that ran."""
        return {"queries": int(len(self.query)), "gallery": int(len(self.gallery)),
                "leave_one_out": self.leave_one_out,
                "queries_in_gallery": int(np.isin(self.query, self.gallery).sum()),
                "rule": self.rule, "positives_from": self.positives_from, "listed_absent": self.listed_absent}


class RowIndex:
    """The catalog row of an item id, looked up in Arrow (a hash table in C++, not a Python dict
    of every id: at the release's size that dict alone would take about a GB)."""

    def __init__(self, item_ids: Sequence[str]) -> None:
        import pyarrow as pa

        self.ids = pa.array(item_ids, pa.string())

    def lookup(self, ids: Iterable[str]) -> np.ndarray:
        """Row per id in the order given, -1 where the catalog has no such listing."""
        import pyarrow as pa
        import pyarrow.compute as pc

        q = pa.array(list(ids), pa.string())
        if len(q) == 0:
            return np.zeros(0, dtype=np.int64)
        return pc.index_in(q, value_set=self.ids).fill_null(-1).to_numpy().astype(np.int64)


def _rows(ids: set[str] | None, index: RowIndex) -> np.ndarray:
    if not ids:
        return np.zeros(0, dtype=np.int64)
    rows = index.lookup(ids)
    return np.sort(rows[rows >= 0])


def _gt_positive_counts(rows: np.ndarray, row_labels: Sequence[str], item_ids: Sequence[str],
                        gt: Mapping[str, str]) -> np.ndarray:
    """|P| per row: ground-truth entries sharing the row's ground-truth label (its own label where
    the ground truth does not list it: then it counts itself only if its label is there)."""
    counts = Counter(gt.values())
    out = np.empty(len(rows), dtype=np.int64)
    for j, r in enumerate(rows.tolist()):
        lab = gt.get(item_ids[r], row_labels[r])
        out[j] = counts.get(lab, 0)
    return out


def build_task_sets(item_ids: Sequence[str], categories: Sequence[str], products: Sequence[str],
                    cols: Mapping[str, Sequence[Any]], lists: Mapping[str, set[str]],
                    release_roles: Sequence[str], gt_labels: Mapping[str, Mapping[str, str]], *,
                    index: RowIndex | None = None) -> dict[tuple[str, str], TaskSet]:
    """``{(task, split): TaskSet}`` for a catalog (see the module docstring for the rules).

    ``cols``: the split columns of :func:`bench.data.splits.assign_splits`; ``lists``: role -> id
    set (harness and release names); ``release_roles``: the roles that came from release-named
    files; ``gt_labels``: ``{"fine": {item_id: product label}, "subset": {item_id: category}}``
    from the ground-truth files that exist; ``index``: a :class:`RowIndex` of ``item_ids`` (built
    here when not given).
    """
    row_of = RowIndex(item_ids) if index is None else index
    split = np.asarray(cols["split"], dtype=object)
    eval_rows = np.flatnonzero(split == "eval").astype(np.int64)
    released = set(release_roles)
    out: dict[tuple[str, str], TaskSet] = {}

    def absent(*roles: str) -> int:
        return sum(int((row_of.lookup(lists[r]) < 0).sum()) for r in roles if r in lists)

    for task in TASKS:
        col_q = np.flatnonzero(np.asarray(cols[f"{task}_query"], dtype=bool)).astype(np.int64)
        if f"{task}_query" in released:
            q = _rows(lists[f"{task}_query"], row_of)
            if task == "fine":  # the released fine-grained script ranks the query set leave-one-out
                pos = _gt_positive_counts(q, products, item_ids, gt_labels["fine"]) if "fine" in gt_labels else None
                full = TaskSet(q, q, True, pos, "release lists: query_fg, leave-one-out",
                               "fine-grained ground truth file" if pos is not None else "the gallery",
                               absent("fine_query"))
            else:
                g = _rows(lists.get("coarse_gallery"), row_of) if "coarse_gallery" in lists else eval_rows
                every = dict(Counter(categories))
                pos = np.asarray([every.get(categories[r], 0) for r in q.tolist()], dtype=np.int64)
                full = TaskSet(q, g, bool(np.array_equal(q, g)), pos,
                               "release lists: query_c against " + ("gallery_c" if "coarse_gallery" in lists
                                                                     else "every evaluation row"),
                               "every labelled listing of the catalog (the whole annotation)",
                               absent("coarse_query", "coarse_gallery"))
        else:
            g_role = f"{task}_gallery"
            g = _rows(lists.get(g_role), row_of) if g_role in lists else eval_rows
            full = TaskSet(col_q, g, False, None,
                           (f"split columns against the {g_role} list" if g_role in lists
                            else "split columns against every evaluation row"), "the gallery", absent(g_role))
        out[(task, "full")] = full
        out[(task, "subset")] = full
        if task == "coarse" and "subset_test" in lists:
            st = _rows(lists["subset_test"], row_of)
            gt = gt_labels.get("subset")
            pos = _gt_positive_counts(st, categories, item_ids, gt) if gt else None
            out[(task, "subset")] = TaskSet(st, st, True, pos, "release lists: subset_v2_test, leave-one-out",
                                            "subset ground truth file" if gt else "the gallery", absent("subset_test"))
    return out


def default_task_sets(cols: Mapping[str, Sequence[Any]]) -> dict[tuple[str, str], TaskSet]:
    """The sets of a catalog without id lists (split columns against every evaluation row)."""
    return build_task_sets([], [], [], cols, {}, (), {})


def cls_rows(cols: Mapping[str, Sequence[Any]], lists: Mapping[str, set[str]], item_ids: Sequence[str],
             categories: Sequence[str], split: str, *, index: RowIndex | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(train rows, test rows)`` of classification for a pretraining split: with a release's
    ``subset_v2_test`` list the subset cells fine-tune on the subset and test on its test set (the
    official subset classification scripts); otherwise the ``cls_split`` column."""
    cs = np.asarray(cols["cls_split"], dtype=object)
    if split == "subset" and "subset_test" in lists:
        train = np.flatnonzero(np.asarray(cols["subset"], dtype=bool)).astype(np.int64)
        seen = {categories[i] for i in train.tolist()}
        test = np.asarray([i for i in _rows(lists["subset_test"], RowIndex(item_ids) if index is None else index).tolist()
                           if categories[i] in seen], dtype=np.int64)
        return train, test
    return np.flatnonzero(cs == "train").astype(np.int64), np.flatnonzero(cs == "test").astype(np.int64)


def eval_masks(catalog: Any, split: str, eval_rows: np.ndarray) -> dict[str, Any]:
    """The evaluator's per-row arguments over ``eval_rows`` (the embedded evaluation rows) for the
    cells pretrained on ``split``: query masks, each task's gallery mask, |P| per row where the
    ground truth counts it, the clustering rows (the coarse task's queries and gallery) and the
    protocol description a result records."""
    pos_of = {int(r): i for i, r in enumerate(eval_rows.tolist())}
    n = len(eval_rows)
    out: dict[str, Any] = {"queries": {}, "galleries": {}, "positives": {}, "protocol": {}}
    for task in TASKS:
        ts = catalog.task_set(task, split)
        q, g = np.isin(eval_rows, ts.query), np.isin(eval_rows, ts.gallery)
        out["queries"][task], out["galleries"][task] = q, g
        if ts.positives is not None:
            p = np.zeros(n, dtype=np.int64)
            keep = np.isin(ts.query, eval_rows)
            p[[pos_of[int(r)] for r in ts.query[keep].tolist()]] = ts.positives[keep]
            out["positives"][task] = p
        out["protocol"][task] = ts.describe()
    out["cluster_rows"] = out["queries"]["coarse"] | out["galleries"]["coarse"]
    return out
