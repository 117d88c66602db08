"""The headline job: catalog -> features -> pretrain -> embed -> evaluate -> result file.

``bench run`` is a thin CLI over :func:`run_cell`. Every stage is cached on disk under
``$M5BENCH_HOME`` and keyed by what determines it (catalog fingerprint, feature config, model,
modalities, preset, overrides, split, seed), so a second run reuses what it can and says so.
This module knows models only through the registry and the adapter contract.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from bench import registry
from bench.console import UserError, console
from bench.data.paths import m5bench_home
from bench.modalities import Modality, ModalitySet

SPLITS = ("subset", "full")
#: Overrides that configure the pipeline rather than the model or the training loop:
#: ``pretrain_incomplete`` keeps listings that lack some requested modality in pretraining (the
#: paper's default; ``false`` is its "complete listings only" ablation); ``untrained`` skips
#: pretraining (the control every trained model must beat); ``finetune_epochs`` sizes the paper's
#: fine-tuned classification stage and ``finetune_backbone_lr`` scales the backbone's learning rate
#: in it (relative to the pretraining lr; the new head always trains at the full lr).
PIPELINE_KEYS: dict[str, Any] = {"pretrain_incomplete": True, "untrained": False, "finetune_epochs": 1,
                                 "finetune_backbone_lr": 1.0}


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

    def describe(self) -> str:
        ov = " ".join(f"{k}={v}" for k, v in sorted(self.overrides.items()))
        return (f"{self.model} on {self.modalities} | data={self.data or 'synthetic'} split={self.split} "
                f"preset={self.preset} seed={self.seed}" + (f" | {ov}" if ov else ""))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["harmonize=uniform", "epochs=2"]`` -> typed dict (JSON literals where they parse)."""
    out: dict[str, Any] = {}
    for p in pairs:
        key, sep, raw = p.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got {p!r}")
        try:
            val = json.loads(raw)
        except json.JSONDecodeError:
            val = {"True": True, "False": False}.get(raw, raw)
        out[key.strip()] = val
    return out


