"""`bench check-adapter` passes for every registered model, and catches a broken adapter."""

from __future__ import annotations

import pytest
import torch

from bench import registry
from bench.check_adapter import check_adapter, check_one, supported_sets
from bench.modalities import ModalitySet


def test_supported_sets_follow_the_registry():
    assert [str(s) for s in supported_sets(registry.get("bert"))] == ["T", "T,Tab"]
    assert [str(s) for s in supported_sets(registry.get("clip"))] == ["I,T"]
    assert len(supported_sets(registry.get("scale"))) == 31


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.names())
def test_every_registered_model_passes(name, mini_catalog):
    rows = check_adapter(name, data="synthetic:mini", steps=2)
    failed = [r for r in rows if not r.ok]
    assert not failed, failed
    assert {r.modalities for r in rows} == {str(s) for s in supported_sets(registry.get(name))}


@pytest.mark.slow
def test_a_broken_adapter_fails_the_check(mini_catalog, monkeypatch):
    from bench.features import build_features

    cls = registry.get("image").load()
    monkeypatch.setattr(cls, "embed", lambda self, batch: torch.full((batch.size, 4), float("nan")))
    store = build_features(mini_catalog, progress=False)
    row = check_one(registry.get("image"), ModalitySet.parse("I"), store, mini_catalog.split_indices("pretrain_subset"))
    assert not row.ok and "finite=False" in row.detail
