"""The stages that score a model: embed, evaluate, fine-tune the classification head, evaluate again.

None is cached (they are fast next to pretraining, and their output is the result file). Each puts
its output in ``ctx.scored`` under the names the result stage reads.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.modalities import Modality, ModalitySet
from bench.stages.base import Context, Decision, Stage

#: Metrics whose per-query values are saved beside a result (``.per_query.npz``), under both scoring
#: rules, so two results on the same catalog can be compared query by query (paired bootstrap).
PER_QUERY = tuple(f"{task}/{m}{tag}" for task in ("coarse", "fine") for m, tag0 in
                  (("mAP@1", "[m5product"), ("mAP@10", "[m5product"), ("mAP@R", "[pml")) for tag in
                  (tag0 + "]", tag0 + "/cos]"))

#: Names an adapter may give one modality's own vector among its embedding variants: the modality's
#: long name, or for the title the "text" stream of the two-stream models (ViLBERT, CLIP, CAPTURE).
_MODALITY_VARIANT_NAMES = {Modality.T: ("title", "text")}
_SCORE_KEPT = "the pretrained checkpoint was kept in {run_dir}; no result was written"


class _ScoreStage(Stage):
    kept = _SCORE_KEPT


class EmbedStage(_ScoreStage):
    """Every embedding variant of the evaluation rows, and the default vector of the probe's train rows.

    A model that embeds differently (a frozen encoder reading raw media) replaces this stage through
    its ``stage_overrides``; whatever replaces it must fill the same ``ctx.scored`` entries.
    """

    name, timer = "embed", "embed"

    def run(self, ctx: Context, decision: Decision) -> None:
        from bench.embedding import embed_rows

        catalog, store, mods, s = ctx.catalog, ctx.store, ctx.plan.cell.modalities, ctx.scored
        s["eval_rows"] = catalog.split_indices("gallery")
        s["cls_train_rows"], s["cls_test_rows"] = catalog.cls_rows(ctx.plan.cell.split)
        s["variants"] = embed_rows(ctx.model, store.batches(s["eval_rows"], mods, 128), variants=True)
        s["emb_train"] = embed_rows(ctx.model, store.batches(s["cls_train_rows"], mods, 128))


def _labels(ctx: Context) -> dict[str, Any]:
    """Labels, each task's query and gallery masks for the cell's split (:func:`bench.data.tasks.eval_masks`)
    and the classification test rows of the evaluation rows: the common arguments of every evaluation."""
    import numpy as np

    from bench.data.tasks import eval_masks

    catalog, s, split = ctx.catalog, ctx.scored, ctx.plan.cell.split
    if "common" not in s:
        eval_rows = s["eval_rows"]
        sets = eval_masks(catalog, split, eval_rows)
        s["cat_ids"], s["prod_ids"] = catalog.category_ids(), catalog.product_ids()
        s["in_eval"] = {"coarse_query": sets["queries"]["coarse"], "fine_query": sets["queries"]["fine"],
                        "cls_test": np.isin(eval_rows, s["cls_test_rows"])}
        s["common"] = {"category": s["cat_ids"][eval_rows], "product": s["prod_ids"][eval_rows],
                       "coarse_query": s["in_eval"]["coarse_query"], "fine_query": s["in_eval"]["fine_query"],
                       "cls_test": s["in_eval"]["cls_test"], "seed": ctx.plan.cell.seed,
                       "gallery": sets["cluster_rows"], "task_galleries": sets["galleries"],
                       "positive_counts": sets["positives"] or None, "protocol": sets["protocol"]}
    return s["common"]


class EvaluateStage(_ScoreStage):
    """Retrieval (both scoring rules), linear probe, clustering, and cross-modal retrieval where the
    model has one vector per modality, on the pretrained embeddings."""

    name, timer = "evaluate", "evaluate"

    def run(self, ctx: Context, decision: Decision) -> None:
        from bench.eval.suite import evaluate

        s, common = ctx.scored, _labels(ctx)
        cls_rows = s["cls_train_rows"]
        pre = evaluate(s["variants"]["default"], train_embeddings=s["emb_train"], train_category=s["cat_ids"][cls_rows],
                       per_query=PER_QUERY + ("cls/correct[linear_probe]",), **common)
        per_mod = modality_vectors(s["variants"], ctx.plan.cell.modalities)
        if per_mod:
            from bench.eval.crossmodal import crossmodal_metrics

            rows = s["eval_rows"]
            xm = crossmodal_metrics(per_mod, {c: ctx.store.present(Modality(c))[rows] for c in per_mod},
                                    s["cat_ids"][rows], s["prod_ids"][rows], knn_backend=pre["settings"]["knn_backend"])
            pre["metrics"].update(xm["metrics"])
            pre["counts"].update(xm["counts"])
            pre["definitions"]["crossmodal"] = dict(xm["definitions"], skipped=xm["skipped"])
        s["pre"] = pre


class FinetuneStage(_ScoreStage):
    """The paper's classification head, fine-tuned with the backbone (early stopping on held-out rows);
    with ``finetune=head`` (a frozen encoder's default) only the head trains."""

    name, timer = "finetune", "finetune"

    def run(self, ctx: Context, decision: Decision) -> None:
        import numpy as np

        from bench.finetune import finetune_classifier
        from bench.seeds import epoch_seed

        plan, s, store, tcfg = ctx.plan, ctx.scored, ctx.store, ctx.setup.train_cfg
        cell, mods = plan.cell, plan.cell.modalities
        epochs, holdout = finetune_schedule(plan, s["cls_train_rows"])
        rows = np.setdiff1d(s["cls_train_rows"], holdout) if holdout is not None else s["cls_train_rows"]
        s["ft_cfg"] = ft_cfg = dataclasses.replace(tcfg, epochs=epochs, max_steps=None)

        def ft_batches(epoch: int):
            return store.batches(rows, mods, tcfg.batch_size, shuffle=True,
                                 seed=epoch_seed(cell.seed, "finetune-batches", epoch), drop_last=True)

        # finetune=head trains only the head on frozen features (the frozen encoders' default)
        head_only = (plan.pipeline["finetune"] or getattr(ctx.model, "default_finetune", "full")) == "head"
        ft = finetune_classifier(ctx.model, ft_batches, max(1, len(rows) // tcfg.batch_size),
                                 store.batches(s["eval_rows"], mods, 128), num_classes=store.spec.num_categories,
                                 cfg=ft_cfg, backbone_lr=ft_cfg.lr * float(plan.pipeline["finetune_backbone_lr"]),
                                 progress=ctx.progress, patience=int(plan.pipeline["finetune_patience"]),
                                 holdout_batches=None if holdout is None else lambda: store.batches(holdout, mods, 128),
                                 freeze_backbone=head_only)
        ft["schedule"].update(holdout_rows=0 if holdout is None else len(holdout), train_rows=len(rows),
                              backbone="frozen" if head_only else "fine-tuned")
        s["ft"], s["ft_schedule"] = ft, ft["schedule"]


class EvaluateFinetunedStage(_ScoreStage):
    """Retrieval on the fine-tuned features and the fine-tuned head's accuracy."""

    name, timer = "evaluate-finetuned", "evaluate"

    def run(self, ctx: Context, decision: Decision) -> None:
        import numpy as np

        from bench.eval.suite import evaluate

        s, common = ctx.scored, _labels(ctx)
        ft, in_test = s["ft"], s["in_eval"]["cls_test"]
        predictions = np.asarray(ft["predictions"])[in_test]
        fin = evaluate(np.asarray(ft["features"]), head_predictions=predictions,
                       tasks=("retrieval", "classification"), per_query=PER_QUERY, **common)
        fin["per_query"]["cls/correct[finetuned_head]"] = (predictions == common["category"][in_test]).astype(np.float32)
        s["fin"] = fin


def modality_vectors(variants: dict[str, Any], mods: ModalitySet) -> dict[str, Any]:
    """``{modality code: (N, d) vectors}`` for each requested modality the model embeds on its own."""
    out = {}
    for m in mods:
        name = next((n for n in _MODALITY_VARIANT_NAMES.get(m, (m.long_name,)) if n in variants), None)
        if name is not None:
            out[m.value] = variants[name]
    return out


def finetune_schedule(plan: Any, cls_train_rows: Any) -> tuple[int, Any]:
    """(epochs, held-out rows or None) of the fine-tuned classification stage: a fixed length when
    ``finetune_epochs`` is set or the preset is ``paper``; otherwise early stopping on a seeded
    slice of the classification-train rows, at most ``finetune_max_epochs``."""
    import numpy as np

    from bench.console import UserError
    from bench.seeds import stream
    from bench.settings import PAPER_FINETUNE_EPOCHS

    p = plan.pipeline
    if p["finetune_epochs"] is not None:
        return int(p["finetune_epochs"]), None
    if plan.cell.preset == "paper":
        return PAPER_FINETUNE_EPOCHS, None
    n_hold = round(float(p["finetune_holdout"]) * len(cls_train_rows))
    if not 0 < n_hold < len(cls_train_rows):
        raise UserError(f"finetune_holdout={p['finetune_holdout']} leaves no held-out or no training rows "
                        f"of {len(cls_train_rows)}; set finetune_epochs=N for a fixed length instead")
    pick = stream(plan.cell.seed, "finetune-holdout").permutation(len(cls_train_rows))[:n_hold]
    return int(p["finetune_max_epochs"]), np.sort(cls_train_rows[pick])
