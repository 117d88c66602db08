"""The pv table-string parser and the table normaliser."""

from __future__ import annotations

import pytest

from bench.data.pv import PvError, format_pv, parse_pv, table_from_any


def test_parse_basic_keeps_order():
    assert parse_pv("colour#:#red#;#size#:#XL") == [{"key": "colour", "value": "red"}, {"key": "size", "value": "XL"}]


@pytest.mark.parametrize("empty", [None, "", " ", "-"])
def test_one_char_or_none_is_empty(empty):
    assert parse_pv(empty) == []


def test_trailing_separator_and_empty_value_are_tolerated():
    assert parse_pv("a#:#1#;#") == [{"key": "a", "value": "1"}]
    assert parse_pv("a#:##;#b#:#2") == [{"key": "a", "value": ""}, {"key": "b", "value": "2"}]


@pytest.mark.parametrize("bad", ["a#:#1#;#b2", "#:#x", "a#:#1#:#2", "no separators at all"])
def test_malformed(bad):
    with pytest.raises(PvError):
        parse_pv(bad)


def test_non_string_is_malformed():
    with pytest.raises(PvError):
        parse_pv(12)


def test_roundtrip():
    ents = [("材质", "棉"), ("size", "XL"), ("k", "")]
    assert [(e["key"], e["value"]) for e in parse_pv(format_pv(ents))] == ents
    with pytest.raises(PvError):
        format_pv([("a#:#", "b")])


def test_table_from_any_forms():
    want = [{"key": "a", "value": "1"}, {"key": "b", "value": "x"}]
    assert table_from_any({"a": 1, "b": "x"}) == want
    assert table_from_any('{"a": 1, "b": "x"}') == want
    assert table_from_any([["a", 1], ["b", "x"]]) == want
    assert table_from_any([{"key": "a", "value": 1}, {"key": "b", "value": "x"}]) == want
    assert table_from_any("a#:#1#;#b#:#x") == want
    assert table_from_any(None) == [] and table_from_any(float("nan")) == []
    for bad in ("{not json", {"a": {"nested": 1}}, [["only-one"]], 3.5):
        with pytest.raises(PvError):
            table_from_any(bad)
