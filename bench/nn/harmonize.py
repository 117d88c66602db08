"""SCALE's self-harmonised loss weighting, in three modes (models.md §10.3).

Terms: for M modalities, the upper triangle ``(i < j)`` of an M x M matrix weights the pairwise
contrastive losses and the diagonal ``(i, i)`` weights modality i's masked-task loss.

``"learned"`` (paper text)
    ``S = zeros(M, M)`` is a parameter trained by the total loss. Its K = M(M+1)/2 entries on and
    above the diagonal give ``p = softmax(S[triu])`` and the weights ``w = K * p`` (so every term
    starts at weight 1, the size of the unweighted sum).

    *Collapse guard (our choice).* Trained on the same loss it weights, S drifts onto the smallest
    loss (dL/dS_k = w_k (L_k - sum w L)), ending with one term carrying all the weight. We mix the
    softmax with a uniform floor, ``p = (1 - floor) * softmax(S) + floor / K``, so no weight can drop
    below ``floor`` and the normalised entropy of ``p`` can never fall under
    :meth:`Harmonizer.entropy_floor` (reached only at a one-hot softmax), whatever the optimiser
    does; an entropy bonus ``-entropy_weight * H(p)`` (in :meth:`Harmonizer.regularizer`, added to
    the total) keeps S away from that bound in practice. S stays a plain parameter, so it is saved
    with the weights and logged through ``extra_state``.

``"feature"`` (released code)
    Per listing, from modality embeddings ``z [B, M, D]``: ``C = cos(z_i, z_j)``,
    ``R = C * softmax_row(C)``, ``G = R / ||R||_row``, computed over the modalities present in that
    listing (absent entries are 0). As in the code, for the contrastive pair (i, j) ``G_b[i, j]``
    multiplies listing b's NT-Xent logit rows (a per-listing inverse temperature; not detached, as
    the code). For the masked tasks the code multiplies the *prediction logits / regression outputs*
    by ``G'_b[m, m]`` (``G'`` from the post-joint pooled outputs), which distorts MSE targets; we
    apply the batch mean of ``G'_b[m, m]`` over listings that have m as a **detached loss weight**
    instead, so the model cannot lower its loss by shrinking the weight.

``"uniform"`` (ablation: SCALE without self-harmonisation)
    Every weight is 1.

In every mode, a term absent from the batch (a modality no listing has, a pair with < 2 listings)
is dropped and the others are *not* renormalised; the contrastive part is the weighted sum over
active pairs divided by the number of active pairs (the released code averages its 10 pairs).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

HarmonizeMode = Literal["learned", "feature", "uniform"]


def feature_graph(z: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """The released code's per-listing modality graph ``G [B, M, M]`` from ``z [B, M, D]``.

    ``present [B, M]`` bool restricts each listing's graph to its present modalities (entries
    involving an absent modality are 0).
    """
    zn = F.normalize(z.float(), dim=-1)
    C = zn @ zn.transpose(1, 2)
    if present is None:
        pair = torch.ones_like(C, dtype=torch.bool)
    else:
        p = present.bool()
        pair = p[:, :, None] & p[:, None, :]
    logits = C.masked_fill(~pair, float("-inf"))
    soft = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # all-absent rows -> 0
    R = (C * soft).masked_fill(~pair, 0.0)
    return F.normalize(R, dim=-1)


class Harmonizer(nn.Module):
    """Loss weights for M modalities' contrastive pairs and masked tasks (see module docstring).

    Args:
        names: modality names in model order (used for log keys such as ``"T-I"``).
        mode: ``"learned"``, ``"feature"`` or ``"uniform"``.
        floor: learned mode: uniform share mixed into the softmax (0 < floor <= 1).
        entropy_weight: learned mode: weight of the entropy bonus in :meth:`regularizer`.
    """

    def __init__(self, names: list[str], mode: HarmonizeMode = "learned", *, floor: float = 0.5,
                 entropy_weight: float = 0.01):
        super().__init__()
        if mode not in ("learned", "feature", "uniform"):
            raise ValueError(f"unknown harmonisation mode {mode!r}; choose learned, feature or uniform")
        if not 0.0 < floor <= 1.0:
            raise ValueError(f"floor must be in (0, 1], got {floor}")
        self.names = list(names)
        self.mode = mode
        self.floor = float(floor)
        self.entropy_weight = float(entropy_weight)
        M = len(self.names)
        self.M = M
        iu = torch.triu_indices(M, M)
        self.register_buffer("_iu", iu, persistent=False)
        self.K = int(iu.shape[1])
        self.S = nn.Parameter(torch.zeros(M, M)) if mode == "learned" else None

    # --- learned weights -------------------------------------------------------------------------
    def probabilities(self) -> torch.Tensor:
        """``p [K]`` over the on/above-diagonal terms (uniform unless learned)."""
        if self.S is None:
            return torch.full((self.K,), 1.0 / self.K, device=self._iu.device)
        soft = torch.softmax(self.S[self._iu[0], self._iu[1]], dim=0)
        return (1.0 - self.floor) * soft + self.floor / self.K

    def weight_matrix(self) -> torch.Tensor:
        """``[M, M]`` weights: upper triangle = contrastive pairs, diagonal = masked tasks, 0 below."""
        w = self.probabilities() * self.K
        W = torch.zeros(self.M, self.M, dtype=w.dtype, device=w.device)
        return W.index_put((self._iu[0], self._iu[1]), w)

    def entropy(self) -> torch.Tensor:
        """Normalised entropy of ``p`` in [0, 1] (1 = uniform)."""
        p = self.probabilities()
        if self.K == 1:
            return torch.ones((), device=p.device)
        return -(p * p.clamp_min(1e-12).log()).sum() / math.log(self.K)

    def entropy_floor(self) -> float:
        """The lowest normalised entropy the learned weights can reach (one-hot softmax)."""
        K = self.K
        if K == 1:
            return 1.0
        a = 1.0 - self.floor + self.floor / K
        b = self.floor / K
        return -(a * math.log(a) + (K - 1) * b * math.log(b)) / math.log(K)

    def regularizer(self) -> torch.Tensor | None:
        """The entropy bonus to add to the total loss (learned mode), else None."""
        if self.S is None or self.entropy_weight == 0.0:
            return None
        return -self.entropy_weight * self.entropy()

    # --- combination -----------------------------------------------------------------------------
    def combine(self, pair_losses: dict[tuple[int, int], torch.Tensor], masked_losses: dict[int, torch.Tensor],
                masked_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted total of the active terms.

        ``pair_losses``: ``(i, j) -> loss`` with i < j over active pairs only; ``masked_losses``:
        ``i -> loss`` for modalities with a masked task in this batch; ``masked_weights``: ``[M]``
        (feature mode, from :meth:`masked_task_weights`), ignored otherwise.
        """
        W = self.weight_matrix() if self.S is not None else None
        terms: list[torch.Tensor] = []
        if pair_losses:
            con = [(W[i, j] if W is not None else 1.0) * l for (i, j), l in pair_losses.items()]
            terms.append(torch.stack(con).sum() / len(con))
        for i, l in masked_losses.items():
            if W is not None:
                w = W[i, i]
            elif self.mode == "feature" and masked_weights is not None:
                w = masked_weights[i]
            else:
                w = 1.0
            terms.append(w * l)
        if not terms:
            raise ValueError("no active loss term in this batch")
        return torch.stack([t.reshape(()) for t in terms]).sum()

    def pair_row_scale(self, z: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor | None:
        """Feature mode: the graph ``G [B, M, M]`` whose ``[:, i, j]`` scales pair (i, j)'s logit rows."""
        if self.mode != "feature":
            return None
        return feature_graph(z, present)

    def masked_task_weights(self, pooled: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor | None:
        """Feature mode: detached ``[M]`` weights = mean over listings with m of ``G'_b[m, m]``."""
        if self.mode != "feature":
            return None
        with torch.no_grad():
            G = feature_graph(pooled, present)
            d = torch.diagonal(G, dim1=1, dim2=2)  # [B, M]
            if present is None:
                return d.mean(dim=0)
            p = present.float()
            return (d * p).sum(0) / p.sum(0).clamp(min=1.0)

    def state_for_log(self) -> dict:
        """JSON-serialisable weights (and S) for logs and ``extra_state``."""
        out: dict = {"mode": self.mode, "names": self.names}
        if self.S is not None:
            with torch.no_grad():
                W = self.weight_matrix().cpu()
                out["S"] = [[round(float(x), 6) for x in row] for row in self.S.detach().cpu()]
                out["weights"] = {self.term_name(i, j): round(float(W[i, j]), 6)
                                  for i, j in zip(self._iu[0].tolist(), self._iu[1].tolist())}
                out["entropy"] = round(float(self.entropy()), 6)
                out["entropy_floor"] = round(self.entropy_floor(), 6)
                out["floor"] = self.floor
        return out

    def term_name(self, i: int, j: int) -> str:
        return self.names[i] if i == j else f"{self.names[i]}-{self.names[j]}"


__all__ = ["HarmonizeMode", "feature_graph", "Harmonizer"]
