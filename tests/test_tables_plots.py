"""`bench plot`: figures from hand-made results and embeddings; skips with a message when inputs are missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tables_fake import make_result, write_result
from typer.testing import CliRunner

from bench import plots
from bench.leaderboard import Collection, collect


def _write_npz(result_path: Path, n: int = 60, d: int = 8, *, seed: int = 0, pairs: float | None = None) -> None:
    """Embeddings with 4 separable categories; with ``pairs``, emb_I/emb_T of cosine ~``pairs``."""
    rng = np.random.default_rng(seed)
    cats = np.array([f"cat{i % 4}" for i in range(n)])
    centers = rng.normal(size=(4, d)) * 5
    emb = (centers[np.arange(n) % 4] + rng.normal(size=(n, d))).astype(np.float32)
    arrays = {"embeddings": emb, "item_id": np.array([f"it{i}" for i in range(n)]), "category": cats,
              "product": np.array([f"p{i // 2}" for i in range(n)])}
    if pairs is not None:
        a = rng.normal(size=(n, d))
        ua = a / np.linalg.norm(a, axis=1, keepdims=True)
        noise = rng.normal(size=(n, d))
        noise -= (noise * ua).sum(axis=1, keepdims=True) * ua  # orthogonal to a: cos(a, b) = pairs exactly
        b = pairs * ua + np.sqrt(1 - pairs**2) * noise / np.linalg.norm(noise, axis=1, keepdims=True)
        a[0] = 0.0  # a listing without an image: left out, not counted as zero similarity
        arrays.update(emb_I=a.astype(np.float32), emb_T=b.astype(np.float32))
    np.savez(plots.embeddings_path(result_path), **arrays)


def test_mean_pair_cosine_golden_and_missing_rows():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [np.nan, 1.0]])
    mean, n = plots.mean_pair_cosine(a, b)
    assert n == 2 and mean == pytest.approx(0.5)
    assert plots.mean_pair_cosine(np.zeros((3, 2)), np.ones((3, 2))) is None
    assert plots.mean_pair_cosine(np.ones((3, 2)), np.ones((2, 2))) is None


def test_harmonize_matrix_parsing():
    m, labels = plots.harmonize_matrix({"extra": {"harmonize": {"S": [[1, 0.5], [0.5, 1]], "labels": ["I", "T"]}}})
    assert m.shape == (2, 2) and labels == ["I", "T"]
    m, _ = plots.harmonize_matrix({"extra": {"harmonize": {"weights": [0.2, 0.8]}}})
    assert m.shape == (1, 2)
    assert plots.harmonize_matrix({"extra": {"harmonize": {"S": [[float("nan")]]}}}) is None
    assert plots.harmonize_matrix({}) is None


def test_all_figures_skip_cleanly_without_inputs(tmp_path):
    write_result(tmp_path / "r", make_result("scale", "I,T,Tab,V,A"))  # a result, but no npz
    outs = plots.make_figures(collect(tmp_path / "r"), tmp_path / "fig")
    assert [o.path for o in outs] == [None, None, None]
    assert all(o.message.startswith("skipped:") for o in outs)
    assert not (tmp_path / "fig").exists() or not list((tmp_path / "fig").iterdir())
    assert plots.make_figures(Collection(), tmp_path / "fig")[0].path is None


def test_figures_from_results_and_embeddings(tmp_path):
    root = tmp_path / "r"
    p = write_result(root, make_result("scale", "I,T,Tab,V,A"))
    _write_npz(p, pairs=0.6)
    _write_npz(write_result(root, make_result("clip", "I,T")), seed=1)
    for i, mods in enumerate(("I,T", "I,T,Tab", "I,T,Tab,V")):
        _write_npz(write_result(root, make_result("scale", mods)), seed=2 + i, pairs=0.2 * (i + 1))
    _write_npz(write_result(root, make_result("scale", "T")), seed=9)  # no image: no point for T
    h = {"harmonize": {"S": [[1.0, 0.3], [0.3, 1.0]], "labels": ["I", "T"]}}
    write_result(root, make_result("scale", "I,T,Tab,V,A", overrides={"harmonize": "learned"}, extra=h))
    col = collect(root)

    corr = plots.modality_correlation(col, "subset")
    assert [c[0] for c in corr] == ["+I", "+Tab", "+V", "+A"]
    assert [c[1] for c in corr] == pytest.approx([0.2, 0.4, 0.6, 0.6], abs=1e-5)
    assert all(c[3] == 1 for c in corr)

    outs = {o.name: o for o in plots.make_figures(col, tmp_path / "fig", max_points=50)}
    for name in ("tsne", "modality_correlation", "harmonization"):
        assert outs[name].path is not None, outs[name].message
        assert outs[name].path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "clip" in outs["tsne"].message
    block = plots.figures_block(tmp_path / "fig")
    assert "](figures/tsne.png)" in block and "not drawn yet" not in block


def test_cli_plot_updates_the_page(tmp_path):
    from bench.cli import app

    root = tmp_path / "r"
    write_result(root, make_result("scale", "I,T,Tab,V,A", extra={"harmonize": {"weights": [[0.5, 0.5]],
                                                                                "labels": ["I", "T"]}}))
    out = tmp_path / "lb"
    r = CliRunner().invoke(app, ["plot", "--results", str(root), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "figures" / "harmonization.png").exists()
    page = (out / "README.md").read_text()
    assert "](figures/harmonization.png)" in page and "t-SNE" in page and "not drawn yet" in page


@pytest.mark.parametrize("mode,second,key", [("learned", "logit multipliers", "logit_scales"),
                                              ("loss_weights", "loss weights", "weights")])
def test_harmonizer_state_as_logged_by_scale_becomes_two_panels(mode, second, key):
    """The real `Harmonizer.state_for_log` layout: S matrix, the mode's term dict (SIMCL logit
    multipliers or loss weights), labels in `names`."""
    import torch

    from bench.nn.harmonize import Harmonizer

    h = Harmonizer(["T", "I", "Tab"], mode)
    with torch.no_grad():
        h.S.copy_(torch.arange(9, dtype=torch.float32).reshape(3, 3) / 10)
    state = h.state_for_log()
    panels = plots.harmonize_panels({"extra": {"harmonize": state}})
    assert [p[0] for p in panels] == ["learned S", second]
    title, w, labels = panels[1]
    assert labels == ["T", "I", "Tab"]
    assert w[0, 1] == pytest.approx(state[key]["T-I"]) and w[2, 2] == pytest.approx(state[key]["Tab"])
    assert np.isnan(w[1, 0])  # no term below the diagonal
    assert np.isnan(panels[0][1][2, 0]) and panels[0][1][0, 2] == pytest.approx(0.2)  # unused half of S blanked
    assert plots.harmonize_panels({"extra": {"harmonize": Harmonizer(["T", "I"], "uniform").state_for_log()}}) == []
