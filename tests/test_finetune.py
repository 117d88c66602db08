"""The paper's fine-tuned classification head and the embedding step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.console import UserError
from bench.embedding import embed_rows
from bench.engine import TrainConfig
from bench.finetune import finetune_classifier
from test_engine_helpers import SPEC, Factory, labelled_batch, make_model, same_weights, weights

TRAIN = Factory([labelled_batch(i, size=16) for i in range(6)])
TEST = [labelled_batch(1000 + i, size=16) for i in range(3)]
CFG = TrainConfig(epochs=4, lr=3e-3, warmup_ratio=0.1, log_every=1, seed=1)


def test_finetune_learns_separable_classes_and_leaves_model_alone():
    model = make_model()
    before = weights(model)
    out = finetune_classifier(model, TRAIN, len(TRAIN), TEST, SPEC.num_categories, CFG)
    assert same_weights(before, weights(model))  # fine-tuning works on a copy
    n = sum(b.size for b in TEST)
    assert out["num_test"] == n and out["features"].shape == (n, 1024) and out["features"].dtype == np.float32
    assert out["logits"].shape == (n, SPEC.num_categories)
    labels = torch.cat([b.category for b in TEST]).numpy()
    assert np.array_equal(out["labels"], labels)
    assert np.array_equal(out["index"], torch.cat([b.index for b in TEST]).numpy())
    assert out["accuracy"] == pytest.approx(float((out["predictions"] == labels).mean()))
    assert out["accuracy"] >= 0.95, out["accuracy"]  # chance is 0.25
    assert np.isfinite(out["train"]["loss"])


def test_finetune_is_deterministic_and_backbone_lr_matters():
    a = finetune_classifier(make_model(), TRAIN, len(TRAIN), TEST, SPEC.num_categories, CFG)
    b = finetune_classifier(make_model(), TRAIN, None, TEST, SPEC.num_categories, CFG)  # counted steps
    assert np.array_equal(a["features"], b["features"])
    frozen = finetune_classifier(make_model(), TRAIN, len(TRAIN), TEST, SPEC.num_categories, CFG, backbone_lr=0.0)
    assert not np.array_equal(a["features"], frozen["features"])


def test_finetune_rejects_bad_labels():
    with pytest.raises(UserError, match="out of range"):
        finetune_classifier(make_model(), TRAIN, len(TRAIN), TEST, 2, CFG)


def test_embed_rows_order_dtype_mode_and_variants():
    model = make_model()
    model.train()
    vecs = embed_rows(model, TEST)
    assert vecs.shape == (48, 16) and vecs.dtype == np.float32 and model.training
    with torch.no_grad():
        model.eval()
        direct = torch.cat([model.embed(b) for b in TEST]).numpy()
    np.testing.assert_array_equal(vecs, direct)
    # eval mode: dropout off, so a second pass gives the same numbers
    model.train()
    np.testing.assert_array_equal(vecs, embed_rows(model, iter(TEST)))
    var = embed_rows(model, TEST, variants=True)
    assert set(var) == {"default", "sum"} and var["sum"].shape == (48, 16)
    np.testing.assert_array_equal(var["default"], vecs)
    with pytest.raises(ValueError, match="no batches"):
        embed_rows(model, [])


def test_early_stopping_keeps_the_best_held_out_epoch():
    """Held-out accuracy is scored after every epoch; training stops after `patience` epochs
    without improvement and the best epoch's weights are the ones scored."""
    holdout = [labelled_batch(2000 + i, size=16) for i in range(2)]
    cfg = TrainConfig(epochs=6, lr=3e-3, warmup_ratio=0.1, log_every=1, seed=1)
    out = finetune_classifier(make_model(), TRAIN, len(TRAIN), TEST, SPEC.num_categories, cfg,
                              holdout_batches=lambda: holdout, patience=1)
    s = out["schedule"]
    assert s["mode"] == "early_stopping" and s["max_epochs"] == 6
    scores = s["holdout_accuracy"]
    assert len(scores) == s["epochs_run"] <= 6
    assert s["chosen_epoch"] == int(np.argmax(scores)) + 1  # earliest best
    if s["epochs_run"] < 6:  # stopped early: the last epoch did not beat the best
        assert scores[-1] <= max(scores[:-1])
    # same seed, same numbers: early stopping (held-out scoring between epochs) draws no randomness
    again = finetune_classifier(make_model(), TRAIN, len(TRAIN), TEST, SPEC.num_categories, cfg,
                                holdout_batches=lambda: holdout, patience=1)
    assert np.array_equal(out["features"], again["features"])


def test_early_stopping_stops_when_held_out_accuracy_stalls():
    """A held-out set the model cannot improve on (one constant score) stops after 1 + patience epochs."""
    holdout = [labelled_batch(3000, size=16)]
    cfg = TrainConfig(epochs=8, lr=0.0, warmup_ratio=0.0, log_every=1, seed=1)  # lr 0: nothing changes
    out = finetune_classifier(make_model(), TRAIN, len(TRAIN), TEST, SPEC.num_categories, cfg,
                              holdout_batches=lambda: holdout, patience=2)
    s = out["schedule"]
    assert s["epochs_run"] == 3 and s["chosen_epoch"] == 1 and len(set(s["holdout_accuracy"])) == 1


def test_head_input_is_standardised():
    """The head's LayerNorm makes its output independent of the input's scale (up to its epsilon)."""
    from bench.finetune import ClassificationHead

    torch.manual_seed(0)
    head = ClassificationHead(8, 3).eval()
    x = torch.randn(5, 8)
    assert torch.allclose(head(x), head(40.0 * x), atol=1e-4)


def test_finetune_schedule_by_preset_and_override(tmp_path):
    from bench.modalities import ModalitySet
    from bench.pipeline import CellSpec, finetune_schedule, plan_cell

    rows = np.arange(100, 300)
    tiny = plan_cell(CellSpec("bert", ModalitySet.parse("T")), tmp_path)
    epochs, hold = finetune_schedule(tiny, rows)
    assert epochs == 10 and len(hold) == 20 and set(hold) <= set(rows)
    assert np.array_equal(hold, finetune_schedule(tiny, rows)[1])  # seeded
    paper = plan_cell(CellSpec("bert", ModalitySet.parse("T"), preset="paper"), tmp_path)
    assert finetune_schedule(paper, rows) == (10, None)
    fixed = plan_cell(CellSpec("bert", ModalitySet.parse("T"), overrides={"finetune_epochs": 1}), tmp_path)
    assert finetune_schedule(fixed, rows) == (1, None)


def test_head_only_finetuning_keeps_the_backbone_frozen():
    """finetune=head: the backbone runs in eval mode without gradients; only the head learns."""
    model = make_model()
    seen = []
    original = type(model).classification_features

    def spy(self, batch):
        seen.append((torch.is_grad_enabled(), self.training))
        return original(self, batch)

    model.classification_features = spy.__get__(model)
    out = finetune_classifier(model, TRAIN, len(TRAIN), TEST, SPEC.num_categories, CFG, freeze_backbone=True)
    assert seen and not any(grad or training for grad, training in seen)
    assert out["accuracy"] >= 0.9, out["accuracy"]  # the head alone separates the classes (chance 0.25)
    full = finetune_classifier(make_model(), TRAIN, len(TRAIN), TEST, SPEC.num_categories, CFG)
    assert not np.array_equal(out["features"], full["features"])
