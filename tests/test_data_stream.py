"""The streaming catalog loader: same catalog as the whole-file loader it replaced, whatever the
batch and window sizes; the incremental JSON reader; the Arrow pv rule and fingerprint pieces; the
on-disk table cache."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from bench.data import build, jsonstream, release_read
from bench.data.catalog import load_catalog
from bench.data.errors import CatalogError
from bench.data.loaders import _FirstWins, clean_label, clean_table, clean_title
from benchmarks.release_shaped import write_release

# Members after the generated ones: escapes, braces and quotes inside strings, a repeated item id,
# a repeated key inside a record, a missing / numeric / non-UTF-8 label, blank and non-UTF-8
# titles, malformed, JSON-looking and non-string pv values, Python-only white space.
EXTRA = r'''
"900000000001": {"title": "a \"quoted\" \\ back\u00e9 \n new{line}", "pv": " k1 #:# v1 #;# k2#:#v\"2 #;#", "label": "cat0001"},
"900000000002": {"title": "braces } { \"}\" ]", "pv": "a#:#b#:#c", "label": "cat0002"},
"900000000003": {"title": "   ", "pv": "x#:#y", "label": "cat0001"},
"900000000004": {"title": "no label", "pv": "x#:#y"},
"900000000005": {"title": "float label", "pv": "", "label": 12.0},
"900000000001": {"title": "duplicate, second", "pv": "", "label": "cat0009"},
"900000000006": {"title": "ctrl \u0001 and tab\t", "pv": "{\"json\": \"pv\", \"n\": 3}", "label": " cat0003 "},
"900000000007": {"title": "emoji \ud83d\ude00", "pv": 5, "label": "cat0003"},
"900000000008": {"title": "lone \udc80", "pv": "k#:#v", "label": "cat0003", "extra": {"nested": [1, {"a": "}"}]}},
"900000000009": {"title": null, "pv": "#:#v", "label": "cat0004", "title": "dup key"},
"900000000010": {"title": "tricky \\\" end", "pv": "k#:#\u3000v\u3000", "label": "cat0004"},
"900000000011": {"title": "\u2028sep\u0085", "pv": "k #:# v\u001f", "label": "\udc81"}
'''
# What the whole-file loader (before streaming) gave for messy_release(300) and write_release(3000).
MESSY_FP, MESSY_ROWS = "88e1a46db82c57d72a70819fa2509bbc", "6dbdb2b1ad7aa3322a8db909659ed76ad52988592f17faa303209feee35e8622"
MESSY_SKIPS = {"duplicate_item_id": ["900000000001"], "label_missing": ["900000000004"],
               "label_not_utf8": ["900000000011"], "pv_malformed": ["900000000002", "900000000007", "900000000009"],
               "title_empty": ["900000000003"], "title_not_utf8": ["900000000008"]}
SHAPED_3000_FP = "45d57164b7e750193732ad8522823cfb"


def messy_release(root: Path, n: int = 300) -> Path:
    write_release(root, n)
    p = root / "id_info_dict.json"
    text = p.read_text(encoding="utf-8").rstrip()
    p.write_text(text[:-1].rstrip() + "," + EXTRA + "}\n", encoding="utf-8")
    return root


def rows_digest(cat) -> str:
    rows = cat.dataset.to_list()
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False, sort_keys=True).encode("utf-8", "surrogatepass")).hexdigest()


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    return messy_release(tmp_path_factory.mktemp("messy"))


def test_streamed_load_equals_whole_file_loader(messy):
    cat = load_catalog(f"m5product:{messy}", progress=False)
    assert cat.fingerprint == MESSY_FP
    assert rows_digest(cat) == MESSY_ROWS
    assert cat.problem_ids == MESSY_SKIPS and dict(cat.skips) == {k: len(v) for k, v in MESSY_SKIPS.items()}
    assert cat.info["unknown_columns"] == ["extra"]
    # and row by row against the file read whole and cleaned with the loader's own rules
    whole = json.loads((messy / "id_info_dict.json").read_text(encoding="utf-8", errors="surrogateescape"),
                       object_pairs_hook=_FirstWins)
    rows = {r["item_id"]: r for r in cat.dataset.to_list()}
    for iid, rec in whole.items():
        label = clean_label(rec.get("label"), set())
        if label is None:
            assert iid not in rows
            continue
        r = rows[iid]
        assert (r["category"], r["title"]) == (label, clean_title(rec.get("title"), set()))
        assert r["table"] == clean_table(rec.get("pv"), set())
    assert len(rows) == len(cat) == len(whole) - 2


def test_release_shaped_fingerprint_unchanged(tmp_path):
    write_release(tmp_path, 3000)
    assert load_catalog(f"m5product:{tmp_path}", progress=False).fingerprint == SHAPED_3000_FP


def test_batch_and_window_boundaries_change_nothing(messy, monkeypatch, tmp_path):
    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "home"))  # a fresh table cache
    monkeypatch.setattr(build, "BATCH_ROWS", 7)
    monkeypatch.setattr(release_read, "COMPACT_EVERY", 5)
    monkeypatch.setattr(jsonstream, "CHUNK_BYTES", 13)  # windows end inside keys, escapes, CJK characters
    cat = load_catalog(f"m5product:{messy}", progress=False)
    assert (cat.fingerprint, rows_digest(cat)) == (MESSY_FP, MESSY_ROWS)
    assert cat.problem_ids == MESSY_SKIPS
    assert cat.dataset.cache_files  # many batches: staged on disk, memory-mapped from the table cache
    again = load_catalog(f"m5product:{messy}", progress=False)
    assert again.info["table_cache"]["reused"] and (again.fingerprint, rows_digest(again)) == (MESSY_FP, MESSY_ROWS)
    assert again.problem_ids == MESSY_SKIPS
    for name in ("gallery", "coarse_query", "cls_train", "pretrain_subset"):
        np.testing.assert_array_equal(again.split_indices(name), cat.split_indices(name))
    np.testing.assert_array_equal(again.product_ids(), cat.product_ids())
    assert again.modality_presence() == cat.modality_presence()
    for key in cat.task_sets:
        assert again.task_set(*key).describe() == cat.task_set(*key).describe()


# --------------------------------------------------------------------------- the JSON reader

DOCS = [
    '{"a": {"t": "x\\"}{\\\\", "n": [1, {"}": "{"}]}, "b\\u00e9\\ud83d\\ude00": {"t": "\\n\\t\\u0001"}, "c": {}}',
    '\ufeff{ "k" : 1 , "k" : [ ] ,"z":null}\n',
    '{}',
    '{"x": "\u4e2d\u6587 \\u2028", "y": 1.5e3, "w": -0}',
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
@pytest.mark.parametrize("doc", DOCS)
def test_reader_matches_json_loads(tmp_path, doc, chunk):
    p = tmp_path / "d.json"
    p.write_text(doc, encoding="utf-8")
    calls = []

    def hook(pairs):
        calls.append(pairs)
        return _FirstWins(pairs)

    json.loads(doc.lstrip("\ufeff"), object_pairs_hook=hook)
    top = calls[-1]  # the outermost object is completed last; repeated keys are left to the caller
    assert list(jsonstream.iter_members(p, hook=_FirstWins, chunk=chunk)) == top


def test_reader_keeps_the_first_of_a_repeated_key_inside_a_record(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('{"1": {"t": "first", "u": 1, "t" : "second"}, "2": {"t":"a","t":"b"}, "3": {"q": "\\":", "t": 1}}')
    got = dict(jsonstream.iter_members(p, hook=_FirstWins, chunk=5))
    assert got == {"1": {"t": "first", "u": 1}, "2": {"t": "a"}, "3": {"q": '":', "t": 1}}


@pytest.mark.parametrize("cut", [1, 25, 26, 40, 58])
def test_truncated_file_is_one_line_naming_file_and_offset(tmp_path, cut):
    doc = '{"1": {"title": "a", "pv": ""},\n "2": {"title": "b\\u00e9", "pv": "k#:#v", "label": "c"}}'
    p = tmp_path / "id_info_dict.json"
    p.write_text(doc[:cut])
    with pytest.raises(CatalogError) as ei:
        list(jsonstream.iter_members(p, chunk=4))
    msg = str(ei.value)
    assert msg.startswith(f"{p}:") and "invalid JSON" in msg and "byte offset" in msg and "\n" not in msg


def test_corrupt_member_names_its_line_and_byte(tmp_path):
    p = tmp_path / "id_info_dict.json"
    doc = '{"1": {"title": "a"},\n "2": {"title": "b"},\n "3": {"title": },\n "4": {}}'
    p.write_text(doc)
    with pytest.raises(CatalogError, match=r"id_info_dict.json:3: invalid JSON: Expecting value \(byte offset 60\)"):
        list(jsonstream.iter_members(p, chunk=8))
    assert doc.encode()[60:61] == b"}"
    p.write_text('{"1": {"title": "a"} "2": {}}')
    with pytest.raises(CatalogError, match="expected ',' or '}'"):
        list(jsonstream.iter_members(p))
    p.write_text('{"1": {}} trailing')
    with pytest.raises(CatalogError, match="extra data"):
        list(jsonstream.iter_members(p))


def test_truncated_release_refused_by_the_loader(tmp_path, capsys):
    write_release(tmp_path, 500)
    p = tmp_path / "id_info_dict.json"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogError, match=r"id_info_dict.json:\d+: invalid JSON: .*byte offset \d+"):
        load_catalog(f"m5product:{tmp_path}", progress=False)


def test_strict_encoding_error_names_the_byte(tmp_path):
    p = tmp_path / "d.json"
    p.write_bytes(b'{"1": {"t": "ok"},\n "2": {"t": "\xff"}}')
    with pytest.raises(CatalogError, match=r"d.json:2: not valid utf-8 text at byte 32"):
        list(jsonstream.iter_members(p, "utf-8", chunk=6))
    lenient = dict(jsonstream.iter_members(p, chunk=6))  # no encoding named: UTF-8, leniently
    assert lenient["2"]["t"] == "\udcff"


# --------------------------------------------------------------------------- the Arrow pieces

def _random_strings(rng: random.Random, alphabet: list[str], n: int) -> list[str]:
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16))) for _ in range(n)]


@pytest.mark.parametrize("with_surrogates", [False, True])
def test_pv_batch_follows_clean_table(with_surrogates):
    from bench.data.pv_arrow import parse_pv_batch

    alphabet = ["#", ":", ";", " ", "\t", "a", "b", "\u3000", "{", "[", '"', "\\", "\x1f", "\x85", "\u2028", "\x00", "é"]
    rng = random.Random(3)
    vals = _random_strings(rng, alphabet + (["\udc80"] if with_surrogates else []), 20_000)
    vals += ["", "x", "#:#", "a#:#b#;#", " #;# ", "{bad json", '{"k": "v"}', '[["k", "\\udc80"]]']
    tables, bad = parse_pv_batch(vals)
    for v, t, b in zip(vals, tables.to_pylist(), bad.tolist()):
        found: set[str] = set()
        assert (t, b) == (clean_table(v, found), "pv_malformed" in found), repr(v)


def test_arrow_fingerprint_pieces_equal_the_row_recipe():
    import pyarrow as pa

    rng = random.Random(4)
    alphabet = ["a", '"', "\\", "\n", "\x01", "\x1f", "\x7f", "é", "\u2028", "中", "/", " "]
    rows = []
    for i in range(3000):
        s = _random_strings(rng, alphabet, 4)
        rows.append({"item_id": f"{i}{s[0]}", "product_id": s[1] or f"p{i}", "category": s[2] or "c",
                     "title": s[3] if i % 3 else None, "table": [{"key": k, "value": v} for k, v in
                                                                  zip(_random_strings(rng, alphabet, i % 4),
                                                                      _random_strings(rng, alphabet, i % 4))],
                     "image": None, "video": None, "audio": None})
    listing = pa.RecordBatch.from_pylist(rows, schema=build._listing_schema())
    arrow = [col.to_pylist() for col in build.arrow_segments(listing)]
    for i, r in enumerate(rows):
        a, b, c = build.fp_segments(r, {})
        assert (arrow[0][i], arrow[1][i], arrow[2][i]) == (a, b, c)
        full = dict(r, split="eval", subset=False, cls_split=None, coarse_query=True, fine_query=False)
        assert build.row_text(a, b, c, None, True, False, "eval", False) == json.dumps(full, sort_keys=True,
                                                                                       ensure_ascii=False)


# --------------------------------------------------------------------------- the table cache

def test_cache_reused_and_invalidated(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "home"))
    root = tmp_path / "rel"
    write_release(root, 400)
    first = load_catalog(f"m5product:{root}", progress=False)
    assert first.info["table_cache"]["reused"] is False
    again = load_catalog(f"m5product:{root}", progress=False)
    assert again.info["table_cache"]["reused"] is True and again.fingerprint == first.fingerprint
    assert rows_digest(again) == rows_digest(first)
    main(["data", "stats", f"m5product:{root}"])
    assert "reused (annotation files" in capsys.readouterr().out
    # another split option: another table
    other = load_catalog(f"m5product:{root}", progress=False, eval_fraction=0.3)
    assert other.info["table_cache"]["reused"] is False
    # an annotation file rewritten with the same size (and maybe the same mtime): rebuilt
    p = root / "id_info_dict.json"
    text = p.read_text(encoding="utf-8")
    p.write_text(text.replace('"label": "cat0000"', '"label": "cat0001"', 1), encoding="utf-8")
    changed = load_catalog(f"m5product:{root}", progress=False)
    assert changed.info["table_cache"]["reused"] is False and changed.fingerprint != first.fingerprint
    # a split list changed: rebuilt
    (root / "query_c_id.txt").write_text("")
    assert load_catalog(f"m5product:{root}", progress=False).info["table_cache"]["reused"] is False


def test_catalog_with_media_is_not_kept(tiny_synth_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("M5BENCH_HOME", str(tmp_path / "home"))
    a = load_catalog(f"m5product:{tiny_synth_dir}", progress=False)
    b = load_catalog(f"m5product:{tiny_synth_dir}", progress=False)
    assert "table_cache" not in a.info and "table_cache" not in b.info and a.fingerprint == b.fingerprint
