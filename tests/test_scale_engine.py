"""SCALE driven by the harness engine (bench.engine.pretrain) on random batches: checkpoints with the
tied LM head and the learned S load back, and the run is deterministic."""

from __future__ import annotations

import torch

from bench.engine import TrainConfig, load_checkpoint, pretrain
from bench.modalities import ModalitySet
from bench.testing import random_batch, tiny_spec
from scale.model import Scale, ScaleConfig

SPEC = tiny_spec()
FIVE = ModalitySet.parse("I,T,Tab,V,A")


def _model(seed: int = 0) -> Scale:
    torch.manual_seed(seed)
    cfg = ScaleConfig.preset("tiny", hidden=32, heads=2, joint_heads=2, clr_dim=16, joint_layers=1)
    return Scale(cfg, SPEC, FIVE)


def _factory(epoch: int):
    return [random_batch(SPEC, FIVE, 8, missing=0.3, seed=100 * epoch + i) for i in range(3)]


def test_engine_pretrains_scale_and_checkpoint_loads(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=8, lr=5e-3, mixed_precision="no", log_every=1, seed=0)
    model = _model()
    res = pretrain(model, _factory, 3, cfg, tmp_path / "run", progress=False)
    assert res.global_step == 6
    assert any(abs(float(x)) > 0 for x in model.harmonizer.S.detach().flatten())
    loaded = _model(seed=1)
    load_checkpoint(loaded, tmp_path / "run")
    batch = random_batch(SPEC, FIVE, 5, missing=0.3, seed=7)
    assert torch.equal(loaded.harmonizer.S, model.harmonizer.S)
    assert torch.allclose(loaded.embed(batch), model.embed(batch))
    # same seed, same run
    again = _model()
    pretrain(again, _factory, 3, cfg, tmp_path / "run2", progress=False)
    assert torch.equal(again.embed(batch), model.embed(batch))
