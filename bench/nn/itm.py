"""Image-text matching (ITM): the binary head and the negative sampling that feeds it.

Negatives are made by swapping one modality with another listing's: the caption (title) for
ViLBERT and VisualBERT, the image for UNITER. As in the original papers the donor is a random
other listing of the batch, with no label involved: pretraining never reads product or category
ids, so a donor may happen to show the same product (the originals' random captions can match by
chance too). One rule keeps the task well defined on product data: only listings that have *both*
image and title take part (a pair with a missing side is neither a positive nor a negative), and a
donor must have the swapped modality. Every draw comes from the step's generator, so the same seed
gives the same pairs.

Labels: 1 = the pair matches, 0 = swapped. (ViLBERT and HF VisualBERT use the opposite
convention; it only names the classes.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from bench.features.batch import UnlabeledBatch
from bench.modalities import Modality

#: Batch fields that belong to each swappable modality.
_FIELDS = {
    Modality.T: ("title_ids", "title_mask"),
    Modality.I: ("region_feats", "region_boxes", "region_mask"),
}


class ITMHead(nn.Module):
    """Two-way match classifier on a pooled vector (ViLBERT: on ``pooled_t * pooled_v``)."""

    def __init__(self, d: int, dropout: float = 0.1):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(d, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(pooled))


@dataclass
class ITMPairs:
    """Which donor row each anchor row takes its swapped modality from."""

    donor: torch.Tensor  # [B] int64 row index (== own row for positives)
    label: torch.Tensor  # [B] int64, 1 match / 0 swapped
    valid: torch.Tensor  # [B] bool, rows that count in the ITM loss


def sample_itm_pairs(
    batch: UnlabeledBatch,
    swap: Modality,
    generator: torch.Generator | None = None,
    neg_prob: float = 0.5,
) -> ITMPairs:
    """Choose, for each listing, whether to swap ``swap`` (prob. ``neg_prob``) and from whom.

    Donors are drawn uniformly among the other listings of the batch that have ``swap`` (random
    in-batch mismatches; no label is read). A listing with no eligible donor stays a positive.
    """
    if swap not in _FIELDS:
        raise ValueError(f"ITM can swap only {sorted(m.value for m in _FIELDS)}, not {swap.value}")
    B = batch.size
    dev = batch.index.device
    # sampled on the CPU (B x B is small), from the generator's device, then moved to the batch's
    gdev = generator.device if generator is not None else torch.device("cpu")
    keys = torch.rand(B, B, generator=generator, device=gdev).cpu()
    want_neg = torch.rand(B, generator=generator, device=gdev).cpu() < neg_prob
    both = (batch.present[Modality.I] & batch.present[Modality.T]).cpu()
    has_swap = batch.present[swap].cpu()
    rows = torch.arange(B)
    eligible = has_swap[None, :] & (rows[:, None] != rows[None, :])  # [anchor, donor]
    # one uniform draw per anchor: argmax of random keys restricted to eligible donors
    donor = torch.where(eligible, keys, torch.full_like(keys, -1.0)).argmax(dim=1)
    neg = want_neg & eligible.any(dim=1) & both
    donor = torch.where(neg, donor, rows)
    return ITMPairs(donor=donor.to(dev), label=(~neg).long().to(dev), valid=both.to(dev))


def swap_modality(batch: UnlabeledBatch, swap: Modality, donor: torch.Tensor) -> UnlabeledBatch:
    """A copy of ``batch`` whose ``swap`` fields (and presence) come from rows ``donor``."""
    changes = {name: getattr(batch, name)[donor] for name in _FIELDS[swap]}
    present = dict(batch.present)
    present[swap] = batch.present[swap][donor]
    return replace(batch, present=present, **changes)


def itm_title_swap(batch: UnlabeledBatch, enabled: bool, generator: torch.Generator | None = None,
                   neg_prob: float = 0.5) -> tuple[UnlabeledBatch, ITMPairs | None, torch.Tensor]:
    """The batch the masked tasks and ITM of a title-swapping model see: ``(batch, pairs, matched)``.

    With ITM on, titles are swapped for mismatches (:func:`sample_itm_pairs`) and ``matched`` marks
    the rows that kept their own title (only those teach the masked tasks); with ITM off, the batch
    is unchanged, ``pairs`` is None and every row with a title is matched.
    """
    if not enabled:
        return batch, None, torch.ones_like(batch.present[Modality.T])
    pairs = sample_itm_pairs(batch, Modality.T, generator, neg_prob)
    return swap_modality(batch, Modality.T, pairs.donor), pairs, pairs.label.bool()
