"""The embedded synthetic catalog: real media files in the M5Product release layout.

Latent structure (what makes the benchmark meaningful, not tuned toward any model):

* categories are grouped into *confusable groups* of 1-4 categories, and groups into
  *super-categories*; category sizes follow a Zipf-like long tail; each category holds products
  and each product 1-4 listings;
* a group shares its image shape, title family word, table schema, video motion pattern and audio
  timbre; inside a group each category has a 2-bit code and each modality sees only one function of
  it (``b0``, ``b1`` or ``b0 xor b1``, drawn at random per group and modality), so no single modality
  separates all the categories of a group while two different ones do;
* products differ in finer attributes (colour shade, brand word, model code, table values, pitch,
  motion speed, texture period), so instance-level retrieval is possible;
* realism: missing modalities at configurable rates, single-modality listings, title/label
  mismatches, per-modality signal flips, background clutter, varying JPEG quality and durations.

Layout written (``DIR``)::

    images/{item_id}.jpg  videos/{item_id}.mp4  audios/{item_id}.mp3
    meta_info.jsonl                    one record per listing (item_id, caption, image, video, audio, tabular, label)
    id_info_dict.json                  {item_id: {"title", "pv", "label"}} as the SCALE code reads it
    product1m_product5m_test_id_label.json   {item_id: {"title", "label": product_id}} (fine-grained GT)
    label_list.json                    the category labels
    splits/*.txt                       split id lists (one id per line)
    (with ``official_lists``, instead of splits/: the release's own lists query_c_id_label.json,
    gallery_c_..., query_fg_..., gallery_fg_..., train_..., subset_v2_{train,test}_id_label.json,
    plus subset_v2_id_label.json and subset_v2_label_list.json)
    info.json                          generator version, seed, size, counts, configuration

Same seed and generator version give byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import synth_media as sm
from bench.data.paths import pool_context
from bench.data.pv import format_pv
from bench.data.splits import DEFAULT_EVAL_FRACTION, DEFAULT_SUBSET_FRACTION, SPLIT_FILES, assign_splits

GENERATOR = "m5bench-synthetic"
GENERATOR_VERSION = "2"
SIZES: dict[str, int] = {"mini": 1500, "default": 5000, "large": 50000}


@dataclass
class SynthConfig:
    """Everything that shapes a synthetic catalog. Rates are per listing."""

    n_listings: int = SIZES["default"]
    seed: int = 0
    size: str = "default"
    listings_per_category: float = 80.0  # sets the number of categories
    zipf_exponent: float = 0.9
    min_listings_per_category: int = 6
    listings_per_product: tuple[float, ...] = (0.3, 0.3, 0.25, 0.15)  # P(1), P(2), P(3), P(4)
    p_image_missing: float = 0.03
    p_video: float = 0.55
    p_audio_given_video: float = 0.85  # audio is extracted from the video, as in M5Product
    p_table_missing: float = 0.15
    p_single_modality: float = 0.05
    p_title_mismatch: float = 0.04
    p_signal_flip: float = 0.04  # a modality shows the wrong within-group bit
    eval_fraction: float = DEFAULT_EVAL_FRACTION
    subset_fraction: float = DEFAULT_SUBSET_FRACTION
    # Write the split lists as a release does (official file names and protocol shape: a separate
    # coarse gallery, a fine query set ranked leave-one-out, the subset's own test set, lone queries
    # kept) instead of the harness's splits/ lists. Off for the embedded catalogs, whose committed
    # results were scored on the harness's sets.
    official_lists: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["listings_per_product"] = list(self.listings_per_product)
        if not self.official_lists:
            d.pop("official_lists")  # the embedded catalogs' info.json stays as it was
        return d


# --------------------------------------------------------------------------- words

_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "br", "cl", "dr", "fl", "gr", "pl", "st", "tr", "sh", "ch")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
_CODAS = ("", "", "n", "r", "l", "s", "x", "m")
FILLERS = ("new", "hot", "sale", "free", "shipping", "genuine", "official", "store", "2026", "deluxe", "premium",
           "classic", "home", "gift", "mini", "pro", "set", "pack", "original", "quality", "fashion", "style")
COLOUR_WORDS = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "azure", "blue", "violet", "purple", "pink")
KEY_POOL = ("type", "material", "size", "weight", "colour", "style", "origin", "capacity", "power", "pattern",
            "season", "shape", "finish", "length", "width", "voltage", "flavour", "age", "brand", "series",
            "packaging", "warranty", "certification", "fit", "texture", "scent", "grade", "usage", "theme")


class _Words:
    """Unique pseudo-words, so vocabularies scale with the catalog and tokenizers see real subwords."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.used = rng, set(FILLERS) | set(COLOUR_WORDS) | set(KEY_POOL)

    def new(self, syllables: int | None = None) -> str:
        while True:
            k = syllables or int(self.rng.integers(2, 4))
            w = "".join(_ONSETS[self.rng.integers(len(_ONSETS))] + _VOWELS[self.rng.integers(len(_VOWELS))] for _ in range(k))
            w += _CODAS[self.rng.integers(len(_CODAS))]
            if w not in self.used:
                self.used.add(w)
                return w


