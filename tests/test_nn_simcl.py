"""SIMCL as the paper states it: learned match scores S' = S * softmax(S) scale the logits inside
each contrastive and masked loss ("learned" mode), with hand-computed small examples."""

from __future__ import annotations

import math

import pytest
import torch

from bench.nn.harmonize import Harmonizer
from bench.nn.losses import nt_xent
from bench.testing import random_batch, tiny_spec
from scale.model import Scale, ScaleConfig

SPEC = tiny_spec()


def test_logit_scales_hand_computed() -> None:
    h = Harmonizer(["I", "T"], "learned")  # K = 3 terms: (I,I), (I,T), (T,T)
    with torch.no_grad():
        h.S.copy_(torch.tensor([[1.0, 2.0], [5.0, 0.0]]))  # S[1, 0] is below the diagonal: unused
    e1, e2 = math.e, math.e ** 2
    z = e1 + e2 + 1.0  # softmax over the K used entries (1, 2, 0)
    s_ii, s_it, s_tt = 1.0 * e1 / z, 2.0 * e2 / z, 0.0  # S' = S * softmax(S)
    assert s_ii == pytest.approx(0.2447285, abs=1e-6) and s_it == pytest.approx(1.3304820, abs=1e-6)
    expected = torch.tensor([[1.0 + s_ii, 1.0 + s_it], [0.0, 1.0 + s_tt]])  # offset 1 + S'
    assert torch.allclose(h.match_scores(), torch.tensor([[s_ii, s_it], [0.0, s_tt]]), atol=1e-6)
    assert torch.allclose(h.logit_scales(), expected, atol=1e-6)
    # bounded: a huge S cannot scale the logits past max_scale, nor below 0
    with torch.no_grad():
        h.S.fill_(100.0)
    assert float(h.logit_scales().detach().max()) == pytest.approx(h.max_scale)
    with torch.no_grad():
        h.S.copy_(torch.tensor([[-50.0, 3.0], [0.0, 3.0]]))
    assert float(h.logit_scales().detach().min()) >= 0.0
    # in learned mode the losses are not weighted: the harmonisation sits inside them
    assert h.combine({(0, 1): torch.tensor(2.0)}, {0: torch.tensor(3.0)}).item() == pytest.approx(5.0)
    assert h.regularizer() is None


def test_nt_xent_with_scaled_logits_hand_computed() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # rows (a0, a1, b0, b1) = (e1, e2, e1, e2): each row's positive has cosine 1, its 2 negatives 0
    for m, expected in ((2.0, -math.log(math.e ** 2 / (math.e ** 2 + 2))),
                        (1.0, -math.log(math.e / (math.e + 2))),
                        (0.0, math.log(3.0))):  # scale 0: every logit 0, the loss is log(2n - 1)
        got = nt_xent(a, a.clone(), 1.0, row_scale=torch.full((2,), m))
        assert got.item() == pytest.approx(expected, abs=1e-6), m


def _scale(**kw) -> Scale:
    torch.manual_seed(0)
    cfg = ScaleConfig.preset("tiny", hidden=32, heads=2, joint_heads=2, clr_dim=16, joint_layers=1, **kw)
    from bench.modalities import ModalitySet
    return Scale(cfg, SPEC, ModalitySet.parse("I,T,Tab"))


def _losses(model: Scale, batch) -> dict[str, float]:
    out = model.pretrain_step(batch, torch.Generator().manual_seed(0))
    return {k: float(v.detach()) for k, v in out.items()}


def test_scale_learned_mode_scales_each_terms_logits() -> None:
    batch = random_batch(SPEC, "I,T,Tab", batch_size=8, seed=2)
    learned, uniform = _scale(harmonize="learned"), _scale(harmonize="uniform")
    assert learned.config.harmonize == "learned" == ScaleConfig().harmonize  # the default
    base = _losses(learned, batch)
    assert base == pytest.approx(_losses(uniform, batch), rel=1e-6)  # S = 0: exactly the unharmonised loss
    order = [m.value for m in learned.order]
    i, t = order.index("I"), order.index("T")
    pair = f"simcl/{order[min(i, t)]}-{order[max(i, t)]}"
    with torch.no_grad():
        learned.harmonizer.S[min(i, t), max(i, t)] = 3.0  # only this pair's scale moves off 1
    moved = _losses(learned, batch)
    assert moved[pair] != pytest.approx(base[pair], rel=1e-3)  # this pair's logits are scaled
    for k in base:
        if k.startswith("simcl/") and k != pair or k in ("mlm", "mem", "mrp"):
            assert moved[k] == pytest.approx(base[k], rel=1e-6), k
    with torch.no_grad():
        learned.harmonizer.S.zero_()
        learned.harmonizer.S[i, i] = 3.0  # the image's masked task: its predicted features are scaled
    scaled = _losses(learned, batch)
    assert scaled["mrp"] != pytest.approx(base["mrp"], rel=1e-3)
    assert scaled["mlm"] == pytest.approx(base["mlm"], rel=1e-6)
    state = learned.extra_state()["harmonize"]
    assert state["mode"] == "learned" and "logit_scales" in state and state["logit_scales"]["I"] > 1.0


def test_literal_offset_zero_is_refused() -> None:
    """Read literally, a zero S scales every logit to 0: nothing could learn (module docstring)."""
    with pytest.raises(ValueError, match="offset"):
        Harmonizer(["I", "T"], "learned", offset=0.0)
    h = Harmonizer(["I", "T"], "learned", offset=0.5)
    assert torch.allclose(h.logit_scales(), torch.tensor([[0.5, 0.5], [0.0, 0.5]]))


def test_old_mode_names_still_work_or_fail_clearly() -> None:
    for mode in ("learned", "loss_weights", "feature", "uniform"):
        Harmonizer(["I", "T"], mode)
    with pytest.raises(ValueError, match="loss_weights"):
        Harmonizer(["I", "T"], "loss_weight")
    with pytest.raises(ValueError, match="harmonize"):
        ScaleConfig(harmonize="simcl")
