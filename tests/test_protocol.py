"""`bench data protocol` + `bench eval --protocol`: external embeddings scored exactly as `bench run` scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import cli, wide_console  # noqa: F401 - the fixture is used by name


@pytest.fixture
def small_catalog(tmp_path):
    """A text-only manifest of 300 listings (5 categories, ~200 products): loads in about a second."""
    from bench.data import load_catalog

    rng = np.random.default_rng(0)
    lines = ["item_id,category,product_id,title"]
    for i in range(300):
        c, p = rng.integers(0, 5), rng.integers(0, 40)
        lines.append(f"it{i},cat{c},p{c}_{p},title {i}")
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    return f"manifest:{path}", load_catalog(f"manifest:{path}", progress=False)


def _run_style(catalog, emb):
    """What `bench.pipeline._score` passes to evaluate for the pre-trained features."""
    from bench.eval import evaluate

    eval_rows, cls_train_rows = catalog.split_indices("gallery"), catalog.split_indices("cls_train")
    cat_ids, prod_ids = catalog.category_ids(), catalog.product_ids()
    in_eval = {n: np.isin(eval_rows, catalog.split_indices(n)) for n in ("coarse_query", "fine_query", "cls_test")}
    return evaluate(emb[eval_rows], train_embeddings=emb[cls_train_rows], train_category=cat_ids[cls_train_rows],
                    category=cat_ids[eval_rows], product=prod_ids[eval_rows], coarse_query=in_eval["coarse_query"],
                    fine_query=in_eval["fine_query"], cls_test=in_eval["cls_test"], seed=0)


def _embeddings(catalog, d=16):
    """Random embeddings with category structure (so the probe and clustering are not at chance)."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(len(catalog.category_names), d)) * 2
    return (centres[catalog.category_ids()] + rng.normal(size=(len(catalog), d))).astype(np.float32)


def test_protocol_reproduces_run_scoring(small_catalog, tmp_path, capsys, wide_console):
    source, catalog = small_catalog
    proto = tmp_path / "protocol.parquet"
    rc, out, err = cli(["data", "protocol", source, "--out", str(proto)], capsys)
    assert rc == 0 and "300 listings" in out
    emb = _embeddings(catalog)
    ids = np.asarray(catalog.dataset["item_id"])
    perm = np.random.default_rng(2).permutation(len(ids))  # file order must not matter: the join restores it
    npz = tmp_path / "emb.npz"
    np.savez(npz, embeddings=emb[perm], item_id=ids[perm])
    res_path = tmp_path / "r.json"
    rc, out, err = cli(["eval", "-e", str(npz), "--protocol", str(proto), "-o", str(res_path)], capsys)
    assert rc == 0, err
    assert "WARNING" not in err
    got = json.loads(res_path.read_text())
    want = _run_style(catalog, emb)
    assert got["input_defaults"] == {}
    assert set(got["metrics"]) == set(want["metrics"])
    for k, v in want["metrics"].items():
        assert got["metrics"][k] == pytest.approx(v, abs=0, nan_ok=True), k
    for k in ("gallery", "coarse/queries", "fine/queries", "cls/train_rows", "cls/test_rows", "cluster/points"):
        assert got["counts"][k] == want["counts"][k], k
    assert got["protocol_join"]["eval_rows"] == len(catalog.split_indices("gallery"))


def test_protocol_refusals_and_default_warning(small_catalog, tmp_path, capsys, wide_console):
    from bench.protocol import write_protocol

    _, catalog = small_catalog
    proto = tmp_path / "p.parquet"
    cols = write_protocol(catalog, proto)
    emb = _embeddings(catalog)
    ids = np.asarray(cols["item_id"])
    eval_only = cols["split"] == "eval"
    # a run's own embeddings file holds only the eval rows: the probe needs the cls-train rows
    np.savez(tmp_path / "e.npz", embeddings=emb[eval_only], item_id=ids[eval_only])
    rc, _, err = cli(["eval", "-e", str(tmp_path / "e.npz"), "-p", str(proto)], capsys)
    assert rc == 2 and "protocol probe-train" in err and "--no-probe" in err and len(err.strip().splitlines()) == 1
    rc, out, err = cli(["eval", "-e", str(tmp_path / "e.npz"), "-p", str(proto), "--no-probe"], capsys)
    assert rc == 0 and "cluster/NMI" in out and "linear_probe" not in out
    # an id the protocol does not know, and a missing eval row
    np.savez(tmp_path / "x.npz", embeddings=emb[:3], item_id=np.array(["nope", ids[0], ids[1]]))
    rc, _, err = cli(["eval", "-e", str(tmp_path / "x.npz"), "-p", str(proto)], capsys)
    assert rc == 2 and "1 of 3 embedding item_ids are not in the protocol" in err
    keep = ~eval_only
    keep[np.flatnonzero(eval_only)[1:]] = True  # drop one eval row
    np.savez(tmp_path / "y.npz", embeddings=emb[keep], item_id=ids[keep])
    rc, _, err = cli(["eval", "-e", str(tmp_path / "y.npz"), "-p", str(proto)], capsys)
    assert rc == 2 and f"1 of {int(eval_only.sum())} protocol eval rows have no embedding" in err
    # without a protocol the defaults are printed as a warning
    np.savez(tmp_path / "d.npz", embeddings=emb, category=cols["category"], product=cols["product"])
    rc, _, err = cli(["eval", "-e", str(tmp_path / "d.npz")], capsys)
    assert rc == 0 and err.count("WARNING: default used") == 4


def test_protocol_file_refusals(tmp_path, capsys, wide_console):
    import pyarrow as pa
    import pyarrow.parquet as pq

    np.savez(tmp_path / "e.npz", embeddings=np.zeros((2, 2)), item_id=np.array(["a", "b"]))
    rc, _, err = cli(["eval", "-e", str(tmp_path / "e.npz"), "-p", str(tmp_path / "none.parquet")], capsys)
    assert rc == 2 and "no such protocol file" in err
    pq.write_table(pa.table({"item_id": ["a"]}), tmp_path / "bad.parquet")
    rc, _, err = cli(["eval", "-e", str(tmp_path / "e.npz"), "-p", str(tmp_path / "bad.parquet")], capsys)
    assert rc == 2 and "missing column(s) category" in err
