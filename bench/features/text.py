"""Title and table tokenization (T, Tab): WordPiece, with entity spans kept for the table.

The official loaders use BERT WordPiece (``bert-base-chinese``). No hub is reachable here, so by
default a WordPiece vocabulary is trained on the catalog's own titles and table entities with the
``tokenizers`` library (cached by catalog fingerprint); any local Hugging Face tokenizer folder can
be used instead. The table is serialised entity by entity as ``[CLS] k1 v1 k2 v2 ... [SEP]`` with no
separator between key and value (as the official code), and every token remembers its entity index
and whether it belongs to a key or a value, so masked entity modelling can mask whole spans.
Truncation drops whole trailing entities; it never cuts an entity in half.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

KIND_SPECIAL, KIND_KEY, KIND_VALUE = 0, 1, 2


@dataclass(frozen=True)
class SpecialIds:
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    unk_id: int
    vocab_size: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def special_ids(tok: Any) -> SpecialIds:
    """Special token ids read from the actual tokenizer (a ``tokenizers.Tokenizer``)."""
    ids = {}
    for field, name in (("pad_id", "[PAD]"), ("cls_id", "[CLS]"), ("sep_id", "[SEP]"), ("mask_id", "[MASK]"),
                        ("unk_id", "[UNK]")):
        i = tok.token_to_id(name)
        if i is None:
            raise ValueError(f"tokenizer has no {name} token; a BERT-style WordPiece vocabulary is required")
        ids[field] = int(i)
    return SpecialIds(vocab_size=int(tok.get_vocab_size(with_added_tokens=True)), **ids)


def _bert_pipeline(lowercase: bool) -> tuple[Any, Any]:
    from tokenizers import normalizers, pre_tokenizers

    # handle_chinese_chars splits CJK characters, as bert-base-chinese does for M5Product's titles.
    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    return norm, pre_tokenizers.BertPreTokenizer()


def learn_wordpiece_vocab(word_counts: dict[str, int], vocab_size: int, specials: Sequence[str] = SPECIALS,
                          prefix: str = "##") -> list[str]:
    """A WordPiece vocabulary by BPE merges over a word-frequency table, deterministically.

    Written here because ``tokenizers``' WordPieceTrainer is not reproducible: its merge ties
    depend on Rust hash-map order, so the same catalog gave different vocabularies in different
    processes (measured: 0-97 tokens differed between three runs on the mini catalog). This is the
    same algorithm (BPE merges with a ``##`` continuation prefix, as the trainer does), with ties
    broken by the pair's text. The vocabulary is specials, the alphabet (kept whole even beyond
    ``vocab_size``), then merged pieces in merge order.
    """
    import heapq
    from collections import defaultdict

    words: list[list[str]] = []
    counts: list[int] = []
    for w, n in sorted(word_counts.items()):
        if w:
            words.append([w[0]] + [prefix + c for c in w[1:]])
            counts.append(int(n))
    vocab = list(specials)
    seen = set(vocab)
    for a in sorted({sym for w in words for sym in w}):
        if a not in seen:
            vocab.append(a)
            seen.add(a)
    pair_count: defaultdict[tuple[str, str], int] = defaultdict(int)
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for i, w in enumerate(words):
        for p in zip(w, w[1:]):
            pair_count[p] += counts[i]
            where[p].add(i)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        negc, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or negc == 0:
            continue  # stale entry: the pair's count changed after it was pushed
        a, b = pair
        merged = a + b[len(prefix):]
        if merged not in seen:
            vocab.append(merged)
            seen.add(merged)
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            w, n = words[i], counts[i]
            for p in zip(w, w[1:]):
                pair_count[p] -= n
                changed.add(p)
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for p in zip(out, out[1:]):
                pair_count[p] += n
                where[p].add(i)
                changed.add(p)
        pair_count.pop(pair, None)
        for p in sorted(changed):
            c = pair_count.get(p, 0)
            if c > 0 and p != pair:
                heapq.heappush(heap, (-c, p))
            elif c <= 0:
                pair_count.pop(p, None)
    return vocab


def train_wordpiece(texts: Iterable[str], vocab_size: int, lowercase: bool = True) -> Any:
    """Train a BERT-style WordPiece tokenizer on ``texts`` (deterministic: same texts, same vocabulary)."""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models
    from tokenizers.processors import TemplateProcessing

    norm, pre = _bert_pipeline(lowercase)
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    vocab = learn_wordpiece_vocab(counts, vocab_size)
    tok = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(vocab)}, unk_token="[UNK]",
                                     max_input_chars_per_word=100, continuing_subword_prefix="##"))
    tok.normalizer, tok.pre_tokenizer = norm, pre
    tok.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tok


def load_tokenizer_folder(path: str | os.PathLike[str]) -> Any:
    """A local Hugging Face tokenizer folder (e.g. a BERT checkpoint) as a ``tokenizers.Tokenizer``."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True, use_fast=True)
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{path}: only fast (tokenizers-backed) tokenizers are supported")
    return backend


def catalog_texts(titles: Sequence[str | None], tables: Sequence[Sequence[dict[str, str]] | None]) -> Iterator[str]:
    """The training corpus for the catalog's own WordPiece: titles, then every key and value."""
    for t in titles:
        if t:
            yield t
    for table in tables:
        for ent in table or ():
            for s in (ent.get("key"), ent.get("value")):
                if s:
                    yield s


