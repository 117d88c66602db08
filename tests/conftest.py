"""Shared test setup: one torch thread (2-core machines run several processes), caches in a temp dir."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _m5bench_home(tmp_path_factory):
    """Every test session gets its own cache root, so tests never read a user's cache."""
    home = tmp_path_factory.mktemp("m5bench_home")
    old = os.environ.get("M5BENCH_HOME")
    os.environ["M5BENCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("M5BENCH_HOME", None)
    else:
        os.environ["M5BENCH_HOME"] = old
