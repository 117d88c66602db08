"""Random but well-formed batches, for model unit tests and adapter smoke checks.

The batches obey every convention of :mod:`bench.features.batch` (specials, entity spans, boxes,
presence flags with zeroed absent modalities), so a model that trains on them will not be surprised
by the feature store.
"""

from __future__ import annotations

import torch

from bench.features.batch import Batch, FeatureSpec
from bench.modalities import Modality, ModalitySet


def tiny_spec(**overrides) -> FeatureSpec:
    """A small spec for fast CPU tests."""
    base = dict(vocab_size=120, title_len=12, table_len=20, region_dim=24, max_regions=6,
                video_dim=16, max_frames=5, audio_dim=10, max_audio=8, num_categories=4)
    base.update(overrides)
    return FeatureSpec(**base)


def random_batch(
    spec: FeatureSpec,
    modalities: ModalitySet | str,
    batch_size: int = 8,
    *,
    missing: float = 0.0,
    seed: int = 0,
) -> Batch:
    """A batch of ``batch_size`` listings; each listing lacks each modality with prob. ``missing``
    (but keeps at least one of the requested ones)."""
    mods = modalities if isinstance(modalities, ModalitySet) else ModalitySet.parse(modalities)
    g = torch.Generator().manual_seed(seed)
    B = batch_size
    order = list(mods)
    present = torch.rand(B, len(order), generator=g) >= missing
    # every listing keeps at least one modality, as a catalog guarantees
    empty = ~present.any(dim=1)
    present[empty, 0] = True
    pres = {m: present[:, i].clone() for i, m in enumerate(order)}
    first_free = 5  # ids below are specials (pad, cls, sep, mask, unk)

    def lengths(cap: int, m: Modality, low: int = 1) -> torch.Tensor:
        n = torch.randint(low, cap + 1, (B,), generator=g)
        return torch.where(pres[m], n, torch.zeros_like(n))

    def seq_mask(n: torch.Tensor, cap: int) -> torch.Tensor:
        L = max(int(n.max()), 1)
        return torch.arange(L)[None, :] < n[:, None]

    out = dict(
        index=torch.arange(B),
        category=torch.randint(0, max(spec.num_categories, 1), (B,), generator=g),
        product=torch.randint(0, max(B // 2, 1), (B,), generator=g),
        present=pres,
    )
    if Modality.T in mods:
        n = lengths(spec.title_len, Modality.T, low=3)
        mask = seq_mask(n, spec.title_len)
        ids = torch.randint(first_free, spec.vocab_size, mask.shape, generator=g)
        ids[:, 0] = spec.cls_id
        ids[torch.arange(B), (n - 1).clamp(min=0)] = spec.sep_id
        ids[~mask] = spec.pad_id
        out.update(title_ids=ids, title_mask=mask)
    if Modality.Tab in mods:
        n_ent = torch.randint(1, max(2, (spec.table_len - 2) // 4) + 1, (B,), generator=g)
        rows_ids, rows_ent, rows_kind = [], [], []
        for b in range(B):
            ids, ent, kind = [spec.cls_id], [-1], [0]
            if pres[Modality.Tab][b]:
                for e in range(int(n_ent[b])):
                    for k, span in ((1, 1 + int(torch.randint(0, 2, (1,), generator=g))),
                                    (2, 1 + int(torch.randint(0, 2, (1,), generator=g)))):
                        if len(ids) + span + 1 > spec.table_len:
                            break
                        ids += torch.randint(first_free, spec.vocab_size, (span,), generator=g).tolist()
                        ent += [e] * span
                        kind += [k] * span
            ids.append(spec.sep_id), ent.append(-1), kind.append(0)
            if not pres[Modality.Tab][b]:
                ids, ent, kind = [], [], []
            rows_ids.append(ids), rows_ent.append(ent), rows_kind.append(kind)
        L = max(max(len(r) for r in rows_ids), 1)
        ids = torch.full((B, L), spec.pad_id)
        ent = torch.full((B, L), -1)
        kind = torch.zeros((B, L), dtype=torch.long)
        for b in range(B):
            k = len(rows_ids[b])
            ids[b, :k] = torch.tensor(rows_ids[b], dtype=torch.long)
            ent[b, :k] = torch.tensor(rows_ent[b], dtype=torch.long)
            kind[b, :k] = torch.tensor(rows_kind[b], dtype=torch.long)
        out.update(table_ids=ids, table_mask=ids != spec.pad_id, table_entity=ent, table_kind=kind)
    if Modality.I in mods:
        n = lengths(spec.max_regions, Modality.I)
        mask = seq_mask(n, spec.max_regions)
        feats = torch.randn(*mask.shape, spec.region_dim, generator=g).abs() * mask[..., None]
        xy = torch.rand(*mask.shape, 2, generator=g) * 0.5
        wh = torch.rand(*mask.shape, 2, generator=g) * 0.5
        boxes = torch.cat([xy, xy + wh, (wh[..., :1] * wh[..., 1:])], dim=-1) * mask[..., None]
        out.update(region_feats=feats, region_boxes=boxes, region_mask=mask)
    if Modality.V in mods:
        n = lengths(spec.max_frames, Modality.V)
        mask = seq_mask(n, spec.max_frames)
        out.update(video_feats=torch.randn(*mask.shape, spec.video_dim, generator=g) * mask[..., None],
                   video_mask=mask)
    if Modality.A in mods:
        n = lengths(spec.max_audio, Modality.A)
        mask = seq_mask(n, spec.max_audio)
        out.update(audio_feats=torch.randn(*mask.shape, spec.audio_dim, generator=g) * mask[..., None],
                   audio_mask=mask)
    return Batch(**out)
