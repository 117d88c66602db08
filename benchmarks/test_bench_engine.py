"""Training-engine overhead: ``bench.engine.pretrain`` against a bare PyTorch loop on the same model.

pytest-benchmark; reports, never fails on a time. The bare loop is forward + backward + gradient
clipping + AdamW + LR schedule and nothing else; the engine adds accelerate, per-step seeding, the
NaN guard (one device sync per batch), the JSONL log, one checkpoint per epoch and the progress
bookkeeping. Two step sizes: ``tiny`` (dim 16: the engine's fixed cost per step dominates) and
``small`` (a 2-layer transformer, d=128, batch 32: a step with real work). Both runs are interleaved
in the same process; the ratio engine/bare goes to ``extra_info`` and stdout (target <= 1.15 on
``small``). Threads: ``M5BENCH_BENCH_THREADS`` (default 1). The machine is shared: numbers carry
the load average.

Run: ``/work/venv/bin/pytest benchmarks/test_bench_engine.py -s``
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_engine_helpers import Factory, TinyAdapter, TinyConfig, labelled_batch  # noqa: E402

from bench.engine import TrainConfig, param_groups, pretrain  # noqa: E402

THREADS = int(os.environ.get("M5BENCH_BENCH_THREADS", "1"))
STEPS = 40


class SmallAdapter(TinyAdapter):
    """TinyAdapter with a 2-layer transformer over the title (a step with some real compute)."""

    def __init__(self, config):
        super().__init__(config)
        layer = nn.TransformerEncoderLayer(config.dim, 4, 4 * config.dim, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def pooled(self, ids, mask):
        h = self.enc(self.tok(ids), src_key_padding_mask=~mask) * mask[..., None]
        return self.norm(h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1))


def _bare(model, batches, cfg: TrainConfig) -> None:
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.lr), lr=cfg.lr, eps=cfg.adam_eps)
    sched = get_linear_schedule_with_warmup(opt, 4, STEPS)
    model.train()
    g = torch.Generator()
    for b in batches:
        loss = model.pretrain_step(b, g)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_engine_overhead(benchmark, size):
    torch.set_num_threads(THREADS)
    bs, dim = (8, 16) if size == "tiny" else (32, 128)
    batches = [labelled_batch(i, size=bs) for i in range(STEPS // 2)]
    cls = TinyAdapter if size == "tiny" else SmallAdapter
    cfg = TrainConfig(epochs=2, lr=1e-3, log_every=1, mixed_precision="no")
    times = {"engine": [], "bare": []}

    def one_round():
        torch.manual_seed(0)
        m = cls(TinyConfig(dim=dim))
        t = time.perf_counter()
        _bare(m, batches + batches, cfg)
        times["bare"].append(time.perf_counter() - t)
        torch.manual_seed(0)
        m = cls(TinyConfig(dim=dim))
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            pretrain(m, Factory(batches), len(batches), cfg, d, progress=False)
            times["engine"].append(time.perf_counter() - t)

    benchmark.pedantic(one_round, rounds=3, iterations=1, warmup_rounds=1)
    eng, bare = min(times["engine"]), min(times["bare"])
    info = {"threads": THREADS, "steps": STEPS, "engine_ms_per_step": 1e3 * eng / STEPS,
            "bare_ms_per_step": 1e3 * bare / STEPS, "ratio": eng / bare,
            "overhead_ms_per_step": 1e3 * (eng - bare) / STEPS, "loadavg": os.getloadavg()[0]}
    benchmark.extra_info.update(info)
    print(f"\n[{size}] " + " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()))
