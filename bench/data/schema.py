"""The catalog schema: the one table of listings every source becomes.

Every loader (``synthetic``, ``m5product:PATH``, ``manifest:PATH``) returns a
:class:`datasets.Dataset` with exactly these columns, so features, training and evaluation never
know where a catalog came from.

Split semantics (deterministic, recorded in the catalog's ``info.json``):

* ``split == "pretrain"``: the pretraining pool. ``subset`` marks the fixed fraction of the pool
  that forms the paper's *subset* split; the *full* split is the whole pool.
* ``split == "eval"``: held-out listings; they never enter pretraining.
* ``cls_split``: ``"train"`` rows fine-tune the classification head (drawn from the pretraining
  pool, as the paper fine-tunes on training listings), ``"test"`` rows (eval listings) score it.
* coarse retrieval: queries are eval rows with ``coarse_query``; the gallery is every eval row,
  and a query never retrieves itself (the official leave-one-out protocol).
* fine-grained retrieval: queries are eval rows with ``fine_query`` (their product has at least two
  eval listings, so every query has a positive); the gallery is every eval row.

Refinements (how the loaders in :mod:`bench.data.catalog` fill these columns):

* a missing modality is ``None`` for ``title`` and the media paths, and ``[]`` for ``table``; a
  listing with an unreadable file or a malformed field has that modality missing (counted in
  ``Catalog.skips``), never a half-valid value;
* without id lists from the source, eval membership is drawn per *product* from a hash of
  ``product_id`` and the split seed, so all listings of a held-out product are held out together
  (where a source has no product ids, ``product_id == item_id`` and the draw is per listing);
  ``subset`` is drawn per listing from a hash of ``item_id``;
* ``cls_split == "train"`` is the whole pretraining pool (unless the source lists its own
  fine-tuning ids), and ``"test"`` the eval rows whose category occurs in training;
* ``coarse_query`` marks eval rows whose category has another eval listing.
"""

from __future__ import annotations

import datasets

#: Column name -> Arrow type. ``table`` is a list of {key, value} entities in their original order.
FEATURES = datasets.Features(
    {
        "item_id": datasets.Value("string"),
        "product_id": datasets.Value("string"),
        "category": datasets.Value("string"),
        "title": datasets.Value("string"),  # may be null
        "table": datasets.List({"key": datasets.Value("string"), "value": datasets.Value("string")}),
        "image": datasets.Value("string"),  # absolute path or null
        "video": datasets.Value("string"),
        "audio": datasets.Value("string"),
        "split": datasets.Value("string"),  # "pretrain" | "eval"
        "subset": datasets.Value("bool"),
        "cls_split": datasets.Value("string"),  # "train" | "test" | null
        "coarse_query": datasets.Value("bool"),
        "fine_query": datasets.Value("bool"),
    }
)

COLUMNS: tuple[str, ...] = tuple(FEATURES.keys())
MEDIA_COLUMNS: tuple[str, ...] = ("image", "video", "audio")

PRETRAIN, EVAL = "pretrain", "eval"
