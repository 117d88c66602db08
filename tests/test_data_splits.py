"""Split invariants: eval never in pretraining, every query has a positive, subset within the pool."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from bench.data import SPLIT_NAMES, CatalogError, load_catalog
from bench.data.splits import assign_splits


def check_invariants(cat) -> None:
    ds = cat.dataset
    split = np.asarray(ds["split"])
    assert set(split) <= {"pretrain", "eval"}
    idx = {n: cat.split_indices(n) for n in SPLIT_NAMES}
    for n, ix in idx.items():
        assert ix.dtype == np.int64 and np.all(np.diff(ix) > 0), n
    pre, gal = set(idx["pretrain_full"].tolist()), set(idx["gallery"].tolist())
    assert not pre & gal and len(pre) + len(gal) == len(cat)
    assert set(idx["pretrain_subset"].tolist()) <= pre
    assert set(idx["cls_train"].tolist()) <= pre and set(idx["cls_test"].tolist()) <= gal
    assert set(idx["coarse_query"].tolist()) <= gal and set(idx["fine_query"].tolist()) <= gal
    cats, prods = cat.category_ids(), cat.product_ids()
    gal_ix = idx["gallery"]
    for q in idx["fine_query"]:  # a positive in the gallery besides the query itself
        assert np.sum(prods[gal_ix] == prods[q]) >= 2
    for q in idx["coarse_query"]:
        assert np.sum(cats[gal_ix] == cats[q]) >= 2
    train_cats = set(cats[idx["cls_train"]].tolist())
    assert set(cats[idx["cls_test"]].tolist()) <= train_cats
    # Products never straddle pretraining and evaluation.
    assert not set(prods[list(pre)].tolist()) & set(prods[gal_ix].tolist())
    assert len(cat.category_names) == len(set(cat.category_names)) == cats.max() + 1
    assert len(cat.product_names) == prods.max() + 1


def test_tiny_catalog_invariants(tiny_synth_dir):
    cat = load_catalog(f"m5product:{tiny_synth_dir}", progress=False)
    check_invariants(cat)
    assert len(cat.split_indices("fine_query")) > 0
    assert cat.info["split"]["roles_from_lists"]  # the synthetic catalog ships its split id lists


def test_assign_splits_hash_rules():
    rng = np.random.default_rng(0)
    n = 3000
    prods = [f"p{int(x)}" for x in rng.integers(0, 900, n)]
    cats = [f"c{int(p[1:]) % 37}" for p in prods]
    items = [f"i{i}" for i in range(n)]
    a = assign_splits(items, prods, cats, seed=5)
    assert a == assign_splits(items, prods, cats, seed=5)
    b = assign_splits(items, prods, cats, seed=6)
    assert a["split"] != b["split"]
    frac = np.mean([s == "eval" for s in a["split"]])
    assert 0.12 < frac < 0.28
    ev = Counter(p for p, s in zip(prods, a["split"]) if s == "eval")
    for p, s, f in zip(prods, a["split"], a["fine_query"]):
        assert f == (s == "eval" and ev[p] >= 2)
    sub = np.mean([x for x, s in zip(a["subset"], a["split"]) if s == "pretrain"])
    assert 0.4 < sub < 0.6
    assert not any(x and s == "eval" for x, s in zip(a["subset"], a["split"]))


def test_assign_splits_from_lists_wins():
    items = ["a", "b", "c", "d", "e", "f"]
    prods = ["P", "P", "Q", "Q", "R", "S"]
    cats = ["x", "x", "x", "y", "y", "y"]
    lists = {"pretrain": {"a", "c", "e"}, "fine_gallery": {"b", "d", "f"}, "fine_query": {"b"}}
    out = assign_splits(items, prods, cats, seed=0, lists=lists)
    assert out["split"] == ["pretrain", "eval", "pretrain", "eval", "pretrain", "eval"]
    # b's product P has only one eval listing: no positive, so b cannot be a fine query.
    assert out["fine_query"] == [False] * 6
    assert out["cls_split"][1] == "test" and out["cls_split"][5] == "test" and out["cls_split"][0] == "train"


def test_unknown_split_name(tiny_synth_dir):
    cat = load_catalog(f"m5product:{tiny_synth_dir}", progress=False)
    with pytest.raises(CatalogError, match="did you mean 'gallery'"):
        cat.split_indices("galery")


@pytest.mark.slow
def test_mini_catalog_fixture(mini_catalog):
    cat = mini_catalog
    assert 1400 <= len(cat) <= 1600
    assert list(cat.dataset.column_names) == list(__import__("bench.data.schema", fromlist=["x"]).COLUMNS)
    check_invariants(cat)
    assert cat.info["generator"]["size"] == "mini" and cat.source == "synthetic:mini"
    assert len(cat.super_categories) == len(cat.category_names)
    again = load_catalog("synthetic:mini", progress=False)
    assert again.fingerprint == cat.fingerprint
