"""``bench plot``: the paper's figures, drawn from result files and the embeddings saved beside them.

* ``tsne.png`` (paper Figure 6): t-SNE of SCALE's and one baseline's listing embeddings, coloured
  by category. Reads ``<result stem>.embeddings.npz`` (``embeddings`` [N, D], ``category``).
* ``modality_correlation.png`` (paper Figure 5): for the sequential runs, the mean cosine
  similarity between the image and the title embedding of the same listing (``emb_I``, ``emb_T``
  in the npz), one point per sequential row.
* ``harmonization.png``: the learned harmonisation matrix, ``result["extra"]["harmonize"]``
  (``S`` and/or ``weights``, with ``labels`` or ``names``; ``weights`` may be the harmoniser's
  ``{"I": w, "I-T": w, ...}`` term dict).

A figure whose inputs are missing is skipped with a message saying what it needs; nothing here
ever invents data. Matplotlib runs headless (Agg), and PNGs carry no timestamp metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bench.leaderboard import Collection, begin_marker, end_marker
from bench.tables import SEQUENTIAL_ROWS, CellSpec

FIGURES = (
    ("tsne", "t-SNE of listing embeddings, coloured by category (paper Figure 6)",
     "needs `<result>.embeddings.npz` beside a SCALE result and a baseline result"),
    ("modality_correlation", "Image-title embedding similarity as modalities are added (paper Figure 5)",
     "needs `emb_I` and `emb_T` in the embeddings npz of the sequential SCALE runs"),
    ("harmonization", "Learned harmonisation matrix of SCALE",
     "needs `extra.harmonize` (`S` or `weights`, with `labels` or `names`) in a SCALE result"),
)
TOP_CATEGORIES = 10
BASELINE_PREFERENCE = ("clip", "capture", "uniter", "visualbert", "vilbert", "vlbert", "bert", "image")


@dataclass
class FigureOutcome:
    name: str
    path: Path | None
    message: str


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    # No Software/date metadata: the same inputs give the same bytes.
    fig.savefig(tmp, dpi=120, bbox_inches="tight", metadata={"Software": None})
    tmp.replace(path)
    return path


def embeddings_path(result_path: Path) -> Path:
    return result_path.with_name(result_path.stem + ".embeddings.npz")


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an embeddings file, or None when absent or unreadable."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None


def _with_embeddings(col: Collection, cell: CellSpec, key: str = "embeddings"):
    """(seed, result path, arrays) of the lowest seed of ``cell`` whose npz has ``key``."""
    for seed, (path, _res) in sorted(col.seeds(cell).items()):
        arr = load_npz(embeddings_path(path))
        if arr is not None and key in arr:
            return seed, path, arr
    return None


def _pick_scale_cell(col: Collection, split: str) -> CellSpec | None:
    preferred = CellSpec.make("scale", "I,T,Tab,V,A", split)
    if _with_embeddings(col, preferred):
        return preferred
    cands = [c for c in col.runs if c.model == "scale" and c.split == split and not c.overrides
             and _with_embeddings(col, c)]
    return max(cands, key=lambda c: (len(c.modalities.split(",")), c.modalities), default=None)


def baseline_order() -> tuple[str, ...]:
    """Which baseline the t-SNE figure shows, first found first: the paper's preference, then any
    other registered model (so a new model is drawn when it is the only one with embeddings)."""
    from bench import registry

    return BASELINE_PREFERENCE + tuple(n for n in registry.names() if n not in BASELINE_PREFERENCE and n != "scale")


def _pick_baseline_cell(col: Collection, split: str) -> CellSpec | None:
    for model in baseline_order():
        cands = sorted(c for c in col.runs if c.model == model and c.split == split and not c.overrides
                       and _with_embeddings(col, c))
        if cands:
            return cands[-1]
    return None


def _tsne_2d(x: np.ndarray, seed: int, threads: int | None = 1) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(x)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    # OpenMP oversubscription on a busy machine makes sklearn's t-SNE 20x slower; cap the pool.
    with threadpool_limits(limits=threads):
        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity,
                    learning_rate="auto").fit_transform(x.astype(np.float64))


def _subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def plot_tsne(col: Collection, out_dir: Path, *, split: str = "subset", max_points: int = 2000,
              seed: int = 0, threads: int | None = 1) -> FigureOutcome:
    """Figure 6: side-by-side t-SNE of SCALE and one baseline, coloured by the top categories."""
    scale_cell = _pick_scale_cell(col, split)
    base_cell = _pick_baseline_cell(col, split)
    if scale_cell is None or base_cell is None:
        lacking = " and ".join(n for n, c in (("SCALE", scale_cell), ("a baseline", base_cell)) if c is None)
        return FigureOutcome("tsne", None, f"skipped: no embeddings npz for {lacking} on split {split!r}")
    panels = []
    for cell in (scale_cell, base_cell):
        _seed, path, arr = _with_embeddings(col, cell)  # type: ignore[misc]
        emb = np.asarray(arr["embeddings"], dtype=np.float32)
        cats = np.asarray(arr["category"]).astype(str) if "category" in arr else None
        if cats is None or len(cats) != len(emb) or emb.ndim != 2:
            return FigureOutcome("tsne", None, f"skipped: {embeddings_path(path).name} lacks a `category` "
                                               "array matching `embeddings`")
        ok = np.isfinite(emb).all(axis=1)
        idx = _subsample(int(ok.sum()), max_points, seed)
        emb, cats = emb[ok][idx], cats[ok][idx]
        if len(emb) < 5:
            return FigureOutcome("tsne", None, f"skipped: only {len(emb)} finite embeddings in {path.name}")
        panels.append((cell, _tsne_2d(emb, seed, threads), cats))

    plt = _pyplot()
    # One colour per category shared by both panels: the most frequent categories over both runs.
    all_cats = np.concatenate([p[2] for p in panels])
    names, counts = np.unique(all_cats, return_counts=True)
    order = sorted(zip(-counts, names))
    top = [n for _c, n in order[:TOP_CATEGORIES]]
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, (cell, xy, cats) in zip(axes, panels):
        other = ~np.isin(cats, top)
        ax.scatter(xy[other, 0], xy[other, 1], s=4, c="lightgrey", label="other" if other.any() else None)
        for i, name in enumerate(top):
            m = cats == name
            if m.any():
                ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(i % 10), label=name)
        ax.set_title(f"{cell.model} ({cell.modalities}, {cell.split})")
        ax.set_xticks([])
        ax.set_yticks([])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, markerscale=3, frameon=False)
    fig.subplots_adjust(right=0.82)
    path = _save(fig, out_dir / "tsne.png")
    plt.close(fig)
    return FigureOutcome("tsne", path, f"SCALE {scale_cell.modalities} vs {base_cell.model} {base_cell.modalities}")


def mean_pair_cosine(a: np.ndarray, b: np.ndarray) -> tuple[float, int] | None:
    """Mean cosine similarity of row i of ``a`` with row i of ``b`` over rows where both exist.

    A listing without one of the two modalities has a zero, NaN or missing vector; it is left out
    rather than counted as zero similarity. Returns (mean, rows used) or None when no row qualifies.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        return None
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    ok = np.isfinite(na) & np.isfinite(nb) & (na > 1e-12) & (nb > 1e-12)
    if not ok.any():
        return None
    cos = (a[ok] * b[ok]).sum(axis=1) / (na[ok] * nb[ok])
    return float(cos.mean()), int(ok.sum())


