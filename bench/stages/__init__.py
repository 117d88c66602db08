"""A run as a recipe of stages: catalog, pre-flight, features, pretrain, embed, evaluate, fine-tune,
evaluate the fine-tuned model, result. See :mod:`bench.stages.base` for the contract and
:mod:`bench.stages.recipe` for the loop that both ``bench run`` and ``--dry-run`` walk."""

from bench.stages.base import Context, Decision, Stage, Stopwatch
from bench.stages.recipe import (
           DEFAULT_STAGES,
           dry_run,
           execute,
           interrupted,
           recipe_for,
           walk,
)

__all__ = [
           "DEFAULT_STAGES",
           "Context",
           "Decision",
           "Stage",
           "Stopwatch",
           "dry_run",
           "execute",
           "interrupted",
           "recipe_for",
           "walk",
]
