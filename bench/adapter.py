"""The adapter contract: what a model must provide to be benchmarked.

An adapter only embeds and computes its own pretraining losses; data, the training loop, metrics,
result files and tables belong to the harness (the MTEB "narrow encoder" idea). Adding a model is
one file plus one line in :mod:`bench.registry`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from bench.features.batch import Batch, FeatureSpec, UnlabeledBatch, without_labels
from bench.modalities import ModalitySet


@dataclass
class AdapterConfig:
    """Base class of every model config; subclasses add their fields and presets."""

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "AdapterConfig":
        presets = cls.presets()
        if name not in presets:
            raise KeyError(f"unknown preset {name!r} for {cls.__name__}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        return {"tiny": {}, "paper": {}}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdapterConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _labels_free(step: Callable[..., dict[str, torch.Tensor]]) -> Callable[..., dict[str, torch.Tensor]]:
    """Wrap a ``pretrain_step`` so it only ever sees :class:`UnlabeledBatch` (the contract's rule)."""

    @functools.wraps(step)
    def pretrain_step(self: "Adapter", batch: UnlabeledBatch, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor]:
        return step(self, without_labels(batch), generator)

    pretrain_step.__labels_free__ = True  # type: ignore[attr-defined]
    return pretrain_step


class Adapter(nn.Module):
    """Base class of every model in the registry.

    Subclasses set ``config_cls`` and implement :meth:`pretrain_step`, :meth:`embed` and
    :meth:`embed_variants`. ``modalities`` is the set the instance was built for (already checked
    against the registry entry by :func:`bench.registry.create_model`).

    Every subclass's ``pretrain_step`` is wrapped at class creation so that it receives the batch
    without labels (:meth:`Batch.without_labels`), whoever calls it (the engine, ``bench
    check-adapter``, a test): the original models pretrain with no category or product supervision,
    and reading ``batch.category`` / ``batch.product`` there raises :class:`LabelsHidden`.

    Each subclass declares its retrieval vector: ``embed_variant`` names the entry of
    :meth:`embed_variants` that :meth:`embed` returns (``embed_variants(b)["default"]`` is the same
    tensor), and ``retrieval_vector`` says in one sentence what that tensor is. The choice is made
    by principle, before any result is seen, and the class docstring gives the reason.
    """

    config_cls: ClassVar[type[AdapterConfig]] = AdapterConfig
    #: name of the :meth:`embed_variants` entry that :meth:`embed` returns
    embed_variant: ClassVar[str] = "default"
    #: one sentence: which tensor :meth:`embed` returns
    retrieval_vector: ClassVar[str] = ""
    #: whether a run pretrains this model; ``False`` (a frozen encoder) gives a recipe without the
    #: pretrain stage (:func:`bench.stages.recipe_for`)
    pretrains: ClassVar[bool] = True
    #: stages of the run's recipe this model replaces, ``{stage name: bench.stages.Stage subclass}``
    #: (e.g. ``{"embed": ...}`` for an encoder that reads raw media instead of the feature store)
    stage_overrides: ClassVar[dict[str, type]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("pretrain_step")
        if step is not None and not getattr(step, "__labels_free__", False):
            cls.pretrain_step = _labels_free(step)  # type: ignore[method-assign]

    def __init__(self, config: AdapterConfig, spec: FeatureSpec, modalities: ModalitySet):
        super().__init__()
        self.config = config
        self.spec = spec
        self.modalities = modalities

    # --- the contract -------------------------------------------------------------------------
    def pretrain_step(self, batch: UnlabeledBatch, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor]:
        """Mask the batch as the model's objectives require and return named losses.

        The dict must hold ``"loss"``, the total that the engine back-propagates; the other entries
        are the per-task losses it logs (detached or not). ``generator`` seeds all masking (and any
        other random draw of the step, e.g. ITM negatives). ``batch`` carries no labels.
        """
        raise NotImplementedError

    def embed(self, batch: Batch) -> torch.Tensor:
        """One retrieval vector per listing, [B, D], with no masking and no dropout
        (``embed_variants(batch)[self.embed_variant]``)."""
        raise NotImplementedError

    def embed_variants(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named alternative embeddings (e.g. ``cls`` and ``mean``); ``default`` is :meth:`embed`."""
        return {"default": self.embed(batch)}

    def classification_features(self, batch: Batch) -> torch.Tensor:
        """Input of the paper's fine-tuned classification head; default: the embedding."""
        return self.embed(batch)

    def on_optimizer_step(self) -> None:
        """Called by the training loop once after every optimizer step (not per micro-batch under
        ``grad_accum > 1``): the place for a momentum encoder's update or a queue's advance."""

    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state to log and save beside the weights (e.g. SCALE's learned S)."""
        return {}

    # --- persistence --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, **meta: Any) -> None:
        """Write ``model.safetensors`` and ``config.json`` (config, spec, modalities, meta)."""
        # save_model (not save_file) because tied weights (MLM decoder = word embeddings) share storage.
        from safetensors.torch import save_model

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "model.safetensors.tmp"
        save_model(self, str(tmp))
        tmp.replace(d / "model.safetensors")
        info = {
            "adapter": type(self).__module__ + ":" + type(self).__qualname__,
            "config": self.config.to_dict(),
            "spec": self.spec.to_dict(),
            "modalities": str(self.modalities),
            "extra_state": self.extra_state(),
            **meta,
        }
        tmpj = d / "config.json.tmp"
        tmpj.write_text(json.dumps(info, indent=2, sort_keys=True))
        tmpj.replace(d / "config.json")

    def load_weights(self, directory: str | Path) -> None:
        from safetensors.torch import load_model

        load_model(self, str(Path(directory) / "model.safetensors"), strict=True)
