"""One entry point that scores a model's embeddings on every task: :func:`evaluate`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.eval import by_task, classification, clustering, retrieval, scoring
from bench.eval import tasks as task_registry
from bench.eval.knn import resolve_backend
from bench.eval.labels import as_label_array
from bench.eval.retrieval import SCALE  # every value is a fraction in [0, 1]
from bench.eval.tasks import TaskInput, TaskOutput


def _mask(x: Any, n: int, name: str, default: bool | None = None) -> np.ndarray:
    if x is None:
        if default is None:
            raise ValueError(f"{name} is required")
        return np.full(n, default, dtype=bool)
    arr = as_label_array(x, name)
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries for {n} embedding rows")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be a boolean mask")
        arr = arr.astype(bool)
    return arr


def _counts(x: Any, n: int, name: str) -> np.ndarray | None:
    if x is None:
        return None
    arr = np.asarray(x)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be {n} integers, one per embedding row")
    return arr.astype(np.int64)


#: Largest float32; a dot product above it overflows to inf and every ranking breaks.
_F32_MAX = float(np.finfo(np.float32).max)


def _check_score_range(x: np.ndarray) -> None:
    """Refuse embeddings whose dot products (or squared norms) can overflow float32: by
    Cauchy-Schwarz every score is at most the largest squared row norm, computed here in float64."""
    if not len(x):
        return
    worst = 0.0
    for i in range(0, len(x), 65_536):  # row blocks: a float64 copy of a release-size gallery would not fit
        block = x[i:i + 65_536].astype(np.float64)
        worst = max(worst, float(np.einsum("ij,ij->i", block, block).max()))
    if worst > _F32_MAX / 4:  # margin: sums of several such scores stay finite too
        raise ValueError(f"embeddings are too large for float32 scoring: the largest row norm is {worst ** 0.5:.3g}, "
                         f"so dot products reach {worst:.3g} (float32 holds up to {_F32_MAX:.3g}); rescale them "
                         f"(e.g. divide every row by the largest norm) and score again")


def evaluate(
    embeddings: Any,
    *,
    category: Any,
    product: Any,
    coarse_query: Any,
    fine_query: Any,
    cls_test: Any | None = None,
    cls_train: Any | None = None,
    gallery: Any | None = None,
    train_embeddings: Any | None = None,
    train_category: Any | None = None,
    head_predictions: Any | None = None,
    normalize: bool = False,
    seed: int = 0,
    ks: Sequence[int] = (1, 5, 10),
    max_topk: int = 10,
    kmeans_seeds: Sequence[int] | None = None,
    kmeans_backend: str = "auto",
    knn_backend: str = "auto",
    tasks: Sequence[str] = ("retrieval", "classification", "clustering"),
    retrieval_only: bool = False,
    mem_budget_bytes: int = 256 << 20,
    cosine_too: bool = True,
    per_query: Sequence[str] = (),
    task_galleries: Mapping[str, Any] | None = None,
    positive_counts: Mapping[str, Any] | None = None,
    protocol: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score one set of embeddings on coarse/fine retrieval, classification and clustering.

    Rows. ``embeddings`` is (N, d), one row per listing; every other per-row argument has N entries
    in the same order. The usual call from a pipeline passes the *eval* rows only:

    .. code-block:: python

        evaluate(emb_eval, category=cat_eval, product=pid_eval,
                 coarse_query=cq, fine_query=fq, cls_test=cls_split_eval == "test",
                 train_embeddings=emb_cls_train, train_category=cat_cls_train,
                 head_predictions=pred_on_cls_test_rows)   # optional

    A single array holding both pools also works: mark the pretraining-pool probe rows with
    ``cls_train``; they are then left out of the default gallery.

    Args:
        embeddings: (N, d) float (numpy or torch).
        category: (N,) category ids, any hashable (coarse labels, probe/cluster classes).
        product: (N,) product ids, any hashable (fine labels).
        coarse_query / fine_query: (N,) bool, the rows used as coarse / fine queries.
        cls_test: (N,) bool rows scored by the probe and by ``head_predictions``; None = no classification.
        cls_train: (N,) bool rows that train the probe (in addition to ``train_embeddings``).
        gallery: (N,) bool gallery rows; default every row not in ``cls_train``. A query that is a
            gallery row never retrieves itself (leave-one-out, the official protocol).
        train_embeddings / train_category: extra probe-training rows (M, d) / (M,) that are not in
            ``embeddings`` (e.g. the cls-train listings from the pretraining pool).
        head_predictions: predicted categories (or (n, C) logits) of a fine-tuned head for the
            ``cls_test`` rows, in row order -> ``cls/accuracy[finetuned_head]``.
        normalize: cosine instead of the raw dot product (retrieval, probe input, k-means input).
        cosine_too: with the raw dot product, also score every retrieval metric on L2-normalised
            embeddings, named ``.../cos`` (:mod:`bench.eval.scoring`).
        task_galleries: ``{"coarse": (N,) bool, "fine": (N,) bool}``: each task's own gallery rows
            (the official protocol: a separate coarse gallery, the fine query set leave-one-out);
            a task not named uses ``gallery``. Clustering keeps using ``gallery``.
        positive_counts: ``{task: (N,) int}``: |P| of each query row under ``[m5product]``, counted
            in the task's ground-truth file (:func:`bench.eval.retrieval.retrieval_metrics`).
        protocol: a description of the sets (which lists, leave-one-out or not, sizes), recorded
            as ``definitions["retrieval_protocol"]``.
        per_query: metric names whose per-query values to return (``out["per_query"]``, float32
            over ``out["per_query"]["_query_rows"]``, NaN where a query is not scored), for paired
            comparisons of two results on the same queries; ``cls/correct[linear_probe]`` gives the
            probe's per-test-row correctness.
        seed: probe seed; k-means seeds default to ``(seed, seed+1, seed+2)``.
        ks, max_topk: retrieval cut-offs and the official list length (see :mod:`bench.eval.retrieval`).
        kmeans_backend: "auto" (default: sklearn for small sets, faiss when k or the gallery is large,
            see :mod:`bench.eval.clustering`), "sklearn" or "faiss"; the result names the one used.
        knn_backend: "auto" (the fastest of select, bf16 and faiss on this machine, timed once and
            cached), "select", "bf16", "faiss" or "torch" (see :mod:`bench.eval.knn`).
        tasks: registered evaluation task names (:mod:`bench.eval.tasks`): "retrieval",
            "classification", "clustering", or any other registered task.
        retrieval_only: shorthand for ``tasks=("retrieval",)`` (e.g. scoring fine-tuned features).
        mem_budget_bytes: bound on the query-chunk x gallery score block.

    Returns:
        ``{"metrics": {name: float}, "definitions": {tag: text, ...}, "counts": {name: int},
        "clustering_per_seed": [{"seed", "NMI", "purity"}], "probe": {...}, "settings": {...},
        "timings_s": {...}}``. Metric names: ``coarse/...``, ``fine/...`` (see retrieval),
        ``cls/accuracy[linear_probe]``, ``cls/accuracy[finetuned_head]``, ``cluster/NMI``,
        ``cluster/NMI_std``, ``cluster/purity``, ``cluster/purity_std``. All values are fractions.
        ``out["hubness"]`` holds the hubness diagnostic of the coarse queries per scoring rule.

    Raises:
        ValueError: inconsistent lengths, non-boolean masks, non-finite embeddings, unknown tasks.
    """
    if retrieval_only:
        tasks = ("retrieval",)
    if head_predictions is not None and cls_test is None:
        raise ValueError("head_predictions needs cls_test (the rows they were predicted for)")
    task_registry.check_names(tasks)
    knn_backend = resolve_backend(knn_backend)  # checked before any work; the result names the one used
    x = retrieval._to_float_tensor(embeddings, "embeddings").numpy()
    _check_score_range(x)
    n = len(x)
    cat = as_label_array(category, "category")
    pid = as_label_array(product, "product")
    if len(cat) != n or len(pid) != n:
        raise ValueError(f"category ({len(cat)}) and product ({len(pid)}) must have one entry per embedding row ({n})")
    cq = _mask(coarse_query, n, "coarse_query")
    fq = _mask(fine_query, n, "fine_query")
    ctrain = _mask(cls_train, n, "cls_train", default=False)
    ctest = _mask(cls_test, n, "cls_test", default=False) if cls_test is not None else None
    gal = _mask(gallery, n, "gallery", default=None) if gallery is not None else ~ctrain
    kmeans_backend = clustering.resolve_kmeans_backend(kmeans_backend, int(gal.sum()), len(np.unique(cat[gal])))
    kseeds = list(kmeans_seeds) if kmeans_seeds is not None else [seed, seed + 1, seed + 2]
    by_task_sets = None
    if task_galleries is not None or positive_counts is not None:
        tg, pc = task_galleries or {}, positive_counts or {}
        by_task_sets = (
            {t: _mask(tg[t], n, f"{t} gallery") if tg.get(t) is not None else gal for t in ("coarse", "fine")},
            {t: _counts(pc.get(t), n, f"{t} positive_counts") for t in ("coarse", "fine")})

    inp = TaskInput(x, cat, pid, cq, fq, ctrain, ctest, gal, dict(
        normalize=normalize, cosine_too=cosine_too, ks=ks, max_topk=max_topk, knn_backend=knn_backend,
        mem_budget_bytes=mem_budget_bytes, per_query=tuple(per_query), seed=seed, kmeans_seeds=kseeds,
        kmeans_backend=kmeans_backend, train_embeddings=train_embeddings, train_category=train_category,
        head_predictions=head_predictions, by_task=by_task_sets, protocol=protocol))
    res = TaskOutput(counts={"rows": n, "gallery": int(gal.sum())}, definitions={"scale": SCALE},
                     extra={"clustering_per_seed": [], "probe": None})
    timings: dict[str, float] = {}
    for name in tasks:
        t0 = time.perf_counter()
        if task_registry.TASKS.lookup(name).load()(inp, res) is not False:
            timings[name] = time.perf_counter() - t0
    out = res.extra
    out.update(metrics=res.metrics, definitions=res.definitions, counts=res.counts, timings_s=timings,
               settings={"normalize": normalize, "seed": seed, "ks": list(ks), "max_topk": max_topk,
                         "knn_backend": knn_backend, "kmeans_backend": kmeans_backend, "kmeans_seeds": kseeds,
                         "tasks": list(tasks)})
    return out


