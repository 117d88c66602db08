"""Classification: a linear probe on frozen embeddings, and accuracy of a fine-tuned head's predictions.

Probe protocol (fixed, recorded in every result; lbfgs at sklearn's default 100 iterations often
stops unconverged on 256-d features, so accuracy would depend on that accident):

* features standardised with ``StandardScaler`` fitted on the train rows only;
* ``LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000, tol=1e-4, random_state=seed)``
  (multinomial softmax over the categories seen in training);
* accuracy = share of test rows whose predicted category equals the true one. Test rows of a
  category absent from the train rows can never be right; they stay in the denominator and are counted.

Above ``PROBE_CAP`` train rows (a whole pretraining pool, when no classification list exists) the
probe trains on a capped, seeded, class-stratified sample with a minibatch solver instead
(:mod:`bench.eval.probe_scale`; the cap and the sample are recorded in the protocol). At or below the
cap nothing changes.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from bench.eval.labels import as_label_array, remap_labels
from bench.eval import probe_scale

PROBE_PROTOCOL: dict[str, Any] = {
    "model": "sklearn LogisticRegression (multinomial)",
    "standardize": "StandardScaler fitted on train rows",
    "C": 1.0,
    "solver": "lbfgs",
    "max_iter": 1000,
    "tol": 1e-4,
}


def accuracy_from_predictions(pred: Any, labels: Any) -> float:
    """Top-1 accuracy of predicted labels (any hashables, or (N, C) logits -> argmax) against labels."""
    p = pred.detach().cpu().numpy() if hasattr(pred, "detach") else np.asarray(pred)
    if p.ndim == 2:
        p = p.argmax(axis=1)
    p = as_label_array(p, "predictions")
    y = as_label_array(labels, "labels")
    if len(p) != len(y):
        raise ValueError(f"{len(p)} predictions for {len(y)} labels")
    if len(y) == 0:
        return float("nan")
    p_codes, y_codes = remap_labels(p, y, names=["predictions", "labels"])
    return float((p_codes == y_codes).mean())


def linear_probe(
    train_x: np.ndarray, train_y: Any, test_x: np.ndarray, test_y: Any, *, seed: int = 0, normalize: bool = False
) -> dict[str, Any]:
    """Fit the fixed probe on (train_x, train_y) and score top-1 accuracy on (test_x, test_y).

    Returns ``{"accuracy", "correct", "n_train", "n_test", "n_classes", "test_unseen_class", "converged",
    "n_iter", "protocol"}``; ``correct`` is a bool per test row (for paired comparisons).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(train_x) > probe_scale.PROBE_CAP:
        return _linear_probe_at_scale(train_x, train_y, test_x, test_y, seed=seed, normalize=normalize)
    tr = np.asarray(train_x, dtype=np.float64)
    te = np.asarray(test_x, dtype=np.float64)
    if tr.ndim != 2 or te.ndim != 2 or tr.shape[1] != te.shape[1]:
        raise ValueError(f"probe needs 2-d train/test embeddings of one width, got {tr.shape} and {te.shape}")
    if not (np.isfinite(tr).all() and np.isfinite(te).all()):
        raise ValueError("probe embeddings contain NaN/inf")
    ytr, yte = remap_labels(train_y, test_y, names=["probe train labels", "probe test labels"])
    if len(ytr) != len(tr) or len(yte) != len(te):
        raise ValueError("probe labels and embeddings differ in length")
    protocol = dict(PROBE_PROTOCOL, seed=int(seed), l2_normalize_first=bool(normalize))
    out: dict[str, Any] = {"n_train": int(len(tr)), "n_test": int(len(te)), "protocol": protocol}
    classes = np.unique(ytr)
    out["n_classes"] = int(len(classes))
    out["test_unseen_class"] = int((~np.isin(yte, classes)).sum())
    if len(te) == 0 or len(tr) == 0:
        return dict(out, accuracy=float("nan"), correct=np.zeros(len(te), dtype=bool), converged=False, n_iter=0)
    if normalize:
        tr = tr / np.maximum(np.linalg.norm(tr, axis=1, keepdims=True), 1e-12)
        te = te / np.maximum(np.linalg.norm(te, axis=1, keepdims=True), 1e-12)
    if len(classes) == 1:  # LogisticRegression refuses one class; the only sensible predictor is constant
        pred = np.full(len(te), classes[0])
        return dict(out, accuracy=float((pred == yte).mean()), correct=pred == yte, converged=True, n_iter=0)
    scaler = StandardScaler().fit(tr)
    clf = LogisticRegression(C=PROBE_PROTOCOL["C"], solver="lbfgs", max_iter=PROBE_PROTOCOL["max_iter"],
                             tol=PROBE_PROTOCOL["tol"], random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(scaler.transform(tr), ytr)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    pred = clf.predict(scaler.transform(te))
    return dict(out, accuracy=float((pred == yte).mean()), correct=pred == yte, converged=converged,
                n_iter=int(np.max(clf.n_iter_)))


def _linear_probe_at_scale(train_x: Any, train_y: Any, test_x: Any, test_y: Any, *, seed: int,
                           normalize: bool) -> dict[str, Any]:
    """:func:`linear_probe` above the cap: arrays (a ``np.memmap`` included) are read in chunks, never whole."""
    if getattr(train_x, "ndim", 0) != 2 or getattr(test_x, "ndim", 0) != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"probe needs 2-d train/test embeddings of one width, got {np.shape(train_x)} and "
                         f"{np.shape(test_x)}")
    ytr, yte = remap_labels(train_y, test_y, names=["probe train labels", "probe test labels"])
    if len(ytr) != len(train_x) or len(yte) != len(test_x):
        raise ValueError("probe labels and embeddings differ in length")
    protocol = dict(probe_scale.SCALED_PROTOCOL, cap=probe_scale.PROBE_CAP, seed=int(seed),
                    l2_normalize_first=bool(normalize))
    classes = np.unique(ytr)
    out: dict[str, Any] = {"n_train": len(ytr), "n_test": len(yte), "protocol": protocol,
                           "n_classes": len(classes), "test_unseen_class": int((~np.isin(yte, classes)).sum())}
    if len(yte) == 0:
        return dict(out, accuracy=float("nan"), correct=np.zeros(0, dtype=bool), converged=False, n_iter=0)
    res = probe_scale.scaled_probe(train_x, ytr, test_x, yte, seed=seed, normalize=normalize)
    protocol.update(n_train_sampled=res.pop("n_train_sampled"), quota_per_class=res.pop("quota_per_class"))
    return dict(out, **res)
