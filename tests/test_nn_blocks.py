"""Unit tests of bench.nn layers, embeddings, heads and losses (tiny sizes, CPU, seconds)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.nn import (Encoder, MLMHead, MultiHeadAttention, Pooler, PostLNLayer, PreLNLayer, RegionEmbedding,
                      RegressionHead, SequenceFeatureEmbedding, TextEmbedding, causal_attn_mask, masked_mse,
                      mlm_ce, nt_xent, padding_attn_mask, prepend_global)


def test_padding_mask_ignores_padding_and_survives_empty_rows():
    torch.manual_seed(0)
    enc = Encoder(2, 16, 4, norm="post", dropout=0.0).eval()
    x = torch.randn(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    y = enc(x, mask)
    assert torch.isfinite(y).all()  # the all-padding row must not produce NaN
    x2 = x.clone()
    x2[0, 3:] = torch.randn(3, 16) * 100  # changing padding must not change real outputs
    y2 = enc(x2, mask)
    assert torch.allclose(y[0, :3], y2[0, :3], atol=1e-5)


def test_attention_matches_manual_softmax():
    torch.manual_seed(0)
    att = MultiHeadAttention(8, 2).eval()
    x = torch.randn(1, 4, 8)
    mask = torch.tensor([[True, True, False, True]])
    out = att(x, attn_mask=padding_attn_mask(mask))
    q, k, v = att.q(x), att.k(x), att.v(x)
    qs, ks, vs = (t.view(1, 4, 2, 4).transpose(1, 2) for t in (q, k, v))
    s = qs @ ks.transpose(-1, -2) / 2.0
    s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
    ref = att.o((s.softmax(-1) @ vs).transpose(1, 2).reshape(1, 4, 8))
    assert torch.allclose(out, ref, atol=1e-5)


def test_causal_mask_blocks_future():
    torch.manual_seed(0)
    enc = Encoder(1, 8, 2, norm="pre", dropout=0.0, final_ln=True).eval()
    x = torch.randn(1, 5, 8)
    y = enc(x, causal=True)
    x2 = x.clone()
    x2[0, 4] += 10
    assert torch.allclose(enc(x2, causal=True)[0, :4], y[0, :4], atol=1e-5)
    assert causal_attn_mask(3).shape == (1, 1, 3, 3)


def test_cross_attention_other_width():
    att = MultiHeadAttention(8, 2, context_dim=12)
    assert att(torch.randn(2, 3, 8), torch.randn(2, 5, 12)).shape == (2, 3, 8)


def test_layers_shapes_and_quick_gelu():
    x = torch.randn(2, 3, 16)
    assert PostLNLayer(16, 4)(x).shape == x.shape
    assert PreLNLayer(16, 4, act="quick_gelu")(x).shape == x.shape
    with pytest.raises(ValueError):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError):
        Encoder(1, 8, 2, norm="mid")


def test_embeddings():
    te = TextEmbedding(50, 16, max_len=10)
    ids = torch.randint(0, 50, (2, 7))
    assert te(ids).shape == (2, 7, 16)
    assert not torch.allclose(te(ids, token_type=0), te(ids, token_type=1))
    shared = TextEmbedding(50, 16, max_len=10, word=te.word)
    assert shared.word is te.word
    with pytest.raises(ValueError):
        te(torch.zeros(1, 11, dtype=torch.long))
    re = RegionEmbedding(24, 16)
    assert re(torch.randn(2, 4, 24), torch.rand(2, 4, 5)).shape == (2, 4, 16)
    se = SequenceFeatureEmbedding(10, 16, max_len=6)
    assert se(torch.randn(2, 6, 10)).shape == (2, 6, 16)


def test_prepend_global_is_masked_mean_with_whole_image_box():
    feats = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    boxes = torch.rand(1, 3, 5)
    f, m, b = prepend_global(feats, mask, boxes)
    assert torch.allclose(f[0, 0], torch.tensor([2.0, 3.0]))
    assert m.tolist() == [[True, True, True, False]]
    assert b[0, 0].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    f, m, _ = prepend_global(torch.zeros(1, 2, 2), torch.zeros(1, 2, dtype=torch.bool))
    assert m[0, 0] and torch.all(f[0, 0] == 0)  # an absent modality keeps one zero global token


def test_mlm_head_is_tied():
    emb = torch.nn.Embedding(30, 8)
    head = MLMHead(8, 30, emb)
    assert head.decoder.weight is emb.weight
    assert head(torch.randn(4, 8)).shape == (4, 30)
    with pytest.raises(ValueError):
        MLMHead(8, 31, emb)


def test_regression_head_and_pooler():
    assert RegressionHead(8, 24)(torch.randn(2, 3, 8)).shape == (2, 3, 24)
    h = torch.randn(2, 5, 8)
    assert (Pooler(8, 12, "relu")(h) >= 0).all()
    assert Pooler(8, activation="tanh")(h).abs().max() <= 1
    assert torch.equal(Pooler(8, activation="identity", linear=False)(h), h[:, 0])
    with pytest.raises(ValueError):
        Pooler(8, activation="swish")


def test_mlm_ce_ignores_unlabelled():
    logits = torch.randn(2, 3, 10)
    labels = torch.full((2, 3), -100)
    assert mlm_ce(logits, labels).item() == 0.0
    labels[0, 1] = 4
    assert torch.isclose(mlm_ce(logits, labels), F.cross_entropy(logits[0, 1][None], torch.tensor([4])))


def test_masked_mse_normalisation():
    pred = torch.zeros(1, 3, 4)
    target = torch.ones(1, 3, 4) * 2
    mask = torch.tensor([[True, False, True]])
    assert masked_mse(pred, target, mask).item() == pytest.approx(4.0)  # 2 * 4 * 4 / (2 * 4)
    assert masked_mse(target, target, mask).item() == 0.0
    assert masked_mse(pred, target, torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0


def test_nt_xent_identical_low_random_high_and_presence():
    torch.manual_seed(0)
    a = torch.randn(16, 32)
    assert nt_xent(a, a).item() < 0.05
    # with temperature 1 and orthogonal-ish random features the loss is near log(2n - 1)
    rnd = nt_xent(torch.randn(64, 512), torch.randn(64, 512), temperature=1.0)
    assert abs(rnd.item() - math.log(127)) < 0.1
    b = torch.randn(16, 32)
    pres = torch.zeros(16, dtype=torch.bool)
    pres[:5] = True
    ref = nt_xent(a[:5], b[:5])
    assert torch.isclose(nt_xent(a, b, present=pres), ref)
    pres[:] = False
    pres[3] = True
    assert nt_xent(a, b, present=pres) is None  # fewer than two listings: skip the pair
    per_row = nt_xent(a, b, reduction="none")
    assert per_row.shape == (32,)
    scaled = nt_xent(a, b, row_scale=torch.full((16,), 0.5))
    assert torch.isclose(scaled, nt_xent(a, b, temperature=0.14), atol=1e-5)


def test_running_standardizer():
    from bench.nn import RunningStandardizer

    torch.manual_seed(0)
    st = RunningStandardizer(3, momentum=0.1)
    x = torch.randn(4, 50, 3) * torch.tensor([1000.0, 1.0, 0.1]) + torch.tensor([500.0, -2.0, 1e4])
    mask = torch.ones(4, 50, dtype=torch.bool)
    mask[:, 40:] = False
    x[~mask] = 1e6  # padding must not enter the statistics
    st.update(x, mask)
    y = st(x, mask)
    real = y[mask]
    # (float32 inputs near 1e4 carry ~1e-3 absolute precision, i.e. 1e-2 of a 0.1 std)
    assert torch.allclose(real.mean(0), torch.zeros(3), atol=1e-2)
    assert torch.allclose(real.std(0, unbiased=False), torch.ones(3), atol=1e-2)
    assert torch.all(y[~mask] == 0)
    before = st.mean.clone()
    st.update(torch.zeros(0, 3).reshape(0, 1, 3), None)  # no token: no change
    assert torch.equal(st.mean, before)
    # a second, shifted batch: the running statistics describe the union of both
    x2 = torch.randn(4, 40, 3) + 3.0
    st2 = RunningStandardizer(3, momentum=0.0)
    st2.update(x[:, :40], None)
    st2.update(x2, None)
    both = torch.cat([x[:, :40].reshape(-1, 3), x2.reshape(-1, 3)])
    assert torch.allclose(st2.mean, both.mean(0), rtol=1e-4)
    assert torch.allclose(st2.var, both.var(0, unbiased=False), rtol=1e-3)
    assert set(dict(st.named_buffers())) == {"mean", "var", "updates"}
