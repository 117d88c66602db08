"""The training loop every adapter is pretrained (and fine-tuned) with.

One loop on Hugging Face ``accelerate``: the same code runs single-process on a CPU and unchanged
under ``accelerate launch`` on several GPUs (DDP). The loop knows nothing of the feature store: it
takes a *batch factory*, ``batches_for_epoch(epoch) -> Iterable[Batch]``, whose batch order must be
a pure function of (seed, epoch). With that, and with every random draw of a step seeded from
(seed, step), a run interrupted mid-epoch and resumed reaches bitwise the same weights as one that
never stopped (on CPU; GPU kernels may add their own non-determinism).

Layout of ``out_dir`` after :func:`pretrain`::

    train_log.jsonl          one line per logged optimizer step: step, epoch, lr, every named loss,
                             grad_norm, the model's extra_state
    checkpoint/              the last good checkpoint (replaced atomically)
        model.safetensors    weights   (Adapter.save_pretrained)
        config.json          adapter config, spec, modalities, extra_state
        optimizer.pt         optimizer state; scheduler.pt; scaler.pt (fp16 only)
        rng_state_<rank>.pt  python / numpy / torch / cuda RNG states of each process
        trainer_state.json   epoch, batches consumed in it, global step, the run's TrainConfig
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from bench.adapter import Adapter
from bench.console import UserError, console, err_console
from bench.features.batch import Batch

BatchFactory = Callable[[int], Iterable[Batch]]
"""``epoch -> batches of that epoch``; the order must depend only on (seed, epoch)."""

CHECKPOINT = "checkpoint"
LOG_FILE = "train_log.jsonl"
STATE_FILE = "trainer_state.json"
# TrainConfig fields that may change between an interrupted run and its resumption without
# changing the result; every other field must match or the run could not be reproduced.
_RESUME_FREE = {"log_every", "checkpoint_every_epoch", "num_threads"}
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (defaults follow the paper's pretraining, sec. 4.5).

    ``batch_size`` is the per-process batch size the batch factory produces; the engine records it
    (provenance, resume check) but does not batch. ``max_steps`` caps the number of optimizer
    steps (and so the length of the LR schedule). ``mixed_precision`` is ``"auto"`` (bf16 on GPUs
    that have it, else fp16 on CUDA, else none), ``"no"``, ``"fp16"`` or ``"bf16"``; a precision the
    device lacks falls back to ``"no"`` with a warning.
    """

    epochs: int = 5
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    grad_accum: int = 1
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-6
    mixed_precision: str = "auto"
    seed: int = 42
    log_every: int = 10
    checkpoint_every_epoch: bool = True
    num_threads: int | None = None
    deterministic: bool = True

    def __post_init__(self) -> None:
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise UserError(f"mixed_precision must be auto, no, fp16 or bf16, not {self.mixed_precision!r}")
        for name in ("epochs", "batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"TrainConfig.max_steps must be >= 1 or None, got {self.max_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise UserError(f"TrainConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        self.adam_betas = tuple(self.adam_betas)  # JSON round trips give lists

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run reports."""

    global_step: int  # optimizer steps taken in total
    epochs_completed: int
    micro_steps: int  # batches consumed in total (per process)
    total_steps: int  # length of the LR schedule
    last_log: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    checkpoint_dir: Path | None = None
    log_path: Path | None = None
    seconds: float = 0.0
    resumed_from_step: int | None = None
    mixed_precision: str = "no"


class TrainingDiverged(UserError):
    """The loss (or gradient norm) became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, step: int, epoch: int, losses: dict[str, float], checkpoint: Path | None, what: str = "loss"):
        self.step, self.epoch, self.losses, self.checkpoint = step, epoch, losses, checkpoint
        shown = ", ".join(f"{k}={v:.6g}" for k, v in losses.items())
        kept = f"; the last good checkpoint is kept at {checkpoint}" if checkpoint else "; no checkpoint was written"
        super().__init__(
            f"training diverged at optimizer step {step} (epoch {epoch}): the {what} is not finite "
            f"({shown}){kept}. Lower the learning rate, check the inputs, or resume from the checkpoint."
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after a SIGTERM / SIGINT once the checkpoint of the interrupted run is written."""


# --------------------------------------------------------------------------------------------------
# small helpers


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (e.g. (seed, step, rank))."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_mixed_precision(requested: str) -> str:
    """Map ``auto`` to what the device supports; downgrade a precision the device lacks to ``no``."""
    cuda = torch.cuda.is_available()
    if requested == "auto":
        if not cuda:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "fp16" and not cuda:
        err_console.print("[yellow]warning:[/] fp16 needs a CUDA device; training in fp32")
        return "no"
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        err_console.print("[yellow]warning:[/] this GPU has no bf16; training in fp32")
        return "no"
    return requested


def make_accelerator(mixed_precision: str):
    """An ``accelerate.Accelerator`` for this run (one process here; DDP under ``accelerate launch``)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    # AcceleratorState is a process-wide singleton that refuses a second precision; a process that
    # pretrains in bf16 and then fine-tunes in fp32 (or a test session) needs a fresh one. The
    # distributed PartialState (process group) is kept.
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    # Missing modalities leave some encoders unused in a step, which plain DDP rejects.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(mixed_precision=mixed_precision, kwargs_handlers=[ddp])


def param_groups(module: nn.Module, weight_decay: float, lr: float,
                 lr_for: Callable[[str], float] | None = None) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norm layers and other 1-d parameters.

    ``lr_for(name)`` may give a parameter its own learning rate (fine-tuning uses it for the backbone).
    """
    no_decay: set[int] = set()
    for mod in module.modules():
        if isinstance(mod, _NORM_TYPES):
            no_decay.update(id(p) for p in mod.parameters(recurse=False))
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        wd = 0.0 if (p.ndim <= 1 or id(p) in no_decay) else weight_decay
        groups.setdefault((lr_for(name) if lr_for else lr, wd), []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


def _with_last(it: Iterable[Batch]) -> Iterator[tuple[Batch, bool]]:
    """Yield (batch, is_last) with one batch of look-ahead, so accumulation windows close at epoch end."""
    it = iter(it)
    try:
        cur = next(it)
    except StopIteration:
        return
    for nxt in it:
        yield cur, False
        cur = nxt
    yield cur, True


def _count(factory: BatchFactory) -> int:
    batches = factory(0)
    if hasattr(batches, "__len__"):
        return len(batches)  # type: ignore[arg-type]
    err_console.print("[yellow]note:[/] steps_per_epoch not given; counting the batches of epoch 0 (one extra pass)")
    return sum(1 for _ in batches)


class _PretrainModule(nn.Module):
    """Routes ``forward`` to :meth:`Adapter.pretrain_step`, so DDP and autocast wrappers see the step."""

    def __init__(self, adapter: Adapter):
        super().__init__()
        self.adapter = adapter

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        # Pretraining sees no labels: the step gets the labels-free view (the Adapter contract also
        # strips them for any other caller). Fine-tuning runs its own module, with the labels.
        return self.adapter.pretrain_step(batch.without_labels() if isinstance(batch, Batch) else batch, generator)


# --------------------------------------------------------------------------------------------------
# checkpoints


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_checkpoint(out_dir: str | Path) -> Path | None:
    """The last complete checkpoint under ``out_dir`` (``checkpoint/``, or its predecessor if a
    crash fell between the two renames of :func:`_publish`), else None."""
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
        d = Path(out_dir) / name
        if (d / STATE_FILE).is_file() and (d / "model.safetensors").is_file():
            return d
    return None


def _publish(tmp: Path, final: Path) -> None:
    """Make ``tmp`` the checkpoint: a directory cannot be os.replace'd over a non-empty one, so the
    old one steps aside first; :func:`find_checkpoint` falls back to it if we die in between.
    ``final`` only ever appears by renaming a complete ``tmp``, so whenever it exists it is whole."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


class _Run:
    """State of one call to :func:`train`; split out so the loop body stays readable."""

    def __init__(self, cfg: TrainConfig, accelerator, module, optimizer, scheduler, adapter: Adapter | None,
                 out_dir: Path | None, steps_per_epoch: int, total_steps: int, description: str):
        self.cfg, self.acc, self.module, self.opt, self.sched = cfg, accelerator, module, optimizer, scheduler
        self.adapter, self.out_dir, self.steps_per_epoch = adapter, out_dir, steps_per_epoch
        self.total_steps, self.description = total_steps, description
        self.epoch = 0  # current epoch
        self.in_epoch = 0  # batches of the current epoch consumed up to the last optimizer step
        self.global_step = 0
        self.micro_step = 0  # batches consumed up to the last optimizer step (this process)
        self.finished = False
        self.stop_signal: int | None = None
        self.updating = False  # inside an optimizer update: weights may be half-written
        self.last_log: dict[str, Any] = {}

    # --- persistence ------------------------------------------------------------------------------
    def state(self, reason: str) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "batches_in_epoch": self.in_epoch, "global_step": self.global_step,
            "micro_step": self.micro_step, "finished": self.finished, "reason": reason,
            "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
            "num_processes": self.acc.num_processes, "config": self.cfg.to_dict(),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def save(self, reason: str) -> Path | None:
        """Write a checkpoint of the state at the last optimizer-step boundary, atomically."""
        if self.out_dir is None or self.adapter is None:
            return None
        acc = self.acc
        final = self.out_dir / CHECKPOINT
        tmp = self.out_dir / f".{CHECKPOINT}.tmp"
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        torch.save(_rng_state(), tmp / f"rng_state_{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            self.adapter.save_pretrained(tmp, global_step=self.global_step, epoch=self.epoch)
            torch.save(self.opt.state_dict(), tmp / "optimizer.pt")
            torch.save(self.sched.state_dict(), tmp / "scheduler.pt")
            if acc.scaler is not None:
                torch.save(acc.scaler.state_dict(), tmp / "scaler.pt")
            (tmp / STATE_FILE).write_text(json.dumps(self.state(reason), indent=2))
            _publish(tmp, final)
        acc.wait_for_everyone()
        return final

    def load(self, ckpt: Path) -> None:
        state = json.loads((ckpt / STATE_FILE).read_text())
        old = TrainConfig(**state["config"]).to_dict()
        new = self.cfg.to_dict()
        diff = {k: (old[k], new[k]) for k in new if k not in _RESUME_FREE and old.get(k) != new[k]}
        if state["steps_per_epoch"] != self.steps_per_epoch:
            diff["steps_per_epoch"] = (state["steps_per_epoch"], self.steps_per_epoch)
        if state["num_processes"] != self.acc.num_processes:
            diff["num_processes"] = (state["num_processes"], self.acc.num_processes)
        if diff:
            shown = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise UserError(f"cannot resume from {ckpt}: the run's settings changed ({shown}). "
                            "Resume with the same settings, or start a fresh run in another directory.")
        assert self.adapter is not None
        self.adapter.load_weights(ckpt)
        self.opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
        self.sched.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
        if self.acc.scaler is not None and (ckpt / "scaler.pt").is_file():
            self.acc.scaler.load_state_dict(torch.load(ckpt / "scaler.pt", weights_only=False))
        rng = ckpt / f"rng_state_{self.acc.process_index}.pt"
        if rng.is_file():
            _set_rng_state(torch.load(rng, weights_only=False))
        self.epoch, self.in_epoch = state["epoch"], state["batches_in_epoch"]
        self.global_step, self.micro_step = state["global_step"], state["micro_step"]
        self.finished = state["finished"]
        if self.out_dir is not None and self.acc.is_main_process:
            _truncate_log(self.out_dir / LOG_FILE, self.global_step)

    # --- signals ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def graceful_signals(self):
        """SIGTERM/SIGINT ask the loop to stop at the next optimizer-step boundary (a second
        SIGINT interrupts at once). Only the main thread may install handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if signum == signal.SIGINT and self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= last_step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# the loop


@contextlib.contextmanager
def _determinism(cfg: TrainConfig):
    """Seed, set threads and deterministic kernels for the run; restore the global flags after."""
    was = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(cfg.seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        torch.set_num_threads(threads)


def train(
    module: nn.Module,
    batches_for_epoch: BatchFactory,
    steps_per_epoch: int | None,
    cfg: TrainConfig,
    *,
    adapter: Adapter | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    lr_for: Callable[[str], float] | None = None,
    description: str = "train",
    epoch_end: Callable[[int], bool] | None = None,
) -> TrainResult:
    """The generic loop behind :func:`pretrain` and fine-tuning.

    ``module(batch, generator)`` must return a dict of named losses holding ``"loss"``. With
    ``out_dir`` and ``adapter`` it checkpoints ``adapter`` (every epoch, on interrupt, at the end)
    and writes the loss log; without them it only trains. ``callback(log)`` runs after every
    optimizer step with that step's values (a place for tests). ``epoch_end(epochs_done)`` runs
    after every complete epoch; returning True ends training there (early stopping; the learning
    rate schedule keeps its full length, so the epochs that did run are the same either way).
    """
    t0 = time.perf_counter()
    if steps_per_epoch is None:
        steps_per_epoch = _count(batches_for_epoch)
    if steps_per_epoch < 1:
        raise UserError("the training data yields no batches")
    out = Path(out_dir) if out_dir is not None else None
    ckpt = find_checkpoint(out) if out is not None else None
    if out is not None and ckpt is not None and not resume:
        raise UserError(f"{out} already holds a checkpoint; pass resume=True to continue that run, "
                        "or choose an empty directory")
    mixed = resolve_mixed_precision(cfg.mixed_precision)

    with _determinism(cfg):
        acc = make_accelerator(mixed)
        # Each process takes every W-th batch; all take the same count so DDP stays in lockstep.
        per_rank = steps_per_epoch // acc.num_processes
        if per_rank < 1:
            raise UserError(f"{steps_per_epoch} batches per epoch cannot feed {acc.num_processes} processes")
        steps_in_epoch = math.ceil(per_rank / cfg.grad_accum)
        total_steps = cfg.epochs * steps_in_epoch
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)

        from transformers import get_linear_schedule_with_warmup

        optimizer = torch.optim.AdamW(param_groups(module, cfg.weight_decay, cfg.lr, lr_for),
                                      lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps)
        # The scheduler is not passed to accelerate: its wrapper steps W times per step, assuming
        # a schedule counted in single-process steps; ours is counted per process already.
        scheduler = get_linear_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * total_steps), total_steps)
        model, optimizer = acc.prepare(module, optimizer)
        run = _Run(cfg, acc, model, optimizer, scheduler, adapter, out, steps_per_epoch, total_steps, description)
        resumed_from = None
        if resume and ckpt is not None:
            run.load(ckpt)
            resumed_from = run.global_step
            if acc.is_main_process and progress:
                console.print(f"resuming from {ckpt} at step {run.global_step} (epoch {run.epoch}, "
                              f"{run.in_epoch} batches in)")
        elif resume and acc.is_main_process and progress:
            console.print(f"no checkpoint in {out}; starting a fresh run")
        if out is not None and acc.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            if resumed_from is None:  # a fresh run: lines of an earlier run that left no checkpoint go
                _truncate_log(out / LOG_FILE, 0)

        with run.graceful_signals(), _progress(progress and acc.is_main_process, description,
                                               total_steps, run.global_step) as bar:
            try:
                _loop(run, batches_for_epoch, per_rank, bar, callback, epoch_end)
            except KeyboardInterrupt:  # TrainingInterrupted (signals) included
                # State is at the last optimizer-step boundary (partial accumulations are replayed on resume).
                path = None if run.updating else run.save("interrupt")
                if acc.is_main_process and path is not None:
                    err_console.print(f"interrupted at step {run.global_step}; checkpoint saved to {path}")
                raise
        return TrainResult(
            global_step=run.global_step, epochs_completed=run.epoch, micro_steps=run.micro_step,
            total_steps=total_steps, last_log=run.last_log, out_dir=out,
            checkpoint_dir=find_checkpoint(out) if out is not None else None,
            log_path=(out / LOG_FILE) if out is not None else None, seconds=time.perf_counter() - t0,
            resumed_from_step=resumed_from, mixed_precision=mixed,
        )


def _loop(run: _Run, factory: BatchFactory, per_rank: int, bar, callback, epoch_end=None) -> None:
    cfg, acc, model = run.cfg, run.acc, run.module
    W, rank = acc.num_processes, acc.process_index
    params = [p for p in model.parameters() if p.requires_grad]
    log_file = (run.out_dir / LOG_FILE) if run.out_dir is not None else None
    model.train()
    while not run.finished:
        if run.epoch >= cfg.epochs or (cfg.max_steps is not None and run.global_step >= cfg.max_steps):
            run.finished = True
            run.save("end")
            break
        stream = itertools.islice(iter(factory(run.epoch)), rank, per_rank * W, W)
        stream = itertools.islice(stream, run.in_epoch, None)  # skip what a resumed run already used
        window: list[dict[str, float]] = []
        seen = run.in_epoch
        epoch_done = True
        for batch, last in _with_last(stream):
            seen += 1
            step_ends = last or len(window) + 1 == cfg.grad_accum or seen == per_rank
            window.append(_micro_step(run, model, batch, run.micro_step + len(window), step_ends))
            if not step_ends:
                continue
            grad_norm = _optimizer_step(run, params, len(window))
            run.micro_step += len(window)
            run.in_epoch = seen
            run.global_step += 1
            log = _step_log(run, window, grad_norm)
            window = []
            run.last_log = log
            if log_file is not None and (run.global_step % cfg.log_every == 0 or run.global_step == run.total_steps):
                _write_log(acc, log_file, log)
            if bar is not None:
                bar(run.global_step, log)
            if callback is not None:
                callback(log)
            if run.stop_signal is not None:
                raise TrainingInterrupted(f"stopped by signal {signal.Signals(run.stop_signal).name}")
            if cfg.max_steps is not None and run.global_step >= cfg.max_steps and not last:
                epoch_done = False
                break
        if epoch_done:
            run.epoch += 1
            run.in_epoch = 0
            if cfg.checkpoint_every_epoch and run.epoch < cfg.epochs:
                run.save("epoch")
            if epoch_end is not None and run.epoch < cfg.epochs:
                stop = epoch_end(run.epoch)
                model.train()  # epoch_end may have scored the model in eval mode
                if stop:
                    run.finished = True
                    run.save("end")
                    break


def _micro_step(run: _Run, model, batch: Batch, micro_index: int, sync: bool) -> dict[str, float]:
    """Forward + backward of one batch; gradients add up until the window's optimizer step."""
    acc, cfg = run.acc, run.cfg
    # Every random draw of the step (masking through the generator, dropout through the global
    # RNG) is a pure function of (seed, batch number, rank): a resumed run repeats them exactly.
    step_seed = derive_seed(cfg.seed, micro_index, acc.process_index, 1)
    # Not torch.manual_seed: it also queues a seed (with a stack trace) for every CUDA device,
    # ~2 ms per call; only the CPU generator and the training device's are ever drawn from here.
    torch.default_generator.manual_seed(step_seed)
    if acc.device.type == "cuda":
        torch.cuda.manual_seed(step_seed)
    gen = torch.Generator(device=acc.device).manual_seed(derive_seed(cfg.seed, micro_index, acc.process_index, 0))
    batch = batch.to(acc.device)
    ctx = contextlib.nullcontext() if sync else acc.no_sync(model)
    with ctx:
        losses = model(batch, gen)
        if "loss" not in losses:
            raise UserError(f"{run.description}: the step returned {sorted(losses)}, without the total 'loss'")
        names = list(losses)
        values = torch.stack([torch.as_tensor(losses[k]).detach().float().reshape(()) for k in names]).tolist()
        logged = dict(zip(names, values))
        bad = not all(math.isfinite(v) for v in values)
        if acc.num_processes > 1:  # every process must stop together
            flag = torch.tensor(float(bad), device=acc.device)
            bad = bool(acc.reduce(flag, "sum").item() > 0)
        if bad:
            raise TrainingDiverged(run.global_step + 1, run.epoch, logged, find_checkpoint(run.out_dir)
                                   if run.out_dir else None)
        acc.backward(losses["loss"])
    return logged


def _optimizer_step(run: _Run, params: list[nn.Parameter], n_micro: int) -> float:
    """Average the summed window gradients, clip, step optimizer and schedule."""
    acc, cfg = run.acc, run.cfg
    run.updating = True
    if n_micro > 1:
        # Gradients were summed over the window; dividing here (not the losses up front) keeps the
        # mean exact when the window is cut short at the end of an epoch.
        for p in params:
            if p.grad is not None:
                p.grad.div_(n_micro)
    grad_norm = float("nan")
    if cfg.max_grad_norm and cfg.max_grad_norm > 0:
        grad_norm = float(acc.clip_grad_norm_(params, cfg.max_grad_norm))
        if not math.isfinite(grad_norm) and acc.scaler is None:  # fp16 skips such steps by itself
            run.updating = False
            run.opt.zero_grad(set_to_none=True)
            raise TrainingDiverged(run.global_step + 1, run.epoch, {"grad_norm": grad_norm},
                                   find_checkpoint(run.out_dir) if run.out_dir else None, what="gradient norm")
    run.opt.step()
    if not getattr(run.opt, "step_was_skipped", False):
        run.sched.step()
    run.opt.zero_grad(set_to_none=True)
    if run.adapter is not None:  # once per optimizer step, never per micro-batch of the window
        run.adapter.on_optimizer_step()
    run.updating = False
    return grad_norm


def _step_log(run: _Run, window: list[dict[str, float]], grad_norm: float) -> dict[str, Any]:
    names = list(window[0])
    log: dict[str, Any] = {"step": run.global_step, "epoch": run.epoch,
                           "lr": run.sched.get_last_lr()[0]}
    for k in names:
        log[k] = sum(w.get(k, 0.0) for w in window) / len(window)
    log["grad_norm"] = grad_norm
    if run.adapter is not None:
        extra = run.adapter.extra_state()
        if extra:
            log["extra_state"] = extra
    return log


def _write_log(acc, path: Path, log: dict[str, Any]) -> None:
    """Append one line; with several processes the losses are averaged over them first."""
    if acc.num_processes > 1:
        from accelerate.utils import gather_object

        # Objects, not tensors: processes may report different loss names (e.g. a task skipped
        # when a batch lacks its modality), which a tensor all-reduce could not cope with.
        logs = gather_object([log])
        log = dict(log)
        for k, v in log.items():
            if isinstance(v, float) and k not in ("lr", "grad_norm"):
                vals = [x[k] for x in logs if isinstance(x.get(k), float)]
                log[k] = sum(vals) / len(vals)
    if acc.is_main_process:
        with path.open("a") as f:
            f.write(json.dumps(log) + "\n")


@contextlib.contextmanager
def _progress(enabled: bool, description: str, total: int, done: int):
    """A rich progress bar with the running per-task losses; yields ``update(step, log)`` or None."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[losses]}"))
    ema: dict[str, float] = {}
    with Progress(*cols, console=console) as prog:
        task = prog.add_task(description, total=total, completed=done, losses="")

        def update(step: int, log: dict[str, Any]) -> None:
            for k, v in log.items():
                if k in ("step", "epoch", "lr", "extra_state") or not isinstance(v, float):
                    continue
                ema[k] = v if k not in ema else 0.9 * ema[k] + 0.1 * v
            shown = " ".join(f"{k}={v:.3f}" for k, v in ema.items() if k != "grad_norm")
            prog.update(task, completed=step, losses=f"ep {log['epoch']} {shown}")

        yield update


# --------------------------------------------------------------------------------------------------
# public entry points


def pretrain(
    model: Adapter,
    batches_for_epoch: BatchFactory,
    steps_per_epoch: int | None,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Pretrain ``model`` in place with its own :meth:`Adapter.pretrain_step` losses.

    ``batches_for_epoch(epoch)`` yields the epoch's batches in an order fixed by (seed, epoch);
    ``steps_per_epoch`` is how many it yields (None: ``len()`` of it, else counted with one pass).
    AdamW (no decay on biases and norms), linear warmup then linear decay, gradient clipping and
    accumulation, mixed precision where the device has it. Checkpoints go to
    ``out_dir/checkpoint`` every epoch, on SIGINT/SIGTERM (then the interrupt is re-raised) and at
    the end; ``resume=True`` continues the last checkpoint and ends with the same weights as an
    uninterrupted run. A non-finite loss raises :class:`TrainingDiverged` and leaves the last good
    checkpoint untouched. A finished run resumed again returns at once.
    """
    return train(_PretrainModule(model), batches_for_epoch, steps_per_epoch, cfg, adapter=model,
                 out_dir=out_dir, resume=resume, progress=progress, callback=callback,
                 description=f"pretrain {type(model).__name__}")


def load_checkpoint(model: Adapter, out_dir_or_checkpoint: str | Path) -> dict[str, Any]:
    """Load the weights of a pretraining checkpoint into ``model``; return its trainer state."""
    p = Path(out_dir_or_checkpoint)
    ckpt = p if (p / STATE_FILE).is_file() else find_checkpoint(p)
    if ckpt is None:
        raise UserError(f"no checkpoint found in {p}")
    model.load_weights(ckpt)
    return json.loads((ckpt / STATE_FILE).read_text())
