"""Which part of a feature build this process does under ``accelerate launch`` / ``torchrun``.

Ranks are read through accelerate's ``PartialState``, the process state the run's stages and the
training loop read too; under a launch of several processes it joins the launch's process group
(gloo on CPUs, nccl on GPUs). Ranks coordinate through files in the store folder, so that folder
must be on a filesystem every rank sees; the waits here poll those files, which lets a slow step
(rank 0 training the tokenizer, a rank with slower media) take longer than a collective's timeout
and lets a failed wait name exactly what is missing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ranks:
    """This process's place in a launch: ``rank`` of ``world`` processes, ``local`` rank on its
    machine, and the ``device`` its image CNN runs on."""

    rank: int = 0
    world: int = 1
    local: int = 0
    device: str = "cpu"

    @property
    def main(self) -> bool:
        """Rank 0 writes the pieces every rank shares (tokenizer, layout, labels, info)."""
        return self.rank == 0

    def owns(self, shard: int) -> bool:
        """Shard ``i`` is built by rank ``i mod world``."""
        return shard % self.world == self.rank

    def owner(self, shard: int) -> int:
        return shard % self.world

    def barrier(self) -> None:
        """Every rank reaches this point before any goes on (nothing to wait for alone)."""
        if self.world > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block before the others (who then find what it cached, e.g. a catalog)."""
        if self.world == 1:
            yield
            return
        from accelerate import PartialState

        with PartialState().main_process_first():
            yield

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world}"


def launch_ranks() -> Ranks:
    """This process's :class:`Ranks`: one process on its own, or its part of a multi-process launch.

    The image CNN runs on ``cuda:<local rank>`` when CUDA is available and the launch did not ask
    for the CPU (``accelerate launch --cpu``), on the CPU otherwise.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # Without cpu=True, accelerate treats a CUDA-less launch of several processes as one process.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    local = max(0, int(state.local_process_index))
    dev = state.device  # accelerate's choice: cuda:<local rank> in a launch, plain "cuda" on its own
    device = f"cuda:{local if dev.index is None else dev.index}" if dev.type == "cuda" else "cpu"
    return Ranks(rank=int(state.process_index), world=int(state.num_processes), local=local, device=device)


def _listing(names: list[str], limit: int = 8) -> str:
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" and {more} more" if more > 0 else "")


def wait_for_paths(paths: dict[str, Path], what: str, timeout_s: float, poll_s: float = 1.0) -> None:
    """Block until every path in ``paths`` (name -> path) exists.

    The clock restarts whenever another path appears, so a long build only fails when it stops
    making progress: after ``timeout_s`` seconds with nothing new, raise a one-line
    :class:`~bench.console.UserError` naming what is still missing (``what(names)`` says what the
    names are, e.g. which shards and which ranks owe them).
    """
    left = dict(paths)
    since = time.monotonic()
    while True:
        before = len(left)
        left = {k: p for k, p in left.items() if not p.exists()}
        if not left:
            return
        if len(left) < before:
            since = time.monotonic()
        elif time.monotonic() - since > timeout_s:
            from bench.console import UserError

            raise UserError(f"{what} {_listing(sorted(left))}: nothing new appeared in {timeout_s:g} s; a rank "
                            f"stopped, or the store is not on a filesystem every rank shares")
        time.sleep(min(poll_s, max(timeout_s, 0.01)))
