"""k-means backends: auto picks faiss only for large k or n; sklearn and faiss agree on separated data."""

from __future__ import annotations

import numpy as np
import pytest

from bench.eval import clustering


def _separated(n_per: int = 60, k: int = 8, dim: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = 20 * np.eye(k, dim, dtype=np.float32)
    y = np.repeat(np.arange(k), n_per)
    return centres[y] + rng.standard_normal((len(y), dim)).astype(np.float32), y


def test_auto_threshold():
    assert clustering.resolve_kmeans_backend("auto", 5000, 60) == "sklearn"
    assert clustering.resolve_kmeans_backend("auto", clustering.KMEANS_FAISS_N, clustering.KMEANS_FAISS_K) == "sklearn"
    assert clustering.resolve_kmeans_backend("auto", clustering.KMEANS_FAISS_N + 1, 10) == "faiss"
    assert clustering.resolve_kmeans_backend("auto", 5000, clustering.KMEANS_FAISS_K + 1) == "faiss"
    assert clustering.resolve_kmeans_backend("sklearn", 10**7, 10**4) == "sklearn"
    with pytest.raises(ValueError, match="unknown k-means backend"):
        clustering.resolve_kmeans_backend("cuml", 10, 2)


def test_sklearn_and_faiss_agree_on_separated_data():
    x, y = _separated()
    sk = clustering.kmeans_labels(x, 8, seed=0, backend="sklearn")
    fa = clustering.kmeans_labels(x, 8, seed=0, backend="faiss")
    assert clustering.nmi(sk, fa) == pytest.approx(1.0)  # the same partition, up to cluster names
    # one seed: faiss' random-sample init can start two centroids in one blob and stop in that local
    # optimum (k-means++ rarely does), so agreement is a property of a run, not of every seed
    a = clustering.clustering_metrics(x, y, seeds=(0,), backend="sklearn")
    b = clustering.clustering_metrics(x, y, seeds=(0,), backend="faiss")
    assert a["metrics"] == pytest.approx(b["metrics"]) and a["metrics"]["NMI"] == pytest.approx(1.0)


def test_auto_on_small_data_is_todays_sklearn_result():
    x, y = _separated(seed=3)
    x = x + np.random.default_rng(1).standard_normal(x.shape).astype(np.float32) * 6  # overlapping: seeds matter
    auto = clustering.clustering_metrics(x, y, seeds=(0, 1, 2))
    sk = clustering.clustering_metrics(x, y, seeds=(0, 1, 2), backend="sklearn")
    assert auto == sk and auto["settings"]["backend"] == "sklearn"


def test_auto_records_the_rule_when_it_picks_faiss(monkeypatch):
    monkeypatch.setattr(clustering, "KMEANS_FAISS_N", 100)
    x, y = _separated()
    res = clustering.clustering_metrics(x, y, seeds=(0,))
    assert res["settings"]["backend"] == "faiss" and "faiss when" in res["settings"]["backend_rule"]
    assert res["metrics"]["NMI"] == pytest.approx(1.0)
