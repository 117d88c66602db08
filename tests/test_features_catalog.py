"""Features on catalogs from the real catalog layer (bench.data), and the ``bench features`` commands."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.features import FeatureConfig, build_features
from bench.modalities import ALL, Modality

SMALL = FeatureConfig(vocab_size=800, image_size=48, video_size=32, shard_size=32)


@pytest.fixture(scope="module")
def tiny_cat(tiny_synth_dir):
    from bench.data import load_catalog

    return load_catalog(f"m5product:{tiny_synth_dir}", progress=False)


def test_store_agrees_with_catalog(tiny_cat):
    st = build_features(tiny_cat, SMALL, workers=1, progress=False)
    assert len(st) == len(tiny_cat)
    assert st.spec.num_categories == len(tiny_cat.category_names)
    assert st.info["categories"] == list(tiny_cat.category_names)
    np.testing.assert_array_equal(st.category_ids, tiny_cat.category_ids())
    np.testing.assert_array_equal(st.product_ids, tiny_cat.product_ids())
    cols = tiny_cat.dataset.select_columns(["image", "video", "audio"]).to_dict()
    for m, col in ((Modality.I, "image"), (Modality.V, "video"), (Modality.A, "audio")):
        has_file = np.array([p is not None for p in cols[col]])
        np.testing.assert_array_equal(st.present(m), has_file)  # the generator's files all decode
    rows = tiny_cat.split_indices("pretrain_full")
    seen = []
    for b in st.batches(rows, ALL, 16, shuffle=True, seed=3):
        seen += b.index.tolist()
        np.testing.assert_array_equal(b.category.numpy(), tiny_cat.category_ids()[b.index.numpy()])
        assert b.region_feats.shape[-1] == st.spec.region_dim and b.audio_feats.shape[-1] == st.spec.audio_dim
        for m in ALL:
            mask = {Modality.I: b.region_mask, Modality.T: b.title_mask, Modality.Tab: b.table_mask,
                    Modality.V: b.video_mask, Modality.A: b.audio_mask}[m]
            assert (mask.any(1) == b.present[m]).all()
    assert sorted(seen) == rows.tolist()


def test_cli_build_and_info(tiny_synth_dir):
    from bench.cli import app

    runner = CliRunner()
    src = f"m5product:{tiny_synth_dir}"
    r = runner.invoke(app, ["features", "info", src])
    assert r.exit_code != 0 and "no feature store" in str(r.exception or r.output)
    r = runner.invoke(app, ["features", "build", src, "--workers", "1", "--audio-features", "logmel"])
    assert r.exit_code == 0, r.output
    assert "built feature store" in r.output
    r = runner.invoke(app, ["features", "build", src, "--workers", "1", "--audio-features", "logmel"])
    assert r.exit_code == 0 and "reused feature store" in r.output
    r = runner.invoke(app, ["features", "info", src, "--audio-features", "logmel"])
    assert r.exit_code == 0, r.output
    assert "audio_dim" in r.output and "80" in r.output and "logmel" in r.output
    r = runner.invoke(app, ["features", "build", src, "--audio-features", "wav2vec"])
    assert r.exit_code != 0


def test_cli_user_errors_are_clean(tiny_synth_dir, tmp_path, capsys):
    from bench.cli import main

    src = f"m5product:{tiny_synth_dir}"
    for argv in (["features", "build", src, "--image-backbone", "resnet81"],
                 ["features", "build", src, "--tokenizer", str(tmp_path / "nope")],
                 ["features", "build", src, "--tokenizer", str(tmp_path)]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "resnet18" in err and "does not exist" in err and "tokenizer" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_mini_catalog_pooled_build(mini_catalog):
    st = build_features(mini_catalog, FeatureConfig(shard_size=128), workers=2, progress=False)
    assert len(st) == len(mini_catalog)
    pres = mini_catalog.modality_presence()
    for m in ALL:
        assert abs(st.present(m).mean() - pres[m.value]) < 1e-9, m
    n = sum(b.size for b in st.batches(mini_catalog.split_indices("gallery"), ALL, 32))
    assert n == len(mini_catalog.split_indices("gallery"))
