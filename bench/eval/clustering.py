"""Clustering quality: k-means with k = number of categories, NMI and purity against category.

Implementation choice: scikit-learn ``KMeans`` (k-means++ init, ``n_init=1``, ``max_iter=300``,
``tol=1e-4``, Lloyd) by default. faiss k-means is about 5x faster on the
project's 2-core machines (0.8 s vs 4.0 s for 200 clusters on 50k x 256), but its k-means (random-sample init) is a different
algorithm from scikit-learn's k-means++, and the clustering numbers should not hinge on a kNN
library; at the harness's eval sizes (thousands of rows, tens to hundreds of categories) sklearn
takes about a second. ``backend="faiss"``
is available for large eval sets and is recorded in the definitions (it trains on all points:
``max_points_per_centroid`` is raised so faiss does not subsample).

``backend="auto"`` (the evaluator's default) picks scikit-learn for small sets and faiss when
``k > KMEANS_FAISS_K`` (1,000) or ``n > KMEANS_FAISS_N`` (200,000): scikit-learn's k-means++ init alone
costs about ``n * k * d * (2 + log k)`` and its Lloyd steps at k = 6,000 on 200,000 x 256 take
minutes each on one core (``benchmarks/test_bench_release_scale.py``), while every evaluation set the
harness has scored so far stays below both bounds, so its numbers are unchanged.

Several seeds are run; the mean, the population std and every per-seed value are kept, because
NMI moves by ~0.01 between k-means initialisations.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.eval.labels import remap_labels

DEFINITIONS: dict[str, str] = {
    "NMI": "sklearn normalized_mutual_info_score(category, clusters, average_method='arithmetic'), natural log",
    "purity": "(1/N) sum over clusters of the largest category count in the cluster (contingency_matrix.max(0).sum()/N)",
}


def nmi(labels_true: Any, labels_pred: Any) -> float:
    """Normalised mutual information with the arithmetic-mean normaliser (sklearn's default since 0.22)."""
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(labels_true, labels_pred, average_method="arithmetic"))


def purity(labels_true: Any, labels_pred: Any) -> float:
    """Share of points whose cluster's majority category is their own (not in sklearn, so written here)."""
    from sklearn.metrics.cluster import contingency_matrix

    yt, yp = remap_labels(labels_true, labels_pred, names=["labels_true", "labels_pred"])
    if len(yt) != len(yp):
        raise ValueError("labels_true and labels_pred differ in length")
    if len(yt) == 0:
        return float("nan")
    cm = contingency_matrix(yt, yp, sparse=True)  # classes x clusters
    return float(np.asarray(cm.max(axis=0).todense()).sum() / len(yt))


KMEANS_FAISS_K = 1000
KMEANS_FAISS_N = 200_000
KMEANS_BACKENDS = ("auto", "sklearn", "faiss")


def resolve_kmeans_backend(backend: str, n_points: int, k: int) -> str:
    """``auto`` -> ``faiss`` when ``k > KMEANS_FAISS_K`` or ``n_points > KMEANS_FAISS_N``, else ``sklearn``."""
    if backend not in KMEANS_BACKENDS:
        raise ValueError(f"unknown k-means backend {backend!r}; choose one of {', '.join(KMEANS_BACKENDS)}")
    if backend != "auto":
        return backend
    return "faiss" if k > KMEANS_FAISS_K or n_points > KMEANS_FAISS_N else "sklearn"


def kmeans_labels(x: np.ndarray, k: int, seed: int, *, backend: str = "sklearn", max_iter: int = 300) -> np.ndarray:
    """Cluster assignments of one k-means run."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        from sklearn.exceptions import ConvergenceWarning

        km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=max_iter, tol=1e-4, random_state=seed)
        with warnings.catch_warnings():
            # duplicate points (e.g. a collapsed model) give fewer distinct clusters than k; the per-seed
            # record counts the clusters actually found instead of printing a warning
            warnings.simplefilter("ignore", ConvergenceWarning)
            return km.fit_predict(x).astype(np.int64)
    if backend == "faiss":
        try:
            import faiss
        except ImportError as exc:  # optional dependency
            raise ValueError("k-means backend 'faiss' needs the faiss-cpu package (pip install faiss-cpu)") from exc

        km = faiss.Kmeans(x.shape[1], k, niter=20, seed=int(seed) + 1234, nredo=1, verbose=False,
                          max_points_per_centroid=max(256, -(-len(x) // k) + 1), min_points_per_centroid=1)
        km.train(x)
        _, assign = km.index.search(x, 1)
        return assign[:, 0].astype(np.int64)
    raise ValueError(f"unknown k-means backend {backend!r}; choose 'sklearn' or 'faiss'")


def clustering_metrics(
    embeddings: np.ndarray,
    labels: Any,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    n_clusters: int | None = None,
    backend: str = "auto",
    normalize: bool = False,
) -> dict[str, Any]:
    """k-means (k = number of distinct labels unless given) per seed; NMI and purity vs ``labels``.

    Returns ``{"metrics": {"NMI": mean, "NMI_std": ..., "purity": ..., "purity_std": ...},
    "per_seed": [{"seed", "NMI", "purity"}...], "settings": {...}}``.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    (y,) = remap_labels(labels, names=["cluster labels"])
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"clustering needs (N, d) embeddings and N labels, got {x.shape} and {len(y)}")
    if not np.isfinite(x).all():
        raise ValueError("clustering embeddings contain NaN/inf")
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = int(n_clusters) if n_clusters is not None else int(len(np.unique(y)))
    requested, backend = backend, resolve_kmeans_backend(backend, len(x), k)
    settings = {"backend": backend, "k": k, "seeds": [int(s) for s in seeds], "n_points": int(len(x)),
                "init": "k-means++, n_init=1, max_iter=300, tol=1e-4" if backend == "sklearn"
                else "faiss random-sample init, niter=20, no subsampling",
                "std": "population std (ddof=0) over seeds"}
    if requested == "auto" and backend == "faiss":  # small sets keep today's settings record
        settings["backend_rule"] = f"auto: faiss when k > {KMEANS_FAISS_K} or n > {KMEANS_FAISS_N}"
    if len(x) == 0 or k < 1:
        nan = float("nan")
        return {"metrics": {"NMI": nan, "NMI_std": nan, "purity": nan, "purity_std": nan},
                "per_seed": [], "settings": settings}
    k = min(k, len(x))
    settings["k"] = k
    per_seed = []
    for s in seeds:
        pred = kmeans_labels(x, k, int(s), backend=backend)
        per_seed.append({"seed": int(s), "NMI": nmi(y, pred), "purity": purity(y, pred),
                         "clusters_found": int(len(np.unique(pred)))})
    n = np.array([p["NMI"] for p in per_seed])
    pu = np.array([p["purity"] for p in per_seed])
    return {"metrics": {"NMI": float(n.mean()), "NMI_std": float(n.std()), "purity": float(pu.mean()),
                        "purity_std": float(pu.std())},
            "per_seed": per_seed, "settings": settings}
