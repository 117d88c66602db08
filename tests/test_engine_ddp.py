"""Two-process DDP (gloo on CPU) through the same engine: equals one process on the double batch,
and an interrupted-then-resumed DDP run equals an uninterrupted one. Slow: starts torchrun twice.

Run as a script under torchrun, this file is the worker (see ``_worker``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from test_engine_helpers import Factory, labelled_batch, make_model, weights  # noqa: E402

CFG = dict(epochs=2, lr=1e-2, warmup_ratio=0.0, log_every=1)


class InOrder(Factory):
    def __call__(self, epoch):
        return list(self.batches)


def _big():
    return [labelled_batch(100 + i, size=8) for i in range(4)]


def _worker(out: str, mode: str) -> None:
    from accelerate import PartialState

    from bench.engine import TrainConfig, pretrain

    torch.set_num_threads(1)
    PartialState(cpu=True)
    halves = [h for b in _big() for h in (b.select(torch.arange(0, 4)), b.select(torch.arange(4, 8)))]

    def stop(log):
        if mode == "cut" and log["step"] == 3:  # mid epoch 0 (4 steps per epoch on 2 processes)
            raise KeyboardInterrupt

    try:
        pretrain(make_model(seed=0 if mode != "resume" else 5, dropout=0.0, mlm=False), InOrder(halves), 8,
                 TrainConfig(**CFG), out, progress=False, resume=mode == "resume", callback=stop)
    except KeyboardInterrupt:
        pass


def _torchrun(tmp: Path, out: Path, mode: str) -> None:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__)), str(out), mode]
    # own session, so a hung run's workers can be killed with the launcher
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp,
                            start_new_session=True)
    try:
        out_text, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, out_text[-4000:]


@pytest.mark.slow
def test_ddp_matches_single_process_and_resumes(tmp_path):
    from bench.engine import TrainConfig, load_checkpoint, pretrain

    ref = make_model(dropout=0.0, mlm=False)
    pretrain(ref, InOrder(_big()), 4, TrainConfig(**CFG), tmp_path / "ref", progress=False)

    _torchrun(tmp_path, tmp_path / "ddp", "full")
    state = json.loads((tmp_path / "ddp" / "checkpoint" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["global_step"] == 8
    ddp = make_model(seed=1, dropout=0.0, mlm=False)
    load_checkpoint(ddp, tmp_path / "ddp")
    for k, v in weights(ref).items():
        torch.testing.assert_close(weights(ddp)[k], v, atol=2e-6, rtol=1e-5)

    _torchrun(tmp_path, tmp_path / "cut", "cut")
    assert json.loads((tmp_path / "cut" / "checkpoint" / "trainer_state.json").read_text())["global_step"] == 3
    _torchrun(tmp_path, tmp_path / "cut", "resume")
    a = (tmp_path / "ddp" / "checkpoint" / "model.safetensors").read_bytes()
    b = (tmp_path / "cut" / "checkpoint" / "model.safetensors").read_bytes()
    assert a == b
    assert (tmp_path / "ddp" / "train_log.jsonl").read_text() == (tmp_path / "cut" / "train_log.jsonl").read_text()
    shutil.rmtree(tmp_path / "cut")


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
