"""UNITER's word-region alignment (WRA) by optimal transport, solved with IPOT.

The cost between contextualised word tokens and region tokens is the cosine distance; the
transport plan comes from the inexact proximal point method (IPOT: beta 0.5, 50 iterations, one
Sinkhorn step each) and is *detached*, so gradients reach the features through the cost only;
the OT distance is ``sum(C * T)``. The WRA loss pushes the distance down on matched pairs and up on
swapped ones. No installed library solves batched, masked IPOT on torch tensors (POT works on one
pair at a time and on numpy), so it is written here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B, n, d] x [B, m, d] -> [B, n, m] cosine distance ``1 - cos``."""
    return 1.0 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).transpose(1, 2)


@torch.no_grad()
def ipot(
    cost: torch.Tensor,
    x_mask: torch.Tensor,
    y_mask: torch.Tensor,
    beta: float = 0.5,
    iterations: int = 50,
    k: int = 1,
) -> torch.Tensor:
    """Transport plan [B, n, m] between uniform measures on the real tokens (masks True = real)."""
    B, n, m = cost.shape
    xm, ym = x_mask.to(cost.dtype), y_mask.to(cost.dtype)
    nx = xm.sum(1).clamp(min=1)[:, None, None]  # [B,1,1]
    ny = ym.sum(1).clamp(min=1)[:, None, None]
    pair = xm[:, :, None] * ym[:, None, :]
    A = torch.exp(-cost / beta) * pair
    sigma = ym[:, :, None] / ny  # [B, m, 1]
    T = pair.clone()
    for _ in range(iterations):
        Q = A * T
        for _ in range(k):
            delta = xm[:, :, None] / (nx * (Q @ sigma)).clamp(min=1e-20)  # [B, n, 1]
            sigma = ym[:, :, None] / (ny * (Q.transpose(1, 2) @ delta)).clamp(min=1e-20)
        T = delta * Q * sigma.transpose(1, 2)
    return T * pair


def ot_distance(
    x: torch.Tensor, y: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor, **ipot_kw
) -> torch.Tensor:
    """[B] OT distance between word tokens ``x`` and region tokens ``y`` (differentiable through C)."""
    cost = cosine_cost(x, y)
    plan = ipot(cost.detach(), x_mask.bool(), y_mask.bool(), **ipot_kw)
    return (cost * plan).sum(dim=(1, 2))


def wra_loss(distance: torch.Tensor, matched: torch.Tensor, weight: float = 0.1) -> torch.Tensor:
    """UNITER's WRA term: ``weight * (sum OT(pos) - sum OT(neg)) / (n_pos + n_neg)``."""
    if distance.numel() == 0:
        return distance.sum()
    pos = distance[matched].sum()
    neg = distance[~matched].sum()
    return weight * (pos - neg) / distance.numel()
