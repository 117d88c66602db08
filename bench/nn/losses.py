"""Pretraining losses shared by the models.

Every loss returns a scalar that is 0 (and still part of the graph) when it has no target in the
batch, so a model can always add it; :func:`nt_xent` instead returns ``None`` when fewer than two
listings take part, so the caller can *drop* the term (not add a fake zero) and count active pairs.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def mlm_ce(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy of masked-token predictions; positions labelled ``ignore_index`` do not count.

    ``logits [..., V]`` and ``labels [...]``; it is cheaper to pass only the selected positions
    (``logits [N, V]``, ``labels [N]``). Mean over counted positions; 0 when there are none.
    """
    logits = logits.reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1)
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
               reduction: Literal["mean", "none"] = "mean") -> torch.Tensor:
    """ViLBERT/CAPTURE/SCALE masked feature regression.

    ``sum((pred - target)^2)`` over masked positions and all feature dims, divided by
    ``n_masked * dim``. ``pred``/``target`` ``[..., D]``, ``mask [...]`` bool (None = all). With
    ``reduction="none"`` returns the per-position mean squared error ``[n_masked]``.
    """
    if mask is not None:
        pred, target = pred[mask], target[mask]
    else:
        pred, target = pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    err = (pred.float() - target.float()).pow(2)
    if reduction == "none":
        return err.mean(dim=-1)
    return err.sum() / (pred.shape[0] * pred.shape[-1])


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.07, *,
            row_scale: torch.Tensor | None = None, present: torch.Tensor | None = None,
            reduction: Literal["mean", "none"] = "mean") -> torch.Tensor | None:
    """SimCLR 2B-row InfoNCE between two views, as CAPTURE's and SCALE's ``info_nce_loss``.

    ``a``, ``b``: ``[B, D]`` features of the same listings in two modalities. The 2n rows
    ``cat(a, b)`` are L2-normalised; each row's positive is the same listing's other view, its
    negatives are the other ``2n - 2`` rows (intra- and inter-modal); logits are cosine / temperature.

    Args:
        temperature: fixed temperature (0.07 in the released code).
        row_scale: optional ``[B]`` per-listing multiplier of that listing's two logit rows (the
            released SCALE code multiplies the logits by its feature-graph weight ``S_b[i, j]``).
        present: optional ``[B]`` bool; only these listings take part (rows *and* negatives).
        reduction: ``"mean"`` over the 2n rows, or ``"none"`` for the ``[2n]`` row losses
            (row r and r + n belong to listing r of the selected ones).

    Returns ``None`` when fewer than two listings take part (the pair is skipped).
    """
    if present is not None:
        idx = present.nonzero(as_tuple=True)[0]
        a, b = a[idx], b[idx]
        if row_scale is not None:
            row_scale = row_scale[idx]
    n = a.shape[0]
    if n < 2:
        return None
    z = F.normalize(torch.cat([a, b], dim=0).float(), dim=-1)
    logits = z @ z.t() / temperature
    if row_scale is not None:
        logits = logits * row_scale.float().repeat(2)[:, None]
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    target = torch.arange(2 * n, device=z.device).roll(n)
    return F.cross_entropy(logits, target, reduction=reduction)


__all__ = ["IGNORE_INDEX", "mlm_ce", "masked_mse", "nt_xent"]