# --------------------------------------------------------------------------- latent world

_CODES = {1: [(0, 0)], 2: None, 3: [(0, 0), (0, 1), (1, 0)], 4: [(0, 0), (0, 1), (1, 0), (1, 1)]}
_FUNCS = ("b0", "b1", "xor")
_MODS = ("image", "title", "table", "video", "audio")


def _bit(func: str, code: tuple[int, int]) -> int:
    return code[0] if func == "b0" else code[1] if func == "b1" else code[0] ^ code[1]


def _category_sizes(cfg: SynthConfig, rng: np.random.Generator) -> list[int]:
    n = cfg.n_listings
    n_cat = max(4, int(round(n / cfg.listings_per_category)))
    lo = min(cfg.min_listings_per_category, max(1, n // n_cat))
    w = 1.0 / np.arange(1, n_cat + 1) ** cfg.zipf_exponent
    w = w / w.sum()
    rest = n - lo * n_cat
    raw = w * rest
    sizes = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - sizes), kind="stable")[: rest - sizes.sum()]:
        sizes[i] += 1
    sizes = sizes + lo
    rng.shuffle(sizes)  # category order carries no size information
    return [int(s) for s in sizes]


def build_world(cfg: SynthConfig) -> dict[str, Any]:
    """The latent catalog: super-categories, groups, categories, products and their attributes."""
    rng = np.random.default_rng([cfg.seed, 1])
    words = _Words(rng)
    sizes = _category_sizes(cfg, rng)
    n_cat = len(sizes)

    # Confusable groups of 1-4 categories, then super-categories of 1-3 groups.
    groups: list[list[int]] = []
    i = 0
    while i < n_cat:
        k = int(rng.choice([2, 3, 4], p=[0.2, 0.4, 0.4]))
        groups.append(list(range(i, min(i + k, n_cat))))
        i += k
    supers: list[list[int]] = []
    j = 0
    while j < len(groups):
        k = int(rng.integers(1, 4))
        supers.append(list(range(j, min(j + k, len(groups)))))
        j += k

    super_words = [words.new(2) for _ in supers]
    cats: list[dict[str, Any]] = [{} for _ in range(n_cat)]
    group_info = []
    for si, sgroups in enumerate(supers):
        for g in sgroups:
            members = groups[g]
            codes = _CODES[len(members)] or [(0, 0), [(0, 1), (1, 0), (1, 1)][int(rng.integers(3))]]
            while True:  # each modality sees one function of the code; at least two distinct ones overall
                funcs = {m: _FUNCS[int(rng.integers(3))] for m in _MODS}
                if len(set(funcs.values())) >= 2:
                    break
            tex = rng.choice(len(sm.TEXTURES), 2, replace=False)
            keys = [KEY_POOL[int(k)] for k in rng.choice(len(KEY_POOL), int(rng.integers(4, 7)), replace=False)]
            g_info = {
                "super": si,
                "shape": sm.SHAPES[int(rng.integers(len(sm.SHAPES)))],
                "hue": float(rng.random()),
                "textures": [sm.TEXTURES[int(t)] for t in tex],
                "family_word": words.new(),
                "nouns": [words.new(), words.new()],
                "keys": keys,
                "type_values": [words.new(2), words.new(2)],
                "value_vocab": {k: [words.new(2) for _ in range(5)] for k in keys[1:]},
                "motion": sm.MOTIONS[int(rng.integers(len(sm.MOTIONS)))],
                "freq": float(rng.uniform(0.4, 0.8)),
                "timbre": sm.TIMBRES[int(rng.integers(len(sm.TIMBRES)))],
                "f0": float(np.exp(rng.uniform(np.log(140), np.log(520)))),
                "decay": float(rng.uniform(0.2, 2.0)),
                "funcs": funcs,
                # Brands sell across the group's categories, so a brand word names a group, not a category.
                "brands": [words.new(2) for _ in range(3 + len(members))],
            }
            group_info.append(g_info)
            for code, c in zip(codes, members):
                cats[c] = {"group": g, "super": si, "code": code}

    # Products: 1-4 listings each, filling the category's size.
    lpp = np.asarray(cfg.listings_per_product) / np.sum(cfg.listings_per_product)
    products: list[dict[str, Any]] = []
    for c, n_c in enumerate(sizes):
        left, k = n_c, 0
        while left > 0:
            m = min(left, int(rng.choice(len(lpp), p=lpp)) + 1)
            left -= m
            products.append({
                "category": c, "index": k, "n": m,
                "id": f"p{c:04d}{k:05d}",
                "brand": group_info[cats[c]["group"]]["brands"][int(rng.integers(len(group_info[cats[c]["group"]]["brands"])))],
                "model": f"{'ABCDEFGHKLMNPRSTXZ'[int(rng.integers(18))]}{int(rng.integers(10, 1000))}",
                "shade": float(rng.normal(0, 0.035)),
                "sat": float(rng.uniform(0.55, 0.95)),
                "val": float(rng.uniform(0.6, 0.95)),
                "contrast": float(rng.uniform(0.2, 1.0)),
                "period": float(rng.uniform(3.5, 8.0)),
                "angle": float(rng.uniform(0, math.pi)),
                "scale": float(rng.uniform(0.85, 1.1)),
                "semitones": float(rng.integers(-6, 7)) * 0.5,
                "speed": float(rng.uniform(0.85, 1.15)),
                "values": {},  # filled per key below
            })
            k += 1
    for p in products:
        g = group_info[cats[p["category"]]["group"]]
        p["values"] = {key: vocab[int(rng.integers(len(vocab)))] for key, vocab in g["value_vocab"].items()}
    return {"categories": cats, "groups": group_info, "supers": super_words, "products": products, "sizes": sizes}


