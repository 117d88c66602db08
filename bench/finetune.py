"""The paper's fine-tuned classification.

Full fine-tuning of the pretrained backbone plus a head ``dense1 (D -> 1024) -> dropout 0.1 ->
dense2 (1024 -> classes)`` with no non-linearity in between, cross-entropy on the category. The
1024-d ``dense1`` output of the fine-tuned model is the paper's "dense_feature", which the
pipeline can also score retrieval with. The caller's pretrained model is never modified.

One deviation, the same for every model: the head's input goes through a LayerNorm first. The
models' pooled vectors differ in scale by an order of magnitude (a sum of two unit vectors
against sums of unnormalised first-token states), and with a fixed learning rate and step count
that scale, not what the features hold, would decide how far the head gets.

Training runs a fixed number of epochs, or stops early when accuracy on held-out rows (a slice
of the classification-train rows that is never trained on) stops improving; the weights of the
best epoch are kept and the chosen epoch is reported.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import Adapter
from bench.console import UserError
from bench.engine import BatchFactory, TrainConfig, derive_seed, train
from bench.features.batch import Batch


class ClassificationHead(nn.Module):
    """``dense1 -> dropout -> dense2``; :meth:`features` is the fine-tuned retrieval feature."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 1024, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)  # input scale differs by model; see the module docstring
        self.dense1 = nn.Linear(in_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.dense2 = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense1(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense2(self.dropout(self.features(x)))


class _Classifier(nn.Module):
    """Backbone + head with a ``forward(batch, generator) -> {"loss": ...}`` for the engine.

    ``frozen``: the backbone stays in eval mode and runs without gradients (only the head trains)."""

    def __init__(self, backbone: Adapter, head: ClassificationHead, frozen: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.frozen = frozen

    def train(self, mode: bool = True) -> "_Classifier":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            feats = self.backbone.classification_features(batch)
        logits = self.head(feats).float()
        labels = batch.category
        known = labels >= 0
        if not bool(known.any()):  # a batch of unlabelled rows teaches nothing (and mean() would be NaN)
            return {"loss": logits.sum() * 0.0, "acc": torch.zeros((), device=logits.device)}
        loss = F.cross_entropy(logits, labels, ignore_index=-1)
        acc = (logits.argmax(-1)[known] == labels[known]).float().mean()
        return {"loss": loss, "acc": acc.detach()}


def finetune_classifier(
    model: Adapter,
    train_batches_for_epoch: BatchFactory,
    steps_per_epoch: int | None,
    test_batches: Iterable[Batch],
    num_classes: int,
    cfg: TrainConfig,
    *,
    backbone_lr: float | None = None,
    hidden: int = 1024,
    dropout: float = 0.1,
    progress: bool = False,
    holdout_batches: Callable[[], Iterable[Batch]] | None = None,
    patience: int = 1,
    freeze_backbone: bool = False,
) -> dict[str, Any]:
    """Fine-tune a copy of ``model`` with the paper's classification head; score the test rows.

    Trains backbone and head together on ``batch.category`` (rows with category -1 are ignored)
    with the loop of :func:`bench.engine.train` (AdamW, warmup + linear decay, clipping, same
    seeding); ``backbone_lr`` (default ``cfg.lr``) sets the backbone's learning rate, the head
    always uses ``cfg.lr``. Returns a dict with ``accuracy`` (fraction of labelled test rows,
    in [0, 1]), ``predictions``, ``labels`` and ``index`` (int64 ``[N]``, in test-batch order),
    ``logits`` (float32 ``[N, C]``), ``features`` (float32 ``[N, hidden]``: the fine-tuned
    ``dense1`` output, the paper's ``dense_feature``), ``train`` (the last training log line),
    ``num_test`` and ``schedule`` (how many epochs ran and which was kept).

    With ``holdout_batches`` (a fresh, unshuffled stream of held-out labelled rows per call),
    training stops once held-out accuracy has not improved for ``patience`` epochs, at most
    ``cfg.epochs``; the weights of the best held-out epoch (the earliest among ties) are kept.

    ``freeze_backbone``: only the head trains, on the backbone's features (``finetune=head``).
    """
    if num_classes < 2:
        raise UserError(f"classification needs at least 2 classes, got {num_classes}")
    backbone = copy.deepcopy(model)  # the pretrained model is still needed by the caller
    backbone.train(not freeze_backbone)
    if freeze_backbone:
        backbone.requires_grad_(False)

    # The head's input size is whatever classification_features gives: look at the first batch.
    first_iter = iter(train_batches_for_epoch(0))
    try:
        first = next(first_iter)
    except StopIteration:
        raise UserError("the classification train split yields no batches") from None
    device = next(backbone.parameters()).device
    with torch.no_grad():
        backbone.eval()
        in_dim = int(backbone.classification_features(first.to(device)).shape[-1])
        backbone.train(not freeze_backbone)
    with torch.random.fork_rng(devices=[]):  # the head's init follows cfg.seed, not the caller's RNG
        torch.manual_seed(derive_seed(cfg.seed, 1024))
        head = ClassificationHead(in_dim, num_classes, hidden=hidden, dropout=dropout).to(device)
    _check_labels(first, num_classes)
    peeked = [(first, first_iter)]

    def factory(epoch: int) -> Iterable[Batch]:
        if epoch == 0 and peeked:  # reuse the peeked epoch-0 stream once; the order is the same anyway
            b, rest = peeked.pop()
            return itertools.chain([b], rest)
        return train_batches_for_epoch(epoch)

    clf = _Classifier(backbone, head, frozen=freeze_backbone)
    blr = cfg.lr if backbone_lr is None else backbone_lr
    stopper = _EarlyStop(clf, holdout_batches, num_classes, patience) if holdout_batches is not None else None
    result = train(clf, factory, steps_per_epoch, cfg, progress=progress,
                   lr_for=lambda name: blr if name.startswith("backbone.") else cfg.lr,
                   description=f"finetune {type(model).__name__}", epoch_end=stopper)
    schedule: dict[str, Any] = {"mode": "fixed", "max_epochs": cfg.epochs, "epochs_run": result.epochs_completed,
                                "chosen_epoch": result.epochs_completed}
    if stopper is not None:
        schedule = stopper.finish(result.epochs_completed, cfg.epochs)
    out = _evaluate(clf, test_batches, num_classes)
    out["train"] = result.last_log
    out["schedule"] = schedule
    return out


class _EarlyStop:
    """The engine's ``epoch_end`` hook: scores held-out rows after each epoch, keeps the best
    weights, and asks the loop to stop after ``patience`` epochs without improvement."""

    def __init__(self, clf: _Classifier, holdout: Callable[[], Iterable[Batch]], num_classes: int, patience: int):
        self.clf, self.holdout, self.num_classes, self.patience = clf, holdout, num_classes, max(1, patience)
        self.scores: list[float] = []
        self.best_state: dict[str, torch.Tensor] | None = None

    def __call__(self, epochs_done: int) -> bool:
        acc = _evaluate(self.clf, self.holdout(), self.num_classes)["accuracy"]
        self.scores.append(acc)
        if acc > max(self.scores[:-1], default=-1.0):  # strictly better: ties keep the earlier epoch
            self.best_state = copy.deepcopy(self.clf.state_dict())
        return epochs_done - self.best_epoch >= self.patience

    @property
    def best_epoch(self) -> int:
        return int(np.argmax(self.scores)) + 1 if self.scores else 0

    def finish(self, epochs_run: int, max_epochs: int) -> dict[str, Any]:
        """Score the last epoch if the loop ended without asking, restore the best weights."""
        if len(self.scores) < epochs_run:
            self(epochs_run)
        if self.best_state is not None:
            self.clf.load_state_dict(self.best_state)
        return {"mode": "early_stopping", "max_epochs": max_epochs, "patience": self.patience,
                "epochs_run": epochs_run, "chosen_epoch": self.best_epoch,
                "holdout_accuracy": [round(a, 6) for a in self.scores]}


def _check_labels(batch: Batch, num_classes: int) -> None:
    if int(batch.category.max()) >= num_classes:
        raise UserError(f"category id {int(batch.category.max())} is out of range for {num_classes} classes")


@torch.no_grad()
def _evaluate(clf: _Classifier, test_batches: Iterable[Batch], num_classes: int) -> dict[str, Any]:
    clf.eval()
    device = next(clf.parameters()).device
    feats, logits, labels, index = [], [], [], []
    for batch in test_batches:
        _check_labels(batch, num_classes)
        batch = batch.to(device)
        h = clf.head.features(clf.backbone.classification_features(batch))
        feats.append(h.float().cpu())
        logits.append(clf.head.dense2(h).float().cpu())
        labels.append(batch.category.cpu())
        index.append(batch.index.cpu())
    if not feats:
        raise UserError("the classification test split yields no batches")
    logit = torch.cat(logits)
    label = torch.cat(labels)
    pred = logit.argmax(-1)
    known = label >= 0
    acc = float((pred[known] == label[known]).float().mean()) if bool(known.any()) else float("nan")
    return {
        "accuracy": acc,
        "predictions": pred.numpy().astype(np.int64),
        "labels": label.numpy().astype(np.int64),
        "index": torch.cat(index).numpy().astype(np.int64),
        "logits": logit.numpy().astype(np.float32),
        "features": torch.cat(feats).numpy().astype(np.float32),
        "num_test": int(label.shape[0]),
    }
