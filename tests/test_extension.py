"""Adding a model, a data source and a metric is one new module each plus one registry call: no
edit anywhere else. Throwaway ones, written to a temporary folder, appear in ``bench ls``, in the
result of a real run, and in the tables."""

from __future__ import annotations

import json
import textwrap

import pytest
from cli_helpers import cli

from bench import registry
from bench.data import sources
from bench.eval import metrics

MODEL = '''
from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from bench.adapter import Adapter, AdapterConfig


@dataclass
class BagConfig(AdapterConfig):
    dim: int = 16
    epochs: int = 1
    batch_size: int = 16


class BagOfWords(Adapter):
    """Mean of the title's token embeddings; pretrained to predict the title's first word."""

    config_cls = BagConfig
    retrieval_vector = "mean of the title's token embeddings"

    def __init__(self, config, spec, modalities):
        super().__init__(config, spec, modalities)
        self.tok = nn.Embedding(spec.vocab_size, config.dim)
        self.out = nn.Linear(config.dim, spec.vocab_size)

    def embed(self, batch):
        mask = batch.title_mask[..., None].float()
        return (self.tok(batch.title_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)

    def pretrain_step(self, batch, generator=None):
        loss = F.cross_entropy(self.out(self.embed(batch)), batch.title_ids[:, 1])
        return {"loss": loss, "first_word": loss.detach()}
'''

SOURCE = '''
from pathlib import Path

from bench.data.loaders import new_record
from bench.data.sources import Source, SourceRead

WORDS = ["red", "blue", "cotton", "steel", "phone", "shoe", "lamp", "cup", "bag", "desk", "pen", "hat"]


class GeneratedShop(Source):
    """N text-only listings in 4 categories, 3 listings per product (``shop:N``)."""

    usage = "N"

    def read(self, arg, skips, opts):
        records = []
        for i in range(int(arg)):
            c = i % 4
            title = " ".join(WORDS[(3 * c + j + i // 4) % len(WORDS)] for j in range(4))
            rec = new_record(f"s{i}")
            rec.update(product_id=f"p{i // 12}-{c}", category=f"cat{c}", title=title)
            records.append(rec)
        return SourceRead(records, {"files": {}}, f"shop:{arg}", Path(__file__).parent, opts.split_seed or 0)
'''

METRIC = '''
import torch


def first_hit(block, ks, put):
    """Rank of the first positive in the ranked list (width + 1 when none is listed)."""
    width = block.rel.shape[1]
    rank = torch.where(block.rel.any(dim=1), block.rel.double().argmax(dim=1) + 1.0, float(width + 1))
    put("FirstHit[first_hit]", torch.where(block.positive, rank, torch.nan).numpy())
    return {}
'''


@pytest.fixture()
def plugins(tmp_path, monkeypatch):
    """The three modules on sys.path and their one registry call each; taken out afterwards."""
    for name, text in (("throwaway_model", MODEL), ("throwaway_source", SOURCE), ("throwaway_metric", METRIC)):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.register("bagofwords", "throwaway_model:BagOfWords", "T", "T", paper_name="BagOfWords",
                      summary="throwaway: mean of word embeddings")
    sources.register("shop", "throwaway_source:GeneratedShop", summary="throwaway: generated listings")
    metrics.register("first_hit", r"\[first_hit(/cos)?\]$", higher_is_better=False, target="throwaway_metric:first_hit",
                     fixed=("FirstHit[first_hit]",), definition="rank of the first positive; lower is better")
    yield tmp_path
    registry._REGISTRY.remove("bagofwords")
    sources.SOURCES.remove("shop")
    metrics.FAMILIES.remove("first_hit")


def test_registered_plugins_are_listed_and_used(plugins, capsys):
    import numpy as np

    from bench.data import load_catalog
    from bench.eval.retrieval import retrieval_metrics

    for what, name in (("models", "bagofwords"), ("sources", "shop"), ("metrics", "first_hit")):
        rc, out, _err = cli(["ls", what], capsys)
        assert rc == 0 and name in out, (what, out)
    cat = load_catalog("shop:120", progress=False)
    assert cat.source == "shop:120" and len(cat.dataset) == 120
    labels = np.array([0, 0, 1, 1])
    res = retrieval_metrics(np.eye(4)[[0, 0, 1, 1]] + 0.1, np.eye(4)[[0, 0, 1, 1]], {"c": (labels, labels)},
                            query_gallery_index=np.arange(4))
    assert res.metrics["c/FirstHit[first_hit]"] == 1.0 and "first_hit" in res.definitions


@pytest.mark.slow
def test_a_new_model_source_and_metric_reach_results_and_tables(plugins, capsys):
    results = plugins / "results"
    rc, out, err = cli(["run", "--model", "bagofwords", "--modalities", "T", "--data", "shop:480",
                        "--results", str(results)], capsys)
    assert rc == 0, out + err
    (path,) = results.glob("*.json")
    res = json.loads(path.read_text())
    assert res["cell"]["model"] == "bagofwords" and res["data"]["source"] == "shop:480"
    pre = res["metrics"]["pretrain"]
    for key in ("coarse/FirstHit[first_hit]", "coarse/FirstHit[first_hit/cos]", "fine/FirstHit[first_hit]"):
        assert pre[key] >= 1.0, key  # a rank
    assert res["definitions"]["first_hit"].startswith("rank of the first positive")
    assert pre["coarse/mAP@1[m5product]"] >= 0  # the built-in families are still there

    # tables: the model gets a row of the baselines table, the metric a column of the export
    rc, out, err = cli(["table", "--table", "baselines", "--results", str(results), "--stdout", "--no-paper"], capsys)
    assert rc == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| BagOfWords")]
    assert len(rows) == 2 and any(ch.isdigit() for ch in rows[1]), rows  # subset (not run), whole dataset
    from bench.tables import get_table  # the controls table follows the same rows

    assert "bagofwords" in [s.key for s in get_table("controls").sections]
    dest = plugins / "all.csv"
    rc, out, err = cli(["results", "export", "--results", str(results), "--out", str(dest)], capsys)
    assert rc == 0, err
    assert "pretrain/coarse/FirstHit[first_hit/cos]" in dest.read_text().splitlines()[0]


def test_a_lower_is_better_metric_is_judged_that_way(plugins):
    from bench.check import _status
    from bench.eval.metrics import higher_is_better

    assert not higher_is_better("coarse/FirstHit[first_hit/cos]") and higher_is_better("coarse/mAP@1[m5product]")
    assert _status("coarse/FirstHit[first_hit]", 2.0, 3.0, 0.5, None, 0.0) == "REGRESSION"
    assert _status("coarse/FirstHit[first_hit]", 2.0, 1.0, 0.5, None, 0.0) == "improved"
    assert _status("coarse/mAP@1[m5product]", 0.5, 0.3, 0.1, None, 0.0) == "REGRESSION"