def retrieval_task(inp: TaskInput, res: TaskOutput) -> bool:
    """Coarse and fine retrieval under the requested scoring rule, and cosine too (``cosine_too``):
    one pass over the shared gallery, or each task on its own gallery and positive counts where
    ``evaluate`` was given them (:mod:`bench.eval.by_task`)."""
    if inp.options["by_task"] is not None:
        return _retrieval_by_task(inp, res)
    x, cat, pid, cq, fq, gal, o = inp.x, inp.category, inp.product, inp.coarse_query, inp.fine_query, inp.gallery, inp.options
    n, normalize, per_query = len(x), o["normalize"], o["per_query"]
    metrics, counts, definitions, out = res.metrics, res.counts, res.definitions, res.extra
    g_rows = np.flatnonzero(gal)
    q_rows = np.flatnonzero(cq | fq)
    if not (len(q_rows) and len(g_rows)):
        counts.update({"coarse/queries": int(cq.sum()), "fine/queries": int(fq.sum())})
        return True
    pos_in_gallery = np.full(n, -1, dtype=np.int64)
    pos_in_gallery[g_rows] = np.arange(len(g_rows))
    rules = [("cos" if normalize else "raw", normalize, lambda k: k)]
    if o["cosine_too"] and not normalize:
        rules.append(("cos", True, scoring.cos_name))
    out["hubness"] = {}
    if per_query:
        out["per_query"] = {"_query_rows": q_rows.astype(np.int64)}
    for i, (rule, norm, rename) in enumerate(rules):
        r = retrieval.retrieval_metrics(
            x[q_rows], x[g_rows],
            {"coarse": (cat[q_rows], cat[g_rows], cq[q_rows]), "fine": (pid[q_rows], pid[g_rows], fq[q_rows])},
            query_gallery_index=pos_in_gallery[q_rows], ks=o["ks"], max_topk=o["max_topk"], normalize=norm,
            backend=o["knn_backend"], mem_budget_bytes=o["mem_budget_bytes"], per_query=bool(per_query),
        )
        metrics.update({rename(k): v for k, v in r.metrics.items()})
        if per_query:
            out["per_query"].update({rename(k): v.astype(np.float32) for k, v in r.per_query.items()
                                     if rename(k) in per_query})
        settings = r.definitions.pop("_settings")
        if i == 0:
            counts.update(r.counts)
            definitions.update(r.definitions)
            definitions["retrieval_settings"] = settings
        else:
            definitions.update(scoring.cos_definitions(r.definitions))
        top1 = scoring.top1_neighbours(x[q_rows][cq[q_rows]], x[g_rows], pos_in_gallery[q_rows][cq[q_rows]],
                                       normalize=norm)
        out["hubness"][rule] = scoring.hubness(top1)
    return True


