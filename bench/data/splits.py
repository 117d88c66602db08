"""Deterministic split assignment, from a hash of ids and a seed, or from a source's id lists.

Eval membership is drawn per *product* (``product_id``), so all listings of a held-out product are
held out together: fine-grained retrieval then has products with several eval listings, and no
product is seen in pretraining and queried in evaluation. Where a source has no product ids,
``product_id == item_id`` and this reduces to a per-listing draw. The pretraining *subset* is
drawn per listing from the pool. See :mod:`bench.data.schema` for what each column means.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Mapping, Sequence

from bench.data.schema import EVAL, PRETRAIN

DEFAULT_EVAL_FRACTION = 0.2
DEFAULT_SUBSET_FRACTION = 0.5

#: Names of the id-list files a source may carry (under ``splits/``), mapped to their role.
SPLIT_FILES = {
    "pretrain": ("pretrain_ids", "pretrain_id", "train_ids"),
    "subset": ("subset_ids", "subset_train_ids"),
    "cls_train": ("cls_train_ids", "finetune_train_ids"),
    "cls_test": ("cls_test_ids", "finetune_test_ids"),
    "coarse_query": ("coarse_query_ids", "query_c_ids"),
    "coarse_gallery": ("coarse_gallery_ids", "gallery_c_ids"),
    "fine_query": ("fine_query_ids", "query_fg_ids"),
    "fine_gallery": ("fine_gallery_ids", "gallery_fg_ids"),
}


#: Roles whose listings are evaluation rows (``subset_test``: a release's subset evaluation set).
EVAL_ROLES = ("cls_test", "coarse_query", "coarse_gallery", "fine_query", "fine_gallery", "subset_test")


def unit_hash(key: str, seed: int, salt: str) -> float:
    """A uniform number in [0, 1) from ``key``, ``seed`` and ``salt`` (stable across runs and platforms)."""
    digest = hashlib.sha256(f"{seed}\x1f{salt}\x1f{key}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(
    item_ids: Sequence[str],
    product_ids: Sequence[str],
    categories: Sequence[str],
    *,
    seed: int,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    subset_fraction: float = DEFAULT_SUBSET_FRACTION,
    lists: Mapping[str, set[str]] | None = None,
) -> dict[str, list]:
    """Split columns (``split``, ``subset``, ``cls_split``, ``coarse_query``, ``fine_query``) for the rows.

    ``lists`` maps roles of :data:`SPLIT_FILES` to id sets from the source; where a role is given it
    wins over the hash draw. Whatever the source says, the schema invariants hold: eval rows are
    never in the pretraining pool, a coarse query's category and a fine query's product have another
    eval listing, and classification test rows have a category seen in classification training.
    """
    lists = dict(lists or {})
    n = len(item_ids)
    eval_lists = [lists[r] for r in EVAL_ROLES if r in lists]
    eval_ids = set().union(*eval_lists) if eval_lists else None
    pretrain_ids = lists.get("pretrain")

    split: list[str] = []
    for iid, pid in zip(item_ids, product_ids):
        if eval_ids is not None and iid in eval_ids:
            split.append(EVAL)
        elif eval_ids is not None and (pretrain_ids is None or iid in pretrain_ids):
            split.append(PRETRAIN)
        elif pretrain_ids is not None and iid in pretrain_ids:
            split.append(PRETRAIN)
        else:
            split.append(EVAL if unit_hash(pid, seed, "eval") < eval_fraction else PRETRAIN)

    if "subset" in lists:
        subset = [s == PRETRAIN and iid in lists["subset"] for iid, s in zip(item_ids, split)]
    else:
        subset = [s == PRETRAIN and unit_hash(iid, seed, "subset") < subset_fraction for iid, s in zip(item_ids, split)]

    # Classification: fine-tune on the pretraining pool, test on eval rows of categories trained on.
    if "cls_train" in lists:
        cls_train = [s == PRETRAIN and iid in lists["cls_train"] for iid, s in zip(item_ids, split)]
    else:
        cls_train = [s == PRETRAIN for s in split]
    train_cats = {c for c, t in zip(categories, cls_train) if t}
    cls_split: list[str | None] = []
    for i in range(n):
        if cls_train[i]:
            cls_split.append("train")
        elif split[i] == EVAL and categories[i] in train_cats and ("cls_test" not in lists or item_ids[i] in lists["cls_test"]):
            cls_split.append("test")
        else:
            cls_split.append(None)

    eval_cat = Counter(c for c, s in zip(categories, split) if s == EVAL)
    eval_prod = Counter(p for p, s in zip(product_ids, split) if s == EVAL)
    coarse = [
        s == EVAL and eval_cat[c] >= 2 and ("coarse_query" not in lists or iid in lists["coarse_query"])
        for iid, c, s in zip(item_ids, categories, split)
    ]
    fine = [
        s == EVAL and eval_prod[p] >= 2 and ("fine_query" not in lists or iid in lists["fine_query"])
        for iid, p, s in zip(item_ids, product_ids, split)
    ]
    return {"split": split, "subset": subset, "cls_split": cls_split, "coarse_query": coarse, "fine_query": fine}