def _split_overrides(cfg_cls: type, train_cls: type, overrides: dict[str, Any]) -> tuple[dict, dict, dict]:
    from bench.features import FeatureConfig

    model_fields = {f.name for f in dataclasses.fields(cfg_cls)}
    train_fields = {f.name for f in dataclasses.fields(train_cls)}
    feature_fields = {f"features.{f.name}" for f in dataclasses.fields(FeatureConfig)}
    model_ov, train_ov, pipe_ov = {}, {}, {**PIPELINE_KEYS, "features": {}}
    for k, v in overrides.items():
        if k in PIPELINE_KEYS:
            pipe_ov[k] = v
        elif k in feature_fields:  # e.g. features.image_backbone=mobilenetv3_small_100
            pipe_ov["features"][k.removeprefix("features.")] = v
        elif k in model_fields:
            model_ov[k] = v
        elif k.removeprefix("train.") in train_fields:
            train_ov[k.removeprefix("train.")] = v
        else:
            known = sorted(model_fields | train_fields | set(PIPELINE_KEYS) | feature_fields)
            close = difflib.get_close_matches(k, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown setting {k!r} for this model.{hint} Known: {', '.join(known)}")
    return model_ov, train_ov, pipe_ov


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


@dataclass
class Plan:
    """What a cell will do, resolved before any work starts (printed by ``--dry-run``)."""

    cell: CellSpec
    entry: registry.ModelEntry
    model_overrides: dict[str, Any]
    train_overrides: dict[str, Any]
    pipeline: dict[str, Any]
    result_path: Path


def plan_cell(cell: CellSpec, results_dir: Path | None = None) -> Plan:
    """Check the request (model, modalities, split, overrides) and resolve where results go.

    Everything that can be refused is refused here, before any data or model work.
    """
    from bench.engine import TrainConfig
    from bench.results import cell_filename

    entry = registry.get(cell.model)
    entry.check(cell.modalities)
    if cell.split not in SPLITS:
        raise UserError(f"unknown split {cell.split!r}; choose from {', '.join(SPLITS)}")
    cls = entry.load()
    if cell.preset not in cls.config_cls.presets():
        raise UserError(f"unknown preset {cell.preset!r} for {cell.model}; choose from {sorted(cls.config_cls.presets())}")
    model_ov, train_ov, pipe = _split_overrides(cls.config_cls, TrainConfig, cell.overrides)
    results_dir = Path(results_dir) if results_dir else default_results_dir()
    name = cell_filename(cell.model, cell.modalities.key, cell.split, cell.preset, cell.seed, cell.overrides)
    return Plan(cell, entry, model_ov, train_ov, pipe, results_dir / name)


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


def resolve_setup(plan: Plan, catalog_fingerprint: str, features_hash: str) -> Setup:
    """Model config (preset + overrides), train config (the model's hints + overrides) and the
    checkpoint directory, keyed by everything that determines the pretrained weights."""
    from bench.engine import TrainConfig

    cell = plan.cell
    model_cfg = plan.entry.load().config_cls.preset(cell.preset, **plan.model_overrides)
    hints = {k: getattr(model_cfg, k) for k in ("batch_size", "lr", "epochs", "warmup_ratio")
             if hasattr(model_cfg, k)}
    tcfg = TrainConfig(**{**hints, "seed": cell.seed, **plan.train_overrides})
    key = _hash({"data": catalog_fingerprint, "features": features_hash, "model": cell.model,
                 "code": code_hash(plan.entry),
                 "mods": str(cell.modalities), "preset": cell.preset, "model_cfg": model_cfg.to_dict(),
                 "train": dataclasses.asdict(tcfg), "split": cell.split,
                 "incomplete": plan.pipeline["pretrain_incomplete"]})
    return Setup(model_cfg, tcfg, m5bench_home() / "runs" / f"{cell.model}-{cell.modalities.key}-{key}")


def describe_cache(plan: Plan) -> list[str]:
    """What ``run_cell`` would reuse and what it would compute (``bench run --dry-run``)."""
    from bench.data.catalog import parse_source, synthetic_dir
    from bench.features import FeatureConfig, store_dir

    lines = [f"model {plan.entry.paper_name} ({plan.entry.target}), preset {plan.cell.preset}",
             f"model overrides {plan.model_overrides or '-'}; train overrides {plan.train_overrides or '-'}; "
             f"pipeline {plan.pipeline}"]
    kind, arg = parse_source(plan.cell.data)
    if kind == "synthetic":
        size, _, seed = arg.partition(":")
        if not (synthetic_dir(size, int(seed or 0)) / "info.json").is_file():
            lines += [f"catalog  : will be generated (synthetic {size})", "features : will be built",
                      "pretrain : will run", f"result   : {plan.result_path}"]
            return lines
    from bench.data import load_catalog

    catalog = load_catalog(plan.cell.data, progress=False)
    lines.append(f"catalog  : cached ({catalog.source}, {len(catalog.dataset)} listings, fingerprint {catalog.fingerprint[:12]})")
    fcfg = FeatureConfig(**plan.pipeline["features"])
    sdir = store_dir(catalog, fcfg)
    lines.append(f"features : {'cached' if (sdir / 'info.json').exists() else 'will be built'} ({sdir})")
    if plan.pipeline["untrained"]:
        lines.append("pretrain : skipped (untrained control)")
    else:
        setup = resolve_setup(plan, catalog.fingerprint, fcfg.hash())
        done = (setup.run_dir / "final" / "model.safetensors").exists()
        lines.append(f"pretrain : {'cached' if done else 'will run'} ({setup.run_dir}); "
                     f"{setup.train_cfg.epochs} epochs, batch {setup.train_cfg.batch_size}, lr {setup.train_cfg.lr}")
    lines.append("embed, evaluate, fine-tune: always run")
    lines.append(f"result   : {plan.result_path} ({'exists' if plan.result_path.exists() else 'new'})")
    return lines


def run_cell(plan: Plan, *, progress: bool = True, say: Callable[[str], None] = console.print,
             pretrain_only: bool = False) -> dict[str, Any]:
    """Run one cell end to end and write its result file atomically. Returns the result dict.

    ``pretrain_only`` stops after pretraining (``bench pretrain``) and returns the checkpoint path.
    """
    import numpy as np
    import torch

    from bench.data import load_catalog
    from bench.embedding import embed_rows
    from bench.engine import pretrain
    from bench.eval.suite import evaluate
    from bench.features import FeatureConfig, build_features, store_dir
    from bench.finetune import finetune_classifier
    from bench.results import new_result, write_json_atomic

    from accelerate import PartialState

    cell, sw = plan.cell, Stopwatch()
    t_start = time.perf_counter()
    mods = cell.modalities
    # Under `accelerate launch` every process runs this function: the main process builds the
    # catalog and features first (the others then find them cached), all processes pretrain
    # data-parallel, and only the main process embeds, scores and writes the result.
    state = PartialState()
    if not state.is_main_process:
        say = lambda *_: None  # noqa: E731 - one voice on the console
        progress = False

    with state.main_process_first():
        with sw("catalog"):
            catalog = load_catalog(cell.data, progress=progress)
        say(f"[bold]catalog[/] {catalog.source}: {len(catalog.dataset)} listings, fingerprint {catalog.fingerprint[:12]}")
        with sw("features"):
            fcfg = FeatureConfig(**plan.pipeline["features"])
            cached = (store_dir(catalog, fcfg) / "info.json").exists()
            store = build_features(catalog, fcfg, progress=progress)
        say(f"[bold]features[/] {'cached' if cached else 'built'}: {store.path}")
    spec = store.spec

    setup = resolve_setup(plan, catalog.fingerprint, fcfg.hash())
    model_cfg, tcfg, run_dir = setup.model_cfg, setup.train_cfg, setup.run_dir

    rows = catalog.split_indices("pretrain_subset" if cell.split == "subset" else "pretrain_full")
    if not plan.pipeline["pretrain_incomplete"]:
        keep = np.ones(len(rows), dtype=bool)
        for m in mods:
            keep &= store.present(m)[rows]
        rows = rows[keep]
    if len(rows) < tcfg.batch_size:
        raise UserError(f"only {len(rows)} pretraining listings for {mods}; need at least one batch of {tcfg.batch_size}")

    torch.manual_seed(cell.seed)
    model = plan.entry.load()(model_cfg, spec, mods)
    steps_per_epoch = len(rows) // tcfg.batch_size

    def batches_for_epoch(epoch: int):
        return store.batches(rows, mods, tcfg.batch_size, shuffle=True, seed=cell.seed * 10_007 + epoch, drop_last=True)

    final = run_dir / "final"
    train_info: dict[str, Any] = {}
    with sw("pretrain"), _pretrain_lock(run_dir, state.num_processes, say):
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
            if state.is_main_process:
                model.save_pretrained(final, cell=cell.describe())
                write_json_atomic(run_dir / "train_summary.json", train_info)
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}

    if pretrain_only:
        say(f"[bold green]checkpoint[/] {final}")
        return {"checkpoint": str(final), "train": train_info}

    # --- embed and evaluate ---------------------------------------------------------------------
    eval_rows = catalog.split_indices("gallery")
    cls_train_rows = catalog.split_indices("cls_train")
    with sw("embed"):
        variants = embed_rows(model, store.batches(eval_rows, mods, 128), variants=True)
        emb_eval = variants["default"]
        emb_train = embed_rows(model, store.batches(cls_train_rows, mods, 128))
    cat_ids, prod_ids = catalog.category_ids(), catalog.product_ids()
    in_eval = {name: np.isin(eval_rows, catalog.split_indices(name))
               for name in ("coarse_query", "fine_query", "cls_test")}
    common = dict(category=cat_ids[eval_rows], product=prod_ids[eval_rows],
                  coarse_query=in_eval["coarse_query"], fine_query=in_eval["fine_query"],
                  cls_test=in_eval["cls_test"], seed=cell.seed)
    with sw("evaluate"):
        pre = evaluate(emb_eval, train_embeddings=emb_train, train_category=cat_ids[cls_train_rows], **common)

    with sw("finetune"):
        ft_cfg = dataclasses.replace(tcfg, epochs=int(plan.pipeline["finetune_epochs"]), max_steps=None)

        def ft_batches(epoch: int):
            return store.batches(cls_train_rows, mods, tcfg.batch_size, shuffle=True,
                                 seed=cell.seed * 10_007 + 5_000 + epoch, drop_last=True)

        ft = finetune_classifier(model, ft_batches, max(1, len(cls_train_rows) // tcfg.batch_size),
                                 store.batches(eval_rows, mods, 128), num_classes=spec.num_categories,
                                 cfg=ft_cfg, backbone_lr=ft_cfg.lr * float(plan.pipeline["finetune_backbone_lr"]),
                                 progress=progress)
    with sw("evaluate"):
        fin = evaluate(np.asarray(ft["features"]), head_predictions=np.asarray(ft["predictions"])[in_eval["cls_test"]],
                       tasks=("retrieval", "classification"), **common)

    sw.timings["total"] = round(time.perf_counter() - t_start, 3)
    missing = {m.value: int((~store.present(m)[eval_rows]).sum()) for m in mods}
    result = new_result(
        cell={"model": cell.model, "modalities": str(mods), "split": cell.split, "preset": cell.preset,
              "seed": cell.seed, "overrides": cell.overrides},
        data={"source": catalog.source, "fingerprint": catalog.fingerprint,
              "description": catalog.info.get("description", catalog.source),
              "is_m5product": catalog.source.startswith("m5product"), "listings": len(catalog.dataset)},
        config={"model": model_cfg.to_dict(), "train": dataclasses.asdict(tcfg), "finetune": dataclasses.asdict(ft_cfg),
                "features": fcfg.to_dict(),
                "spec": spec.to_dict(), "pipeline": plan.pipeline},
        metrics={"pretrain": pre["metrics"], "finetune": fin["metrics"]},
        definitions={**pre.get("definitions", {}), **fin.get("definitions", {})},
        counts={"pretrain_listings": int(len(rows)), "eval_listings": int(len(eval_rows)),
                "cls_train_listings": int(len(cls_train_rows)), "missing_in_eval": missing,
                "features": store.info.get("counts", {}), **pre.get("counts", {})},
        extra={**model.extra_state(), "train": train_info},
        timings=sw.timings,
    )
    path = write_json_atomic(plan.result_path, result)
    _save_embeddings(path.with_suffix(".embeddings.npz"), variants, mods, catalog, eval_rows, cat_ids, prod_ids)
    say(f"[bold green]result[/] {path}")
    return result


@contextlib.contextmanager
def _pretrain_lock(run_dir: Path, num_processes: int, say: Callable[[str], None]) -> Iterator[None]:
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
    for m in mods:
        if m.long_name in variants:
            arrays[f"emb_{m.value}"] = variants[m.long_name].astype("float32")
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
