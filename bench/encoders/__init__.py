"""Frozen, released encoders as model families (``hf:``, ``open_clip:``, ``timm:``).

The registry (:mod:`bench.registry`, ``FAMILIES``) resolves ``PREFIX:ARGUMENT`` to one family
class bound to its argument; :mod:`bench.encoders.run` is their run (no pretraining stage).
"""
