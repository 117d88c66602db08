"""SCALE's self-harmonisation of its contrastive and masked losses, in four modes.

Terms: for M modalities, the upper triangle ``(i < j)`` of an M x M matrix belongs to the pairwise
inter-modality contrastive losses and the diagonal ``(i, i)`` to modality i's masked-task loss.

``"learned"`` (the paper's SIMCL; SCALE's default)
    The paper (sec. 4.3) keeps an alignment score matrix ``S``, initialised to zeros and updated as
    a free model parameter, turns it into match scores ``S' = S * softmax(S)`` (element-wise), and
    lets every score scale the *logits inside* its loss::

        L_total = sum_{i<j} L_CL_ij(S'_ij * logit_ij) + sum_i L_M_i(S'_i * logit_i)

    so ``S'_ij`` acts as a learned inverse temperature of pair (i, j), not as a loss weight. Where
    the text leaves a choice, we choose, and say so here:

    * *softmax over what*: over the K = M(M+1)/2 entries on and above the diagonal, the terms that
      exist ("the importance of each modality combination"); entries below the diagonal are unused.
    * *the multiplier*: ``m = clamp(offset + S', 0, max_scale)`` with ``offset = 1`` (any value in
      ``(0, max_scale]`` may be set). Read literally (``offset = 0``), ``S = 0`` scales every logit
      to 0: every loss is a constant at the start and the encoders get no gradient. Even unbounded,
      with Adam moving ``S`` by about the learning rate per step (and ``S' ~ S / K``), the tiny
      preset would end its run with multipliers near 0.03, i.e. nearly untrained encoders; and with
      the lower bound below, nothing would move at all (the bound passes no gradient at 0). With
      ``offset = 1`` a zero ``S`` is exactly the unharmonised loss (the ``uniform`` ablation) and
      ``S'`` learns the deviation from it.
    * *bounds*: a negative multiplier would reward ranking the positive *last*, so ``m >= 0``; a
      contrastive loss can always be lowered by sharpening once positives rank first, so ``m <=
      max_scale`` (7 by default: CLIP's cap of 100 on the inverse temperature at tau = 0.07).
    * *regression tasks* (image / video / audio feature prediction, MSE): their "logit" is the
      predicted feature vector, which is scaled as the released code scales its regression outputs
      (the head's last linear layer can absorb the factor).
    * the contrastive part is averaged over the active pairs (as the released code averages its 10
      pairs) and the masked losses are added, as in every mode, so modes differ only in harmonising.

``"loss_weights"`` (an earlier variant of this harness, kept for ablations)
    ``S = zeros(M, M)`` is a parameter; ``p = softmax(S[triu])`` over the K terms, weights ``w = K * p``
    multiply the *losses* (every term starts at weight 1). Trained on the loss it weights, S drifts
    onto the smallest loss (dL/dS_k = w_k (L_k - sum w L)), so a uniform floor is mixed in,
    ``p = (1 - floor) * softmax(S) + floor / K`` (no weight drops below ``floor``; the normalised
    entropy of ``p`` never falls under :meth:`Harmonizer.entropy_floor`), plus an entropy bonus
    ``-entropy_weight * H(p)`` (:meth:`Harmonizer.regularizer`).

``"feature"`` (released code)
    Per listing, from modality embeddings ``z [B, M, D]``: ``C = cos(z_i, z_j)``,
    ``R = C * softmax_row(C)``, ``G = R / ||R||_row``, computed over the modalities present in that
    listing (absent entries are 0). As in the code, for the contrastive pair (i, j) ``G_b[i, j]``
    multiplies listing b's NT-Xent logit rows (a per-listing inverse temperature; not detached, as
    the code). For the masked tasks the code multiplies the *prediction logits / regression outputs*
    by ``G'_b[m, m]`` (``G'`` from the post-joint pooled outputs), which distorts MSE targets; we
    apply the batch mean of ``G'_b[m, m]`` over listings that have m as a **detached loss weight**
    instead, so the model cannot lower its loss by shrinking the weight.

``"uniform"`` (ablation: SCALE without self-harmonisation, IMCL)
    Every weight and every logit multiplier is 1.

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

HarmonizeMode = Literal["learned", "loss_weights", "feature", "uniform"]
MODES: tuple[str, ...] = ("learned", "loss_weights", "feature", "uniform")


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
    """Harmonisation of M modalities' contrastive pairs and masked tasks (see module docstring).

    Args:
        names: modality names in model order (used for log keys such as ``"T-I"``).
        mode: ``"learned"`` (paper: logit scaling), ``"loss_weights"``, ``"feature"`` or ``"uniform"``.
        floor: loss_weights mode: uniform share mixed into the softmax (0 < floor <= 1).
        entropy_weight: loss_weights mode: weight of the entropy bonus in :meth:`regularizer`.
        offset: learned mode: the multiplier at ``S = 0`` (1: start as the unharmonised loss; must
            be > 0, see the module docstring for why the literal 0 cannot train).
        max_scale: learned mode: upper bound of every logit multiplier.
    """

    def __init__(self, names: list[str], mode: HarmonizeMode = "learned", *, floor: float = 0.5,
                 entropy_weight: float = 0.01, offset: float = 1.0, max_scale: float = 7.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown harmonisation mode {mode!r}; choose one of {', '.join(MODES)} "
                             "('learned' scales the logits as the paper's SIMCL; the earlier loss-weight "
                             "form is 'loss_weights')")
        if not 0.0 < floor <= 1.0:
            raise ValueError(f"floor must be in (0, 1], got {floor}")
        if not 0.0 < offset <= max_scale:
            raise ValueError(f"need 0 < offset <= max_scale, got offset {offset}, max_scale {max_scale} "
                             "(offset 0 scales every logit to 0 at the start: nothing could learn)")
        self.names = list(names)
        self.mode = mode
        self.floor = float(floor)
        self.entropy_weight = float(entropy_weight)
        self.offset = float(offset)
        self.max_scale = float(max_scale)
        M = len(self.names)
        self.M = M
        iu = torch.triu_indices(M, M)
        self.register_buffer("_iu", iu, persistent=False)
        self.K = int(iu.shape[1])
        self.S = nn.Parameter(torch.zeros(M, M)) if mode in ("learned", "loss_weights") else None

    # --- learned (paper): logit multipliers ------------------------------------------------------
    def match_scores(self) -> torch.Tensor:
        """``S' = S * softmax(S)`` over the K on/above-diagonal entries, as ``[M, M]`` (0 below)."""
        if self.mode != "learned":
            raise ValueError(f"match scores exist only in 'learned' mode, not {self.mode!r}")
        s = self.S[self._iu[0], self._iu[1]]
        out = torch.zeros(self.M, self.M, dtype=s.dtype, device=s.device)
        return out.index_put((self._iu[0], self._iu[1]), s * torch.softmax(s, dim=0))

    def logit_scales(self) -> torch.Tensor | None:
        """Learned mode: ``[M, M]`` multipliers ``clamp(offset + S', 0, max_scale)`` of each term's
        logits (upper triangle: contrastive pairs, diagonal: masked tasks); None in other modes."""
        if self.mode != "learned":
            return None
        m = (self.offset + self.match_scores()).clamp(0.0, self.max_scale)
        return torch.triu(m)  # below the diagonal: no term

    # --- loss_weights: learned loss weights ------------------------------------------------------
    def probabilities(self) -> torch.Tensor:
        """``p [K]`` over the on/above-diagonal terms (uniform unless in loss_weights mode)."""
        if self.mode != "loss_weights":
            return torch.full((self.K,), 1.0 / self.K, device=self._iu.device)
        soft = torch.softmax(self.S[self._iu[0], self._iu[1]], dim=0)
        return (1.0 - self.floor) * soft + self.floor / self.K

    def weight_matrix(self) -> torch.Tensor:
        """``[M, M]`` loss weights: upper triangle = contrastive pairs, diagonal = masked tasks, 0 below
        (all 1 outside loss_weights mode)."""
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
        """The lowest normalised entropy the loss weights can reach (one-hot softmax)."""
        K = self.K
        if K == 1:
            return 1.0
        a = 1.0 - self.floor + self.floor / K
        b = self.floor / K
        return -(a * math.log(a) + (K - 1) * b * math.log(b)) / math.log(K)

    def regularizer(self) -> torch.Tensor | None:
        """The entropy bonus to add to the total loss (loss_weights mode), else None."""
        if self.mode != "loss_weights" or self.entropy_weight == 0.0:
            return None
        return -self.entropy_weight * self.entropy()

    # --- combination -----------------------------------------------------------------------------
    def combine(self, pair_losses: dict[tuple[int, int], torch.Tensor], masked_losses: dict[int, torch.Tensor],
                masked_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted total of the active terms.

        ``pair_losses``: ``(i, j) -> loss`` with i < j over active pairs only; ``masked_losses``:
        ``i -> loss`` for modalities with a masked task in this batch; ``masked_weights``: ``[M]``
        (feature mode, from :meth:`masked_task_weights`), ignored otherwise. In learned mode the
        harmonisation already sits inside each loss (:meth:`logit_scales`), so every weight is 1.
        """
        W = self.weight_matrix() if self.mode == "loss_weights" else None
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
        """JSON-serialisable S and its weights or logit multipliers, for logs and ``extra_state``."""
        out: dict = {"mode": self.mode, "names": self.names}
        if self.S is None:
            return out
        terms = list(zip(self._iu[0].tolist(), self._iu[1].tolist()))
        with torch.no_grad():
            out["S"] = [[round(float(x), 6) for x in row] for row in self.S.detach().cpu()]
            if self.mode == "learned":
                m = self.logit_scales().cpu()
                out["logit_scales"] = {self.term_name(i, j): round(float(m[i, j]), 6) for i, j in terms}
                out["offset"], out["max_scale"] = self.offset, self.max_scale
            else:
                W = self.weight_matrix().cpu()
                out["weights"] = {self.term_name(i, j): round(float(W[i, j]), 6) for i, j in terms}
                out["entropy"] = round(float(self.entropy()), 6)
                out["entropy_floor"] = round(self.entropy_floor(), 6)
                out["floor"] = self.floor
        return out

    def term_name(self, i: int, j: int) -> str:
        return self.names[i] if i == j else f"{self.names[i]}-{self.names[j]}"


__all__ = ["HarmonizeMode", "MODES", "feature_graph", "Harmonizer"]
