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


def _generator_key() -> str:
    """Hash of the generator's code and media libraries: a generated catalog is a pure function of it."""
    import hashlib

    import av
    import numpy
    import PIL

    from bench.data import synth, synth_media

    h = hashlib.sha256()
    for mod in (synth, synth_media):
        h.update(open(mod.__file__, "rb").read())
    h.update(f"{av.__version__} {PIL.__version__} {numpy.__version__}".encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def mini_catalog(_m5bench_home):
    """The ``synthetic:mini`` catalog (~1,500 listings with real media) in the session's M5BENCH_HOME.

    Generating it costs ~10 s of CPU, so it is generated once per machine into a test-only folder in
    the system temp dir, keyed by a hash of the generator's code and library versions (the generator
    is deterministic, so a copy is byte-identical to a fresh run), then copied into the session's
    home. Set M5BENCH_TEST_FRESH_CATALOGS=1 to generate from scratch. Read-only: do not modify it.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from bench.data import load_catalog
    from bench.data.catalog import synthetic_dir
    from bench.data.synth import config_for, generate

    target = synthetic_dir("mini", 0)
    if not os.environ.get("M5BENCH_TEST_FRESH_CATALOGS") and not target.exists():
        shared = Path(tempfile.gettempdir()) / "m5bench-test-catalogs" / f"{target.name}-{_generator_key()}"
        if not (shared / "info.json").is_file():
            shared.parent.mkdir(parents=True, exist_ok=True)
            try:
                generate(shared, config_for("mini", 0))
            except OSError:  # another session generated it first
                if not (shared / "info.json").is_file():
                    raise
        tmp = target.with_name(target.name + ".copying")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(shared, tmp)
        os.rename(tmp, target)
    return load_catalog("synthetic:mini", progress=False)


@pytest.fixture(scope="session")
def tiny_synth_dir(tmp_path_factory):
    """A tiny synthetic catalog (60 listings, real media) in the M5Product layout, generated once per
    session; load it with ``load_catalog(f"m5product:{tiny_synth_dir}")``. Read-only."""
    from bench.data.synth import config_for, generate

    out = tmp_path_factory.mktemp("tiny_synth") / "catalog"
    generate(out, config_for("tiny", seed=0, n_listings=60), workers=1)
    return out
