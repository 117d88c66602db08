"""A release-shaped annotation set for scale benchmarks only (no media, no precomputed features).

Writes, under the release's own file names (:mod:`bench.data.release`, :mod:`bench.data.loaders`):

* ``id_info_dict.json``  ``{item_id: {"title", "pv", "label"}}`` for N listings (the file the SCALE
  code reads; titles of 12-40 CJK characters, ``pv`` tables of 2-12 ``key#:#value`` pairs, 6,232
  categories with a Zipf-like size law);
* ``product1m_product5m_test_id_label.json``  the fine-grained ground truth of the fine sets
  (``{item_id: {"title", "label"}}``, products of 2-20 listings);
* ``subset_v2_label_list.json``  the 1,805 classification labels;
* ``train_ids.txt``, ``gallery_c_id.txt``, ``query_c_id.txt``, ``gallery_fg_id.txt``, ``query_fg_id.txt``:
  the release's id lists, sized in the release's proportions (4,363,122 / 1,179,613 / 24,054 /
  117,791 / 1,991 of 6,313,067).

Everything is streamed to disk in chunks of :data:`CHUNK` listings, so memory stays a few tens of
MB at any N. Same N and seed -> the same bytes.

Run: ``python benchmarks/release_shaped.py OUT_DIR N [SEED]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

FULL = 6_313_067
SHARES = {"train_ids": 4_363_122, "gallery_c_id": 1_179_613, "query_c_id": 24_054,
          "gallery_fg_id": 117_791, "query_fg_id": 1_991}
N_CATEGORIES, N_CLS_LABELS = 6_232, 1_805
CHUNK = 100_000
_N_CJK = 3000  # title characters: the first 3,000 CJK unified ideographs
_KEYS = np.array([f"属性{i}" for i in range(5_679)])


def _roles(n: int) -> list[tuple[str, int, int]]:
    """Consecutive id ranges per list, in the release's proportions (at least one id each)."""
    out, start = [], 0
    for name, size in SHARES.items():
        k = max(1, round(size * n / FULL))
        out.append((name, start, min(n, start + k)))
        start = min(n, start + k)
    return out


def _item_id(i: int) -> str:
    return str(500_000_000_000 + i * 7919)


def _pv_pool(rng: np.random.Generator, size: int = 50_000) -> list[str]:
    """Tables to draw from (2-12 ``key#:#value`` pairs each): building one per listing would
    dominate the generator's time, and the loader's cost depends on their bytes, not their variety."""
    npv = rng.integers(2, 13, size)
    keys = _KEYS[rng.integers(0, len(_KEYS), int(npv.sum()))]
    vals = rng.integers(0, 24_000_000, int(npv.sum()))
    out, p0 = [], 0
    for m in npv:
        out.append("#;#".join(f"{keys[p0 + i]}#:#v{vals[p0 + i]}" for i in range(m)))
        p0 += m
    return out


def _records(rng: np.random.Generator, lo: int, hi: int, pvs: list[str]) -> list[str]:
    """The JSON members (``"id": {...}``) of listings lo..hi-1 (no character needs escaping)."""
    n = hi - lo
    cats = np.minimum((rng.pareto(1.1, n) * 40).astype(np.int64), N_CATEGORIES - 1).tolist()
    lens = rng.integers(12, 41, n)  # title length in characters
    ends = np.cumsum(lens)
    text = (rng.integers(0, _N_CJK, int(ends[-1]), dtype=np.uint32) + 0x4E00).tobytes().decode("utf-32-le")
    starts, ends, pv = (ends - lens).tolist(), ends.tolist(), rng.integers(0, len(pvs), n).tolist()
    return [f'"{_item_id(lo + j)}": {{"title": "{text[starts[j]:ends[j]]}", "pv": "{pvs[pv[j]]}", '
            f'"label": "cat{cats[j]:04d}"}}' for j in range(n)]


def write_release(out: Path, n: int, seed: int = 0) -> dict[str, int]:
    """Write the annotation set for ``n`` listings into ``out``; returns the size of each list."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, n])
    pvs = _pv_pool(rng)
    with open(out / "id_info_dict.json", "w", encoding="utf-8") as fh:
        fh.write("{")
        fh.writelines(("," if lo else "") + "\n" + ",\n".join(_records(rng, lo, min(n, lo + CHUNK), pvs)) for lo in range(0, n, CHUNK))
        fh.write("\n}\n")
    sizes = {}
    for name, lo, hi in _roles(n):
        with open(out / f"{name}.txt", "w") as fh:
            fh.writelines("".join(_item_id(i) + "\n" for i in range(s, min(hi, s + CHUNK))) for s in range(lo, hi, CHUNK))
        sizes[name] = hi - lo
    fine = [(lo, hi) for name, lo, hi in _roles(n) if name in ("gallery_fg_id", "query_fg_id")]
    with open(out / "product1m_product5m_test_id_label.json", "w", encoding="utf-8") as fh:
        fh.write("{")
        first, product, left = True, 0, 0
        for lo, hi in fine:
            for i in range(lo, hi):
                if left == 0:  # products of 2-20 listings
                    product, left = product + 1, int(rng.integers(2, 21))
                left -= 1
                rec = {"title": "", "label": f"p{product:07d}"}
                fh.write(("" if first else ",") + f"\n{json.dumps(_item_id(i))}: {json.dumps(rec)}")
                first = False
        fh.write("\n}\n")
    (out / "subset_v2_label_list.json").write_text(json.dumps([f"cat{c:04d}" for c in range(N_CLS_LABELS)]))
    return sizes


if __name__ == "__main__":
    root, size = Path(sys.argv[1]), int(sys.argv[2])
    print(json.dumps(write_release(root, size, int(sys.argv[3]) if len(sys.argv) > 3 else 0)))
