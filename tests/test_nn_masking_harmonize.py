"""Masking statistics and harmonisation weights of bench.nn (tiny, CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from bench.nn import Harmonizer, feature_graph, mask_entities, mask_features, mask_regions, mask_tokens
from bench.testing import random_batch, tiny_spec

SPECIALS = (0, 1, 2, 3, 4)


def test_token_masking_rates_and_specials():
    g = torch.Generator().manual_seed(0)
    B, L, V = 400, 200, 1000
    ids = torch.randint(5, V, (B, L), generator=g)
    ids[:, 0] = 1
    real = torch.ones(B, L, dtype=torch.bool)
    real[:, 150:] = False
    ids[~real] = 0
    rows = torch.ones(B, dtype=torch.bool)
    rows[::4] = False
    out, labels = mask_tokens(ids, real, vocab_size=V, mask_id=3, special_ids=SPECIALS, generator=g, rows=rows)
    sel = labels != -100
    eligible = real & rows[:, None]
    eligible[:, 0] = False
    assert not (sel & ~eligible).any()  # never padding, specials or absent rows
    rate = sel.sum() / eligible.sum()
    assert abs(rate.item() - 0.15) < 0.005
    n = sel.sum().item()
    masked = (out == 3) & sel
    kept = (out == ids) & sel
    rnd = sel & ~masked & ~kept
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    assert abs(kept.sum().item() / n - 0.1) < 0.01 + 0.001  # random draws equal to the original are rare
    assert abs(rnd.sum().item() / n - 0.1) < 0.01
    assert not torch.isin(out[rnd], torch.tensor(SPECIALS)).any()
    assert torch.equal(out[~sel], ids[~sel])


def test_token_masking_is_seeded():
    ids = torch.randint(5, 50, (8, 20))
    real = torch.ones_like(ids, dtype=torch.bool)
    a = mask_tokens(ids, real, vocab_size=50, mask_id=3, special_ids=SPECIALS, generator=torch.Generator().manual_seed(7))
    b = mask_tokens(ids, real, vocab_size=50, mask_id=3, special_ids=SPECIALS, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _entities(B: int = 300, n_ent: int = 12, span: int = 2):
    ids, ent, kind = [], [], []
    for _ in range(B):
        row_i, row_e, row_k = [1], [-1], [0]
        for e in range(n_ent):
            for k in (1, 2):
                row_i += [10 + e] * span
                row_e += [e] * span
                row_k += [k] * span
        row_i.append(2), row_e.append(-1), row_k.append(0)
        ids.append(row_i), ent.append(row_e), kind.append(row_k)
    return torch.tensor(ids), torch.tensor(ent), torch.tensor(kind)


@pytest.mark.parametrize("mode", ["key_or_value", "both"])
def test_entity_masking_masks_whole_spans(mode):
    ids, ent, kind = _entities()
    g = torch.Generator().manual_seed(0)
    out, labels = mask_entities(ids, ent, kind, mask_id=3, generator=g, mode=mode)
    sel = labels != -100
    assert torch.all(out[sel] == 3) and torch.equal(out[~sel], ids[~sel])  # all -> [MASK]
    assert not sel[kind == 0].any()
    picked_entities = 0
    for b in range(ids.shape[0]):
        for e in range(12):
            key = sel[b][(ent[b] == e) & (kind[b] == 1)]
            val = sel[b][(ent[b] == e) & (kind[b] == 2)]
            # each span is all-or-nothing
            assert key.all() or not key.any()
            assert val.all() or not val.any()
            if mode == "both":
                assert key.all() == val.all()
            else:
                assert not (key.all() and val.all())
            picked_entities += int(key.any() or val.any())
    rate = picked_entities / (ids.shape[0] * 12)
    assert abs(rate - 0.15) < 0.02


def test_entity_masking_token_mode_and_rows():
    ids, ent, kind = _entities(B=50)
    rows = torch.zeros(50, dtype=torch.bool)
    rows[:10] = True
    out, labels = mask_entities(ids, ent, kind, mask_id=3, generator=torch.Generator().manual_seed(1),
                                mode="token", rows=rows, vocab_size=100, special_ids=SPECIALS)
    assert (labels[10:] == -100).all() and (labels[:10] != -100).any()
    with pytest.raises(ValueError):
        mask_entities(ids, ent, kind, mask_id=3, mode="span")


def test_region_and_frame_masking_rates():
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(500, 36, 8) + 0.1
    real = torch.ones(500, 36, dtype=torch.bool)
    real[:, 30:] = False
    out, tgt = mask_regions(feats, real, generator=g)
    assert not tgt[~real].any()
    assert abs(tgt.sum().item() / real.sum().item() - 0.15) < 0.005
    zeroed = (out.abs().sum(-1) == 0) & tgt
    assert abs(zeroed.sum().item() / tgt.sum().item() - 0.9) < 0.02
    out, tgt = mask_features(feats, real, generator=g)
    assert torch.all(out[tgt] == 0) and torch.equal(out[~tgt], feats[~tgt])


def test_harmonizer_uniform_learned_and_loss_weights_start_equal():
    names = ["I", "T", "Tab"]
    pairs = {(0, 1): torch.tensor(2.0), (1, 2): torch.tensor(4.0)}
    masked = {0: torch.tensor(1.0), 2: torch.tensor(3.0)}
    uni = Harmonizer(names, "uniform").combine(pairs, masked)
    lrn = Harmonizer(names, "learned").combine(pairs, masked)
    lw = Harmonizer(names, "loss_weights").combine(pairs, masked)
    assert uni.item() == pytest.approx(3.0 + 1.0 + 3.0)
    assert lrn.item() == pytest.approx(uni.item(), rel=1e-5)  # learned: no loss weight (it scales logits)
    assert lw.item() == pytest.approx(uni.item(), rel=1e-5)  # zero S starts at weight 1


def test_loss_weights_do_not_collapse():
    """Adversarial: one term is tiny and the rest are large; gradient descent on the weighted sum
    pushes S onto the tiny term, but the entropy floor must hold however long it trains."""
    torch.manual_seed(0)
    h = Harmonizer(["I", "T", "Tab", "V", "A"], "loss_weights")
    opt = torch.optim.Adam(h.parameters(), lr=0.5)
    losses = {p: torch.tensor(5.0) for p in [(i, j) for i in range(5) for j in range(i + 1, 5)]}
    masked = {i: torch.tensor(5.0 if i else 0.01) for i in range(5)}
    for _ in range(500):
        opt.zero_grad()
        total = h.combine(losses, masked) + h.regularizer()
        total.backward()
        opt.step()
    W = h.weight_matrix().detach()
    assert W[0, 0] > 1.0  # it did learn: weight moved to the easy term
    assert h.entropy().item() >= h.entropy_floor() - 1e-6
    assert h.entropy().item() < 0.999
    assert float(W[torch.triu_indices(5, 5).unbind()].min()) >= h.floor - 1e-6
    log = h.state_for_log()
    assert set(log) >= {"S", "weights", "entropy", "entropy_floor"} and "T-Tab" in log["weights"]


def test_feature_graph_respects_presence():
    z = torch.randn(4, 3, 8)
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=torch.bool)
    G = feature_graph(z, present)
    assert torch.isfinite(G).all()
    assert G[1, 1].abs().sum() == 0 and G[1, 0, 1] == 0
    assert torch.allclose(G[0].norm(dim=-1), torch.ones(3), atol=1e-5)
    h = Harmonizer(["I", "T", "Tab"], "feature")
    w = h.masked_task_weights(z, present)
    assert w.shape == (3,) and not w.requires_grad
    assert h.pair_row_scale(z, present).shape == (4, 3, 3)
    total = h.combine({(0, 1): torch.tensor(1.0)}, {0: torch.tensor(2.0)}, w)
    assert total.item() == pytest.approx(1.0 + 2.0 * w[0].item(), rel=1e-5)


def test_random_batch_masks_only_present():
    from bench.modalities import Modality
    spec = tiny_spec()
    b = random_batch(spec, "I,T", batch_size=32, missing=0.5, seed=3)
    rows = b.present[Modality.T]
    assert (~rows).any() and rows.any()
    _, labels = mask_tokens(b.title_ids, b.title_mask, vocab_size=spec.vocab_size, mask_id=spec.mask_id,
                            special_ids=SPECIALS, generator=torch.Generator().manual_seed(0), prob=0.9, rows=rows)
    assert (labels[~rows] == -100).all() and (labels[rows] != -100).any()


def _entity_spans(b, row: int) -> dict[int, dict[int, list[int]]]:
    """entity -> kind (1 key, 2 value) -> token positions, for one listing."""
    spans: dict[int, dict[int, list[int]]] = {}
    for pos, (e, k) in enumerate(zip(b.table_entity[row].tolist(), b.table_kind[row].tolist())):
        if e >= 0 and k > 0:
            spans.setdefault(e, {}).setdefault(k, []).append(pos)
    return spans


@pytest.mark.parametrize("mode", ["both", "key_or_value"])
def test_mem_masks_whole_entities_or_whole_spans(mode):
    """``both`` (the paper's MEM) masks every key *and* value token of a chosen entity together;
    ``key_or_value`` (released code) masks one whole side. Nothing else is masked."""
    spec = tiny_spec(table_len=40)
    b = random_batch(spec, "Tab", batch_size=64, seed=11)
    ids, labels = mask_entities(b.table_ids, b.table_entity, b.table_kind, mask_id=spec.mask_id,
                                generator=torch.Generator().manual_seed(0), prob=0.4, mode=mode,
                                real_mask=b.table_mask)
    chosen = labels != -100
    assert torch.equal(chosen, ids == spec.mask_id)  # every target is [MASK] (no 10 % random / keep)
    assert torch.equal(labels[chosen], b.table_ids[chosen])
    assert not chosen[b.table_kind == 0].any()  # specials and padding never
    n_whole = n_side = 0
    for r in range(b.size):
        for e, sides in _entity_spans(b, r).items():
            state = {k: (bool(chosen[r, pos].all()), bool(chosen[r, pos].any())) for k, pos in sides.items()}
            for all_, any_ in state.values():
                assert all_ == any_  # a span is masked whole or not at all
            masked = {k for k, (all_, _) in state.items() if all_}
            if mode == "both":
                assert masked in (set(), set(sides))  # key and value together
                n_whole += masked == set(sides) and len(sides) == 2
            else:
                assert len(masked) <= 1  # one side only
                n_side += len(masked)
    assert (n_whole if mode == "both" else n_side) > 10


def test_scale_mem_span_both_reaches_the_table_masking():
    from bench.modalities import Modality, ModalitySet
    from scale.model import Scale, ScaleConfig

    spec = tiny_spec(table_len=40)
    torch.manual_seed(0)
    cfg = ScaleConfig.preset("tiny", hidden=32, heads=2, joint_heads=2, clr_dim=16, mem_span="both", mask_prob=0.5)
    model = Scale(cfg, spec, ModalitySet.parse("T,Tab"))
    b = random_batch(spec, "T,Tab", batch_size=32, seed=12)
    inp = model._inputs(b, Modality.Tab, True, torch.Generator().manual_seed(0))
    chosen = inp["labels"][:, :b.table_ids.shape[1]] != -100
    pairs = 0
    for r in range(b.size):
        for sides in _entity_spans(b, r).values():
            flags = {bool(chosen[r, pos].all()) for pos in sides.values() for pos in [pos]}
            assert len(flags) == 1  # key and value of an entity are masked together or not at all
            pairs += flags == {True} and len(sides) == 2
    assert pairs > 0
