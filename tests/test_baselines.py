"""Contract tests every baseline adapter must pass at tiny size (seconds each)."""

from __future__ import annotations

import math

import pytest
import torch

from bench.adapter import Adapter
from bench.registry import create_model, get
from baseline_helpers import MODELS, batch, build, gen, spec

NAMES = list(MODELS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("missing", [False, True], ids=["all-images", "missing-images"])
def test_forward_backward(name: str, missing: bool) -> None:
    model = build(name, dropout=0.1 if missing else 0.0)  # the paper presets train with dropout
    b = batch(name, missing_images=missing)
    out = model.pretrain_step(b, gen())
    assert "loss" in out and out["loss"].dim() == 0
    assert all(torch.isfinite(v).all() for v in out.values()), out
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        e = model.embed(b)
        variants = model.embed_variants(b)
    assert e.shape[0] == b.size and e.dim() == 2 and torch.isfinite(e).all()
    assert torch.allclose(variants["default"], e)
    assert all(torch.isfinite(v).all() and v.shape[0] == b.size for v in variants.values())


@pytest.mark.parametrize("name", NAMES)
def test_loss_decreases_on_fixed_batch(name: str) -> None:
    overrides = {"task_sampling": False} if name == "uniter" else {}
    model = build(name, **overrides)
    b = batch(name, size=12, missing_images=True)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        out = model.pretrain_step(b, gen(1))  # same masks every step: the same objective
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] * 0.95, losses


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_losses(name: str) -> None:
    b = batch(name, missing_images=True)
    a = build(name).pretrain_step(b, gen(3))
    c = build(name).pretrain_step(b, gen(3))
    assert a.keys() == c.keys()
    for k in a:
        assert torch.equal(a[k], c[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name: str, tmp_path) -> None:
    model = build(name)
    b = batch(name, missing_images=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.pretrain_step(b, gen())["loss"].backward()
    opt.step()  # move away from the init so the check is not trivially true
    model.eval()
    model.save_pretrained(tmp_path / "ckpt", note="test")
    info = __import__("json").loads((tmp_path / "ckpt" / "config.json").read_text())
    cls = get(name).load()
    fresh = cls(cls.config_cls.from_dict(info["config"]), spec(), model.modalities)
    fresh.load_weights(tmp_path / "ckpt")
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(model.embed(b), fresh.embed(b))
    assert fresh.config == model.config


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_presets_build(name: str, preset: str) -> None:
    cls = get(name).load()
    cfg = cls.config_cls.preset(preset)
    assert isinstance(cfg, cls.config_cls)
    if preset == "tiny":  # paper-size models are built (and counted) in the report script only
        model = create_model(name, MODELS[name], spec(), preset)
        assert isinstance(model, Adapter)


def test_paper_presets_are_paper_sized() -> None:
    from baselines.capture import CaptureConfig
    from baselines.vilbert import ViLBertConfig

    v = ViLBertConfig.preset("paper")
    assert (v.d, v.text_layers, v.vision_layers, v.coattn_layers) == (768, 12, 6, 6)
    c = CaptureConfig.preset("paper")
    assert (c.text_layers, c.vision_layers, c.coattn_layers, c.cross_layers) == (4, 4, 4, 6)
    for name in ("bert", "vlbert", "visualbert", "uniter"):
        cfg = get(name).load().config_cls.preset("paper")
        assert (cfg.d, cfg.heads, cfg.layers) == (768, 12, 12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_step_and_embed(name: str) -> None:
    """Every tensor an adapter makes follows the batch's device (CUDA generator included)."""
    model = build(name).cuda()
    b = batch(name, missing_images=True).to("cuda")
    out = model.pretrain_step(b, torch.Generator(device="cuda").manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]).item()
    model.eval()
    with torch.no_grad():
        assert model.embed(b).device.type == "cuda"
