"""Parity: the CLIP loss equals open_clip's ClipLoss on the same features (skipped if absent)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

from bench.modalities import Modality  # noqa: E402
from bench.nn.clip_loss import LogitScale, clip_infonce  # noqa: E402
from baseline_helpers import batch, build  # noqa: E402


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_clip_infonce_matches_open_clip(temperature: float) -> None:
    torch.manual_seed(0)
    img, txt = torch.randn(12, 16, requires_grad=True), torch.randn(12, 16, requires_grad=True)
    scale = LogitScale(init_temperature=temperature)()
    mine = clip_infonce(img, txt, scale)
    ref = open_clip.ClipLoss()(F.normalize(img, dim=-1), F.normalize(txt, dim=-1), scale)
    assert torch.allclose(mine, ref, atol=1e-6)
    g_mine = torch.autograd.grad(mine, (img, txt), retain_graph=True)
    g_ref = torch.autograd.grad(ref, (img, txt))
    for a, b in zip(g_mine, g_ref):
        assert torch.allclose(a, b, atol=1e-6)


def test_clip_adapter_loss_matches_open_clip_on_its_tower_outputs() -> None:
    model = build("clip")
    b = batch("clip", size=10, missing_images=True)
    model.eval()
    with torch.no_grad():
        img, txt = model._towers(model.prepare(b))  # eval mode: statistics are not updated
        mine = model.pretrain_step(b)["loss"]
        both = b.present[Modality.I] & b.present[Modality.T]
        ref = open_clip.ClipLoss()(F.normalize(img[both], dim=-1), F.normalize(txt[both], dim=-1),
                                   model.logit_scale())
    assert torch.allclose(mine, ref, atol=1e-6)


def test_logit_scale_clamp_matches_open_clip_training_clamp() -> None:
    import math

    s = LogitScale()
    with torch.no_grad():
        s.log_scale.fill_(7.0)  # past ln(100): open_clip's loop would clamp_(0, ln 100)
    assert torch.allclose(s(), torch.tensor(100.0))
    with torch.no_grad():
        s.log_scale.fill_(-1.0)
    assert torch.allclose(s(), torch.tensor(math.exp(0.0)))
