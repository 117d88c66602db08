"""The training engine: convergence, determinism, resume, divergence guard, accumulation, checkpoints."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from bench.console import UserError
from bench.engine import (TrainConfig, TrainingDiverged, TrainingInterrupted, find_checkpoint, load_checkpoint,
                          param_groups, pretrain)
from test_engine_helpers import Factory, labelled_batch, make_model, same_weights, weights

DATA = Factory([labelled_batch(i) for i in range(5)])
CFG = dict(epochs=3, lr=1e-2, log_every=1, grad_accum=2, warmup_ratio=0.2)


def _run(tmp_path, name, model=None, cfg=None, **kw):
    model = model or make_model()
    result = pretrain(model, DATA, len(DATA), TrainConfig(**(cfg or CFG)), tmp_path / name, progress=False, **kw)
    return model, result


def _log(result):
    return [json.loads(line) for line in result.log_path.read_text().splitlines()]


def test_loss_decreases(tmp_path):
    _, r = _run(tmp_path, "a", cfg=dict(epochs=12, lr=2e-2, log_every=1, warmup_ratio=0.0))
    log = _log(r)
    assert len(log) == 12 * 5 and log[-1]["step"] == r.global_step == r.total_steps
    first = sum(x["loss"] for x in log[:5]) / 5
    last = sum(x["loss"] for x in log[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert {"cat", "mlm", "lr", "grad_norm", "epoch", "extra_state"} <= set(log[0])


def test_same_seed_same_weights_and_different_seed_differs(tmp_path):
    a, ra = _run(tmp_path, "a")
    b, rb = _run(tmp_path, "b")
    c, _ = _run(tmp_path, "c", cfg={**CFG, "seed": 7})
    assert same_weights(weights(a), weights(b))
    assert _log(ra) == _log(rb)
    assert not same_weights(weights(a), weights(c))  # the seed reaches masking and dropout


class _StopAt:
    def __init__(self, step, exc=KeyboardInterrupt):
        self.step, self.exc = step, exc

    def __call__(self, log):
        if log["step"] == self.step:
            raise self.exc()


@pytest.mark.parametrize("stop_step", [4, 5])  # 3 steps per epoch (2+2+1 batches): mid-epoch 1
def test_resume_after_interrupt_matches_uninterrupted(tmp_path, stop_step):
    full, rf = _run(tmp_path, "full")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "cut", callback=_StopAt(stop_step))
    state = json.loads((tmp_path / "cut" / "checkpoint" / "trainer_state.json").read_text())
    assert state["global_step"] == stop_step and state["reason"] == "interrupt" and state["epoch"] == 1
    resumed, rr = _run(tmp_path, "cut", model=make_model(seed=123), resume=True)
    assert rr.resumed_from_step == stop_step and rr.global_step == rf.global_step
    assert same_weights(weights(full), weights(resumed))
    assert _log(rr) == _log(rf)  # the log of the resumed run has no duplicated or missing steps


def test_interrupt_inside_accumulation_window_replays_it(tmp_path):
    full, _ = _run(tmp_path, "full")

    class Breaking(Factory):
        def __call__(self, epoch):
            for i, b in enumerate(super().__call__(epoch)):
                # fetching batch 4 (one-batch look-ahead) comes after batch 2 went through forward and
                # backward: the accumulation window (2, 3) is half done when the interrupt lands
                if epoch == 1 and i == 4:
                    raise KeyboardInterrupt
                yield b

    with pytest.raises(KeyboardInterrupt):
        pretrain(make_model(), Breaking(DATA.batches), 5, TrainConfig(**CFG), tmp_path / "cut", progress=False)
    state = json.loads((tmp_path / "cut" / "checkpoint" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batches_in_epoch"], state["global_step"]) == (1, 2, 4)
    resumed, _ = _run(tmp_path, "cut", model=make_model(seed=9), resume=True)
    assert same_weights(weights(full), weights(resumed))


def test_sigterm_saves_and_reraises(tmp_path):
    full, _ = _run(tmp_path, "full")

    def term(log):
        if log["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match="SIGTERM"):
        _run(tmp_path, "cut", callback=term)
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored
    state = json.loads((tmp_path / "cut" / "checkpoint" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    resumed, _ = _run(tmp_path, "cut", model=make_model(seed=5), resume=True)
    assert same_weights(weights(full), weights(resumed))


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = {**CFG, "grad_accum": 1}
    model = make_model(nan_at=8)  # epoch 1 (5 batches per epoch), its third batch
    with pytest.raises(TrainingDiverged) as e:
        _run(tmp_path, "nan", model=model, cfg=cfg)
    msg = str(e.value)
    assert "step 8" in msg and "epoch 1" in msg and "cat=nan" in msg and "mlm=" in msg and "checkpoint" in msg
    assert isinstance(e.value, UserError)
    ckpt = find_checkpoint(tmp_path / "nan")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert (state["epoch"], state["global_step"], state["reason"]) == (1, 5, "epoch")
    saved = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values())
    # the kept checkpoint is the model after exactly one good epoch
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "ref", cfg=cfg, callback=_StopAt(5))
    assert same_weights(saved, load_file(str(tmp_path / "ref" / "checkpoint" / "model.safetensors")))
    assert not (tmp_path / "nan" / ".checkpoint.tmp").exists()


def test_grad_accumulation_equals_larger_batch(tmp_path):
    big = [labelled_batch(100 + i, size=8) for i in range(4)]
    halves = [h for b in big for h in (b.select(torch.arange(0, 4)), b.select(torch.arange(4, 8)))]

    class InOrder(Factory):  # keep pairs together: no shuffling
        def __call__(self, epoch):
            return list(self.batches)

    cfg = dict(epochs=2, lr=1e-2, warmup_ratio=0.0, log_every=1)
    a = make_model(dropout=0.0, mlm=False)
    b = make_model(dropout=0.0, mlm=False)
    ra = pretrain(a, InOrder(big), 4, TrainConfig(**cfg, grad_accum=1), tmp_path / "a", progress=False)
    rb = pretrain(b, InOrder(halves), 8, TrainConfig(**cfg, grad_accum=2), tmp_path / "b", progress=False)
    assert rb.global_step == 8 and rb.micro_steps == 16
    wa, wb = weights(a), weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=2e-6, rtol=1e-5)
    assert not same_weights(wa, weights(make_model(dropout=0.0, mlm=False)))  # it did train
    # the logged step values (mean loss of the window, gradient norm before clipping) agree too
    for la, lb in zip(_log(ra), _log(rb)):
        assert la["loss"] == pytest.approx(lb["loss"], rel=1e-5)
        assert la["grad_norm"] == pytest.approx(lb["grad_norm"], rel=1e-4)


def test_checkpoint_contents_and_reload(tmp_path):
    model, r = _run(tmp_path, "a")
    ckpt = r.checkpoint_dir
    assert ckpt == tmp_path / "a" / "checkpoint"
    names = {p.name for p in ckpt.iterdir()}
    assert {"model.safetensors", "config.json", "optimizer.pt", "scheduler.pt", "rng_state_0.pt",
            "trainer_state.json"} <= names
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["config"]["dim"] == 16 and cfg["modalities"] == "T" and cfg["global_step"] == r.global_step
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["finished"] and state["config"]["lr"] == CFG["lr"]
    fresh = make_model(seed=77)
    load_checkpoint(fresh, tmp_path / "a")
    assert same_weights(weights(model), weights(fresh))
    # a finished run resumed returns at once with the same state
    again, r2 = _run(tmp_path, "a", model=make_model(seed=3), resume=True)
    assert r2.global_step == r.global_step and same_weights(weights(model), weights(again))


def test_refuses_to_clobber_or_resume_with_other_settings(tmp_path):
    _run(tmp_path, "a", cfg={**CFG, "epochs": 1})
    with pytest.raises(UserError, match="already holds a checkpoint"):
        _run(tmp_path, "a", cfg={**CFG, "epochs": 1})
    with pytest.raises(UserError, match="lr"):
        _run(tmp_path, "a", cfg={**CFG, "epochs": 1, "lr": 0.5}, resume=True)


def test_param_groups_skip_decay_on_bias_and_norm():
    model = make_model()
    groups = param_groups(model, weight_decay=0.01, lr=1e-3)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.tok.weight) in decayed and id(model.mlm_head.weight) in decayed
    assert id(model.norm.weight) not in decayed and id(model.mlm_head.bias) not in decayed
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_config_validation():
    with pytest.raises(UserError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(UserError, match="grad_accum"):
        TrainConfig(grad_accum=0)


def test_precision_switches_within_one_process(tmp_path):
    # bf16 autocast runs on CPU; accelerate's process-wide state must accept a new precision after it
    _, rb = _run(tmp_path, "bf16", cfg={**CFG, "epochs": 1, "mixed_precision": "bf16"})
    assert rb.mixed_precision == "bf16" and all(map(lambda x: x["loss"] == x["loss"], _log(rb)))
    _, rn = _run(tmp_path, "fp32", cfg={**CFG, "epochs": 1, "mixed_precision": "no"})
    assert rn.mixed_precision == "no"
    if not torch.cuda.is_available():
        _, ra = _run(tmp_path, "auto", cfg={**CFG, "epochs": 1})
        assert ra.mixed_precision == "no"
        _, rf = _run(tmp_path, "fp16", cfg={**CFG, "epochs": 1, "mixed_precision": "fp16"})
        assert rf.mixed_precision == "no"  # no fp16 without CUDA: falls back with a warning
    assert _log(rb)[0]["loss"] != _log(rn)[0]["loss"]  # bf16 really was in effect


def test_crash_between_checkpoint_renames_is_recovered(tmp_path):
    full, rf = _run(tmp_path, "full")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "cut", callback=_StopAt(4))
    ckpt = tmp_path / "cut" / "checkpoint"
    ckpt.rename(ckpt.with_name("checkpoint.old"))  # as if killed after the old one stepped aside
    assert find_checkpoint(tmp_path / "cut") == ckpt.with_name("checkpoint.old")
    resumed, rr = _run(tmp_path, "cut", model=make_model(seed=4), resume=True)
    assert rr.resumed_from_step == 4 and same_weights(weights(full), weights(resumed))
    assert not ckpt.with_name("checkpoint.old").exists() and find_checkpoint(tmp_path / "cut") == ckpt


def test_fresh_run_after_divergence_starts_a_clean_log(tmp_path):
    with pytest.raises(TrainingDiverged):
        _run(tmp_path, "a", model=make_model(nan_at=3), cfg={**CFG, "grad_accum": 1})
    assert (tmp_path / "a" / "train_log.jsonl").read_text()  # two good steps were logged
    assert find_checkpoint(tmp_path / "a") is None  # diverged inside the first epoch: nothing saved
    _, r = _run(tmp_path, "a", cfg={**CFG, "grad_accum": 1}, resume=True)
    steps = [x["step"] for x in _log(r)]
    assert steps == list(range(1, r.global_step + 1))


def test_max_steps_caps_the_schedule_and_progress_bar_runs(tmp_path, capsys):
    gen_factory = lambda epoch: iter(DATA(epoch))  # noqa: E731 - a plain iterator: steps are counted
    r = pretrain(make_model(), gen_factory, None, TrainConfig(**{**CFG, "max_steps": 4}), tmp_path / "a",
                 progress=True)
    assert (r.global_step, r.total_steps, r.epochs_completed, r.micro_steps) == (4, 4, 1, 7)
    log = _log(r)
    assert log[-1]["lr"] == 0.0 and [x["step"] for x in log] == [1, 2, 3, 4]
    state = json.loads((r.checkpoint_dir / "trainer_state.json").read_text())
    assert state["finished"] and (state["epoch"], state["batches_in_epoch"]) == (1, 2)
    assert "loss=" in capsys.readouterr().out  # the bar shows the running losses


def test_on_optimizer_step_runs_once_per_optimizer_step_not_per_micro_batch(tmp_path):
    """A momentum encoder or a queue must advance once per update: with grad_accum=2 the hook runs
    for every optimizer step (2+2+1 batches -> 3 steps per epoch), half as often as pretrain_step."""
    from test_engine_helpers import TinyAdapter

    class Counting(TinyAdapter):
        def on_optimizer_step(self) -> None:
            self.updates = getattr(self, "updates", 0) + 1
            self.calls_at_update = [*getattr(self, "calls_at_update", []), self.calls]

    model = Counting(make_model().config)
    _, r = _run(tmp_path, "a", model=model)
    assert r.micro_steps == 15 and model.calls == 15
    assert r.global_step == 9 and model.updates == 9
    assert model.calls_at_update[:3] == [2, 4, 5]  # after the window's last micro-batch
