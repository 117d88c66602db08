"""The on-disk feature store: build it once per (catalog, featurizer config), stream batches from it.

Layout under ``$M5BENCH_HOME/features/<catalog fingerprint>/``::

    tokenizer-wp4000-uncased-v1/tokenizer.json the catalog's trained WordPiece (shared by configs)
    <store key>/layout.json                    shard size, dims, special ids (written first)
    <store key>/shards/00000/*.npy, meta.json  one folder per fixed range of rows, renamed into place
    <store key>/category.npy, product.npy      contiguous label ids per catalog row
    <store key>/info.json                      written last: its presence means the store is complete

Under ``accelerate launch`` / ``torchrun`` the ranks build one store together: each its own shards,
rank 0 the other files (:func:`build_features`).

Variable-length sequences are stored padded to their cap with a length array; batches are padded
only to the longest listing in the batch. The store key is the config hash (plus, when the catalog
ships precomputed features, a digest of those sources).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bench.features.batch import Batch, FeatureSpec
from bench.data.paths import m5bench_home
from bench.features.config import FeatureConfig
from bench.features.extract import COL, OK, REASONS, Job, Setup
from bench.features.ranks import Ranks, launch_ranks, wait_for_paths
from bench.features.rowio import ReaderCache, read_npy_header
from bench.modalities import ORDER, Modality, ModalitySet

LAYOUT_VERSION = 1

# Which stored arrays each modality needs: (array, length array used to trim padding).
_ARRAYS: dict[Modality, tuple[tuple[str, ...], str]] = {
    Modality.T: (("title_ids",), "title_n"),
    Modality.Tab: (("table_ids", "table_entity", "table_kind"), "table_n"),
    Modality.I: (("region_feats", "region_boxes"), "region_n"),
    Modality.V: (("video_feats",), "video_n"),
    Modality.A: (("audio_feats",), "audio_n"),
}


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _atomic_save_npy(path: Path, a: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, a)
    os.replace(tmp, path)


def _precomputed(catalog: Any) -> dict[str, str | None]:
    info = getattr(catalog, "info", None) or {}
    pre = info.get("precomputed") or {}
    out = {}
    for k in ("image_tsv", "video_npy_dir", "audio_npy_dir"):
        v = pre.get(k)
        out[k] = str(v) if v else None
    shards = pre.get("image_tsv_shards") or []
    if len(shards) > 1:  # a one-shard source keeps its old store key
        out["image_tsv_shards"] = [str(x) for x in shards]
    return out


def _source_digest(path: str) -> str:
    """Cheap identity of a precomputed source (name, size, mtime of the file or folder's files)."""
    p = Path(path)
    h = hashlib.sha256(str(p.resolve()).encode())
    files = sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
    for q in files:
        st = q.stat()
        h.update(f"{q.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def store_key(config: FeatureConfig, precomputed: dict[str, str | None]) -> str:
    """The store folder name: the config hash, extended by a digest of any precomputed sources."""
    used = {k: v for k, v in precomputed.items() if v}
    if not used:
        return config.hash()
    digests = {k: _source_digest(v) if isinstance(v, str) else [_source_digest(x) for x in v] for k, v in used.items()}
    blob = json.dumps({"config": config.hash(), **digests}, sort_keys=True)
    return config.hash()[:8] + hashlib.sha256(blob.encode()).hexdigest()[:8]


def store_dir(catalog: Any, config: FeatureConfig | None = None) -> Path:
    """Where the store for ``catalog`` and ``config`` lives (whether or not it is built)."""
    config = config or FeatureConfig()
    return m5bench_home() / "features" / str(catalog.fingerprint) / store_key(config, _precomputed(catalog))


# ---------------------------------------------------------------------------------------------
class FeatureStore:
    """A complete feature store on disk. Cheap to open; reads rows on demand."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        info_path = self.path / "info.json"
        if not info_path.exists():
            raise FileNotFoundError(f"{self.path} is not a complete feature store (no info.json)")
        self.info: dict[str, Any] = json.loads(info_path.read_text())
        self.spec = FeatureSpec.from_dict(self.info["spec"])
        self.config = FeatureConfig.from_dict(self.info["config"]) if self._config_loadable() else None
        self.rows = int(self.info["rows"])
        self.shard_size = int(self.info["shard_size"])
        self.num_shards = int(self.info["num_shards"])
        self._status: np.ndarray | None = None
        self._category = np.load(self.path / "category.npy")
        self._product = np.load(self.path / "product.npy")
        self._readers = ReaderCache()

    def _config_loadable(self) -> bool:
        try:
            FeatureConfig.from_dict(self.info["config"])
            return True
        except Exception:  # e.g. a tokenizer folder that has moved since: the store stays readable
            return False

    def __len__(self) -> int:
        return self.rows

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, rows={self.rows})"

    def close(self) -> None:
        self._readers.close()

    def _shard_path(self, shard: int) -> Path:
        return self.path / "shards" / f"{shard:05d}"

    # -- presence ------------------------------------------------------------------------------
    def status(self) -> np.ndarray:
        """``[rows, 5] int8`` status codes (columns in canonical order; 0 = present)."""
        if self._status is None:
            self._status = np.concatenate([np.load(self._shard_path(s) / "status.npy") for s in range(self.num_shards)])
        return self._status

    def present(self, modality: Modality | str) -> np.ndarray:
        """``[rows] bool``: which catalog rows have ``modality``."""
        m = Modality(modality) if not isinstance(modality, Modality) else modality
        return self.status()[:, COL[m]] == OK

    def missing_reasons(self, modality: Modality | str) -> dict[str, int]:
        m = Modality(modality) if not isinstance(modality, Modality) else modality
        codes, counts = np.unique(self.status()[:, COL[m]], return_counts=True)
        return {REASONS[int(c)]: int(n) for c, n in zip(codes, counts) if c != OK}

    @property
    def category_ids(self) -> np.ndarray:
        return self._category

    @property
    def product_ids(self) -> np.ndarray:
        return self._product

    # -- loading ------------------------------------------------------------------------------
    def _groups(self, rows: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Batch positions grouped by shard: ``(shard folder, positions in batch, rows in shard)``."""
        shards, local = rows // self.shard_size, rows % self.shard_size
        out = []
        for s in np.unique(shards):
            pos = np.nonzero(shards == s)[0]
            out.append((str(self._shard_path(int(s))), pos, local[pos]))
        return out

    def _read(self, name: str, groups: list[tuple[str, np.ndarray, np.ndarray]], n: int) -> np.ndarray:
        """The batch's rows of array ``name``, in batch order."""
        first = self._readers.get(f"{groups[0][0]}/{name}.npy")
        out = np.empty((n,) + first.row_shape, dtype=first.dtype)
        for folder, pos, local in groups:
            self._readers.get(f"{folder}/{name}.npy").read_into(out, pos, local)
        return out

    def get_batch(self, rows: np.ndarray, modalities: ModalitySet | str) -> Batch:
        """One :class:`Batch` of the given catalog rows (in that order)."""
        import torch

        if not isinstance(modalities, ModalitySet):
            modalities = ModalitySet.parse(modalities)
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            raise ValueError("empty batch")
        if rows.min() < 0 or rows.max() >= self.rows:
            raise IndexError(f"row index out of range 0..{self.rows - 1}")
        groups, n = self._groups(rows), len(rows)
        status = self._read("status", groups, n)
        kw: dict[str, Any] = {
            "index": torch.from_numpy(rows.copy()),
            "category": torch.from_numpy(self._category[rows].astype(np.int64)),
            "product": torch.from_numpy(self._product[rows].astype(np.int64)),
            "present": {},
        }
        for m in modalities:
            present = status[:, COL[m]] == OK
            kw["present"][m] = torch.from_numpy(present)
            names, len_name = _ARRAYS[m]
            lengths = self._read(len_name, groups, n).astype(np.int64)
            lengths[~present] = 0
            L = max(1, int(lengths.max()))  # never a zero-length axis, even if every listing lacks m
            mask = torch.from_numpy(np.arange(L)[None, :] < lengths[:, None])
            data = {a: self._read(a, groups, n)[:, :L] for a in names}
            if m is Modality.T:
                kw["title_ids"], kw["title_mask"] = torch.from_numpy(data["title_ids"].astype(np.int64)), mask
            elif m is Modality.Tab:
                kw["table_ids"] = torch.from_numpy(data["table_ids"].astype(np.int64))
                kw["table_entity"] = torch.from_numpy(data["table_entity"].astype(np.int64))
                kw["table_kind"] = torch.from_numpy(data["table_kind"].astype(np.int64))
                kw["table_mask"] = mask
            elif m is Modality.I:
                kw["region_feats"] = torch.from_numpy(data["region_feats"].astype(np.float32))
                kw["region_boxes"] = torch.from_numpy(data["region_boxes"].astype(np.float32))
                kw["region_mask"] = mask
            elif m is Modality.V:
                kw["video_feats"], kw["video_mask"] = torch.from_numpy(data["video_feats"].astype(np.float32)), mask
            elif m is Modality.A:
                kw["audio_feats"], kw["audio_mask"] = torch.from_numpy(data["audio_feats"].astype(np.float32)), mask
        return Batch(**kw)

    def batches(self, rows: np.ndarray, modalities: ModalitySet | str, batch_size: int, *, shuffle: bool = False,
                seed: int = 0, drop_last: bool = False) -> Iterator[Batch]:
        """Stream :class:`Batch` es over catalog ``rows`` (only the requested modalities are read).

        ``shuffle`` permutes ``rows`` with ``numpy.random.default_rng(seed)`` (same seed, same order).
        Only one batch is in memory at a time.
        """
        if isinstance(modalities, str):
            modalities = ModalitySet.parse(modalities)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        rows = np.asarray(rows)
        rows = np.nonzero(rows)[0] if rows.dtype == bool else rows.astype(np.int64)
        order = np.random.default_rng(seed).permutation(len(rows)) if shuffle else np.arange(len(rows))
        for s in range(0, len(rows), batch_size):
            sel = rows[order[s : s + batch_size]]
            if drop_last and len(sel) < batch_size:
                return
            yield self.get_batch(sel, modalities)


# ---------------------------------------------------------------------------------------------
def _label_ids(values: list[str | None]) -> tuple[np.ndarray, list[str]]:
    """Contiguous ids over the sorted distinct values (-1 for null): stable across runs."""
    names = sorted({v for v in values if v is not None})
    lookup = {v: i for i, v in enumerate(names)}
    return np.asarray([lookup.get(v, -1) if v is not None else -1 for v in values], dtype=np.int64), names


def _tsv_shards(pre: dict[str, Any]) -> list[str]:
    """Every region TSV shard of a source with precomputed image features (a one-file source: that file)."""
    return pre.get("image_tsv_shards") or [pre["image_tsv"]]


def _first_tsv_dim(shards: list[str], dim_of: Any) -> int:
    """The feature dimension of the first shard that has a data row."""
    for i, path in enumerate(shards):
        try:
            return dim_of(path)
        except ValueError:
            if i == len(shards) - 1:
                raise
    raise ValueError("no region TSV shards")


def _feature_dims(cfg: FeatureConfig, pre: dict[str, str | None]) -> dict[str, int | None]:
    """Dims known before extraction; CNN dims stay None (workers read them off the built backbone,
    so the parent never pays for importing timm)."""
    dims: dict[str, int | None] = {}
    if pre["image_tsv"]:
        from bench.features.image import tsv_feature_dim

        dims["region_dim"], dims["max_regions"] = _first_tsv_dim(_tsv_shards(pre), tsv_feature_dim), 36
    else:
        dims["region_dim"], dims["max_regions"] = None, cfg.image_grid**2
    if pre["video_npy_dir"]:
        first = next((p for p in sorted(Path(pre["video_npy_dir"]).glob("*.npy"))), None)
        if first is None:
            raise ValueError(f"precomputed video folder {pre['video_npy_dir']} has no .npy files")
        dims["video_dim"] = int(np.load(first, mmap_mode="r").shape[-1])
    else:
        dims["video_dim"] = None
    dims["audio_dim"] = 80 if pre["audio_npy_dir"] else cfg.audio_dim  # the official files are 80 mel bins
    return dims


def _catalog_labels(catalog: Any, ds: Any) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """Contiguous category and product ids: the catalog's own when it provides them (so every
    consumer agrees), otherwise ids over the sorted distinct values."""
    if hasattr(catalog, "category_ids") and getattr(catalog, "category_names", None):
        return (np.asarray(catalog.category_ids(), dtype=np.int64), list(catalog.category_names),
                np.asarray(catalog.product_ids(), dtype=np.int64), list(catalog.product_names))
    labels: dict[str, list] = {"category": [], "product_id": []}
    for b in _iter_columns(ds, ["category", "product_id"]):
        labels["category"].extend(b["category"])
        labels["product_id"].extend(b["product_id"])
    cat_ids, cat_names = _label_ids(labels["category"])
    prod_ids, prod_names = _label_ids(labels["product_id"])
    return cat_ids, cat_names, prod_ids, prod_names


def _iter_columns(ds: Any, columns: list[str], batch_size: int = 2048) -> Iterator[dict[str, list]]:
    yield from ds.select_columns(columns).iter(batch_size=batch_size)


def build_features(catalog: Any, config: FeatureConfig | None = None, *, workers: int = 2, progress: bool = True,
                   device: str | None = None, wait_timeout_s: float = 3600.0,
                   _fail_after: int | None = None) -> FeatureStore:
    """Featurize every listing of ``catalog`` (or reuse the complete store for this config).

    ``catalog`` needs ``.dataset`` (a ``datasets.Dataset`` with the schema columns), ``.fingerprint``
    and optionally ``.info`` (``info["precomputed"]`` may name official feature files). Work is split
    into fixed shards processed by ``workers`` processes (one torch thread each); an interrupted
    build resumes with the shards it had finished. The image/video CNN runs on ``device``
    (default: ``cuda:<local rank>`` when CUDA is available, else the CPU).

    Under ``accelerate launch`` / ``torchrun`` with several processes, every rank calls this with the
    same catalog and config and builds only its own shards of the one store (shard ``i`` on rank
    ``i mod world size``); the store folder must be on a filesystem every rank shares. Rank 0 alone
    writes the shared pieces: the tokenizer and ``layout.json`` first (the other ranks wait for them
    and read them, rather than each training the same tokenizer on the whole catalog), then, once
    every shard exists, the label arrays and ``info.json``. No rank returns before the store is
    complete. A wait that sees no new file for ``wait_timeout_s`` seconds fails naming what is
    missing. ``_fail_after`` is a test hook that makes each worker raise after that many shards (a
    simulated crash).
    """
    config = config or FeatureConfig()
    ds = catalog.dataset
    fp = str(catalog.fingerprint)
    pre = _precomputed(catalog)
    root = m5bench_home() / "features" / fp
    out = root / store_key(config, pre)
    if (out / "info.json").exists():
        return FeatureStore(out)
    t_start = time.perf_counter()
    n = len(ds)
    if n == 0:
        from bench.console import UserError

        raise UserError(f"catalog {getattr(catalog, 'source', fp)} has no listings: nothing to featurize")
    ranks = launch_ranks()
    if device is not None:
        ranks = replace(ranks, device=device)
    tok, tok_desc, layout = _shared_start(ds, config, root, out, n, pre, ranks, wait_timeout_s)
    S, dims = int(layout["shard_size"]), layout["dims"]
    num_shards = -(-n // S)
    shard_root = out / "shards"
    pending = [s for s in range(num_shards) if not (shard_root / f"{s:05d}").is_dir()]
    mine = [s for s in pending if ranks.owns(s)]

    from bench.features.text import special_ids

    ids = special_ids(tok)
    setup = Setup(config=config.to_dict(), tokenizer_json=tok.to_str(), special=ids.to_dict(),
                  region_dim=dims["region_dim"], max_regions=dims["max_regions"], video_dim=dims["video_dim"],
                  audio_dim=dims["audio_dim"], device=ranks.device, **pre)
    make_job = _job_maker(ds, n, S, shard_root, pre, _fail_after)
    rows = {s: min(n, (s + 1) * S) - s * S for s in range(num_shards)}
    label = out.name if ranks.world == 1 else f"{out.name} ({ranks.describe()})"
    if ranks.world == 1:  # the bar counts the whole store; a rank's bar counts only its own shards
        total, done = n, n - sum(rows[s] for s in pending)
    else:
        total, done = sum(rows[s] for s in mine), 0
    _run_jobs(setup, mine, make_job, workers, progress and ranks.main, total, done, label)

    if ranks.world > 1:
        owed = {f"{s:05d} (rank {ranks.owner(s)})": shard_root / f"{s:05d}" for s in pending}
        wait_for_paths(owed, f"{ranks.describe()}: feature shards still missing in {shard_root}:", wait_timeout_s)
        ranks.barrier()
    if ranks.main:
        run = {"t_start": t_start, "done_before": num_shards - len(pending),
               "done_rows": n - sum(rows[s] for s in pending), "workers": workers, "world_size": ranks.world}
        _finish(catalog, ds, config, out, n, S, num_shards, dims, ids, tok_desc, pre, run)
    if ranks.world > 1:
        wait_for_paths({"info.json": out / "info.json"}, f"{ranks.describe()}: waiting for rank 0 to write",
                       wait_timeout_s)
        ranks.barrier()
    return FeatureStore(out)


def _shared_start(ds: Any, config: FeatureConfig, root: Path, out: Path, n: int, pre: dict[str, str | None],
                  ranks: Ranks, wait_timeout_s: float) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The tokenizer, its description and the layout every shard is written with.

    Rank 0 (or a lone process) trains or loads the tokenizer and writes ``layout.json`` after it;
    the other ranks start only after that (and after rank 0 cleared half-written shards of a killed
    run), then read both.
    """
    layout_path = out / "layout.json"
    shard_root = out / "shards"
    if ranks.main:
        tok, tok_desc = _main_tokenizer(ds, config, root)
        resuming = layout_path.exists()
        if resuming:  # keep the shard size the first attempt used
            layout = _read_layout(layout_path, n, out)
        else:
            from bench.features.text import special_ids

            layout = {"layout_version": LAYOUT_VERSION, "rows": n, "shard_size": int(config.shard_size),
                      "dims": _feature_dims(config, pre), "special": special_ids(tok).to_dict()}
        shard_root.mkdir(parents=True, exist_ok=True)
        _remove_orphan_tmp(shard_root)
        if pre["image_tsv"] and ranks.world > 1:  # index the region TSVs once, for every rank to read
            from bench.features.region_index import region_index

            region_index(_tsv_shards(pre))
        if not resuming:  # last: the other ranks wait for it in a poll, then only briefly in the barrier
            _atomic_write_text(layout_path, json.dumps(layout, indent=1))
        ranks.barrier()
        return tok, tok_desc, layout
    from bench.features.text import cached_tokenizer

    wait_for_paths({"layout.json": layout_path}, f"{ranks.describe()}: waiting for rank 0 to write", wait_timeout_s)
    ranks.barrier()
    found = cached_tokenizer(config, root)
    if found is None:
        from bench.console import UserError

        raise UserError(f"{ranks.describe()}: {layout_path} exists but rank 0's tokenizer does not; "
                        f"delete {out} to rebuild")
    return found[0], found[1], _read_layout(layout_path, n, out)


def _main_tokenizer(ds: Any, config: FeatureConfig, root: Path) -> tuple[Any, dict[str, Any]]:
    """The tokenizer (trained once per catalog, so the texts are read only when it is not cached)."""
    from bench.features.text import cached_tokenizer, get_tokenizer

    found = cached_tokenizer(config, root)
    if found is not None:
        return found
    texts: dict[str, list] = {"title": [], "table": []}
    for b in _iter_columns(ds, ["title", "table"]):
        texts["title"].extend(b["title"])
        texts["table"].extend(b["table"])
    return get_tokenizer(config, root, texts["title"], texts["table"])


def _read_layout(path: Path, n: int, out: Path) -> dict[str, Any]:
    layout = json.loads(path.read_text())
    if layout.get("rows") != n or layout.get("layout_version") != LAYOUT_VERSION:
        raise RuntimeError(f"{out}: partial store does not match this catalog; delete the folder to rebuild")
    return layout


def _job_maker(ds: Any, n: int, S: int, shard_root: Path, pre: dict[str, str | None], fail_after: int | None) -> Any:
    """``make_job(shard)``: the shard's rows of the catalog, read only when the shard is submitted."""
    tsv_index = None
    if pre["image_tsv"]:
        from bench.features.region_index import region_index

        tsv_index = region_index(_tsv_shards(pre))

    def make_job(s: int) -> Job:
        a, b = s * S, min(n, (s + 1) * S)
        cols = ds[a:b]
        job = Job(shard=s, start=a, out_dir=str(shard_root / f"{s:05d}"), item_id=list(cols["item_id"]),
                  title=list(cols["title"]), table=list(cols["table"]), image=list(cols["image"]),
                  video=list(cols["video"]), audio=list(cols["audio"]), fail_after=fail_after)
        if tsv_index is not None:
            job.tsv_offsets = tsv_index.lookup(job.item_id)
        return job

    return make_job


def _finish(catalog: Any, ds: Any, config: FeatureConfig, out: Path, n: int, S: int, num_shards: int,
            dims: dict[str, Any], ids: Any, tok_desc: dict[str, Any], pre: dict[str, str | None],
            run: dict[str, Any]) -> None:
    """Catalog-level label ids, then info.json last (its presence marks the store complete)."""
    shard_root = out / "shards"
    cat_ids, cat_names, prod_ids, prod_names = _catalog_labels(catalog, ds)
    _atomic_save_npy(out / "category.npy", cat_ids)
    _atomic_save_npy(out / "product.npy", prod_ids)

    first = shard_root / "00000"
    dims = dict(dims)
    dims["region_dim"] = int(read_npy_header(str(first / "region_feats.npy"))[1][-1])
    dims["video_dim"] = int(read_npy_header(str(first / "video_feats.npy"))[1][-1])
    metas = [json.loads((shard_root / f"{s:05d}" / "meta.json").read_text()) for s in range(num_shards)]
    status = np.concatenate([np.load(shard_root / f"{s:05d}" / "status.npy") for s in range(num_shards)])
    counts, examples = {}, {}
    for m in ORDER:
        col = status[:, COL[m]]
        codes, cnt = np.unique(col, return_counts=True)
        by = {REASONS[int(c)]: int(k) for c, k in zip(codes, cnt) if c != OK}
        counts[m.value] = {"present": int((col == OK).sum()), "missing": int((col != OK).sum()), "by_reason": by}
        ex: dict[str, list[str]] = {}
        for meta in metas:
            for reason, msgs in meta["examples"].get(m.value, {}).items():
                ex.setdefault(reason, []).extend(msgs)
        examples[m.value] = {r: v[:5] for r, v in ex.items()}
    spec = FeatureSpec(
        vocab_size=ids.vocab_size, pad_id=ids.pad_id, cls_id=ids.cls_id, sep_id=ids.sep_id, mask_id=ids.mask_id,
        unk_id=ids.unk_id, title_len=config.title_len, table_len=config.table_len,
        region_dim=dims["region_dim"], max_regions=dims["max_regions"], video_dim=dims["video_dim"],
        max_frames=config.max_frames, audio_dim=dims["audio_dim"], max_audio=config.max_audio,
        num_categories=len(cat_names),
        extra={"num_products": len(prod_names), "store": str(out), "features_dtype": config.dtype},
    )
    info = {
        "complete": True,
        "catalog_fingerprint": str(catalog.fingerprint),
        "store_key": out.name,
        "config_hash": config.hash(),
        "config": config.to_dict(),
        "rows": n,
        "shard_size": S,
        "num_shards": num_shards,
        "spec": spec.to_dict(),
        "tokenizer": tok_desc,
        "sources": _describe_sources(config, pre, dims),
        "counts": counts,
        "failure_examples": examples,
        "table_entities_dropped": int(sum(meta.get("table_entities_dropped", 0) for meta in metas)),
        "tables_truncated": int(sum(meta.get("tables_truncated", 0) for meta in metas)),
        "categories": cat_names,
        "timings": _timings(metas, n, run),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _atomic_write_text(out / "info.json", json.dumps(info, indent=1))


def _timings(metas: list[dict[str, Any]], n: int, run: dict[str, Any]) -> dict[str, Any]:
    """How the build went: wall and worker CPU seconds, resumed shards, workers per process, the
    number of processes (ranks) and the devices the shards' CNN ran on (shards per device)."""
    mods = ("text", "image", "video", "audio")
    wall_by = {k: round(sum(meta["timings_s"][k] for meta in metas), 3) for k in mods}
    cpu = {k: round(sum(meta.get("cpu_s", {}).get(k, 0.0) for meta in metas), 3) for k in mods}
    devices: dict[str, int] = {}
    for meta in metas:  # shards written before devices were recorded ran on the CPU
        devices[meta.get("device", "cpu")] = devices.get(meta.get("device", "cpu"), 0) + 1
    wall = time.perf_counter() - run["t_start"]
    return {"wall_s_this_run": round(wall, 3), "worker_wall_s_by_modality": wall_by,
            "worker_cpu_s_by_modality": cpu, "worker_cpu_s_total": round(sum(cpu.values()), 3),
            "rows_per_s_this_run": round((n - run["done_rows"]) / wall, 1) if wall > 0 else None,
            "shards_resumed": run["done_before"], "workers": run["workers"], "world_size": run["world_size"],
            "devices": dict(sorted(devices.items()))}


def _remove_orphan_tmp(shard_root: Path) -> None:
    """Delete half-written shard folders (``.NNNNN.tmp-PID``) whose writing process is gone (a kill)."""
    import shutil

    for p in shard_root.glob(".*.tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
            os.kill(pid, 0)  # still running (another build of the same store): leave it alone
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def _describe_sources(cfg: FeatureConfig, pre: dict[str, str | None], dims: dict[str, int]) -> dict[str, str]:
    weights = f"local file {cfg.image_weights}" if cfg.image_weights else f"random init (seed {cfg.seed})"
    cnn = f"timm {cfg.image_backbone} stage {cfg.image_stage}, {weights}"
    rgb = " + mean RGB" if cfg.image_color else ""
    return {
        "I": (f"precomputed TSV {pre['image_tsv']}" + (f" and {len(pre['image_tsv_shards']) - 1} more shard(s)"
                                                        if pre.get("image_tsv_shards") else "")) if pre["image_tsv"]
        else f"{cnn}, {cfg.image_size}px, {cfg.image_grid}x{cfg.image_grid} grid regions{rgb}",
        "V": f"precomputed npy {pre['video_npy_dir']}" if pre["video_npy_dir"]
        else f"{cnn}, {cfg.video_size}px frames at {cfg.video_fps} fps, <= {cfg.max_frames} frames, global pool{rgb}",
        "A": f"precomputed npy {pre['audio_npy_dir']}" if pre["audio_npy_dir"]
        else f"{cfg.audio_features} ({dims['audio_dim']}) at {cfg.sample_rate} Hz, n_fft {cfg.n_fft}, hop {cfg.hop_length}, "
             f"<= {cfg.audio_seconds} s, {cfg.audio_reduce} to <= {cfg.max_audio} tokens (librosa)",
        "T": f"WordPiece, <= {cfg.title_len} tokens",
        "Tab": f"WordPiece, [CLS] k1 v1 ... [SEP], <= {cfg.table_len} tokens, whole entities only",
    }


def _run_jobs(setup: Setup, pending: list[int], make_job: Any, workers: int, progress: bool, total_rows: int,
              done_rows: int, label: str) -> None:
    """Run the pending shards in-process (workers <= 1) or in a spawn process pool."""
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from bench.console import console

    bar = (Progress(TextColumn(f"features {label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False) if progress else nullcontext())
    with bar as p:
        task = p.add_task("rows", total=total_rows, completed=min(done_rows, total_rows)) if progress else None
        if not pending:
            return
        workers = min(workers, len(pending))
        if workers <= 1:  # no process pool for a single shard: spawning costs more than it saves
            from threadpoolctl import threadpool_limits

            from bench.features.extract import Featurizer

            import torch

            prev_threads = torch.get_num_threads()
            try:
                with threadpool_limits(limits=1):  # same one-thread-per-process policy as the pool
                    f = Featurizer(setup)
                    for s in pending:
                        meta = f.run(make_job(s))
                        if progress:
                            p.advance(task, meta["rows"])
            finally:
                torch.set_num_threads(prev_threads)  # the caller's setting is not ours to change
            return
        import multiprocessing as mp

        from bench.features.extract import init_worker, run_job

        from bench.data.paths import sigint_blocked, stop_pool

        # spawn, not fork: forking a parent that already started torch/OpenMP threads can deadlock.
        # The workers start with SIGINT blocked, so a Ctrl-C reaches only this process, which stops
        # them (finished shards are kept) instead of every worker printing a traceback.
        todo = iter(pending)
        inflight = set()
        with sigint_blocked():
            ex = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=init_worker,
                                     initargs=(setup,))
            for s in todo:  # keep at most 2 jobs per worker queued: job payloads stay small in memory
                inflight.add(ex.submit(run_job, make_job(s)))
                if len(inflight) >= 2 * workers:
                    break
        try:
            while inflight:
                done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    meta = fut.result()  # a worker exception aborts the build; finished shards are kept
                    if progress:
                        p.advance(task, meta["rows"])
                    nxt = next(todo, None)
                    if nxt is not None:
                        inflight.add(ex.submit(run_job, make_job(nxt)))
        except BaseException:
            stop_pool(ex)
            raise
        ex.shutdown()
