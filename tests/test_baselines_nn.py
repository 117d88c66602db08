"""The blocks the baselines add to bench.nn: co-attention, ITM sampling, CLIP loss, OT, VL embeddings."""

from __future__ import annotations

import math

import torch

from bench.modalities import Modality
from bench.nn.clip_loss import LogitScale, clip_infonce
from bench.nn.coattention import CoAttentionLayer
from bench.nn.itm import sample_itm_pairs, swap_modality
from bench.nn.ot import ipot, ot_distance, wra_loss
from bench.nn.vl_embeddings import box7, vlbert_geometry
from baseline_helpers import batch, drop_images, gen


def test_coattention_directions_and_padding() -> None:
    torch.manual_seed(0)
    layer = CoAttentionLayer(d_t=16, d_v=24, d_bi=32, heads=4, ffn_t=20, ffn_v=28, dropout=0.0).eval()
    t, v = torch.randn(2, 5, 16), torch.randn(2, 3, 24)
    tm = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    vm = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)  # row 1: no real region
    t2, v2 = layer(t, tm, v, vm)
    assert t2.shape == t.shape and v2.shape == v.shape and torch.isfinite(t2).all() and torch.isfinite(v2).all()
    # text reads vision: changing a real region changes text; changing a padded region does not
    v_pad = v.clone()
    v_pad[0, 2] += 5.0
    assert torch.allclose(layer(t, tm, v_pad, vm)[0][0], t2[0], atol=1e-6)
    v_real = v.clone()
    v_real[0, 0] += 5.0
    assert not torch.allclose(layer(t, tm, v_real, vm)[0][0], t2[0])
    # no self-attention inside: a text token's output depends on itself and on vision only
    t_other = t.clone()
    t_other[0, 1] += 5.0
    assert torch.allclose(layer(t_other, tm, v, vm)[0][0, 0], t2[0, 0], atol=1e-6)


def test_itm_pairs_respect_presence_and_read_no_labels() -> None:
    """Random in-batch mismatches: any other listing with the swapped modality may donate, whatever
    its product (no label is read: the labels-free batch has none), and the same seed gives the
    same pairs."""
    b = drop_images(batch("uniter", size=16, seed=3), torch.arange(16) % 4 == 0).without_labels()
    for swap in (Modality.I, Modality.T):
        p = sample_itm_pairs(b, swap, gen(1), neg_prob=1.0)
        both = b.present[Modality.I] & b.present[Modality.T]
        assert torch.equal(p.valid, both)
        neg = p.label == 0
        assert neg.any() and (neg <= both).all()
        assert (p.donor[neg] != torch.arange(16)[neg]).all()
        assert b.present[swap][p.donor[neg]].all()  # donors have the swapped modality
        assert torch.equal(p.donor[~neg], torch.arange(16)[~neg])
        again = sample_itm_pairs(b, swap, gen(1), neg_prob=1.0)
        assert torch.equal(again.donor, p.donor) and torch.equal(again.label, p.label)
        other = sample_itm_pairs(b, swap, gen(2), neg_prob=1.0)
        assert not torch.equal(other.donor, p.donor)
    p = sample_itm_pairs(b, Modality.I, gen(1), neg_prob=0.5)
    s = swap_modality(b, Modality.I, p.donor)
    assert torch.equal(s.title_ids, b.title_ids)
    assert torch.equal(s.region_feats, b.region_feats[p.donor])


def test_itm_donors_are_uniform_over_other_listings() -> None:
    """Over many draws every other listing donates about equally often, same product or not."""
    b = batch("vilbert", size=8, seed=1)
    counts = torch.zeros(8, 8)
    g = gen(0)
    for _ in range(400):
        p = sample_itm_pairs(b.without_labels(), Modality.T, g, neg_prob=1.0)
        counts[torch.arange(8), p.donor] += 1
    assert counts.diagonal().sum() == 0
    off = counts[~torch.eye(8, dtype=torch.bool)]
    assert off.min() > 0.5 * 400 / 7 and off.max() < 1.5 * 400 / 7


def test_clip_infonce_sanity() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 32)
    scale = LogitScale()().detach()
    assert float(clip_infonce(x, x, scale)) < 0.05  # identical pairs are easy
    rand = clip_infonce(torch.randn(16, 32), torch.randn(16, 32), torch.tensor(1.0))
    assert abs(float(rand) - math.log(16)) < 0.3
    valid = torch.zeros(16, dtype=torch.bool)
    valid[:1] = True
    assert float(clip_infonce(x, x, scale, valid)) == 0.0  # one pair: nothing to contrast
    valid[:5] = True
    assert torch.allclose(clip_infonce(x, x.flip(0), scale, valid), clip_infonce(x[:5], x.flip(0)[:5], scale))


def test_ipot_plan_marginals_and_wra() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(3, 6, 8), torch.randn(3, 4, 8)
    xm = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] * 5 + [0]], dtype=torch.bool)
    ym = torch.tensor([[1] * 4, [1] * 2 + [0] * 2, [1] * 4], dtype=torch.bool)
    cost = 1 - torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(y, dim=-1).transpose(1, 2)
    T = ipot(cost, xm, ym, iterations=200)
    for b in range(3):
        n, m = int(xm[b].sum()), int(ym[b].sum())
        assert torch.allclose(T[b].sum(1)[:n], torch.full((n,), 1 / n), atol=1e-3)
        assert torch.allclose(T[b].sum(0)[:m], torch.full((m,), 1 / m), atol=1e-3)
        assert T[b][~xm[b]].abs().sum() == 0 and T[b][:, ~ym[b]].abs().sum() == 0
    same = ot_distance(x, x, xm, xm)
    diff = ot_distance(x, y, xm, ym)
    assert (same < diff).all()
    loss = wra_loss(torch.tensor([0.1, 0.9]), torch.tensor([True, False]), weight=0.1)
    assert abs(float(loss) - 0.1 * (0.1 - 0.9) / 2) < 1e-7


def test_box7_and_vlbert_geometry() -> None:
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.6, 0.16]])
    b7 = box7(boxes)
    assert torch.allclose(b7, torch.tensor([[0.1, 0.2, 0.5, 0.6, 0.4, 0.4, 0.16]]))
    g = vlbert_geometry(boxes, dim=64)
    assert g.shape == (1, 64) and g.abs().max() <= 1.0
    # the first frequency of the centre-x coordinate is sin(xc * 100)
    assert torch.allclose(g[0, 0], torch.sin(torch.tensor(0.3 * 100.0)), atol=1e-5)
    assert not torch.allclose(vlbert_geometry(boxes + 0.01, dim=64), g)
