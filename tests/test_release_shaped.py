"""The benchmarks' release-shaped annotation generator writes a folder the loader reads as a release."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bench.data.catalog import load_catalog

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "release_shaped.py"


def _module():
    spec = importlib.util.spec_from_file_location("release_shaped", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_release_loads_with_its_lists(tmp_path):
    gen = _module()
    sizes = gen.write_release(tmp_path / "r", 3000, seed=1)
    assert sizes == {"train_ids": 2073, "gallery_c_id": 561, "query_c_id": 11, "gallery_fg_id": 56, "query_fg_id": 1}
    again = gen.write_release(tmp_path / "r2", 3000, seed=1)
    assert again == sizes
    for name in ("id_info_dict.json", "product1m_product5m_test_id_label.json", "gallery_c_id.txt"):
        assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "r2" / name).read_bytes()  # same seed, same bytes
    cat = load_catalog(f"m5product:{tmp_path / 'r'}", progress=False)
    assert len(cat) == 3000
    assert sorted(cat.info["release_lists"]) == ["coarse_gallery", "coarse_query", "fine_gallery", "fine_query",
                                                 "pretrain"]
    assert len(set(cat.dataset["category"])) > 50  # a skewed law over many categories, not a handful
