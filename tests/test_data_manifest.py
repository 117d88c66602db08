"""The manifest loader: CSV, JSONL and Parquet tables of listings with relative media paths."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.data import CatalogError, load_catalog
from bench.data.schema import COLUMNS


def _rows(tiny_synth_dir, tmp_path):
    metas = [json.loads(line) for line in (tiny_synth_dir / "meta_info.jsonl").read_text().splitlines()][:12]
    gt = json.loads((tiny_synth_dir / "product1m_product5m_test_id_label.json").read_text())
    media = tmp_path / "media"
    media.mkdir()
    rows = []
    for i, m in enumerate(metas):
        row = {"item_id": m["item_id"], "product_id": gt[m["item_id"]]["label"], "category": m["label"],
               "title": m["caption"] or "", "table": json.dumps(m["tabular"] or {}), "image": "", "video": "", "audio": ""}
        for k in ("image", "video", "audio"):
            if m[k]:
                shutil.copy(tiny_synth_dir / m[k], media)
                row[k] = f"media/{m[k].split('/')[-1]}"
        if i == 3:
            row["table"] = "colour#:#red#;#size#:#XL"  # pv strings are accepted too
        rows.append(row)
    return rows


def _check(cat, rows):
    assert list(cat.dataset.column_names) == list(COLUMNS)
    # The generator's title-less listing is written as "" here: a blank title is a counted problem.
    no_title = [r["item_id"] for r in rows if not r["title"]]
    assert len(cat) == len(rows) and cat.skips == Counter({"title_empty": len(no_title)} if no_title else {})
    assert cat.problem_ids.get("title_empty", []) == no_title
    r0 = cat.dataset[0]
    assert r0["item_id"] == rows[0]["item_id"] and r0["product_id"] == rows[0]["product_id"]
    assert cat.dataset[3]["table"] == [{"key": "colour", "value": "red"}, {"key": "size", "value": "XL"}]
    imgs = [x for x in cat.dataset["image"] if x]
    assert imgs and all(x.startswith("/") for x in imgs)
    assert cat.info["product_ids"] == "annotated"


def test_csv_jsonl_parquet_agree(tiny_synth_dir, tmp_path):
    rows = _rows(tiny_synth_dir, tmp_path)
    with open(tmp_path / "m.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    cats = [load_catalog(f"manifest:{tmp_path / n}", progress=False) for n in ("m.csv", "m.jsonl", "m.parquet")]
    for c in cats:
        _check(c, rows)
    assert len({c.fingerprint for c in cats}) == 1  # same content, same fingerprint, whatever the format


def test_manifest_listing_problems(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    lines = [
        "item_id,category,title,table,image",
        "1,a,ok,,",
        "2,a,ok,k#:#v#;#broken,",
        "1,b,dup,,",
        "3,,no label,,",
        "4,b,bad image,,bad.jpg",
        "5,b,missing image,,nowhere.jpg",
    ]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    cat = load_catalog(f"manifest:{tmp_path / 'm.csv'}", progress=False)
    assert cat.skips == Counter({"pv_malformed": 1, "duplicate_item_id": 1, "label_missing": 1,
                                 "image_corrupt": 1, "image_missing": 1})
    assert cat.dataset["item_id"] == ["1", "2", "4", "5"]
    assert cat.dataset["product_id"] == cat.dataset["item_id"]  # no product column: product = listing
    assert "no product_id" in cat.info["product_ids"]


def test_missing_required_column(tmp_path):
    (tmp_path / "m.csv").write_text("item_id,title\n1,x\n")
    with pytest.raises(CatalogError, match=r"m\.csv:1: missing required column 'category'"):
        load_catalog(f"manifest:{tmp_path / 'm.csv'}", progress=False)


def test_label_alias_and_bad_jsonl_line(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"item_id": 1, "label": "a"}\n{"item_id": 2, "label": "b"}\n')
    cat = load_catalog(f"manifest:{tmp_path / 'm.jsonl'}", progress=False)
    assert cat.dataset["category"] == ["a", "b"] and cat.dataset["item_id"] == ["1", "2"]
    (tmp_path / "n.jsonl").write_text('{"item_id": 1, "label": "a"}\n\n{"item_id": 2 "label": "b"}\n')
    with pytest.raises(CatalogError, match=r"n\.jsonl:3:"):
        load_catalog(f"manifest:{tmp_path / 'n.jsonl'}", progress=False)


def test_bad_source_strings(tmp_path):
    with pytest.raises(CatalogError, match="unknown catalog source"):
        load_catalog("s3://bucket", progress=False)
    with pytest.raises(CatalogError, match="unknown synthetic size"):
        load_catalog("synthetic:huge", progress=False)
    with pytest.raises(CatalogError, match="manifest not found"):
        load_catalog(f"manifest:{tmp_path / 'nope.csv'}", progress=False)
