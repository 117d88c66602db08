"""Featurizers and the on-disk feature store: listings -> token ids and feature sequences.

Public API: :class:`FeatureConfig`, :func:`build_features`, :class:`FeatureStore` (streams
:class:`Batch` es sized by its :class:`FeatureSpec`). Heavy libraries (torch, timm, librosa, av)
load only when features are built or read.
"""

from bench.features.batch import Batch, FeatureSpec
from bench.features.config import FeatureConfig
from bench.features.store import FeatureStore, build_features, store_dir

__all__ = ["Batch", "FeatureSpec", "FeatureConfig", "FeatureStore", "build_features", "store_dir"]
