"""bench.eval clustering, classification, the evaluate() entry point and `bench eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.eval import evaluate
from bench.eval.classification import accuracy_from_predictions, linear_probe
from bench.eval.clustering import clustering_metrics, nmi, purity


def clustered(n=600, n_cat=6, d=16, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, n_cat, n)
    prod = cat * 1000 + rng.integers(0, 40, n)
    centres = rng.normal(size=(n_cat, d)) * 3
    x = (centres[cat] + spread * rng.normal(size=(n, d))).astype(np.float32)
    return x, cat, prod


# --- clustering ------------------------------------------------------------------------------------------
def test_purity_and_nmi_hand_computed():
    y = [0, 0, 0, 1, 1, 2]
    c = [5, 5, 7, 7, 7, 7]  # cluster 5: {0,0} -> 2; cluster 7: {0,1,1,2} -> 2  => 4/6
    assert purity(y, c) == pytest.approx(4 / 6)
    assert purity(y, y) == 1.0
    assert purity(y, list(range(6))) == 1.0  # singletons: purity's known bias, why k is fixed to #categories
    from sklearn.metrics import normalized_mutual_info_score

    assert nmi(y, c) == pytest.approx(normalized_mutual_info_score(y, c, average_method="arithmetic"), abs=1e-12)
    assert nmi(["a", "a", "b"], [1, 1, 0]) == pytest.approx(1.0)


def test_clustering_oracle_and_per_seed_record():
    x, cat, _ = clustered()
    onehot = np.eye(6, dtype=np.float32)[cat]
    res = clustering_metrics(onehot, cat, seeds=(0, 1, 2))
    assert res["metrics"]["NMI"] == pytest.approx(1.0) and res["metrics"]["purity"] == 1.0
    assert [p["seed"] for p in res["per_seed"]] == [0, 1, 2]
    assert res["settings"]["k"] == 6
    # same seed -> same numbers
    a = clustering_metrics(x, cat, seeds=(3,))
    b = clustering_metrics(x, cat, seeds=(3,))
    assert a == b


def test_clustering_faiss_backend_close_to_sklearn():
    x, cat, _ = clustered(spread=0.5)
    a = clustering_metrics(x, cat, seeds=(0,))
    b = clustering_metrics(x, cat, seeds=(0,), backend="faiss")
    assert b["metrics"]["NMI"] == pytest.approx(a["metrics"]["NMI"], abs=0.1)


def test_constant_embedding_clusters_at_chance():
    _, cat, _ = clustered()
    res = clustering_metrics(np.ones((len(cat), 4), dtype=np.float32), cat, seeds=(0,))
    assert res["metrics"]["NMI"] < 0.05
    assert res["metrics"]["purity"] == pytest.approx(np.bincount(cat).max() / len(cat), abs=0.02)


# --- classification --------------------------------------------------------------------------------------
def test_accuracy_from_predictions_labels_and_logits():
    assert accuracy_from_predictions(["a", "b", "c", "a"], ["a", "b", "b", "b"]) == 0.5
    logits = np.array([[0.1, 2.0], [3.0, 0.0]])
    assert accuracy_from_predictions(logits, [1, 1]) == 0.5
    with pytest.raises(ValueError):
        accuracy_from_predictions([1, 2], [1])


def test_linear_probe_oracle_and_record():
    x, cat, _ = clustered(spread=0.3)
    res = linear_probe(x[:300], cat[:300], x[300:], cat[300:], seed=0)
    assert res["accuracy"] == 1.0 and res["converged"]
    assert res["protocol"]["C"] == 1.0 and res["protocol"]["max_iter"] == 1000
    res2 = linear_probe(x[:300], cat[:300].astype(str), x[300:], np.where(cat[300:] == 0, "unseen", cat[300:].astype(str)))
    assert res2["test_unseen_class"] == int((cat[300:] == 0).sum())
    assert res2["accuracy"] == pytest.approx(1 - res2["test_unseen_class"] / 300)


# --- evaluate() ------------------------------------------------------------------------------------------
def test_evaluate_oracle_scores_one():
    _, cat, prod = clustered()
    n = len(cat)
    emb = np.eye(6, dtype=np.float32)[cat]
    rng = np.random.default_rng(0)
    test = rng.random(n) < 0.5
    r = evaluate(emb, category=cat, product=prod, coarse_query=np.ones(n, bool), fine_query=np.ones(n, bool),
                 cls_test=test, train_embeddings=emb[~test], train_category=cat[~test],
                 head_predictions=cat[test])
    m = r["metrics"]
    for key in ("coarse/mAP@10[m5product]", "coarse/Prec@10[m5product]", "coarse/mAP@R[pml]",
                "coarse/R-precision[pml]", "cls/accuracy[linear_probe]", "cls/accuracy[finetuned_head]",
                "cluster/NMI", "cluster/purity"):
        assert m[key] == pytest.approx(1.0), key
    assert r["definitions"]["scale"] == "fraction"
    assert "m5product" in r["definitions"] and "pml" in r["definitions"]
    assert r["counts"]["coarse/queries"] == n and r["counts"]["cls/test_rows"] == int(test.sum())
    assert len(r["clustering_per_seed"]) == 3


def test_evaluate_pipeline_layout_and_masks():
    x, cat, prod = clustered(n=500)
    n = len(cat)
    # one array: 200 probe-train rows from the pretraining pool + 300 eval rows
    cls_train = np.zeros(n, bool)
    cls_train[:200] = True
    cls_test = np.zeros(n, bool)
    cls_test[200:350] = True
    fine = np.zeros(n, bool)
    fine[200:] = np.bincount(prod[200:], minlength=prod.max() + 1)[prod[200:]] >= 2
    a = evaluate(x, category=cat, product=prod, coarse_query=~cls_train, fine_query=fine,
                 cls_train=cls_train, cls_test=cls_test, seed=1)
    assert a["counts"]["gallery"] == 300 and a["counts"]["cls/train_rows"] == 200
    assert a["counts"]["fine/lone_queries"] == 0
    # the same via the pipeline layout: eval rows only + separate train rows
    b = evaluate(x[200:], category=cat[200:], product=prod[200:], coarse_query=np.ones(300, bool),
                 fine_query=fine[200:], cls_test=cls_test[200:], train_embeddings=x[:200],
                 train_category=cat[:200], seed=1)
    assert a["metrics"] == b["metrics"]


def test_evaluate_retrieval_only():
    x, cat, prod = clustered(n=120)
    r = evaluate(x, category=cat, product=prod, coarse_query=np.ones(120, bool), fine_query=np.ones(120, bool),
                 cls_test=None, retrieval_only=True)
    assert r["settings"]["tasks"] == ["retrieval"]
    assert all(k.startswith(("coarse/", "fine/")) for k in r["metrics"])


def test_evaluate_rejects_bad_input():
    x, cat, prod = clustered(n=50)
    with pytest.raises(ValueError, match="one entry per embedding row"):
        evaluate(x, category=cat[:10], product=prod, coarse_query=np.ones(50, bool), fine_query=np.ones(50, bool))
    with pytest.raises(ValueError, match="boolean"):
        evaluate(x, category=cat, product=prod, coarse_query=np.full(50, 3), fine_query=np.ones(50, bool))
    with pytest.raises(ValueError, match="unknown evaluation task"):
        evaluate(x, category=cat, product=prod, coarse_query=np.ones(50, bool), fine_query=np.ones(50, bool),
                 tasks=("dance",))


# --- bench eval ------------------------------------------------------------------------------------------
def test_cli_npz_and_parquet(tmp_path):
    from bench.cli import main

    x, cat, prod = clustered(n=300)
    npz = tmp_path / "emb.npz"
    np.savez(npz, embeddings=x, category=np.array([f"c{c}" for c in cat]), product=prod)
    out = tmp_path / "res" / "r.json"
    main(["eval", "--embeddings", str(npz), "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["counts"]["cls/train_rows"] == 150 and "cls_split" in res["input_defaults"]
    assert 0 <= res["metrics"]["coarse/mAP@10[m5product]"] <= 1
    assert not list(out.parent.glob("*.tmp"))

    import pyarrow as pa
    import pyarrow.parquet as pq

    pqf = tmp_path / "emb.parquet"
    split = np.where(np.arange(300) < 100, "pretrain", "eval")
    cls = np.where(np.arange(300) < 100, "train", np.where(np.arange(300) < 200, "test", ""))
    pq.write_table(pa.table({"embedding": list(x), "category": cat, "product": prod.astype(str),
                             "split": split, "cls_split": cls}), pqf)
    out2 = tmp_path / "r2.json"
    main(["eval", "-e", str(pqf), "-o", str(out2)])
    res2 = json.loads(out2.read_text())
    assert res2["counts"]["gallery"] == 200 and res2["counts"]["cls/test_rows"] == 100


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.savez(p, foo=np.zeros((3, 2))), "no 'embeddings' array"),
        (lambda p: np.savez(p, embeddings=np.zeros((3, 2)), category=np.zeros(3)), "missing required column 'product'"),
        (lambda p: np.savez(p, embeddings=np.full((3, 2), np.nan), category=np.zeros(3), product=np.zeros(3)), "NaN"),
        (lambda p: np.savez(p, embeddings=np.zeros((3, 2)), category=np.zeros(2), product=np.zeros(3)), "rows"),
        (lambda p: np.savez(p, embeddings=np.zeros((3, 2)), category=np.array(["a", None, "b"], dtype=object),
                            product=np.zeros(3)), "object arrays"),
        (lambda p: p.write_bytes(b"not a zip"), "not a readable"),
        (lambda p: np.savez(p, embeddings=np.zeros((3, 2)), category=np.zeros(3), product=np.zeros(3),
                            item_id=np.array(["a", "b", "a"])), "duplicate item_id 'a'"),
    ],
)
def test_cli_bad_files_are_user_errors(tmp_path, make, message):
    from bench.eval.files import load_embeddings_file
    from bench.console import UserError

    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(UserError, match=message):
        load_embeddings_file(path)


def test_cli_exit_code_and_message(tmp_path, capsys):
    from bench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "--embeddings", str(tmp_path / "missing.npz")])
    assert exc.value.code == 2
    assert "no such file" in " ".join(capsys.readouterr().err.split())  # rich wraps long lines
