"""Building blocks shared by every model (plain ``torch.nn``; one copy of each).

* :mod:`bench.nn.layers`: PostLNLayer (BERT), PreLNLayer (CLIP), Encoder, MultiHeadAttention, mask
  helpers, run_length_bucketed
* :mod:`bench.nn.embeddings`: TextEmbedding, RegionEmbedding (loc5), SequenceFeatureEmbedding,
  RunningStandardizer, masked_mean, prepend_global
* :mod:`bench.nn.heads`: MLMHead (tied), RegressionHead, Pooler
* :mod:`bench.nn.losses`: mlm_ce, masked_mse, nt_xent
* :mod:`bench.nn.masking`: mask_tokens, mask_entities, mask_features, mask_regions (seeded)
* :mod:`bench.nn.harmonize`: Harmonizer (SCALE's SIMCL: learned logit scales, loss weights, feature graph, uniform)

Conventions: key padding masks are bool ``[B, L]``, True = real token; labels use -100 = ignore.
"""

from bench.nn.embeddings import (GLOBAL_BOX, RegionEmbedding, RunningStandardizer, SequenceFeatureEmbedding,
                                 TextEmbedding, masked_mean, prepend_global)
from bench.nn.harmonize import Harmonizer, feature_graph
from bench.nn.heads import MLMHead, Pooler, RegressionHead
from bench.nn.layers import (Encoder, FeedForward, MultiHeadAttention, PostLNLayer, PreLNLayer, QuickGELU,
                             activation, block_attn_mask, causal_attn_mask, combine_attn_masks, init_bert_weights,
                             num_params, padding_attn_mask, run_length_bucketed)
from bench.nn.losses import IGNORE_INDEX, masked_mse, mlm_ce, nt_xent
from bench.nn.masking import mask_entities, mask_features, mask_regions, mask_tokens

__all__ = [
    "GLOBAL_BOX", "RegionEmbedding", "RunningStandardizer", "SequenceFeatureEmbedding", "TextEmbedding",
    "masked_mean", "prepend_global", "Harmonizer", "feature_graph", "MLMHead", "Pooler", "RegressionHead",
    "Encoder", "FeedForward", "MultiHeadAttention", "PostLNLayer", "PreLNLayer", "QuickGELU", "activation",
    "block_attn_mask", "causal_attn_mask", "combine_attn_masks", "init_bert_weights", "num_params",
    "padding_attn_mask", "run_length_bucketed", "IGNORE_INDEX", "masked_mse", "mlm_ce", "nt_xent",
    "mask_entities", "mask_features", "mask_regions", "mask_tokens",
]
