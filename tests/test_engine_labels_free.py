"""Pretraining never sees labels: the batch ``pretrain_step`` receives has no category or product.

The Adapter contract strips them (whoever calls ``pretrain_step``) and the engine's pretraining path
hands adapters the labels-free view; fine-tuning, which needs the categories, keeps them.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from bench.engine import TrainConfig, pretrain
from bench.features.batch import Batch, LabelsHidden, UnlabeledBatch
from bench.testing import random_batch
from test_engine_helpers import SPEC, Factory, TinyAdapter, TinyConfig, labelled_batch


class _PeekingAdapter(TinyAdapter):
    """A throwaway adapter whose pretraining step tries to read the labels."""

    def __init__(self, label: str):
        super().__init__(TinyConfig(mlm=False))
        self.label = label
        self.seen: list[type] = []

    def pretrain_step(self, batch, generator=None):
        self.seen.append(type(batch))
        getattr(batch, self.label)  # supervision the original models do not have
        return super().pretrain_step(batch, generator)


@pytest.mark.parametrize("label", ["category", "product"])
def test_pretrain_step_cannot_read_labels(label: str) -> None:
    model = _PeekingAdapter(label)
    b = labelled_batch(0)
    assert isinstance(b, Batch) and b.category is not None  # the labels exist upstream
    with pytest.raises(LabelsHidden, match=label):
        model.pretrain_step(b, torch.Generator().manual_seed(0))
    assert model.seen == [UnlabeledBatch]


def test_engine_pretraining_hands_adapters_a_labels_free_batch(tmp_path) -> None:
    model = _PeekingAdapter("category")
    with pytest.raises(LabelsHidden):
        pretrain(model, Factory([labelled_batch(i) for i in range(2)]), 2, TrainConfig(epochs=1, log_every=1),
                 tmp_path / "run", progress=False)
    assert model.seen and all(t is UnlabeledBatch for t in model.seen)


def test_labels_free_view_shares_tensors_and_keeps_batch_operations() -> None:
    b = random_batch(SPEC, "I,T", 6, seed=2)
    u = b.without_labels()
    assert type(u) is UnlabeledBatch and not isinstance(u, Batch)
    assert u.title_ids is b.title_ids and u.present is b.present
    assert not hasattr(u, "category") and not hasattr(u, "product")
    # the operations adapters use keep working, and stay labels-free
    for other in (u.to("cpu"), u.select(torch.tensor([0, 2])), replace(u, title_ids=u.title_ids.clone())):
        assert type(other) is UnlabeledBatch
    from bench.features.batch import without_labels
    assert without_labels(u) is u
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        u.nonsense  # noqa: B018 - other missing attributes keep the usual error


def test_every_registered_adapter_pretrains_without_labels() -> None:
    """A real step of each model on a labels-free batch works (no adapter needs a label)."""
    from bench import registry

    for name in registry.names():
        entry = registry.get(name)
        torch.manual_seed(0)
        model = registry.create_model(name, entry.consumes, SPEC, preset="tiny")
        b = random_batch(SPEC, entry.consumes, 6, missing=0.2, seed=4)
        out = model.pretrain_step(b.without_labels(), torch.Generator().manual_seed(0))
        assert torch.isfinite(out["loss"]), name


def test_finetuning_still_sees_labels() -> None:
    """Only pretraining loses labels: the fine-tuning path reads ``batch.category``."""
    from bench.finetune import finetune_classifier

    model = TinyAdapter(TinyConfig(mlm=False))
    train = [labelled_batch(i) for i in range(3)]
    out = finetune_classifier(model, lambda epoch: train, len(train), [labelled_batch(9)],
                              num_classes=SPEC.num_categories, cfg=TrainConfig(epochs=1, log_every=1),
                              progress=False)
    assert len(out["predictions"]) == labelled_batch(9).size
