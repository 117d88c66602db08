"""Baseline benchmarks: tiny-preset training throughput and parameter counts of the eight baselines.

Run: ``/work/venv/bin/pytest benchmarks/test_bench_baselines.py --benchmark-only -s`` (add
``-m "not slow"`` to skip the paper-preset parameter counts, which build ~100-200M-parameter models).
Threads: ``torch.set_num_threads(THREADS)`` (1 unless ``M5BENCH_BENCH_THREADS`` says otherwise).
Batches follow the default feature store's distribution (``realistic_batch`` of the SCALE benchmark),
so the seconds-per-5000-listings figure compares directly with SCALE's tiny preset.
Reports, never fails on a time.
"""

from __future__ import annotations

import os

import pytest
import torch

from bench.features.batch import FeatureSpec
from bench.nn.layers import num_params
from bench.registry import create_model
from test_bench_scale import REAL_SPEC, optimizer_step, realistic_batch, report

THREADS = int(os.environ.get("M5BENCH_BENCH_THREADS", "1"))
torch.set_num_threads(THREADS)

MODELS = {"bert": "T", "image": "I", "vilbert": "I,T", "clip": "I,T", "vlbert": "I,T", "visualbert": "I,T",
          "uniter": "I,T", "capture": "I,T"}


@pytest.mark.parametrize("name", list(MODELS))
def test_tiny_training_throughput(benchmark, name: str) -> None:
    """Samples/s of one optimizer step (masking, forward, backward, AdamW) at the tiny preset."""
    torch.manual_seed(0)
    model = create_model(name, MODELS[name], REAL_SPEC, "tiny")
    cfg = model.config
    batch = realistic_batch(REAL_SPEC, cfg.batch_size, seed=1)
    step = optimizer_step(model, batch, cfg.lr)
    step()  # warm-up
    benchmark.pedantic(step, rounds=6, iterations=1)
    sps = cfg.batch_size / benchmark.stats.stats.mean
    report(benchmark, f"{name} tiny", {
        "batch_size": cfg.batch_size, "samples_per_s": sps, "params": num_params(model),
        "seconds_for_5000_listings_x_epochs": 5000 * cfg.epochs / sps, "epochs": cfg.epochs})
    assert sps > 0


@pytest.mark.slow
def test_parameter_counts(benchmark) -> None:
    """Parameters at tiny (vocab 4000, 512-d regions) and paper (vocab 21128, 2048-d regions) sizes."""
    specs = {"tiny": FeatureSpec(vocab_size=4000, region_dim=512),
             "paper": FeatureSpec(vocab_size=21128, region_dim=2048)}
    counts: dict[str, int] = {}

    def count():
        for name, mods in MODELS.items():
            for preset, spec in specs.items():
                model = create_model(name, mods, spec, preset)
                counts[f"{name}_{preset}"] = num_params(model)
                del model

    benchmark.pedantic(count, rounds=1, iterations=1)
    report(benchmark, "baseline params", {k: v for k, v in counts.items()})
    assert all(v > 0 for v in counts.values())
