"""Seeded masking for the masked pretraining tasks (MLM, MEM, region / frame / audio prediction).

Every function draws all its randomness from the ``generator`` it is given (a CPU generator works
for any device: draws are made on the generator's device and moved), so the same seed gives the
same masks. Padding is never masked, and ``rows`` (a ``[B]`` bool presence vector) restricts
masking to listings where the modality is present. Labels use ``-100`` for "not a target".
"""

from __future__ import annotations

from typing import Iterable, Literal

import torch

from bench.nn.losses import IGNORE_INDEX

MemMode = Literal["key_or_value", "both", "token"]


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gdev).to(device)


def _randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None,
             device: torch.device) -> torch.Tensor:
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, high, shape, generator=generator, device=gdev).to(device)


def _restrict(mask: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    if rows is None:
        return mask
    return mask & rows.bool().to(mask.device)[:, None]


def mask_tokens(ids: torch.Tensor, real_mask: torch.Tensor, *, vocab_size: int, mask_id: int,
                special_ids: Iterable[int], generator: torch.Generator | None = None,
                prob: float = 0.15, replace: tuple[float, float, float] = (0.8, 0.1, 0.1),
                rows: torch.Tensor | None = None, eligible: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masked-language-model masking.

    Each eligible token (real, not a special id, in a present row, and in ``eligible`` if given)
    is selected with probability ``prob``; a selected token becomes ``[MASK]`` with
    ``replace[0]``, a random non-special token with ``replace[1]``, and stays with ``replace[2]``.

    Returns ``(masked_ids, labels)``: labels hold the original id at selected positions, -100 elsewhere.
    """
    dev = ids.device
    special = torch.tensor(sorted(set(int(s) for s in special_ids)), dtype=torch.long, device=dev)
    cand = real_mask.bool() & ~torch.isin(ids, special)
    if eligible is not None:
        cand &= eligible.bool()
    cand = _restrict(cand, rows)
    shape = tuple(ids.shape)
    selected = cand & (_rand(shape, generator, dev) < prob)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    u = _rand(shape, generator, dev)
    to_mask = selected & (u < replace[0])
    to_random = selected & (u >= replace[0]) & (u < replace[0] + replace[1])
    # random replacements are drawn among non-special ids only (an index into the allowed ids)
    allowed = torch.ones(vocab_size, dtype=torch.bool, device=dev)
    allowed[special[special < vocab_size]] = False
    allowed_ids = allowed.nonzero(as_tuple=True)[0]
    rnd = allowed_ids[_randint(len(allowed_ids), shape, generator, dev)]
    out = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    out = torch.where(to_random, rnd, out)
    return out, labels


def mask_entities(ids: torch.Tensor, entity: torch.Tensor, kind: torch.Tensor, *, mask_id: int,
                  generator: torch.Generator | None = None, prob: float = 0.15,
                  mode: MemMode = "key_or_value", rows: torch.Tensor | None = None,
                  real_mask: torch.Tensor | None = None, vocab_size: int | None = None,
                  special_ids: Iterable[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked entity modelling on table tokens (SCALE MEM).

    ``entity [B, L]`` is the entity index of each token (-1 none), ``kind [B, L]`` 1 = key token,
    2 = value token. Each entity of a present row is selected with probability ``prob``; then

    * ``"key_or_value"`` (released code, default): with p 0.5 every token of the entity's key,
      otherwise every token of its value, becomes ``[MASK]`` (no 10 % random / keep);
    * ``"both"`` (paper text): every token of the entity becomes ``[MASK]``;
    * ``"token"`` (ablation): MLM-style 80/10/10 token masking over key/value tokens
      (needs ``vocab_size`` and ``special_ids``).

    Returns ``(masked_ids, labels)`` with -100 where nothing is predicted.
    """
    if mode == "token":
        if vocab_size is None:
            raise ValueError("mode 'token' needs vocab_size")
        rm = real_mask if real_mask is not None else kind > 0
        return mask_tokens(ids, rm, vocab_size=vocab_size, mask_id=mask_id, special_ids=special_ids,
                           generator=generator, prob=prob, rows=rows, eligible=kind > 0)
    if mode not in ("key_or_value", "both"):
        raise ValueError(f"unknown MEM mode {mode!r}; choose key_or_value, both or token")
    dev = ids.device
    B = ids.shape[0]
    n_ent = int(entity.max().item()) + 1 if entity.numel() else 0
    if n_ent <= 0:
        return ids.clone(), torch.full_like(ids, IGNORE_INDEX)
    pick = _rand((B, n_ent), generator, dev) < prob  # per (listing, entity)
    side = torch.where(_rand((B, n_ent), generator, dev) < 0.5, 1, 2)  # 1 key, 2 value
    in_ent = (entity >= 0) & (kind > 0)
    if real_mask is not None:
        in_ent &= real_mask.bool()
    e = entity.clamp(min=0)
    chosen = in_ent & torch.gather(pick, 1, e)
    if mode == "key_or_value":
        chosen &= kind == torch.gather(side, 1, e)
    chosen = _restrict(chosen, rows)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    return torch.where(chosen, torch.full_like(ids, mask_id), ids), labels


def mask_features(feats: torch.Tensor, real_mask: torch.Tensor, *, generator: torch.Generator | None = None,
                  prob: float = 0.15, zero_prob: float = 1.0, rows: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked feature modelling on ``feats [B, L, D]``.

    Each real position of a present row is selected with ``prob``; a selected position is zeroed
    with ``zero_prob`` and kept unchanged otherwise; **every** selected position is a target.
    Video frames / audio (SCALE MFP, MAM) use ``zero_prob=1``; regions use :func:`mask_regions`.

    Returns ``(masked_feats, target_mask [B, L] bool)``.
    """
    dev = feats.device
    shape = tuple(feats.shape[:2])
    selected = _restrict(real_mask.bool() & (_rand(shape, generator, dev) < prob), rows)
    zero = selected & (_rand(shape, generator, dev) < zero_prob)
    return feats.masked_fill(zero[..., None], 0.0), selected


def mask_regions(feats: torch.Tensor, real_mask: torch.Tensor, *, generator: torch.Generator | None = None,
                 prob: float = 0.15, zero_prob: float = 0.9, rows: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """ViLBERT-style region masking: 15 % of real regions, 90 % of those zeroed, all are targets."""
    return mask_features(feats, real_mask, generator=generator, prob=prob, zero_prob=zero_prob, rows=rows)


__all__ = ["MemMode", "mask_tokens", "mask_entities", "mask_features", "mask_regions"]
