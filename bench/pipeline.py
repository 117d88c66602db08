"""The headline job: plan a cell, then walk its recipe of stages (:mod:`bench.stages`).

``bench run`` is a thin CLI over :func:`plan_cell` and :func:`run_cell`. Every cached stage is keyed
by what determines it (catalog fingerprint, feature config, model, modalities, preset, settings,
split, seed, model code), so a second run reuses what it can and says so. The dry run
(:func:`describe_cache`) walks the same recipe and takes the same decisions. This module knows
models only through the registry and the adapter contract.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench import registry
from bench.console import UserError, console
from bench.data.paths import m5bench_home
from bench.modalities import ModalitySet
from bench.settings import PIPELINE_KEYS, Settings, parse_overrides, pipeline_settings, resolve  # noqa: F401
# the scoring helpers live with their stages; importable from here as before
from bench.stages.score import PER_QUERY, finetune_schedule, modality_vectors  # noqa: F401

SPLITS = ("subset", "full")


def default_results_dir() -> Path:
    return m5bench_home() / "results"


@dataclass
class CellSpec:
    """Everything that identifies one result cell."""

    model: str
    modalities: ModalitySet
    data: str | None = None  # catalog source; None = the embedded synthetic default
    split: str = "full"
    preset: str = "tiny"
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    encoding: str | None = None  # text encoding of a manifest source (None: UTF-8)

    def describe(self) -> str:
        ov = " ".join(f"{k}={v}" for k, v in sorted(self.overrides.items()))
        return (f"{self.model} on {self.modalities} | data={self.data or 'synthetic'} split={self.split} "
                f"preset={self.preset} seed={self.seed}" + (f" | {ov}" if ov else ""))


def data_slug(source: str) -> str:
    """A short, file-name-safe name of a catalog source: ``synthetic-default``, ``manifest-shop``."""
    from bench.data import sources

    kind, _, arg = source.partition(":")
    if kind in sources.SOURCES and arg:
        arg = sources.get(kind).slug(arg)
    slug = re.sub(r"[^A-Za-z0-9_.]+", "-", f"{kind}-{arg}" if arg else kind).strip("-.")
    return slug[:40] or "data"


@dataclass
class Plan:
    """What a cell will do, resolved before any work starts (printed by ``--dry-run``)."""

    cell: CellSpec
    entry: registry.ModelEntry
    settings: Settings
    pipeline: dict[str, Any]
    results_dir: Path

    @property
    def pretrains(self) -> bool:
        """Whether the run pretrains: the adapter class pretrains and this is not the untrained control."""
        return bool(self.entry.load().pretrains) and not self.pipeline["untrained"]

    @property
    def model_overrides(self) -> dict[str, Any]:
        return self.settings.model

    @property
    def train_overrides(self) -> dict[str, Any]:
        return self.settings.train

    def result_path(self, source: str, fingerprint: str) -> Path:
        """Where this cell's result on one catalog goes: the name carries the catalog's source and
        fingerprint, so results from different catalogs never share a file."""
        from bench.results import cell_filename

        c = self.cell
        return self.results_dir / cell_filename(c.model, c.modalities.key, c.split, c.preset, c.seed, c.overrides,
                                                data=f"{data_slug(source)}-{fingerprint[:8]}")


def plan_cell(cell: CellSpec, results_dir: Path | None = None) -> Plan:
    """Check the request (model, modalities, split, settings) and resolve where results go.

    Everything that can be refused without reading the catalog is refused here. ``--set seed=N``
    is the cell's seed (the same setting as ``--seed``); the cell's overrides are rewritten under
    their canonical names, so two spellings of one setting name one result.
    """
    entry = registry.get(cell.model)
    entry.check(cell.modalities)
    if cell.split not in SPLITS:
        raise UserError(f"unknown split {cell.split!r}; choose from {', '.join(SPLITS)}")
    cls = entry.load()
    if cell.preset not in cls.config_cls.presets():
        raise UserError(f"unknown preset {cell.preset!r} for {cell.model}; choose from {sorted(cls.config_cls.presets())}")
    settings = resolve(cls.config_cls, cell.overrides)
    seed = cell.seed
    if settings.seed is not None:
        if cell.seed not in (0, settings.seed):
            raise UserError(f"--seed {cell.seed} and --set seed={settings.seed} disagree; they are one setting, give one")
        seed = settings.seed
    pipeline = pipeline_settings(settings)
    frac = pipeline["eval_fraction"]
    if frac is not None and not (isinstance(frac, (int, float)) and 0.0 < float(frac) < 1.0):
        raise UserError(f"eval_fraction must be a number between 0 and 1, got {frac!r}")
    if pipeline["finetune"] not in (None, "full", "head"):
        raise UserError(f"finetune must be 'full' (backbone and head) or 'head' (frozen backbone), "
                        f"got {pipeline['finetune']!r}")
    for key in ("finetune_epochs", "split_seed"):  # settings whose default (None) says nothing of their type
        v = pipeline[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or (key == "finetune_epochs" and v < 1)):
            raise UserError(f"{key} must be {'a positive' if key == 'finetune_epochs' else 'an'} integer, got {v!r}")
    cell = dataclasses.replace(cell, seed=seed, overrides=dict(settings.canonical))
    plan = Plan(cell, entry, settings, pipeline, Path(results_dir) if results_dir else default_results_dir())
    try:  # a value the model or the loop refuses is a user error, found before any work
        build_configs(plan)
    except (ValueError, TypeError) as exc:
        raise UserError(f"invalid setting for {cell.model}: {exc}") from None
    return plan


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Setup:
    """The resolved model and training configuration of a cell, and where its checkpoint lives."""

    model_cfg: Any
    train_cfg: Any
    run_dir: Path


def build_configs(plan: Plan) -> tuple[Any, Any]:
    """Model config (preset + overrides) and train config (the preset's training defaults +
    overrides). The model config's training hints carry the values the training loop uses, so the
    recorded model config never shows a stale learning rate or epoch count."""
    from bench.engine import TrainConfig
    from bench.settings import TRAIN_HINTS

    cfg_cls = plan.entry.load().config_cls
    hint_names = {f.name for f in dataclasses.fields(cfg_cls)} & set(TRAIN_HINTS)
    model_cfg = cfg_cls.preset(plan.cell.preset, **plan.model_overrides,
                               **{k: v for k, v in plan.train_overrides.items() if k in hint_names})
    hints = {k: getattr(model_cfg, k) for k in hint_names}
    return model_cfg, TrainConfig(**{**hints, "seed": plan.cell.seed, **plan.train_overrides})


def resolve_setup(plan: Plan, catalog_fingerprint: str, features_hash: str) -> Setup:
    """The cell's configs (:func:`build_configs`) and the checkpoint directory, keyed by everything
    that determines the pretrained weights (the code: :func:`bench.codehash.code_hash`)."""
    from bench.codehash import code_hash

    cell = plan.cell
    model_cfg, tcfg = build_configs(plan)
    key = _hash({"data": catalog_fingerprint, "features": features_hash, "model": cell.model,
                 "code": code_hash(plan.entry.target),
                 "mods": str(cell.modalities), "preset": cell.preset, "model_cfg": model_cfg.to_dict(),
                 "train": dataclasses.asdict(tcfg), "split": cell.split,
                 "incomplete": plan.pipeline["pretrain_incomplete"]})
    return Setup(model_cfg, tcfg, m5bench_home() / "runs" / f"{cell.model}-{cell.modalities.key}-{key}")


def load_cell_catalog(plan: Plan, *, progress: bool = False) -> Any:
    """The cell's catalog (generated on first use for ``synthetic``), with the cell's split settings."""
    from bench.data import load_catalog

    kwargs = {k: plan.pipeline[k] for k in ("split_seed", "eval_fraction") if plan.pipeline[k] is not None}
    if plan.cell.encoding:
        kwargs["encoding"] = plan.cell.encoding
    return load_catalog(plan.cell.data, progress=progress, **kwargs)


@dataclass
class Checked:
    """What the pre-flight checks found: the result's path and the evaluation's health."""

    result_path: Path
    pretrain_rows: Any  # int64 row indices (catalog-level presence until features exist)
    health: Any  # bench.preflight.EvalHealth


def preflight(plan: Plan, catalog: Any, setup: Setup, present: Any = None) -> Checked:
    """The checks every run (and every dry run) makes once the catalog is loaded, before any
    feature or model work: requested modalities present, one pretraining batch, a usable
    evaluation (warned, not refused)."""
    from bench import preflight as pf

    cell = plan.cell
    pf.check_modalities(catalog, cell.modalities)
    rows = pf.pretrain_rows(catalog, cell.split, cell.modalities, bool(plan.pipeline["pretrain_incomplete"]), present)
    if plan.pretrains:
        pf.check_batch(len(rows), setup.train_cfg.batch_size, cell.modalities, bool(plan.pipeline["pretrain_incomplete"]))
    return Checked(plan.result_path(catalog.source, catalog.fingerprint), rows, pf.eval_health(catalog, plan.cell.split))


def describe_cache(plan: Plan, *, force: bool = True) -> list[str]:
    """What :func:`run_cell` would reuse, run or refuse (``bench run --dry-run``): the same recipe,
    walked with :func:`bench.stages.dry_run`, so the decisions are the real run's."""
    from bench.stages import Context, dry_run, recipe_for

    lines = [f"model {plan.entry.paper_name} ({plan.entry.target}), preset {plan.cell.preset}",
             f"model overrides {plan.model_overrides or '-'}; train overrides {plan.train_overrides or '-'}; "
             f"pipeline {plan.pipeline}"]
    ctx = Context(plan, say=lambda *_: None, progress=False, force=force)
    for d in dry_run(recipe_for(plan), ctx):
        lines.append(d.line())
        if d.stage == "features" and not plan.entry.load().pretrains:  # say so where the stage would be
            lines.append("pretrain : none (the model is not pretrained by the benchmark: pretrains = False)")
    if ctx.checked is not None:
        lines += [f"warning  : {w}" for w in ctx.checked.health.warnings]
    return lines


def run_cell(plan: Plan, *, progress: bool = True, say: Callable[[Any], None] = console.print,
             pretrain_only: bool = False, force: bool = True) -> dict[str, Any]:
    """Run one cell end to end and write its result file atomically. Returns the result dict.

    ``pretrain_only`` stops after pretraining (``bench pretrain``) and returns the checkpoint path.
    Without ``force``, a cell whose result already exists is not recomputed (its result is returned).
    Ctrl-C raises :class:`~bench.console.Interrupted` saying what was kept.
    """
    from bench.stages import Context, execute, recipe_for

    ctx = execute(recipe_for(plan, until="pretrain" if pretrain_only else None),
                  Context(plan, say=say, progress=progress, force=force))
    if not pretrain_only or not ctx.is_main:
        return ctx.result or {}
    final = ctx.setup.run_dir / "final"
    ctx.say(f"[bold green]checkpoint[/] {final}")
    return {"checkpoint": str(final), "train": ctx.train_info}
