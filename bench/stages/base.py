"""The stage contract and the state one run passes from stage to stage.

A stage says what it depends on (:meth:`Stage.key`), whether its output is already on disk
(:meth:`Stage.cached`), and does its work (:meth:`Stage.run`). :meth:`Stage.decide` turns those into
one :class:`Decision`; the real run and ``--dry-run`` both act on that decision, so they cannot
disagree about what is reused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bench.console import console

#: What a stage will do: reuse its cached output, run, skip (nothing to do), or check (pre-flight).
ACTIONS = ("reuse", "run", "skip", "check")


@dataclass(frozen=True)
class Decision:
    """One stage's decision and a short detail (where its cache is, why it is skipped)."""

    stage: str
    action: str
    detail: str = ""

    def line(self) -> str:
        """The decision as ``--dry-run`` prints it."""
        words = {"reuse": "cached", "run": "will run", "skip": "skipped", "check": "checks"}[self.action]
        return f"{self.stage:<9}: {words}" + (f" ({self.detail})" if self.detail else "")


class Stopwatch:
    """Seconds spent per named step, added up over repeated steps."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, name: str) -> _Lap:
        return _Lap(self, name)


class _Lap:
    def __init__(self, sw: Stopwatch, name: str) -> None:
        self.sw, self.name = sw, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.sw.timings[self.name] = round(self.sw.timings.get(self.name, 0.0) + time.perf_counter() - self.t0, 3)


class Context:
    """What the stages of one run hand each other: the plan, and each stage's output once it ran.

    ``setup`` (model and train configs, checkpoint directory) and ``model`` are built on first use,
    once the catalog (and, for the model, the feature store) is known.
    """

    def __init__(self, plan: Any, *, say: Callable[[Any], None] = console.print, progress: bool = True,
                 force: bool = True) -> None:
        from bench.features import FeatureConfig

        self.plan, self.say, self.progress, self.force = plan, say, progress, force
        self.fcfg = FeatureConfig(**plan.pipeline["features"])
        self.sw = Stopwatch()
        self.t0 = time.perf_counter()
        self.decisions: list[Decision] = []
        self.stage = ""
        self.is_main = True  # False on the other processes of a multi-process launch
        self.catalog: Any = None
        self.checked: Any = None  # bench.pipeline.Checked
        self.store: Any = None
        self.rows: Any = None  # the pretraining pool, exact once the feature store exists
        self.train_info: dict[str, Any] = {}
        self.scored: dict[str, Any] = {}
        self.result: dict[str, Any] | None = None
        self._setup: Any = None
        self._model: Any = None

    @property
    def setup(self) -> Any:
        """:class:`bench.pipeline.Setup` of the cell on this catalog (needs the catalog)."""
        if self._setup is None:
            from bench.pipeline import resolve_setup

            self._setup = resolve_setup(self.plan, self.catalog.fingerprint, self.fcfg.hash())
        return self._setup

    @property
    def run_dir(self) -> Path | None:
        return None if self.catalog is None else self.setup.run_dir

    @property
    def model(self) -> Any:
        """The adapter, built at its seeded initialisation on first use (needs the feature store)."""
        if self._model is None:
            import torch

            torch.manual_seed(self.plan.cell.seed)
            self._model = self.plan.entry.load()(self.setup.model_cfg, self.store.spec, self.plan.cell.modalities)
        return self._model

    @model.setter
    def model(self, model: Any) -> None:
        """A stage that builds the model its own way (a frozen encoder's embed stage) installs it here."""
        self._model = model


class Stage:
    """One step of a run. Subclasses set ``name`` and implement :meth:`key`, :meth:`cached`, :meth:`run`.

    ``key`` returns ``None`` while an input it depends on is not known yet (``--dry-run`` before the
    catalog exists); such a stage will run. Class flags tell the runner how to run it: ``timer`` (the
    name its seconds are recorded under), ``main_first`` (under a multi-process launch the main
    process runs it first, the others then find it cached), ``all_ranks`` (every process runs it;
    the stages after the last such stage run on the main process only), ``dry`` (its run is cheap
    and writes nothing when it reuses or checks, so ``--dry-run`` runs it to learn the next keys),
    ``gate`` (once it passed, a reusable final stage ends the run).
    """

    name: ClassVar[str] = ""
    #: what an interrupt in this stage leaves on disk ({run_dir} is filled in)
    kept: ClassVar[str] = "nothing half-written was kept"
    timer: ClassVar[str | None] = None
    main_first: ClassVar[bool] = False
    all_ranks: ClassVar[bool] = False
    dry: ClassVar[bool] = False
    gate: ClassVar[bool] = False
    #: a cached output of this (final) stage is the whole run's output
    ends_run: ClassVar[bool] = False

    def key(self, ctx: Context) -> Any:
        """What the output depends on (``None``: not known yet). Default: nothing, always recomputed."""
        return {}

    def cached(self, ctx: Context) -> bool:
        """Whether the output for :meth:`key` is on disk. Default: never (cheap, or not cacheable)."""
        return False

    def detail(self, ctx: Context) -> str:
        """A short note for the decision (where the cache is)."""
        return ""

    def decide(self, ctx: Context) -> Decision:
        """Reuse or run, from :meth:`key` and :meth:`cached`; the one decision both runs act on."""
        if self.key(ctx) is None:
            return Decision(self.name, "run", "after the stages before it")
        return Decision(self.name, "reuse" if self.cached(ctx) else "run", self.detail(ctx))

    def run(self, ctx: Context, decision: Decision) -> None:
        """Load the cached output or compute it, as ``decision`` says, and put it on ``ctx``."""
        raise NotImplementedError

    def load(self, ctx: Context) -> None:
        """Put the cached output on ``ctx`` (only stages with ``ends_run``)."""
        raise NotImplementedError