def category_name(c: int) -> str:
    return f"cat{c:04d}"


def super_name(s: int) -> str:
    return f"super{s:03d}"


# --------------------------------------------------------------------------- listings


def _title(world: dict[str, Any], prod: dict[str, Any], bits: dict[str, int], rng: np.random.Generator) -> str:
    cat = world["categories"][prod["category"]]
    g = world["groups"][cat["group"]]
    words: list[str] = []
    if rng.random() < 0.5:
        words.append(world["supers"][cat["super"]])
    words.append(prod["brand"])
    if rng.random() < 0.7:
        words.append(g["family_word"])
    if rng.random() < 0.3:
        words.append(COLOUR_WORDS[int(((g["hue"] + prod["shade"]) % 1.0) * len(COLOUR_WORDS))])
    words.append(g["nouns"][bits["title"]])
    if rng.random() < 0.5:
        words.append(prod["model"])
    for _ in range(int(rng.integers(0, 4))):
        words.insert(int(rng.integers(0, len(words) + 1)), FILLERS[int(rng.integers(len(FILLERS)))])
    return " ".join(words)


def _table(world: dict[str, Any], prod: dict[str, Any], bits: dict[str, int], rng: np.random.Generator) -> list[tuple[str, str]]:
    g = world["groups"][world["categories"][prod["category"]]["group"]]
    ents = [(g["keys"][0], g["type_values"][bits["table"]])]
    for key in g["keys"][1:]:
        if rng.random() < 0.15:
            continue
        vocab = g["value_vocab"][key]
        val = prod["values"][key] if rng.random() > 0.1 else vocab[int(rng.integers(len(vocab)))]
        ents.append((key, val))
    if rng.random() < 0.6:
        ents.append(("model", f"{prod['brand']} {prod['model']}"))
    if rng.random() < 0.5:
        order = rng.permutation(len(ents))
        ents = [ents[int(i)] for i in order]
    return ents


