"""Every ``--set`` key of a run, resolved to exactly one setting.

A run's settings form four sections: ``model.*`` (the adapter's config), ``train.*`` (the training
loop), ``features.*`` (the featurizer) and ``pipeline.*`` (what the run does around the model).
A dotted key names its section; a flat key is accepted only when it names exactly one setting,
and refused with the dotted choices otherwise, so one spelling can never land in one place and
another spelling elsewhere.

Two names are not sections' own settings:

* ``seed`` is the cell's seed (the same as ``--seed``): it seeds model initialisation, batch order,
  training and evaluation alike, so it is never a training-only setting.
* The model config's training hints (``batch_size``, ``lr``, ``epochs``, ``warmup_ratio``) are the
  preset's defaults for ``train.*``, not settings of their own: ``lr`` and ``train.lr`` mean the
  training loop's learning rate, and the recorded model config carries the same value.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from bench.console import UserError

#: Model-config fields that are the preset's defaults for the training loop's settings of the same name.
TRAIN_HINTS = ("batch_size", "lr", "epochs", "warmup_ratio")

#: Settings of the run around the model, with their defaults:
#: ``pretrain_incomplete`` keeps listings that lack some requested modality in pretraining (the
#: paper's default; ``false`` is its "complete listings only" ablation); ``untrained`` skips
#: pretraining (the control every trained model must beat). The fine-tuned classification stage:
#: ``finetune_epochs`` fixes its length (``None``: the ``paper`` preset trains 10 epochs as the
#: released code does; other presets stop early on held-out accuracy, at most
#: ``finetune_max_epochs``, holding out ``finetune_holdout`` of the classification-train rows and
#: stopping after ``finetune_patience`` epochs without improvement); ``finetune_backbone_lr``
#: scales the backbone's learning rate in it (relative to the pretraining lr; the new head always
#: trains at the full lr); ``finetune`` is ``full`` (backbone and head) or ``head`` (the backbone
#: frozen), ``None``: the model's default (``head`` for frozen encoders, ``full`` for the others).
#: ``eval_fraction`` and ``split_seed`` set the hash split into pretraining and evaluation for
#: catalogs without id lists (``None``: the catalog's own default).
PIPELINE_KEYS: dict[str, Any] = {"pretrain_incomplete": True, "untrained": False,
                                 "finetune_epochs": None, "finetune_max_epochs": 10, "finetune_holdout": 0.1,
                                 "finetune_patience": 1, "finetune_backbone_lr": 1.0, "finetune": None,
                                 "eval_fraction": None, "split_seed": None}
#: Fine-tuning epochs of the ``paper`` preset: the released evaluation loads the 10th epoch's weights.
PAPER_FINETUNE_EPOCHS = 10

SECTIONS = ("model", "train", "features", "pipeline")
SEED = "seed"


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


@dataclass
class Settings:
    """Overrides sorted into their sections, plus the seed if one was set."""

    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    pipeline: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    #: the overrides under their canonical names (flat where the flat name is unambiguous)
    canonical: dict[str, Any] = field(default_factory=dict)


def section_fields(model_config_cls: type) -> dict[str, set[str]]:
    """The settings each section holds for a model (hints and the seed belong to no section)."""
    from bench.engine import TrainConfig
    from bench.features import FeatureConfig

    names = lambda cls: {f.name for f in dataclasses.fields(cls)}  # noqa: E731
    return {"model": names(model_config_cls) - set(TRAIN_HINTS),
            "train": names(TrainConfig) - {SEED},
            "features": names(FeatureConfig),
            "pipeline": set(PIPELINE_KEYS)}


def _defaults(model_config_cls: type) -> dict[str, dict[str, Any]]:
    """Each section's default values (what a given value's type is checked against)."""
    from bench.engine import TrainConfig
    from bench.features import FeatureConfig

    def of(cls: type) -> dict[str, Any]:
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}

    return {"model": of(model_config_cls), "train": of(TrainConfig), "features": of(FeatureConfig),
            "pipeline": dict(PIPELINE_KEYS)}


def _check_type(key: str, val: Any, default: Any) -> None:
    """Refuse a value whose type cannot be the setting's (``--set epochs=two``), in one line."""
    want = type(default)
    if default is None or want not in (bool, int, float, str):
        return
    ok = (isinstance(val, bool) if want is bool else
          isinstance(val, int) and not isinstance(val, bool) if want is int else
          isinstance(val, (int, float)) and not isinstance(val, bool) if want is float else isinstance(val, str))
    if not ok:
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[want]
        raise UserError(f"setting {key!r} expects {kind} (default {default!r}), got {val!r}")


def _all_dotted(sections: dict[str, set[str]]) -> list[str]:
    return sorted(f"{s}.{n}" for s, names in sections.items() for n in names)


def _unknown(key: str, sections: dict[str, set[str]]) -> UserError:
    known = _all_dotted(sections) + [SEED]
    flat = sorted({n for names in sections.values() for n in names})
    close = difflib.get_close_matches(key, known + flat, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UserError(f"unknown setting {key!r} for this model.{hint} Known: {', '.join(known)}")


def _locate(key: str, sections: dict[str, set[str]]) -> tuple[str, str]:
    """(section, name) of one key, or a refusal naming the dotted choices or the closest key."""
    head, dot, tail = key.partition(".")
    if dot and head in SECTIONS:
        if head == "model" and tail in TRAIN_HINTS:
            raise UserError(f"{key!r} is the preset's default for train.{tail}, not a setting of its own; "
                            f"set train.{tail} (or {tail})")
        if tail in sections[head]:
            return head, tail
        raise _unknown(key, sections)
    if dot:
        raise _unknown(key, sections)
    homes = [s for s in SECTIONS if key in sections[s]]
    if key in TRAIN_HINTS:
        homes = ["train"]
    if len(homes) == 1:
        return homes[0], key
    if homes:
        choices = " or ".join(f"{s}.{key}" for s in homes)
        raise UserError(f"setting {key!r} exists in {len(homes)} places; say which: {choices}")
    raise _unknown(key, sections)


def resolve(model_config_cls: type, overrides: dict[str, Any]) -> Settings:
    """Sort ``overrides`` (as ``--set`` gives them) into sections; refuse unknown and ambiguous keys."""
    sections = section_fields(model_config_cls)
    defaults = _defaults(model_config_cls)
    out = Settings()
    for key, val in overrides.items():
        if key in (SEED, "train.seed", "pipeline.seed"):
            if isinstance(val, bool) or not isinstance(val, int):
                raise UserError(f"seed must be an integer, got {val!r}")
            out.seed = val
            continue
        section, name = _locate(key, sections)
        _check_type(key, val, defaults[section].get(name))
        if name in getattr(out, section):
            raise UserError(f"setting {section}.{name} is given twice (as {key!r} and another spelling)")
        getattr(out, section)[name] = val
        flat_ok = name in TRAIN_HINTS or sum(name in sections[s] for s in SECTIONS) == 1
        out.canonical[name if flat_ok else f"{section}.{name}"] = val
    return out


def pipeline_settings(settings: Settings) -> dict[str, Any]:
    """The pipeline section with its defaults filled in, plus the feature overrides under ``features``."""
    return {**PIPELINE_KEYS, **settings.pipeline, "features": dict(settings.features)}
