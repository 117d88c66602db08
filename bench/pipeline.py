"""The headline job: catalog -> features -> pretrain -> embed -> evaluate -> result file.

``bench run`` is a thin CLI over :func:`plan_cell` and :func:`run_cell`. Every stage is cached on
disk under ``$M5BENCH_HOME`` and keyed by what determines it (catalog fingerprint, feature config,
model, modalities, preset, settings, split, seed), so a second run reuses what it can and says so.
Before any feature or model work, the checks of :mod:`bench.preflight` run on the catalog; the dry
run (:func:`describe_cache`) makes the same checks. This module knows models only through the
registry and the adapter contract.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from bench import registry
from bench.console import Interrupted, UserError, console
from bench.data.paths import m5bench_home
from bench.modalities import Modality, ModalitySet
from bench.settings import PIPELINE_KEYS, Settings, parse_overrides, pipeline_settings, resolve  # noqa: F401

SPLITS = ("subset", "full")
#: Metrics whose per-query values are saved beside a result (``.per_query.npz``), under both scoring
#: rules, so two results on the same catalog can be compared query by query (paired bootstrap).
PER_QUERY = tuple(f"{task}/{m}{tag}" for task in ("coarse", "fine") for m, tag0 in
                  (("mAP@1", "[m5product"), ("mAP@10", "[m5product"), ("mAP@R", "[pml")) for tag in
                  (tag0 + "]", tag0 + "/cos]"))


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
    kind, _, arg = source.partition(":")
    if kind in ("m5product", "manifest") and arg:
        arg = Path(arg).stem or Path(arg).name
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


def code_hash(entry: registry.ModelEntry) -> str:
    """Hash of the source that determines pretrained weights (the adapter's module and its package's
    private helpers, the shared blocks, the engine), so a cached checkpoint is never reused after the model code changed
    (otherwise ``bench check`` could miss a regression on a machine with warm caches)."""
    import importlib.util

    import bench

    root = Path(bench.__file__).resolve().parent
    module = Path(importlib.util.find_spec(entry.target.partition(":")[0]).origin)
    # the module plus its package's private shared helpers (e.g. baselines/_common.py)
    files = [module] + sorted(p for p in module.parent.glob("_*.py") if p.name != "__init__.py")
    files += sorted((root / "nn").glob("*.py")) + [root / "engine.py", root / "adapter.py"]
    h = hashlib.sha1()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


class Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, name: str) -> "_Lap":
        return _Lap(self, name)


class _Lap:
    def __init__(self, sw: Stopwatch, name: str) -> None:
        self.sw, self.name = sw, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.sw.timings[self.name] = round(self.sw.timings.get(self.name, 0.0) + time.perf_counter() - self.t0, 3)


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
    that determines the pretrained weights."""
    cell = plan.cell
    model_cfg, tcfg = build_configs(plan)
    key = _hash({"data": catalog_fingerprint, "features": features_hash, "model": cell.model,
                 "code": code_hash(plan.entry),
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
    if not plan.pipeline["untrained"] and getattr(plan.entry.load(), "pretrains", True):  # frozen encoders: none
        pf.check_batch(len(rows), setup.train_cfg.batch_size, cell.modalities, bool(plan.pipeline["pretrain_incomplete"]))
    return Checked(plan.result_path(catalog.source, catalog.fingerprint), rows, pf.eval_health(catalog, plan.cell.split))


def describe_cache(plan: Plan) -> list[str]:
    """What ``run_cell`` would reuse, compute or refuse (``bench run --dry-run``): the same checks."""
    from bench.data.catalog import parse_source, synthetic_dir
    from bench.features import FeatureConfig, store_dir

    lines = [f"model {plan.entry.paper_name} ({plan.entry.target}), preset {plan.cell.preset}",
             f"model overrides {plan.model_overrides or '-'}; train overrides {plan.train_overrides or '-'}; "
             f"pipeline {plan.pipeline}"]
    kind, arg = parse_source(plan.cell.data)
    if kind == "synthetic":
        size, _, seed = arg.partition(":")
        if not (synthetic_dir(size, int(seed or 0)) / "info.json").is_file():
            lines += [f"catalog  : will be generated (synthetic {size}); the checks that need it run then",
                      "features : will be built", "pretrain : will run", f"result   : under {plan.results_dir}"]
            return lines
    catalog = load_cell_catalog(plan)
    lines.append(f"catalog  : cached ({catalog.source}, {len(catalog.dataset)} listings, fingerprint {catalog.fingerprint[:12]})")
    fcfg = FeatureConfig(**plan.pipeline["features"])
    setup = resolve_setup(plan, catalog.fingerprint, fcfg.hash())
    checked = preflight(plan, catalog, setup)
    sdir = store_dir(catalog, fcfg)
    lines.append(f"features : {'cached' if (sdir / 'info.json').exists() else 'will be built'} ({sdir})")
    if not getattr(plan.entry.load(), "pretrains", True):
        lines.append("pretrain : none (frozen encoder: raw media encoded once, cached under $M5BENCH_HOME/encoders)")
    elif plan.pipeline["untrained"]:
        lines.append("pretrain : skipped (untrained control)")
    else:
        done = (setup.run_dir / "final" / "model.safetensors").exists()
        lines.append(f"pretrain : {'cached' if done else 'will run'} ({setup.run_dir}); {len(checked.pretrain_rows)} "
                     f"listings, {setup.train_cfg.epochs} epochs, batch {setup.train_cfg.batch_size}, lr {setup.train_cfg.lr}")
    lines.append("embed, evaluate, fine-tune: always run")
    lines += [f"warning  : {w}" for w in checked.health.warnings]
    lines.append(f"result   : {checked.result_path} ({'exists' if checked.result_path.exists() else 'new'})")
    return lines


#: What an interrupt in each stage leaves on disk (every cache is written whole or not at all).
_KEPT = {
    "catalog": "nothing half-written was kept",
    "features": "feature shards already finished were kept",
    "pretrain": "the pretraining checkpoint of the last finished epoch (or of the interrupt) was kept in {run_dir}",
    "score": "the pretrained checkpoint was kept in {run_dir}; no result was written",
}


def _interrupted(stage: str, run_dir: Path | None) -> Interrupted:
    kept = _KEPT.get(stage, _KEPT["score"]).format(run_dir=run_dir or "the run directory")
    return Interrupted(f"stopped during {stage}: {kept}; run the same command again to resume")


def run_cell(plan: Plan, *, progress: bool = True, say: Callable[[Any], None] = console.print,
             pretrain_only: bool = False, force: bool = True) -> dict[str, Any]:
    """Run one cell end to end and write its result file atomically. Returns the result dict.

    ``pretrain_only`` stops after pretraining (``bench pretrain``) and returns the checkpoint path.
    Without ``force``, a cell whose result already exists is not recomputed (its result is returned).
    Ctrl-C raises :class:`~bench.console.Interrupted` saying what was kept.
    """
    state: dict[str, Any] = {"stage": "catalog", "run_dir": None}
    try:
        return _run_cell(plan, state, progress=progress, say=say, pretrain_only=pretrain_only, force=force)
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise _interrupted(state["stage"], state["run_dir"]) from None


def _run_cell(plan: Plan, state: dict[str, Any], *, progress: bool, say: Callable[[Any], None],
              pretrain_only: bool, force: bool) -> dict[str, Any]:
    import torch
    from accelerate import PartialState

    from bench.engine import pretrain
    from bench.features import FeatureConfig, build_features, store_dir
    from bench.results import read_result, write_json_atomic

    cell, sw = plan.cell, Stopwatch()
    t_start = time.perf_counter()
    mods = cell.modalities
    # Under `accelerate launch` every process runs this function: the main process builds the
    # catalog and features first (the others then find them cached), all processes pretrain
    # data-parallel, and only the main process embeds, scores and writes the result.
    dist = PartialState()
    if not dist.is_main_process:
        say = lambda *_: None  # noqa: E731 - one voice on the console
        progress = False

    with dist.main_process_first():
        with sw("catalog"):
            catalog = load_cell_catalog(plan, progress=progress)
        say(f"[bold]catalog[/] {catalog.source}: {len(catalog.dataset)} listings, fingerprint {catalog.fingerprint[:12]}")
        fcfg = FeatureConfig(**plan.pipeline["features"])
        setup = resolve_setup(plan, catalog.fingerprint, fcfg.hash())
        checked = preflight(plan, catalog, setup)
        for w in checked.health.warnings:
            say(f"[yellow]warning[/] {w}")
        if checked.result_path.exists() and not force and not pretrain_only:
            say(f"[green]result exists[/] {checked.result_path} (use --force to recompute)")
            return read_result(checked.result_path)
        state["stage"] = "features"
        with sw("features"):
            cached = (store_dir(catalog, fcfg) / "info.json").exists()
            store = build_features(catalog, fcfg, progress=progress)
        say(f"[bold]features[/] {'cached' if cached else 'built'}: {store.path}")
    spec = store.spec

    # --- frozen encoders (bench/encoders): no pretrain stage; the whole run is theirs -------------
    if not getattr(plan.entry.load(), "pretrains", True):
        if pretrain_only:
            raise UserError(f"{cell.model} is a frozen encoder: it has no pretraining stage")
        from bench.encoders.run import run_frozen

        state["stage"] = "score"
        return run_frozen(plan, catalog, store, fcfg, setup, checked, sw, t_start, progress=progress, say=say)
    # ------------------------------------------------------------------------------------------------

    model_cfg, tcfg, run_dir = setup.model_cfg, setup.train_cfg, setup.run_dir
    state["run_dir"] = run_dir
    from bench import preflight as pf

    # exact now that the store knows which media decoded
    rows = pf.pretrain_rows(catalog, cell.split, mods, bool(plan.pipeline["pretrain_incomplete"]), store.present)
    if not plan.pipeline["untrained"]:
        pf.check_batch(len(rows), tcfg.batch_size, mods, bool(plan.pipeline["pretrain_incomplete"]))

    torch.manual_seed(cell.seed)
    model = plan.entry.load()(model_cfg, spec, mods)
    steps_per_epoch = len(rows) // tcfg.batch_size

    def batches_for_epoch(epoch: int):
        return store.batches(rows, mods, tcfg.batch_size, shuffle=True, seed=cell.seed * 10_007 + epoch, drop_last=True)

    final = run_dir / "final"
    train_info: dict[str, Any] = {}
    state["stage"] = "pretrain"
    with sw("pretrain"), _pretrain_lock(run_dir, dist.num_processes, say):
        if plan.pipeline["untrained"]:
            say("[yellow]pretrain[/] skipped: untrained control (weights at their seeded initialisation)")
        elif (final / "model.safetensors").exists():
            model.load_weights(final)
            say(f"[green]pretrain[/] cached: {final}")
            summary = run_dir / "train_summary.json"
            train_info = json.loads(summary.read_text()) if summary.exists() else {}
        else:
            res = pretrain(model, batches_for_epoch, steps_per_epoch, tcfg, run_dir, resume=True, progress=progress)
            train_info = {"global_step": res.global_step, "epochs": res.epochs_completed, "seconds": round(res.seconds, 2),
                          "last_log": res.last_log, "mixed_precision": res.mixed_precision,
                          "resumed_from_step": res.resumed_from_step}
            if dist.is_main_process:
                model.save_pretrained(final, cell=cell.describe())
                write_json_atomic(run_dir / "train_summary.json", train_info)
    dist.wait_for_everyone()
    if not dist.is_main_process:
        return {}
    if pretrain_only:
        say(f"[bold green]checkpoint[/] {final}")
        return {"checkpoint": str(final), "train": train_info}

    state["stage"] = "score"
    scored = _score(plan, catalog, store, model, tcfg, sw, progress)
    sw.timings["total"] = round(time.perf_counter() - t_start, 3)
    result = _result(plan, catalog, store, fcfg, setup, checked, rows, scored, model, train_info, sw)
    path = _write_result(checked.result_path, result)
    _save_embeddings(path.with_suffix(".embeddings.npz"), scored["variants"], mods, catalog, scored["eval_rows"],
                     scored["cat_ids"], scored["prod_ids"])
    _save_per_query(path.with_suffix(".per_query.npz"), scored, catalog)
    from bench.summary import headline_table

    say(headline_table(result))
    for w in result.get("warnings", []):
        say(f"[yellow]warning[/] {w}")
    say(f"[bold green]result[/] {path}")
    return result


def _score(plan: Plan, catalog: Any, store: Any, model: Any, tcfg: Any, sw: Stopwatch, progress: bool) -> dict[str, Any]:
    """Embed the evaluation and classification-train listings, score them, fine-tune, score again."""
    import numpy as np

    from bench.data.tasks import eval_masks
    from bench.embedding import embed_rows
    from bench.eval.suite import evaluate
    from bench.finetune import finetune_classifier

    cell, mods, spec = plan.cell, plan.cell.modalities, store.spec
    eval_rows = catalog.split_indices("gallery")
    cls_train_rows, cls_test_rows = catalog.cls_rows(cell.split)
    sets = eval_masks(catalog, cell.split, eval_rows)  # each task's queries and gallery for this split
    with sw("embed"):
        variants = embed_rows(model, store.batches(eval_rows, mods, 128), variants=True)
        emb_train = embed_rows(model, store.batches(cls_train_rows, mods, 128))
    cat_ids, prod_ids = catalog.category_ids(), catalog.product_ids()
    in_eval = {"coarse_query": sets["queries"]["coarse"], "fine_query": sets["queries"]["fine"],
               "cls_test": np.isin(eval_rows, cls_test_rows)}
    common = dict(category=cat_ids[eval_rows], product=prod_ids[eval_rows],
                  coarse_query=in_eval["coarse_query"], fine_query=in_eval["fine_query"],
                  cls_test=in_eval["cls_test"], seed=cell.seed, gallery=sets["cluster_rows"],
                  task_galleries=sets["galleries"], positive_counts=sets["positives"] or None,
                  protocol=sets["protocol"])
    with sw("evaluate"):
        pre = evaluate(variants["default"], train_embeddings=emb_train, train_category=cat_ids[cls_train_rows],
                       per_query=PER_QUERY + ("cls/correct[linear_probe]",), **common)
        # cross-modal and per-modality retrieval, for models that expose one vector per modality
        per_mod = modality_vectors(variants, mods)
        if per_mod:
            from bench.eval.crossmodal import crossmodal_metrics

            xm = crossmodal_metrics(per_mod, {c: store.present(Modality(c))[eval_rows] for c in per_mod},
                                    cat_ids[eval_rows], prod_ids[eval_rows], knn_backend=pre["settings"]["knn_backend"])
            pre["metrics"].update(xm["metrics"])
            pre["counts"].update(xm["counts"])
            pre["definitions"]["crossmodal"] = dict(xm["definitions"], skipped=xm["skipped"])

    with sw("finetune"):
        epochs, holdout = finetune_schedule(plan, cls_train_rows)
        train_rows = np.setdiff1d(cls_train_rows, holdout) if holdout is not None else cls_train_rows
        ft_cfg = dataclasses.replace(tcfg, epochs=epochs, max_steps=None)

        def ft_batches(epoch: int):
            return store.batches(train_rows, mods, tcfg.batch_size, shuffle=True,
                                 seed=cell.seed * 10_007 + 5_000 + epoch, drop_last=True)

        # finetune=head trains only the head on frozen features (the frozen encoders' default)
        head_only = (plan.pipeline["finetune"] or getattr(model, "default_finetune", "full")) == "head"
        ft = finetune_classifier(model, ft_batches, max(1, len(train_rows) // tcfg.batch_size),
                                 store.batches(eval_rows, mods, 128), num_classes=spec.num_categories,
                                 cfg=ft_cfg, backbone_lr=ft_cfg.lr * float(plan.pipeline["finetune_backbone_lr"]),
                                 progress=progress, patience=int(plan.pipeline["finetune_patience"]),
                                 holdout_batches=None if holdout is None else lambda: store.batches(holdout, mods, 128),
                                 freeze_backbone=head_only)
        ft["schedule"].update(holdout_rows=0 if holdout is None else int(len(holdout)), train_rows=int(len(train_rows)),
                              backbone="frozen" if head_only else "fine-tuned")
    with sw("evaluate"):
        fin = evaluate(np.asarray(ft["features"]), head_predictions=np.asarray(ft["predictions"])[in_eval["cls_test"]],
                       tasks=("retrieval", "classification"), per_query=PER_QUERY, **common)
    head_correct = np.asarray(ft["predictions"])[in_eval["cls_test"]] == common["category"][in_eval["cls_test"]]
    fin["per_query"]["cls/correct[finetuned_head]"] = head_correct.astype(np.float32)
    return {"pre": pre, "fin": fin, "ft_cfg": ft_cfg, "ft_schedule": ft["schedule"], "variants": variants, "eval_rows": eval_rows,
            "cls_train_rows": cls_train_rows, "cat_ids": cat_ids, "prod_ids": prod_ids}


#: Names an adapter may give one modality's own vector among its embedding variants: the modality's
#: long name, or for the title the "text" stream of the two-stream models (ViLBERT, CLIP, CAPTURE).
_MODALITY_VARIANT_NAMES = {Modality.T: ("title", "text")}


def modality_vectors(variants: dict[str, Any], mods: ModalitySet) -> dict[str, Any]:
    """``{modality code: (N, d) vectors}`` for each requested modality the model embeds on its own."""
    out = {}
    for m in mods:
        name = next((n for n in _MODALITY_VARIANT_NAMES.get(m, (m.long_name,)) if n in variants), None)
        if name is not None:
            out[m.value] = variants[name]
    return out


def finetune_schedule(plan: Plan, cls_train_rows: Any) -> tuple[int, Any]:
    """(epochs, held-out rows or None) of the fine-tuned classification stage: a fixed length when
    ``finetune_epochs`` is set or the preset is ``paper``; otherwise early stopping on a seeded
    slice of the classification-train rows, at most ``finetune_max_epochs``."""
    import numpy as np

    from bench.seeds import stream
    from bench.settings import PAPER_FINETUNE_EPOCHS

    p = plan.pipeline
    if p["finetune_epochs"] is not None:
        return int(p["finetune_epochs"]), None
    if plan.cell.preset == "paper":
        return PAPER_FINETUNE_EPOCHS, None
    n_hold = int(round(float(p["finetune_holdout"]) * len(cls_train_rows)))
    if not 0 < n_hold < len(cls_train_rows):
        raise UserError(f"finetune_holdout={p['finetune_holdout']} leaves no held-out or no training rows "
                        f"of {len(cls_train_rows)}; set finetune_epochs=N for a fixed length instead")
    pick = stream(plan.cell.seed, "finetune-holdout").permutation(len(cls_train_rows))[:n_hold]
    return int(p["finetune_max_epochs"]), np.sort(cls_train_rows[pick])


def null_reasons(metrics: dict[str, dict[str, Any]], query_counts: dict[str, Any]) -> dict[str, str]:
    """Why each metric that is not a finite number has no value (``group/name -> reason``)."""
    import math

    out: dict[str, str] = {}
    for group, values in metrics.items():
        for name, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                continue
            task = name.split("/", 1)[0]
            if query_counts.get(f"{task}/queries") == 0:
                what = "no product annotation" if task == "fine" else "no category annotation"
                out[f"{group}/{name}"] = f"no {task} retrieval queries in the evaluation split ({what})"
            else:
                out[f"{group}/{name}"] = "not defined on this data (no query or row could be scored)"
    return out


def _result(plan: Plan, catalog: Any, store: Any, fcfg: Any, setup: Setup, checked: Checked, rows: Any,
            scored: dict[str, Any], model: Any, train_info: dict[str, Any], sw: Stopwatch) -> dict[str, Any]:
    from bench.results import new_result

    cell, mods = plan.cell, plan.cell.modalities
    pre, fin, eval_rows = scored["pre"], scored["fin"], scored["eval_rows"]
    metrics = {"pretrain": pre["metrics"], "finetune": fin["metrics"]}
    nulls = null_reasons(metrics, checked.health.counts)
    warnings = list(checked.health.warnings)
    if nulls:
        warnings.append(f"{len(nulls)} metric(s) have no value and are written as null (see 'null_metrics')")
    missing = {m.value: int((~store.present(m)[eval_rows]).sum()) for m in mods}
    return new_result(
        cell={"model": cell.model, "modalities": str(mods), "split": cell.split, "preset": cell.preset,
              "seed": cell.seed, "overrides": cell.overrides},
        data={"source": catalog.source, "fingerprint": catalog.fingerprint,
              "description": catalog.info.get("description", catalog.source),
              "is_m5product": catalog.source.startswith("m5product"), "listings": len(catalog.dataset)},
        config={"model": setup.model_cfg.to_dict(), "train": dataclasses.asdict(setup.train_cfg),
                "finetune": dataclasses.asdict(scored["ft_cfg"]), "features": fcfg.to_dict(),
                "spec": store.spec.to_dict(), "pipeline": plan.pipeline},
        metrics=metrics,
        null_metrics=nulls,
        warnings=warnings,
        eval_health=checked.health.counts,
        hubness={"pretrain": pre.get("hubness", {}), "finetune": fin.get("hubness", {})},
        definitions={**pre.get("definitions", {}), **fin.get("definitions", {})},
        counts={"pretrain_listings": int(len(rows)), "eval_listings": int(len(eval_rows)),
                "cls_train_listings": int(len(scored["cls_train_rows"])), "missing_in_eval": missing,
                "null_metrics": len(nulls), "features": store.info.get("counts", {}), **pre.get("counts", {})},
        extra={**model.extra_state(), "train": train_info, "finetune": scored["ft_schedule"]},
        timings=sw.timings,
    )


def _write_result(path: Path, result: dict[str, Any]) -> Path:
    """Write ``result`` at ``path``, unless ``path`` holds another cell's or another catalog's
    result: that file is never replaced; this one goes beside it under a suffixed name."""
    from bench.results import ResultError, read_result, write_json_atomic

    if path.exists():
        try:
            old = read_result(path)
        except ResultError:
            old = None
        same = old is not None and old.get("cell") == result["cell"] and \
            (old.get("data") or {}).get("fingerprint") == result["data"]["fingerprint"]
        if not same:
            path = path.with_name(f"{path.stem}__{time.strftime('%Y%m%dT%H%M%S')}.json")
            console.print(f"[yellow]warning[/] a different result already has that name; writing {path.name} beside it")
    return write_json_atomic(path, result)


@contextlib.contextmanager
def _pretrain_lock(run_dir: Path, num_processes: int, say: Callable[[Any], None]) -> Iterator[None]:
    """An exclusive lock on one pretraining run directory, so parallel sweeps that need the same
    checkpoint train it once: the second process waits, then finds it cached. Not taken under a
    multi-process launch, whose ranks must enter pretraining together (one launch is one job)."""
    from filelock import FileLock, Timeout

    if num_processes > 1:
        yield
        return
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"[yellow]pretrain[/] another process is training {run_dir.name}; waiting for it")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _save_embeddings(path: Path, variants: dict, mods: ModalitySet, catalog, rows, cat_ids, prod_ids) -> None:
    """Evaluation embeddings beside the result (for ``bench eval`` and the figures), written atomically.

    ``emb_<code>`` holds each modality's own pooled vector where the model exposes one."""
    import numpy as np

    arrays = {"embeddings": variants["default"].astype("float32"),
              "item_id": np.asarray(catalog.dataset.select(rows.tolist())["item_id"]),
              "category": np.asarray([catalog.category_names[c] for c in cat_ids[rows]]),
              "product": np.asarray([catalog.product_names[p] for p in prod_ids[rows]])}
    for code, vec in modality_vectors(variants, mods).items():
        arrays[f"emb_{code}"] = vec.astype("float32")
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def _save_per_query(path: Path, scored: dict[str, Any], catalog: Any) -> None:
    """Per-query metric values of the pre-trained (``pretrain/...``) and fine-tuned (``finetune/...``)
    features beside the result, with the evaluation rows' item ids, written atomically.
    ``<group>/_query_rows`` index the evaluation rows; ``cls/correct[...]`` runs over the cls_test rows."""
    import numpy as np

    eval_rows = scored["eval_rows"]
    arrays: dict[str, Any] = {"item_id": np.asarray(catalog.dataset.select(eval_rows.tolist())["item_id"])}
    for group in ("pre", "fin"):
        for name, values in (scored[group].get("per_query") or {}).items():
            arrays[f"{'pretrain' if group == 'pre' else 'finetune'}/{name}"] = values
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
