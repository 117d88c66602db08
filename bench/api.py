"""The Python API: the same functions the ``bench`` commands call, for scripts and notebooks.

.. code-block:: python

    from bench import api

    result = api.run("clip", "I,T", data="synthetic:mini",
                     overrides={"max_steps": 2, "batch_size": 32, "finetune_epochs": 1})
    result["metrics"]["pretrain"]["coarse/mAP@10[m5product]"]

    scored = api.evaluate("my_embeddings.npz", protocol="protocol.parquet")   # = bench eval
    frame = api.load_results(api.default_results_dir(), model="clip")        # = bench results ls

Errors in the user's input raise :class:`bench.console.UserError` with a one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.console import UserError
from bench.pipeline import default_results_dir
from bench.results_frame import load_results

__all__ = ["UserError", "default_results_dir", "evaluate", "load_results", "plan", "run"]

#: Per-row columns :func:`evaluate` takes as keyword arguments beside an embeddings array.
FILE_COLUMNS = ("item_id", "category", "product", "split", "coarse_query", "fine_query", "cls_split")


def plan(model: str, modalities: str, data: str | None = None, split: str = "full", preset: str = "tiny",
         seed: int = 0, overrides: dict[str, Any] | None = None, results: str | Path | None = None, *,
         encoding: str | None = None) -> Any:
    """The checked plan of one cell (:func:`bench.pipeline.plan_cell`), as ``bench run`` makes it.

    ``modalities`` is a comma-separated list of codes (``"I,T"``); ``overrides`` maps setting keys to
    values (``{"train.lr": 3e-4}``, the ``--set`` keys). Refusals that need no data raise
    :class:`~bench.console.UserError`."""
    from bench.modalities import ModalityError, ModalitySet
    from bench.pipeline import CellSpec, plan_cell
    from bench.registry import ModalityNotSupported, RegistryError

    try:
        mods = ModalitySet.parse(modalities)
    except ModalityError as exc:
        raise UserError(str(exc)) from None
    cell = CellSpec(model=model, modalities=mods, data=data, split=split, preset=preset, seed=seed,
                    overrides=dict(overrides or {}), encoding=encoding)
    try:
        return plan_cell(cell, Path(results) if results is not None else None)
    except (ModalityNotSupported, RegistryError) as exc:
        raise UserError(str(exc)) from None


def run(model: str, modalities: str, data: str | None = None, split: str = "full", preset: str = "tiny",
        seed: int = 0, overrides: dict[str, Any] | None = None, results: str | Path | None = None, *,
        encoding: str | None = None, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run one benchmark cell end to end, exactly as ``bench run`` does, and return its result dict.

    Args:
        model: a registered model name (``bench ls models``), a frozen encoder
            (``hf:NAME_OR_PATH``, ``open_clip:ARCH[@PRETRAINED]``, ``timm:NAME[@FILE]``), an installed
            plugin (entry-point group ``m5bench.models``) or an adapter class ``package.module:Class``.
        modalities: comma-separated codes, e.g. ``"I,T,Tab,V,A"``.
        data: catalog source (``synthetic[:mini|default|large]``, ``m5product:PATH``, ``manifest:PATH``);
            None = the default synthetic catalog.
        split, preset, seed: as the ``bench run`` options.
        overrides: setting key -> value, as ``--set`` (``{"max_steps": 2, "train.lr": 3e-4}``).
        results: result directory (default ``$M5BENCH_HOME/results``).
        encoding: text encoding of a manifest or release (default UTF-8).
        force: recompute even if the result file exists (``--force``).
        progress: show progress bars.

    Returns:
        The result written to the result file: ``cell``, ``data``, ``metrics`` (``pretrain`` /
        ``finetune`` groups of fractions), ``counts``, ``definitions``, ``provenance``, ...
    """
    from bench.pipeline import run_cell

    checked = plan(model, modalities, data, split, preset, seed, overrides, results, encoding=encoding)
    return run_cell(checked, force=force, progress=progress)


def evaluate(embeddings: str | Path | np.ndarray | dict[str, Any], protocol: str | Path | dict[str, Any] | None = None,
             **kwargs: Any) -> dict[str, Any]:
    """Score embeddings with the shared evaluator: the code path of ``bench eval``.

    Args:
        embeddings: a ``.npz`` / ``.parquet`` file (:mod:`bench.eval.files`), a dict of arrays in the
            file's layout (``embeddings`` plus per-row columns), or an (N, d) array whose per-row
            columns (``item_id``, ``category``, ``product``, ``split``, ``coarse_query``,
            ``fine_query``, ``cls_split``) are passed as keyword arguments.
        protocol: a protocol file from ``bench data protocol`` (or its columns as a dict): rows are
            joined on ``item_id`` and scored exactly as ``bench run`` scores. Without it the
            documented defaults apply and are listed under ``result["input_defaults"]``.
        **kwargs: the per-row columns above, and ``seed``, ``probe``, ``normalize``, ``max_topk``,
            ``knn_backend``, ``kmeans_backend`` (the ``bench eval`` options).

    Returns:
        The result dict ``bench eval --out`` writes (``metrics``, ``counts``, ``definitions``, ...).
    """
    from bench.eval.files import score_embeddings

    columns = {k: kwargs.pop(k) for k in FILE_COLUMNS if k in kwargs}
    if isinstance(embeddings, (str, Path)):
        if columns:
            raise UserError(f"per-row columns ({', '.join(columns)}) go with an array, not with a file")
        return score_embeddings(embeddings, protocol, **kwargs)
    data = dict(embeddings) if isinstance(embeddings, dict) else {"embeddings": np.asarray(embeddings)}
    data.update(columns)
    return score_embeddings(data, protocol, **kwargs)
