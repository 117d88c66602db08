"""Rich tables describing a catalog: the load summary and ``bench data stats``."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from bench.data.catalog import Catalog

SKIP_HELP = {
    "duplicate_item_id": "later listings with an item_id seen before (first kept)",
    "label_missing": "listings without a category label (dropped)",
    "label_not_utf8": "labels that are not valid UTF-8 (dropped; another encoding? pass --encoding)",
    "item_id_missing": "rows without an item_id (dropped)",
    "title_empty": "titles that are there but blank (title treated as missing)",
    "title_not_utf8": "titles that are not valid UTF-8 (title treated as missing)",
    "pv_malformed": "tables (pv strings) that do not parse (table treated as missing)",
}
_MEDIA_HELP = {"missing": "listed file absent (or not a file)", "empty": "file of 0 bytes",
               "corrupt": "file does not decode", "no_frames": "file has no decodable frame"}
#: Every listing-level problem reason a load can count (``bench data validate --list`` accepts these).
KNOWN_REASONS: tuple[str, ...] = tuple(SKIP_HELP) + tuple(
    f"{kind}_{what}" for kind in ("image", "video", "audio") for what in _MEDIA_HELP)
#: Which column feeds each modality (what a 0 % presence message points at).
MODALITY_COLUMNS = {"I": ("image",), "T": ("title", "caption"), "Tab": ("table", "tabular", "pv"),
                    "V": ("video",), "A": ("audio",)}


def _effect(reason: str) -> str:
    kind, _, what = reason.partition("_")
    if reason in SKIP_HELP:
        return SKIP_HELP[reason]
    if kind in ("image", "video", "audio"):
        return f"{_MEDIA_HELP.get(what, what)} ({kind} treated as missing)"
    return ""


def skips_table(skips: Counter, title: str = "listing-level problems",
                ids: dict[str, list[str]] | None = None) -> Table:
    """Count and effect per problem reason, with the first affected listings when ``ids`` is given."""
    t = Table(title=title)
    t.add_column("reason")
    t.add_column("count", justify="right")
    t.add_column("effect")
    if ids is not None:
        t.add_column("listings (first 3)")
    for reason, n in sorted(skips.items()):
        row = [reason, str(n), _effect(reason)]
        if ids is not None:
            some = (ids.get(reason) or [])[:3]
            row.append(", ".join(some) + (", ..." if n > len(some) else ""))
        t.add_row(*row)
    return t


def normalize_reason(reason: str) -> str:
    """``image missing`` / ``Image-Missing`` -> ``image_missing``."""
    import re

    return re.sub(r"[\s\-]+", "_", reason.strip().lower())


def unknown_columns_warning(cat: "Catalog") -> str | None:
    """One line naming the columns/keys the loader did not recognise (and ignored), or None."""
    unknown = cat.info.get("unknown_columns") or []
    if not unknown:
        return None
    hints = cat.info.get("column_hints") or {}
    parts = [f"{c!r}" + (f" (did you mean {hints[c]!r}?)" if hints.get(c) else "") for c in unknown]
    return f"{len(unknown)} unrecognised column(s) ignored: {', '.join(parts)}"


def empty_modality_reason(cat: "Catalog", modality: "object") -> str:
    """Why ``modality`` has no listing in ``cat``: the likely column fix, or the problems that emptied it."""
    code = getattr(modality, "value", str(modality))
    name = getattr(modality, "long_name", code)
    head = f"no listing has {name} ({code}: 0 % of {len(cat)} listings)"
    hints = cat.info.get("column_hints") or {}
    cols = MODALITY_COLUMNS.get(code, ())
    fixes = [f"column {c!r} is not recognised; did you mean {h!r}?" for c, h in hints.items() if h in cols]
    if fixes:
        return f"{head}: {' '.join(fixes)}"
    reasons = {r: n for r, n in cat.skips.items()
               if r.startswith(f"{name}_") or (code == "Tab" and r == "pv_malformed")}
    if reasons:
        from bench.data.catalog import validate_hint

        top = max(reasons, key=reasons.get)
        listed = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
        return f"{head}: every listed one was rejected ({listed}); see `{validate_hint(cat.source, top)}`"
    # Unrecognised columns with no likely meaning elsewhere may be this one under another name.
    unknown = [c for c in cat.info.get("unknown_columns") or [] if not hints.get(c)]
    extra = f"; unrecognised columns: {', '.join(map(repr, unknown))}" if unknown else ""
    return f"{head}: the source has no {cols[0] if cols else name} values{extra}"


def load_summary(cat: "Catalog") -> Table:
    """One table: the counts of the loaded catalog and any skips."""
    t = Table(title=f"catalog {cat.source}  (fingerprint {cat.fingerprint[:12]})")
    t.add_column("item")
    t.add_column("value", justify="right")
    t.add_row("listings", str(len(cat)))
    t.add_row("categories", str(len(cat.category_names)))
    t.add_row("products", str(len(cat.product_names)))
    for name in ("pretrain_full", "pretrain_subset", "gallery", "coarse_query", "fine_query"):
        t.add_row(f"split {name}", str(len(cat.split_indices(name))))
    if cat.skips:
        for reason, n in sorted(cat.skips.items()):
            t.add_row(f"[yellow]skipped: {reason}[/]", str(n))
    else:
        t.add_row("skipped", "0")
    return t


def stats_tables(cat: "Catalog") -> list[Table]:
    """The tables ``bench data stats`` prints."""
    sup = cat.super_categories
    t = Table(title=f"catalog {cat.source}")
    t.add_column("item")
    t.add_column("value", justify="right")
    t.add_row("fingerprint", cat.fingerprint)
    t.add_row("root", str(cat.root))
    t.add_row("listings", str(len(cat)))
    t.add_row("categories", str(len(cat.category_names)))
    t.add_row("products", str(len(cat.product_names)))
    t.add_row("super-categories", str(len(set(sup.values()))) if sup else "n/a (source has none)")
    t.add_row("product ids", str(cat.info.get("product_ids")))
    tc = cat.info.get("table_cache")
    if tc:
        t.add_row("table", ("reused (annotation files unchanged): " if tc["reused"] else "built and kept: ") + tc["path"])
    if "generator" in cat.info:
        g = cat.info["generator"]
        t.add_row("generator", f"{g.get('generator')} v{g.get('generator_version')} size={g.get('size')} seed={g.get('seed')}")
    counts = Counter(cat.category_ids().tolist())
    if counts:
        sizes = sorted(counts.values(), reverse=True)
        t.add_row("listings per category (max / median / min)", f"{sizes[0]} / {sizes[len(sizes) // 2]} / {sizes[-1]}")

    m = Table(title="modality presence")
    m.add_column("modality")
    m.add_column("present", justify="right")
    for k, v in cat.modality_presence().items():
        m.add_row(k, f"{100 * v:.1f}%")

    s = Table(title=f"splits ({cat.info.get('split', {}).get('method')})")
    s.add_column("split")
    s.add_column("listings", justify="right")
    from bench.data.catalog import SPLIT_NAMES

    for name in SPLIT_NAMES:
        s.add_row(name, str(len(cat.split_indices(name))))
    out = [t, m, s, protocol_table(cat)]
    files = files_table(cat)
    if files is not None:
        out.append(files)
    out.append(skips_table(cat.skips, ids=cat.problem_ids) if cat.skips else Table(title="listing-level problems: none"))
    return out


def protocol_table(cat: "Catalog") -> Table:
    """Each retrieval task's query and gallery sets per pretraining split (``bench.data.tasks``)."""
    from bench.data.tasks import EVAL_SPLITS, TASKS

    lists = cat.info.get("release_lists") or []
    t = Table(title="evaluation protocol" + (f" (release lists: {', '.join(lists)})" if lists else ""))
    for col in ("task", "split", "queries", "gallery", "leave-one-out", "rule", "P counted in", "listed, absent"):
        t.add_column(col, justify="right" if col in ("queries", "gallery", "listed, absent") else "left")
    for task in TASKS:
        for split in EVAL_SPLITS:
            d = cat.task_set(task, split).describe()
            t.add_row(task, split, str(d["queries"]), str(d["gallery"]), "yes" if d["leave_one_out"] else "no",
                      d["rule"], d["positives_from"], str(d["listed_absent"]))
    return t


def files_table(cat: "Catalog") -> Table | None:
    """Region-feature shards and the files of the source nothing reads (ignored), or None."""
    pre = cat.info.get("precomputed") or {}
    shards = pre.get("image_tsv_shards") or ([pre["image_tsv"]] if pre.get("image_tsv") else [])
    extra = cat.info.get("unrecognised_files") or []
    if not shards and not extra and not pre.get("video_npy_dir") and not pre.get("audio_npy_dir"):
        return None
    t = Table(title="source files")
    t.add_column("what")
    t.add_column("files")
    if shards:
        t.add_row(f"region feature TSV shards ({len(shards)})", "\n".join(shards))
    for key, what in (("video_npy_dir", "S3D video features"), ("audio_npy_dir", "mel audio features")):
        if pre.get(key):
            t.add_row(what, str(pre[key]))
    if extra:
        t.add_row(f"[yellow]unrecognised, ignored ({len(extra)})[/]", "\n".join(extra))
    return t