def modality_correlation(col: Collection, split: str) -> list[tuple[str, float, float, int]]:
    """(row label, mean over seeds, std over seeds, n seeds) of the image-title cosine per sequential row."""
    out = []
    for label, mods in SEQUENTIAL_ROWS:
        vals = []
        for _seed, (path, _res) in sorted(col.seeds(CellSpec.make("scale", mods, split)).items()):
            arr = load_npz(embeddings_path(path))
            if arr is None or "emb_I" not in arr or "emb_T" not in arr:
                continue
            r = mean_pair_cosine(arr["emb_I"], arr["emb_T"])
            if r is not None:
                vals.append(r[0])
        if vals:
            v = np.asarray(vals)
            out.append((label, float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)))
    return out


def plot_modality_correlation(col: Collection, out_dir: Path) -> FigureOutcome:
    """Figure 5: image-title similarity per sequential row, one line per split that has data."""
    series = {split: modality_correlation(col, split) for split in ("subset", "full")}
    series = {k: v for k, v in series.items() if len(v) >= 1}
    if not series:
        return FigureOutcome("modality_correlation", None,
                             "skipped: no sequential SCALE run has `emb_I` and `emb_T` in its embeddings npz")
    plt = _pyplot()
    labels = [lab for lab, _m in SEQUENTIAL_ROWS]
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, pts in sorted(series.items()):
        xs = [labels.index(p[0]) for p in pts]
        ax.errorbar(xs, [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3, label=split)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_xlabel("modalities (added in sequence)")
    ax.set_ylabel("mean cosine(image, title) per listing")
    ax.legend()
    ax.grid(alpha=0.3)
    path = _save(fig, out_dir / "modality_correlation.png")
    plt.close(fig)
    n = sum(len(v) for v in series.values())
    return FigureOutcome("modality_correlation", path, f"{n} sequential rows with image and title embeddings")


def _weights_matrix(weights: Any, names: list[str]) -> np.ndarray | None:
    """The harmoniser's ``weights`` as a matrix: a nested list as is, or a ``{term: w}`` dict.

    The dict form (``bench.nn.harmonize.Harmonizer.state_for_log``) names diagonal terms ``X`` (a
    modality's masked task) and upper-triangle terms ``X-Y`` (a contrastive pair); cells with no
    term stay NaN and print blank.
    """
    if isinstance(weights, Mapping):
        if not names:
            return None
        m = np.full((len(names), len(names)), np.nan)
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                key = a if i == j else f"{a}-{b}"
                v = weights.get(key)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    m[i, j] = float(v)
        return m if np.isfinite(m).any() else None
    try:
        m = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return m[None, :] if m.ndim == 1 else m


def harmonize_panels(result: Mapping[str, Any]) -> list[tuple[str, np.ndarray, list[str]]]:
    """(title, matrix, labels) for ``S``, ``weights`` (the loss-weight mode) and ``logit_scales``
    (the SIMCL mode's logit multipliers) in ``result["extra"]["harmonize"]``; [] when absent.

    Labels come from ``labels`` (or the harmoniser's ``names``). A matrix that is not 2-D, or has
    an infinite value, is dropped; NaN marks cells with no term.
    """
    h = (result.get("extra") or {}).get("harmonize") or {}
    if not isinstance(h, Mapping):
        return []
    labels = [str(x) for x in (h.get("labels") or h.get("names") or [])]
    # With term-dict weights only the diagonal and upper triangle are used; S's lower triangle is
    # then an unused parameter and is blanked rather than drawn as if it meant something.
    upper_only = isinstance(h.get("weights"), Mapping) or isinstance(h.get("logit_scales"), Mapping)
    panels = []
    for key, title in (("S", "learned S"), ("weights", "loss weights"), ("logit_scales", "logit multipliers")):
        if h.get(key) is None:
            continue
        m = _weights_matrix(h[key], []) if key == "S" else _weights_matrix(h[key], labels)
        if m is None or m.ndim != 2 or np.isinf(m).any() or not np.isfinite(m).any():
            continue
        if key == "S" and upper_only and m.shape[0] == m.shape[1]:
            m = np.where(np.tril(np.ones_like(m, dtype=bool), k=-1), np.nan, m)
        panels.append((title, m, labels))
    return panels


def harmonize_matrix(result: Mapping[str, Any]) -> tuple[np.ndarray, list[str]] | None:
    """The first harmonisation matrix (``S`` before ``weights``) and its labels, or None."""
    panels = harmonize_panels(result)
    return (panels[0][1], panels[0][2]) if panels else None


def plot_harmonization(col: Collection, out_dir: Path) -> FigureOutcome:
    """The harmonisation state of a SCALE run (``S`` and/or ``weights``) as annotated heatmaps."""
    prefs = [CellSpec.make("scale", "I,T,Tab,V,A", split, *ov)
             for split in ("subset", "full") for ov in (({"harmonize": "learned"},), ())]
    others = sorted(c for c in col.runs if c.model == "scale" and c not in prefs)
    for cell in prefs + others:
        for seed, (path, res) in sorted(col.seeds(cell).items()):
            panels = harmonize_panels(res)
            if not panels:
                continue
            plt = _pyplot()
            size = max(p[1].shape[1] for p in panels)
            fig, axes = plt.subplots(1, len(panels), figsize=(len(panels) * (1.1 * size + 2), 1.0 * size + 1.8),
                                     squeeze=False)
            for ax, (title, m, labels) in zip(axes[0], panels):
                im = ax.imshow(np.ma.masked_invalid(m), cmap="viridis")
                rows = labels if len(labels) == m.shape[0] else [str(i) for i in range(m.shape[0])]
                cols = labels if len(labels) == m.shape[1] else [str(i) for i in range(m.shape[1])]
                ax.set_xticks(range(m.shape[1]))
                ax.set_xticklabels(cols)
                ax.set_yticks(range(m.shape[0]))
                ax.set_yticklabels(rows)
                finite = m[np.isfinite(m)]
                lo, hi = float(finite.min()), float(finite.max())
                digits = 3 if max(abs(lo), abs(hi)) < 0.1 else 2
                for i in range(m.shape[0]):
                    for j in range(m.shape[1]):
                        if np.isfinite(m[i, j]):
                            # dark text on the bright end of viridis, light text on the dark end
                            bright = hi > lo and (m[i, j] - lo) / (hi - lo) > 0.6
                            ax.text(j, i, f"{m[i, j]:.{digits}f}", ha="center", va="center", fontsize=8,
                                    color="black" if bright else "white")
                fig.colorbar(im, ax=ax, fraction=0.046)
                ax.set_title(title, fontsize=9)
            fig.suptitle(f"harmonisation: {cell.describe()}, seed {seed}", fontsize=9)
            out = _save(fig, out_dir / "harmonization.png")
            plt.close(fig)
            return FigureOutcome("harmonization", out, f"from {path.name}")
    return FigureOutcome("harmonization", None, "skipped: no SCALE result has `extra.harmonize` (`S` or `weights`)")


def make_figures(col: Collection, out_dir: Path, *, max_points: int = 2000, seed: int = 0,
                 threads: int | None = 1) -> list[FigureOutcome]:
    """Draw every figure that has inputs; the others come back with a skip message.

    ``threads`` caps the OpenMP/BLAS pool for t-SNE (None: the libraries' default).
    """
    out_dir = Path(out_dir)
    # the paper's figure uses the subset; fall back to the full split when only that was run
    tsne = plot_tsne(col, out_dir, max_points=max_points, seed=seed, threads=threads)
    if tsne.path is None:
        tsne = plot_tsne(col, out_dir, split="full", max_points=max_points, seed=seed, threads=threads)
    return [tsne,
            plot_modality_correlation(col, out_dir),
            plot_harmonization(col, out_dir)]


def figures_block(figures_dir: Path, rel: str = "figures") -> str:
    """The Markdown figure block: an image link per existing figure, a note for the others.

    Depends only on which PNGs exist, so ``bench table`` and ``bench plot`` write the same block.
    """
    lines = [begin_marker("figures"), "<!-- generated by `bench plot` / `bench table`; do not edit by hand -->", ""]
    for name, caption, needs in FIGURES:
        if (Path(figures_dir) / f"{name}.png").exists():
            lines += [f"**{caption}**", "", f"![{caption}]({rel}/{name}.png)", ""]
        else:
            lines += [f"**{caption}**: not drawn yet (`bench plot`; {needs}).", ""]
    lines.append(end_marker("figures"))
    return "\n".join(lines) + "\n"
