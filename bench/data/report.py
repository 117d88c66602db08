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
    "item_id_missing": "rows without an item_id (dropped)",
    "title_not_utf8": "titles that are not valid UTF-8 (title treated as missing)",
    "pv_malformed": "tables (pv strings) that do not parse (table treated as missing)",
}


def skips_table(skips: Counter, title: str = "listing-level problems") -> Table:
    t = Table(title=title)
    t.add_column("reason")
    t.add_column("count", justify="right")
    t.add_column("effect")
    for reason, n in sorted(skips.items()):
        kind = reason.split("_")[0]
        effect = SKIP_HELP.get(reason) or (f"{kind} treated as missing" if kind in ("image", "video", "audio") else "")
        t.add_row(reason, str(n), effect)
    return t


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
    out = [t, m, s]
    out.append(skips_table(cat.skips) if cat.skips else Table(title="listing-level problems: none"))
    return out