def _retrieval_by_task(inp: TaskInput, res: TaskOutput) -> bool:
    """The retrieval task where each task ranks its own query set against its own gallery."""
    o = inp.options
    galleries, positives = o["by_task"]
    r = by_task.score_tasks(
        inp.x, {"coarse": inp.category, "fine": inp.product}, {"coarse": inp.coarse_query, "fine": inp.fine_query},
        galleries, positives, normalize=o["normalize"], cosine_too=o["cosine_too"], ks=o["ks"],
        max_topk=o["max_topk"], backend=o["knn_backend"], mem_budget_bytes=o["mem_budget_bytes"],
        per_query=o["per_query"])
    res.metrics.update(r["metrics"])
    res.counts.update(r["counts"])
    res.definitions.update(r["definitions"])
    if r["hubness"]:
        res.extra["hubness"] = r["hubness"]
    if o["per_query"] and r["per_query"]:
        res.extra["per_query"] = r["per_query"]
    if o["protocol"] is not None:
        res.definitions["retrieval_protocol"] = dict(o["protocol"])
    return True


def classification_task(inp: TaskInput, res: TaskOutput) -> bool:
    """Linear probe on the cls_test rows (trained on cls_train rows and ``train_embeddings``), and
    the fine-tuned head's accuracy from ``head_predictions``."""
    ctest, o = inp.cls_test, inp.options
    if ctest is None:
        return False
    x, cat, metrics, definitions, out = inp.x, inp.category, res.metrics, res.definitions, res.extra
    tr_x, tr_y = x[inp.cls_train], cat[inp.cls_train]
    if o["train_embeddings"] is not None:
        extra = retrieval._to_float_tensor(o["train_embeddings"], "train_embeddings").numpy()
        if o["train_category"] is None:
            raise ValueError("train_embeddings needs train_category")
        extra_y = as_label_array(o["train_category"], "train_category")
        if len(extra_y) != len(extra) or extra.shape[1] != x.shape[1]:
            raise ValueError("train_embeddings / train_category shapes do not match the embeddings")
        tr_x = np.concatenate([tr_x, extra])
        tr_y = np.concatenate([tr_y.astype(object), extra_y.astype(object)]) if tr_y.dtype != extra_y.dtype \
            else np.concatenate([tr_y, extra_y])
    res.counts["cls/test_rows"] = int(ctest.sum())
    res.counts["cls/train_rows"] = int(len(tr_x))
    if len(tr_x) and ctest.any():
        probe = classification.linear_probe(tr_x, tr_y, x[ctest], cat[ctest], seed=o["seed"], normalize=o["normalize"])
        metrics["cls/accuracy[linear_probe]"] = probe["accuracy"]
        correct = probe.pop("correct")
        if "cls/correct[linear_probe]" in o["per_query"]:
            out.setdefault("per_query", {})["cls/correct[linear_probe]"] = correct.astype(np.float32)
        res.counts["cls/test_unseen_class"] = probe["test_unseen_class"]
        out["probe"] = probe
        definitions["linear_probe"] = dict(probe["protocol"], metric="top-1 accuracy on cls_test rows")
    if o["head_predictions"] is not None:
        metrics["cls/accuracy[finetuned_head]"] = classification.accuracy_from_predictions(o["head_predictions"], cat[ctest])
        definitions["finetuned_head"] = "top-1 accuracy of the fine-tuned head's predictions on cls_test rows"
    return True


def clustering_task(inp: TaskInput, res: TaskOutput) -> bool:
    """k-means on the gallery rows (one cluster per category), NMI and purity over seeds."""
    o, gal = inp.options, inp.gallery
    cl = clustering.clustering_metrics(inp.x[gal], inp.category[gal], seeds=o["kmeans_seeds"],
                                       backend=o["kmeans_backend"], normalize=o["normalize"])
    for key, val in cl["metrics"].items():
        res.metrics[f"cluster/{key}"] = val
    res.extra["clustering_per_seed"] = cl["per_seed"]
    res.definitions.update(clustering.DEFINITIONS)
    res.definitions["clustering_settings"] = dict(cl["settings"], rows="gallery rows", labels="category")
    res.counts["cluster/points"] = cl["settings"]["n_points"]
    return True
