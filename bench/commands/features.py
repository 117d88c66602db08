"""``bench features build | info``: featurize a catalog into the on-disk feature store, describe a store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from bench.commands.data import ENCODING
from bench.console import UserError, console, err_console
from bench.data.sources import usage as source_usage

features_app = typer.Typer(help="Build and inspect feature stores (token ids, region/frame/audio features).",
                           no_args_is_help=True)

_SOURCE_HELP = f"A catalog source: {source_usage()} (see `bench ls sources`)."


def _config(tokenizer: Optional[Path], image_backbone: str, image_weights: Optional[Path], audio_features: str,
            vocab_size: int, video_fps: float) -> Any:
    from bench.features.config import FeatureConfig

    if audio_features not in ("mfcc", "logmel"):
        raise UserError(f"--audio-features must be mfcc or logmel, got {audio_features!r}")
    for opt, p in (("--tokenizer", tokenizer), ("--image-weights", image_weights)):
        if p is not None and not p.exists():
            raise UserError(f"{opt}: {p} does not exist")
    if tokenizer is not None and not tokenizer.is_dir():
        raise UserError(f"--tokenizer must be a Hugging Face tokenizer folder, got the file {tokenizer}")
    if video_fps <= 0:
        raise UserError("--video-fps must be positive")
    return FeatureConfig(tokenizer=str(tokenizer) if tokenizer else None, image_backbone=image_backbone,
                         image_weights=str(image_weights) if image_weights else None, audio_features=audio_features,
                         vocab_size=vocab_size, video_fps=video_fps)


def _check_backbone(name: str) -> None:
    import timm

    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise UserError(f"unknown timm backbone {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))


def _check_tokenizer(path: Optional[Path]) -> None:
    if path is None:
        return
    from bench.features.text import load_tokenizer_folder, special_ids

    try:
        special_ids(load_tokenizer_folder(path))
    except Exception as exc:
        raise UserError(f"--tokenizer {path}: not a usable WordPiece tokenizer folder ({exc})") from None


_TOKENIZER = typer.Option(None, "--tokenizer", help="Local Hugging Face tokenizer folder (default: train WordPiece on the catalog).")
_BACKBONE = typer.Option("resnet18", "--image-backbone", help="timm model for image regions and video frames.")
_WEIGHTS = typer.Option(None, "--image-weights", help="Local weights file for the backbone (default: seeded random init).")
_AUDIO = typer.Option("mfcc", "--audio-features", help="mfcc (the paper) or logmel (the official code).")
_VOCAB = typer.Option(4000, "--vocab-size", help="Size of the WordPiece vocabulary trained on the catalog.")
_FPS = typer.Option(1.0, "--video-fps", help="Frames sampled per second of video (short clips get at least 4).")


@features_app.command("build")
def build(
    source: str = typer.Argument("synthetic", help=_SOURCE_HELP),
    tokenizer: Optional[Path] = _TOKENIZER,
    image_backbone: str = _BACKBONE,
    image_weights: Optional[Path] = _WEIGHTS,
    audio_features: str = _AUDIO,
    vocab_size: int = _VOCAB,
    video_fps: float = _FPS,
    workers: int = typer.Option(2, "--workers", min=1, help="Worker processes (one torch thread each), per process "
                                "of a multi-process launch."),
    encoding: Optional[str] = ENCODING,
) -> None:
    """Featurize every listing (reusing a complete store with the same config; resuming a partial one).

    Ctrl-C stops the workers, keeps every finished shard and says how to resume.
    """
    from bench.data import load_catalog
    from bench.features.ranks import launch_ranks
    from bench.features.store import build_features, store_dir

    cfg = _config(tokenizer, image_backbone, image_weights, audio_features, vocab_size, video_fps)
    _check_backbone(image_backbone)
    _check_tokenizer(tokenizer)
    ranks = launch_ranks()
    with ranks.main_first():  # under a multi-process launch, rank 0 makes the catalog; the others read it
        cat = load_catalog(source, encoding=encoding, progress=ranks.main)
    _check_has_content(cat)
    path = store_dir(cat, cfg)
    existed = (path / "info.json").exists()
    try:
        store = build_features(cat, cfg, workers=workers, progress=True)
    except KeyboardInterrupt:
        err_console.print(f"[yellow]interrupted:[/] {_kept(path)}; run the same command to resume")
        raise SystemExit(130) from None
    if not ranks.main:  # rank 0 speaks for every rank
        return
    verb = "reused" if existed else "built"
    t = store.info["timings"]
    ranks = f" on each of {t['world_size']} processes" if t.get("world_size", 1) > 1 else ""
    console.print(f"{verb} feature store {store.path}" + ("" if existed else f" in {t['wall_s_this_run']:.1f} s "
                  f"({t['worker_cpu_s_total']:.1f} s worker CPU, {t['workers']} workers{ranks})"))
    console.print(_counts_table(store))


@features_app.command("info")
def info(
    source: str = typer.Argument("synthetic", help=_SOURCE_HELP),
    tokenizer: Optional[Path] = _TOKENIZER,
    image_backbone: str = _BACKBONE,
    image_weights: Optional[Path] = _WEIGHTS,
    audio_features: str = _AUDIO,
    vocab_size: int = _VOCAB,
    video_fps: float = _FPS,
    encoding: Optional[str] = ENCODING,
) -> None:
    """Counts, missing/failed listings by reason, dims and config of the store for these options."""
    import json

    from rich.table import Table

    from bench.data import load_catalog
    from bench.data.paths import m5bench_home
    from bench.features.store import FeatureStore, store_dir

    cfg = _config(tokenizer, image_backbone, image_weights, audio_features, vocab_size, video_fps)
    cat = load_catalog(source, progress=False, encoding=encoding)
    path = store_dir(cat, cfg)
    if not (path / "info.json").exists():
        root = m5bench_home() / "features" / str(cat.fingerprint)
        built = sorted(p.parent.name for p in root.glob("*/info.json")) if root.exists() else []
        hint = f"; built stores for this catalog: {', '.join(built)}" if built else ""
        partial = " (a partial build exists: run build to resume it)" if (path / "layout.json").exists() else ""
        raise UserError(f"no feature store for {source} with these options at {path}{partial}; "
                        f"run `bench features build {source}`{hint}")
    store = FeatureStore(path)
    i = store.info
    console.print(f"feature store {store.path}\ncatalog {i['catalog_fingerprint']}  rows {i['rows']}  "
                  f"shards {i['num_shards']} x {i['shard_size']}  created {i['created']}")
    console.print(_counts_table(store))
    dims = Table(title="feature spec")
    dims.add_column("field")
    dims.add_column("value")
    for k, v in store.spec.to_dict().items():
        if k != "extra":
            dims.add_row(k, str(v))
    console.print(dims)
    src = Table(title="sources")
    src.add_column("modality")
    src.add_column("featurizer")
    for k, v in i["sources"].items():
        src.add_row(k, v)
    console.print(src)
    t = i["timings"]
    console.print(f"timings: wall {t['wall_s_this_run']} s (last run), worker CPU by modality "
                  f"{json.dumps(t['worker_cpu_s_by_modality'])}, shards resumed {t['shards_resumed']}, "
                  f"processes {t.get('world_size', 1)}, shards by device {json.dumps(t.get('devices', {}))}")
    console.print(f"tables truncated: {i['tables_truncated']} ({i['table_entities_dropped']} whole entities dropped)")
    console.print("config: " + json.dumps({k: v for k, v in i["config"].items() if k != "extra"}))


def _check_has_content(cat: Any) -> None:
    """Refuse a catalog whose listings have no title, table or media at all: nothing to featurize."""
    if not any(cat.modality_presence().values()):
        from bench.data.report import unknown_columns_warning

        warning = unknown_columns_warning(cat)
        raise UserError(f"{cat.source}: nothing to featurize: no listing has a title, table, image, video or audio"
                        + (f"; {warning}" if warning else ""))


def _kept(path: Path) -> str:
    """What an interrupted build left in ``path``: its finished shards, which a rerun reuses."""
    import json

    try:
        layout = json.loads((path / "layout.json").read_text())
    except (OSError, ValueError):
        return "no shard was finished"
    total = -(-int(layout["rows"]) // int(layout["shard_size"]))
    done = sum(1 for p in (path / "shards").glob("[0-9]" * 5) if p.is_dir()) if (path / "shards").is_dir() else 0
    return f"kept {done} of {total} finished shards in {path}"


def _counts_table(store: Any) -> Any:
    from rich.table import Table

    from bench.features.extract import REASONS

    reasons = list(REASONS.values())
    t = Table(title=f"modalities over {store.rows} listings")
    for col in ["modality", "present", *reasons]:
        t.add_column(col, justify="right" if col != "modality" else "left")
    for m, c in store.info["counts"].items():
        t.add_row(m, str(c["present"]), *[str(c["by_reason"].get(r, 0) or "-") for r in reasons])
    return t


def register(app: typer.Typer) -> None:
    app.add_typer(features_app, name="features")
