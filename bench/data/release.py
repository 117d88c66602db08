"""The M5Product release's own file names: its id lists, ground-truth files, region-feature TSV
shards and precomputed S3D / mel folders, and what else a release folder holds.

The harness's own split lists live under ``splits/`` (:data:`bench.data.splits.SPLIT_FILES`); a
release as downloaded names its lists after the official code's sets instead (``query_c``,
``gallery_c``, ``query_fg``, ``gallery_fg``, ``train``, ``subset_v2_train`` / ``subset_v2_test``)
and keeps them next to the annotation files. Both are read; the release's names also select the
official evaluation protocol (:mod:`bench.data.protocol`).
"""

from __future__ import annotations

from pathlib import Path

#: Split roles -> the release's own list stems, looked up at the release root (and under ``splits/``)
#: with the extensions in :data:`LIST_EXTS`. ``subset_test`` (the subset's own evaluation set) has no
#: harness name: only a release has it.
RELEASE_LISTS: dict[str, tuple[str, ...]] = {
    "pretrain": ("train_id_label", "train_ids", "train_id", "pretrain_id_label"),
    "subset": ("subset_v2_train_id_label", "subset_v4_train_id_label", "subset_v2_train_ids", "subset_v2_train_id"),
    "subset_test": ("subset_v2_test_id_label", "subset_v4_test_id_label", "subset_v2_test_ids", "subset_v2_test_id"),
    "cls_train": ("finetune_train_id_label", "finetune_train_id", "cls_train_id_label"),
    "cls_test": ("finetune_test_id_label", "finetune_test_id", "cls_test_id_label"),
    "coarse_query": ("query_c_id_label", "query_c_id", "query_c"),
    "coarse_gallery": ("gallery_c_id_label", "gallery_c_id", "gallery_c"),
    "fine_query": ("query_fg_id_label", "query_fg_id", "query_fg"),
    "fine_gallery": ("gallery_fg_id_label", "gallery_fg_id", "gallery_fg"),
}
LIST_EXTS = (".json", ".txt")

#: The subset's ground truth (``{item_id: {title, pv, label}}``): the official subset scripts count
#: their positives in it, and its keys are the subset.
SUBSET_GT_NAMES = ("subset_v2_id_label.json",)

#: Folders of precomputed per-listing ``{item_id}.npy`` features (S3D video: T x 1024, mel audio: 80 x 751).
PRECOMPUTED_DIRS: dict[str, tuple[str, ...]] = {
    "video_npy_dir": ("video_feature", "video_features", "video_npy", "features/video", "s3d_feature",
                      "s3d_features", "video_s3d"),
    "audio_npy_dir": ("audio_feature", "audio_features", "audio_npy", "features/audio", "mel_feature",
                      "mel_features", "audio_mel"),
}

#: Fields of a region-feature TSV row (the official bottom-up-attention extractor's output).
REGION_TSV_MIN_FIELDS = 6


def find_release_lists(root: Path) -> dict[str, Path]:
    """Role -> the release-named id list found at ``root`` or ``root/splits`` (first name wins)."""
    found: dict[str, Path] = {}
    for role, stems in RELEASE_LISTS.items():
        for folder in (root, root / "splits"):
            hit = next((folder / f"{s}{e}" for s in stems for e in LIST_EXTS if (folder / f"{s}{e}").is_file()), None)
            if hit is not None:
                found[role] = hit
                break
    return found


def release_list_names() -> tuple[str, ...]:
    """Every file name :func:`find_release_lists` accepts."""
    return tuple(f"{s}{e}" for stems in RELEASE_LISTS.values() for s in stems for e in LIST_EXTS)


def is_region_tsv(path: Path) -> bool:
    """Whether ``path``'s first data line looks like a region-feature row (>= 6 tab-separated fields)."""
    try:
        with open(path, "rb") as f:
            for line in f:
                parts = line.rstrip(b"\r\n").split(b"\t")
                if parts[0] in (b"image_id", b""):
                    continue
                return len(parts) >= REGION_TSV_MIN_FIELDS
    except OSError:
        return False
    return False


def find_region_tsvs(root: Path) -> tuple[list[str], list[str]]:
    """``(region TSV shards, other .tsv files)`` at ``root`` and ``root/features``, each sorted by path.

    Only the first line of a file is read: the shards themselves are indexed by byte offset when
    features are built (:mod:`bench.features.region_index`)."""
    shards, other = [], []
    for p in sorted(list(root.glob("*.tsv")) + list((root / "features").glob("*.tsv"))):
        (shards if is_region_tsv(p) else other).append(str(p))
    return shards, other


def find_precomputed_dirs(root: Path) -> dict[str, str | None]:
    """``video_npy_dir`` / ``audio_npy_dir``: the first known folder name holding ``.npy`` files."""
    out: dict[str, str | None] = {}
    for key, names in PRECOMPUTED_DIRS.items():
        out[key] = next((str(root / n) for n in names if (root / n).is_dir() and any((root / n).glob("*.npy"))), None)
    return out


def unrecognised_entries(root: Path, used: set[str]) -> list[str]:
    """Top-level names in ``root`` (and ``root/features``) that nothing reads, sorted: a release's
    extra files (readmes, archives, LMDBs) are ignored, but listed by ``bench data stats``."""
    used_paths = {str(Path(u).resolve()) for u in used}
    used_tops = {Path(u).resolve().relative_to(root).parts[0] for u in used
                 if Path(u).resolve().is_relative_to(root)}
    out = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.name == "features" and p.is_dir():
            out += [f"features/{q.name}" for q in sorted(p.iterdir())
                    if not q.name.startswith(".") and str(q.resolve()) not in used_paths
                    and not any(u.startswith(str(q.resolve()) + "/") for u in used_paths)]
            continue
        if p.name not in used_tops:
            out.append(p.name + ("/" if p.is_dir() else ""))
    return out
