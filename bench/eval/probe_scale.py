"""The linear probe on a training pool too large for lbfgs on every row.

Without a classification list the probe's training pool is the whole pretraining pool (4.4 million
rows at the release's size). Above :data:`PROBE_CAP` rows the probe trains on a seeded,
class-stratified sample of at most that many rows (every class keeps ``min(count, q)`` rows, ``q``
the largest quota that fits the cap) and fits the same model as the small probe, a multinomial
logistic regression with an L2 penalty of the same strength (sklearn's ``C``), by minibatch Adam in
torch instead of lbfgs.

Why torch softmax regression rather than ``SGDClassifier(loss="log_loss")``: SGDClassifier fits
one-vs-rest binary models, one pass over the data per class (1,805 passes per epoch at the
release's class count) and a different model from the multinomial probe below the cap; the torch
model is the same multinomial objective, one matmul per minibatch for all classes, and deterministic
for a seed.

Rows are read in chunks from the caller's array (a ``np.memmap`` stays on disk): only the sample
is held in memory, in float32 (200 MB at 200,000 x 256-d).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

PROBE_CAP = 200_000
SCALED_PROTOCOL: dict[str, Any] = {
    "model": "multinomial logistic regression (torch), L2 penalty ||W||^2/(2 C n), intercept unpenalised",
    "standardize": "mean/std of the sampled train rows",
    "C": 1.0,
    "solver": "minibatch Adam, lr 1e-2 decayed linearly to 0",
    "epochs": 8,
    "batch_size": 512,
    "sample": "seeded class-stratified: each class keeps min(count, q) rows, q the largest quota within the cap",
    "converged": "mean train loss of the last epoch within 5% of the epoch before",
}
_READ_ROWS = 65536


def stratified_sample(codes: np.ndarray, cap: int, seed: int) -> tuple[np.ndarray, int]:
    """Sorted row indices of a class-stratified sample of at most ``cap`` rows (at least one per class),
    and the per-class quota used."""
    counts = np.bincount(codes)
    counts = counts[counts > 0]
    lo, hi = 1, int(counts.max())
    while lo < hi:  # largest quota q with sum(min(count, q)) <= cap
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if int(np.minimum(counts, mid).sum()) <= cap else (lo, mid - 1)
    rng = np.random.default_rng([int(seed), 0x9B0BE])
    key = rng.random(len(codes))
    order = np.lexsort((key, codes))  # by class, random within class
    sorted_codes = codes[order]
    starts = np.searchsorted(sorted_codes, sorted_codes, side="left")
    rank = np.arange(len(codes)) - starts
    return np.sort(order[rank < lo]), lo


def read_rows(x: Any, rows: np.ndarray | None, name: str, *, normalize: bool) -> np.ndarray:
    """``x[rows]`` (all rows if None) as float32, read ``_READ_ROWS`` at a time; NaN/inf refused."""
    n = len(x) if rows is None else len(rows)
    out = np.empty((n, x.shape[1]), dtype=np.float32)
    for s in range(0, n, _READ_ROWS):
        part = x[s : s + _READ_ROWS] if rows is None else x[rows[s : s + _READ_ROWS]]
        block = np.asarray(part, dtype=np.float32)
        if not np.isfinite(block).all():
            raise ValueError(f"{name} contain NaN/inf")
        if normalize:
            block = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        out[s : s + len(block)] = block
    return out


def fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> tuple[torch.nn.Linear, list[float]]:
    """Minibatch multinomial logistic regression on standardised ``x`` (float32); per-epoch mean losses."""
    p = SCALED_PROTOCOL
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    model = torch.nn.Linear(x.shape[1], n_classes)
    torch.nn.init.zeros_(model.weight)  # convex problem: a fixed start makes the fit depend on the seed only
    torch.nn.init.zeros_(model.bias)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    steps = p["epochs"] * -(-len(x) // p["batch_size"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / steps)
    l2 = 1.0 / (2.0 * p["C"] * len(x))
    gen = torch.Generator().manual_seed(int(seed))
    losses: list[float] = []
    for _ in range(p["epochs"]):
        perm, total = torch.randperm(len(x), generator=gen), 0.0
        for s in range(0, len(x), p["batch_size"]):
            idx = perm[s : s + p["batch_size"]]
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            (loss + l2 * model.weight.pow(2).sum()).backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
    return model, losses


def scaled_probe(train_x: Any, ytr: np.ndarray, test_x: Any, yte: np.ndarray, *, seed: int,
                 normalize: bool) -> dict[str, Any]:
    """The probe on a capped stratified sample; ``ytr`` / ``yte`` are joint int codes. Same keys as
    :func:`bench.eval.classification.linear_probe` (without ``n_train`` / ``n_test`` / ``n_classes``,
    which the caller fills in), plus ``n_train_sampled``."""
    rows, quota = stratified_sample(ytr, PROBE_CAP, seed)
    x = read_rows(train_x, rows, "probe embeddings", normalize=normalize)
    classes, y = np.unique(ytr[rows], return_inverse=True)
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0  # constant columns, as StandardScaler leaves them
    x -= mean.astype(np.float32)
    x /= std.astype(np.float32)
    model, losses = fit_softmax(x, y, len(classes), seed)
    del x
    pred = np.empty(len(yte), dtype=np.int64)
    with torch.no_grad():
        for s in range(0, len(yte), _READ_ROWS):
            block = read_rows(test_x[s : s + _READ_ROWS], None, "probe embeddings", normalize=normalize)
            block = (block - mean.astype(np.float32)) / std.astype(np.float32)
            pred[s : s + len(block)] = classes[model(torch.from_numpy(block)).argmax(dim=1).numpy()]
    converged = len(losses) > 1 and abs(losses[-1] - losses[-2]) <= 0.05 * abs(losses[-2])
    correct = pred == yte
    return {"accuracy": float(correct.mean()), "correct": correct, "converged": bool(converged),
            "n_iter": int(SCALED_PROTOCOL["epochs"] * -(-len(rows) // SCALED_PROTOCOL["batch_size"])),
            "n_train_sampled": len(rows), "quota_per_class": int(quota), "epoch_losses": losses}
