"""Every extension point uses one registry class: strict duplicates, close-match errors, lazy entries."""

from __future__ import annotations

import pytest

from bench.data import sources
from bench.data.errors import CatalogError
from bench.eval import metrics, tasks
from bench.registries import Registry, RegistryError, load_target


def test_registry_refuses_duplicates_and_suggests_the_closest_name():
    reg: Registry[str] = Registry("widget")
    reg.add("sprocket", "a")
    with pytest.raises(RegistryError, match="widget 'sprocket' is already registered"):
        reg.add("sprocket", "b")
    with pytest.raises(RegistryError, match="unknown widget 'sprocet'. Did you mean 'sprocket'"):
        reg.lookup("sprocet")
    assert reg.lookup("sprocket") == "a" and reg.remove("sprocket") == "a" and not reg


def test_load_target_imports_on_use():
    assert load_target("bench.eval.retrieval_families:pml").__name__ == "pml"
    assert load_target("bench.data.sources:ManifestSource")().slug("/x/shop.csv") == "shop"


def test_every_registry_is_strict():
    with pytest.raises(RegistryError, match="already registered"):
        sources.register("manifest", "bench.data.sources:ManifestSource", summary="again")
    with pytest.raises(RegistryError, match="already registered"):
        metrics.register("pml", r"\[pml\]$", definition="again")
    with pytest.raises(RegistryError, match="already registered"):
        tasks.register("retrieval", "bench.eval.suite:retrieval_task", summary="again")
    with pytest.raises(CatalogError, match="Did you mean 'manifest'"):
        sources.parse_source("manifst:/tmp/x.csv")
    with pytest.raises(ValueError, match="unknown evaluation task.*clusterin.*Did you mean 'clustering'"):
        tasks.check_names(["retrieval", "clusterin"])


def test_metric_names_map_to_their_family_and_direction():
    expect = {"coarse/mAP@10[m5product/cos]": "m5product", "fine/mAP@R[pml]": "pml", "coarse/Recall@5[cos]": "Recall@K",
              "coarse/Prec@1[std]": "std", "coarse/mAP@5[min_k_r]": "min_k_r",
              "xmodal/T->I/instance/Recall@1[cos]": "crossmodal", "cls/accuracy[linear_probe]": "linear_probe",
              "cls/accuracy[finetuned_head]": "finetuned_head", "cls/accuracy[finetune]": "finetuned_head",
              "cluster/NMI": "clustering", "cluster/purity_std": "clustering_spread"}
    for name, family in expect.items():
        assert metrics.family_of(name).name == family, name
        assert metrics.higher_is_better(name)
    assert metrics.family_of("cluster/NMI").higher_is_better and metrics.family_of("cluster/NMI_std").higher_is_better is None