def trained_tokenizer_path(config: Any, cache_dir: Path) -> Path:
    """Where the WordPiece trained for ``config`` on this catalog is cached (``cache_dir`` is per catalog)."""
    from bench.features.config import FEATURES_VERSION

    name = f"tokenizer-wp{config.vocab_size}-{'uncased' if config.lowercase else 'cased'}-v{FEATURES_VERSION}"
    return cache_dir / name / "tokenizer.json"


def cached_tokenizer(config: Any, cache_dir: Path) -> tuple[Any, dict[str, Any]] | None:
    """The tokenizer ``config`` asks for and its description, without training one: the folder it
    names, or the WordPiece already trained on this catalog; ``None`` when that is not trained yet."""
    from tokenizers import Tokenizer

    if config.tokenizer:
        tok = load_tokenizer_folder(config.tokenizer)
        return tok, {"kind": "folder", "path": str(config.tokenizer)}
    path = trained_tokenizer_path(config, cache_dir)
    if path.exists():
        return Tokenizer.from_file(str(path)), {"kind": "trained", "path": str(path), "cached": True}
    return None


def get_tokenizer(config: Any, cache_dir: Path, titles: Sequence[str | None],
                  tables: Sequence[Sequence[dict[str, str]] | None]) -> tuple[Any, dict[str, Any]]:
    """The tokenizer a config asks for, and a description of it for the store's info.

    A trained tokenizer is cached as ``cache_dir/tokenizer-wp<V>-<case>/tokenizer.json`` (the cache
    dir is per catalog fingerprint), written atomically.
    """
    found = cached_tokenizer(config, cache_dir)
    if found is not None:
        return found
    path = trained_tokenizer_path(config, cache_dir)
    tok = train_wordpiece(catalog_texts(titles, tables), config.vocab_size, config.lowercase)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    tok.save(tmp)
    os.replace(tmp, path)
    return tok, {"kind": "trained", "path": str(path), "cached": False}


def encode_titles(tok: Any, titles: Sequence[str | None], max_len: int, ids: SpecialIds) -> tuple[np.ndarray, np.ndarray]:
    """``[CLS] title [SEP]`` ids padded to ``max_len`` and their lengths (0 = no title)."""
    n = len(titles)
    out = np.full((n, max_len), ids.pad_id, dtype=np.int32)
    lengths = np.zeros(n, dtype=np.int16)
    todo = [(i, t.strip()) for i, t in enumerate(titles) if t and t.strip()]
    if not todo:
        return out, lengths
    encs = tok.encode_batch([t for _, t in todo], add_special_tokens=False)
    for (i, _), enc in zip(todo, encs):
        body = enc.ids[: max_len - 2]
        if not body:  # e.g. only characters the normaliser strips
            continue
        seq = [ids.cls_id, *body, ids.sep_id]
        out[i, : len(seq)] = seq
        lengths[i] = len(seq)
    return out, lengths


def encode_tables(tok: Any, tables: Sequence[Sequence[dict[str, str]] | None], max_len: int,
                  ids: SpecialIds) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Serialise tables as ``[CLS] k1 v1 k2 v2 ... [SEP]``.

    Returns ``(ids [N, L] int32, entity [N, L] int16 (-1 outside entities), kind [N, L] int8
    (0 special/pad, 1 key, 2 value), lengths [N] int16, dropped [N] int16 entities dropped by truncation)``.
    An entity that does not fit is dropped with every entity after it (it is never cut in half).
    """
    n = len(tables)
    out = np.full((n, max_len), ids.pad_id, dtype=np.int32)
    ent = np.full((n, max_len), -1, dtype=np.int16)
    kind = np.zeros((n, max_len), dtype=np.int8)
    lengths = np.zeros(n, dtype=np.int16)
    dropped = np.zeros(n, dtype=np.int16)
    flat: list[str] = []
    for table in tables:
        for e in table or ():
            flat.append((e.get("key") or "").strip())
            flat.append((e.get("value") or "").strip())
    encs = tok.encode_batch(flat, add_special_tokens=False) if flat else []
    k = 0
    for i, table in enumerate(tables):
        entities = table or []
        seq, seq_ent, seq_kind = [ids.cls_id], [-1], [KIND_SPECIAL]
        e_out = 0  # entity index counts kept entities only, so indices are contiguous from 0
        stop = False
        for j in range(len(entities)):
            key_ids, val_ids = encs[k].ids, encs[k + 1].ids
            k += 2
            if stop:
                dropped[i] += 1
                continue
            if not key_ids and not val_ids:
                continue  # an empty entity carries nothing to model
            if len(seq) + len(key_ids) + len(val_ids) + 1 > max_len:  # +1 keeps room for [SEP]
                stop = True
                dropped[i] += 1
                continue
            seq += key_ids + val_ids
            seq_ent += [e_out] * (len(key_ids) + len(val_ids))
            seq_kind += [KIND_KEY] * len(key_ids) + [KIND_VALUE] * len(val_ids)
            e_out += 1
        if e_out == 0:
            continue  # nothing kept: the table modality is missing for this listing
        seq.append(ids.sep_id)
        seq_ent.append(-1)
        seq_kind.append(KIND_SPECIAL)
        L = len(seq)
        out[i, :L] = seq
        ent[i, :L] = seq_ent
        kind[i, :L] = seq_kind
        lengths[i] = L
    return out, ent, kind, lengths, dropped