def build_listings(cfg: SynthConfig, world: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per listing with text fields and media render parameters (no media written)."""
    rng = np.random.default_rng([cfg.seed, 2])
    slots = [pi for pi, p in enumerate(world["products"]) for _ in range(p["n"])]
    order = rng.permutation(len(slots))  # item ids carry no category order
    listings = []
    for rank, oi in enumerate(order):
        prod = world["products"][slots[int(oi)]]
        cat = world["categories"][prod["category"]]
        g = world["groups"][cat["group"]]
        lrng = np.random.default_rng([cfg.seed, 3, rank])
        bits = {m: _bit(g["funcs"][m], cat["code"]) ^ int(lrng.random() < cfg.p_signal_flip) for m in _MODS}
        if lrng.random() < cfg.p_title_mismatch:  # a poorly matched title, written for another product
            other = world["products"][int(lrng.integers(len(world["products"])))]
            ocat = world["categories"][other["category"]]
            obits = {m: _bit(world["groups"][ocat["group"]]["funcs"][m], ocat["code"]) for m in _MODS}
            title = _title(world, other, obits, lrng)
        else:
            title = _title(world, prod, bits, lrng)
        table = _table(world, prod, bits, lrng)
        has = {
            "image": lrng.random() >= cfg.p_image_missing,
            "title": True,
            "table": lrng.random() >= cfg.p_table_missing,
            "video": lrng.random() < cfg.p_video,
        }
        has["audio"] = has["video"] and lrng.random() < cfg.p_audio_given_video
        if lrng.random() < cfg.p_single_modality:
            present = [m for m in _MODS if has[m]]
            keep = present[int(lrng.integers(len(present)))]
            has = {m: m == keep for m in _MODS}
        hue = g["hue"] + 0.12 * bits["image"] + prod["shade"]
        look = {"shape": g["shape"], "hue": hue, "sat": prod["sat"], "val": prod["val"], "contrast": prod["contrast"],
                "texture": g["textures"][bits["image"]], "period": prod["period"], "angle": prod["angle"],
                "scale": prod["scale"]}
        # Video shows the same object; its motion carries the video bit (frequency doubles).
        vlook = dict(look, hue=g["hue"] + prod["shade"], texture=g["textures"][0])
        listings.append({
            "item_id": f"{100000000 + rank * 7 + cfg.seed % 7:09d}",
            "product_id": prod["id"],
            "category": category_name(prod["category"]),
            "super_category": super_name(cat["super"]),
            "title": title if has["title"] else None,
            "table": table if has["table"] else None,
            "image": dict(look, quality=int(lrng.integers(78, 93))) if has["image"] else None,
            "video": dict(vlook, motion=g["motion"], freq=g["freq"] * (1 + bits["video"]) * prod["speed"],
                          n_frames=int(lrng.integers(8, 13))) if has["video"] else None,
            "audio": {"timbre": g["timbre"], "f0": g["f0"] * (1.5 if bits["audio"] else 1.0) * 2 ** (prod["semitones"] / 12),
                      "duration": float(np.round(lrng.uniform(1.0, 3.0), 2)), "decay": g["decay"],
                      "noise": float(lrng.uniform(0.003, 0.02))} if has["audio"] else None,
        })
    return listings


# --------------------------------------------------------------------------- writing


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def _render_all(tasks: list, workers: int) -> None:
    if workers <= 1 or len(tasks) < 64:
        sm.render_chunk(tasks)
        return
    # Many small chunks keep both workers busy to the end.
    chunk = max(8, len(tasks) // (workers * 16))
    chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=pool_context()) as ex:
        for _ in ex.map(sm.render_chunk, chunks):
            pass


def generate(out: str | os.PathLike, cfg: SynthConfig, *, workers: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Write a synthetic catalog to ``out`` (must not exist or be empty); returns its info dict.

    Files are written into a temporary sibling directory which is renamed onto ``out`` at the end,
    so an interrupted run leaves nothing half-written.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        info = _write(tmp, cfg, workers=workers if workers is not None else min(os.cpu_count() or 1, 4))
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _write(root: Path, cfg: SynthConfig, *, workers: int) -> dict[str, Any]:
    world = build_world(cfg)
    listings = build_listings(cfg, world)
    for d in ("images", "videos", "audios", "splits"):
        (root / d).mkdir()
    tasks = []
    kind_code = {"image": 0, "video": 1, "audio": 2}
    sub = {"image": ("images", "jpg"), "video": ("videos", "mp4"), "audio": ("audios", "mp3")}
    for rank, li in enumerate(listings):
        for kind in ("image", "video", "audio"):
            if li[kind] is not None:
                rel = f"{sub[kind][0]}/{li['item_id']}.{sub[kind][1]}"
                tasks.append((kind, str(root / rel), li[kind], [cfg.seed, 4, rank, kind_code[kind]]))
                li[kind + "_path"] = rel
            else:
                li[kind + "_path"] = None
    _render_all(tasks, workers)

    with open(root / "meta_info.jsonl", "w", encoding="utf-8") as f:
        for li in listings:
            rec = {"item_id": li["item_id"], "caption": li["title"], "image": li["image_path"], "video": li["video_path"],
                   "audio": li["audio_path"], "tabular": dict(li["table"]) if li["table"] is not None else None,
                   "label": li["category"]}
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
    _dump(root / "id_info_dict.json", {li["item_id"]: {"title": li["title"] or "", "pv": format_pv(li["table"]) if li["table"] else "",
                                                      "label": li["category"]} for li in listings})
    _dump(root / "product1m_product5m_test_id_label.json",
          {li["item_id"]: {"title": li["title"] or "", "label": li["product_id"]} for li in listings})
    categories = sorted({li["category"] for li in listings})
    _dump(root / "label_list.json", categories)

    ids = [li["item_id"] for li in listings]
    cols = assign_splits(ids, [li["product_id"] for li in listings], [li["category"] for li in listings],
                         seed=cfg.seed, eval_fraction=cfg.eval_fraction, subset_fraction=cfg.subset_fraction)
    split_lists = {
        "pretrain": [i for i, s in zip(ids, cols["split"]) if s == "pretrain"],
        "subset": [i for i, s in zip(ids, cols["subset"]) if s],
        "cls_train": [i for i, s in zip(ids, cols["cls_split"]) if s == "train"],
        "cls_test": [i for i, s in zip(ids, cols["cls_split"]) if s == "test"],
        "coarse_query": [i for i, s in zip(ids, cols["coarse_query"]) if s],
        "coarse_gallery": [i for i, s in zip(ids, cols["split"]) if s == "eval"],
        "fine_query": [i for i, s in zip(ids, cols["fine_query"]) if s],
        "fine_gallery": [i for i, s in zip(ids, cols["split"]) if s == "eval"],
    }
    if cfg.official_lists:
        split_lists = _write_official_lists(root, cfg, listings, cols)
    else:
        for role, lst in split_lists.items():
            (root / "splits" / f"{SPLIT_FILES[role][0]}.txt").write_text("".join(i + "\n" for i in lst), encoding="utf-8")

    counts = {
        "listings": len(listings),
        "products": len({li["product_id"] for li in listings}),
        "categories": len(categories),
        "groups": len(world["groups"]),
        "super_categories": len(world["supers"]),
        "image": sum(li["image_path"] is not None for li in listings),
        "video": sum(li["video_path"] is not None for li in listings),
        "audio": sum(li["audio_path"] is not None for li in listings),
        "table": sum(li["table"] is not None for li in listings),
        "title": sum(li["title"] is not None for li in listings),
        **{f"split_{k}": len(v) for k, v in split_lists.items()},
    }
    info = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "seed": cfg.seed,
        "size": cfg.size,
        "config": cfg.to_dict(),
        "counts": counts,
        "split": {"method": "hash(product_id)+seed", "seed": cfg.seed, "eval_fraction": cfg.eval_fraction,
                  "subset_fraction": cfg.subset_fraction},
        "super_categories": {category_name(c): super_name(cat["super"]) for c, cat in enumerate(world["categories"])},
        "groups": {category_name(c): f"group{cat['group']:04d}" for c, cat in enumerate(world["categories"])},
        "media": {"image": f"JPEG {sm.IMAGE_SIZE}x{sm.IMAGE_SIZE}",
                  "video": f"H.264 MP4 {sm.VIDEO_SIZE}x{sm.VIDEO_SIZE} {sm.FPS} fps, 8-12 frames",
                  "audio": f"MP3 {sm.SAMPLE_RATE} Hz mono, 1-3 s"},
    }
    _dump(root / "info.json", info)
    return info


def _write_official_lists(root: Path, cfg: SynthConfig, listings: list[dict[str, Any]],
                          cols: dict[str, list]) -> dict[str, list[str]]:
    """The release's own list files (``{item_id: {"label"}}`` JSON under the official names, see
    :data:`bench.data.release.RELEASE_LISTS`), the subset ground truth and label list; returns role -> ids.

    Evaluation products are the hash draw above. Coarse: a quarter of the evaluation listings are
    queries, the rest the separate gallery. Fine: every listing of half the evaluation products is
    a query (products with one listing give lone queries), ranked leave-one-out. The subset tests on
    half the evaluation listings."""
    from bench.data.release import RELEASE_LISTS
    from bench.data.splits import unit_hash

    ids = [li["item_id"] for li in listings]
    ev = [s == "eval" for s in cols["split"]]
    draw = {
        "pretrain": [not e for e in ev],
        "subset": list(cols["subset"]),
        "subset_test": [e and unit_hash(i, cfg.seed, "subset_test") < 0.5 for i, e in zip(ids, ev)],
        "coarse_query": [e and unit_hash(i, cfg.seed, "coarse_query") < 0.25 for i, e in zip(ids, ev)],
        "fine_query": [e and unit_hash(li["product_id"], cfg.seed, "fine_query") < 0.5 for li, e in zip(listings, ev)],
    }
    draw["coarse_gallery"] = [e and not q for e, q in zip(ev, draw["coarse_query"])]
    draw["fine_gallery"] = [e and not q for e, q in zip(ev, draw["fine_query"])]
    out: dict[str, list[str]] = {}
    for role, keep in draw.items():
        out[role] = [i for i, k in zip(ids, keep) if k]
        label = "product_id" if role.startswith("fine") else "category"
        _dump(root / f"{RELEASE_LISTS[role][0]}.json",
              {li["item_id"]: {"label": li[label]} for li, k in zip(listings, keep) if k})
    subset = set(out["subset"]) | set(out["subset_test"])
    _dump(root / "subset_v2_id_label.json",
          {li["item_id"]: {"title": li["title"] or "", "pv": format_pv(li["table"]) if li["table"] else "",
                           "label": li["category"]} for li in listings if li["item_id"] in subset})
    _dump(root / "subset_v2_label_list.json", sorted({li["category"] for li in listings if li["item_id"] in subset}))
    return out


def config_for(size: str, seed: int = 0, n_listings: int | None = None, *, official_lists: bool = False) -> SynthConfig:
    """The configuration of a named size (``mini``, ``default``, ``large``); ``n_listings`` overrides
    the count; ``official_lists`` writes the release's own split lists (see :class:`SynthConfig`)."""
    if size not in SIZES and n_listings is None:
        raise ValueError(f"unknown synthetic size {size!r}; choose one of {', '.join(SIZES)}")
    return SynthConfig(n_listings=int(n_listings or SIZES[size]), seed=int(seed), size=size,
                       official_lists=official_lists)
