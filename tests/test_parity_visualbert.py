"""Parity: the VisualBERT adapter equals Hugging Face's VisualBertModel with the same weights.

The adapter's weights are copied one-to-one into a randomly initialised ``VisualBertForPreTraining``
of the same size (every HF tensor gets exactly one adapter tensor of the same shape), then both run
the same batch, with padded titles and listings that lack an image. Skipped if transformers is absent.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from baseline_helpers import batch, build  # noqa: E402


def hf_name_map(model) -> dict[str, torch.Tensor]:
    """HF VisualBertForPreTraining parameter name -> the adapter tensor it must equal."""
    m = {
        "visual_bert.embeddings.word_embeddings.weight": model.text.word.weight,
        "visual_bert.embeddings.position_embeddings.weight": model.text.position.weight,
        "visual_bert.embeddings.token_type_embeddings.weight": model.text.token_type.weight,
        "visual_bert.embeddings.LayerNorm.weight": model.text.ln.weight,
        "visual_bert.embeddings.LayerNorm.bias": model.text.ln.bias,
        "visual_bert.embeddings.visual_token_type_embeddings.weight": model.visual.visual_token_type.weight,
        "visual_bert.embeddings.visual_position_embeddings.weight": model.visual.visual_position.weight,
        "visual_bert.embeddings.visual_projection.weight": model.visual.visual_projection.weight,
        "visual_bert.embeddings.visual_projection.bias": model.visual.visual_projection.bias,
        "visual_bert.pooler.dense.weight": model.pooler.proj.weight,
        "visual_bert.pooler.dense.bias": model.pooler.proj.bias,
        "cls.predictions.transform.dense.weight": model.mlm.dense.weight,
        "cls.predictions.transform.dense.bias": model.mlm.dense.bias,
        "cls.predictions.transform.LayerNorm.weight": model.mlm.ln.weight,
        "cls.predictions.transform.LayerNorm.bias": model.mlm.ln.bias,
        "cls.predictions.decoder.weight": model.mlm.decoder.weight,
        "cls.predictions.bias": model.mlm.bias,
        "cls.predictions.decoder.bias": model.mlm.bias,  # HF ties it to cls.predictions.bias
        "cls.seq_relationship.weight": model.itm_head.fc.weight,
        "cls.seq_relationship.bias": model.itm_head.fc.bias,
    }
    for i, layer in enumerate(model.encoder.layers):
        p = f"visual_bert.encoder.layer.{i}."
        for hf, mine in [("attention.self.query", layer.attn.q), ("attention.self.key", layer.attn.k),
                         ("attention.self.value", layer.attn.v), ("attention.output.dense", layer.attn.o),
                         ("attention.output.LayerNorm", layer.attn_ln), ("intermediate.dense", layer.ffn.fc1),
                         ("output.dense", layer.ffn.fc2), ("output.LayerNorm", layer.ffn_ln)]:
            m[p + hf + ".weight"] = mine.weight
            m[p + hf + ".bias"] = mine.bias
    return m


def make_pair(layers: int = 2):
    model = build("visualbert", layers=layers)
    # move away from the special init so copied tables are not trivially equal
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.prepare(batch("visualbert", seed=11))  # training mode: non-trivial feature statistics
    assert model.region_std is not None and float(model.region_std.updates) == 1.0
    model.eval()
    c = model.config
    cfg = transformers.VisualBertConfig(
        vocab_size=model.spec.vocab_size, hidden_size=c.d, num_hidden_layers=c.layers, num_attention_heads=c.heads,
        intermediate_size=c.ffn_dim, visual_embedding_dim=model.spec.region_dim,
        max_position_embeddings=model.text.max_len, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=model.spec.pad_id,
    )
    hf = transformers.VisualBertForPreTraining(cfg).eval()
    mapping = hf_name_map(model)
    hf_params = dict(hf.named_parameters(remove_duplicate=False))
    # one-to-one: every HF tensor is covered, and shapes agree
    assert set(hf_params) == set(mapping), set(hf_params) ^ set(mapping)
    with torch.no_grad():
        for name, p in hf_params.items():
            assert p.shape == mapping[name].shape, name
            p.copy_(mapping[name])
    return model, hf


def test_visualbert_matches_hf_model() -> None:
    model, hf = make_pair()
    raw = batch("visualbert", size=6, missing_images=True)
    b = model.prepare(raw)  # the adapter's standardised region features are what HF receives
    with torch.no_grad():
        mine_h, mask = model.encode(b.title_ids, b.title_mask, b.region_feats, b.region_mask)
        mine_pool = model.pooler(mine_h)
        out = hf.visual_bert(
            input_ids=b.title_ids, attention_mask=b.title_mask.long(),
            token_type_ids=torch.zeros_like(b.title_ids), visual_embeds=b.region_feats,
            visual_attention_mask=b.region_mask.long(),
            visual_token_type_ids=torch.ones(b.region_mask.shape, dtype=torch.long),
        )
    assert out.last_hidden_state.shape == mine_h.shape
    assert torch.allclose(out.last_hidden_state[mask], mine_h[mask], atol=1e-5)
    assert torch.allclose(out.pooler_output, mine_pool, atol=1e-5)
    assert torch.allclose(model.embed_variants(raw)["pooler"], out.pooler_output, atol=1e-5)
    assert torch.allclose(model.embed(raw), out.last_hidden_state[:, 0], atol=1e-5)  # [CLS], the default


def test_visualbert_heads_match_hf_pretraining_heads() -> None:
    model, hf = make_pair(layers=1)
    b = model.prepare(batch("visualbert", size=4, seed=2))
    with torch.no_grad():
        h, _ = model.encode(b.title_ids, b.title_mask, b.region_feats, b.region_mask)
        out = hf(input_ids=b.title_ids, attention_mask=b.title_mask.long(),
                 token_type_ids=torch.zeros_like(b.title_ids), visual_embeds=b.region_feats,
                 visual_attention_mask=b.region_mask.long())
        Lt = b.title_ids.shape[1]
        real = b.title_mask.bool()
        assert torch.allclose(out.prediction_logits[:, :Lt][real], model.mlm(h[:, :Lt])[real], atol=1e-4)
        assert torch.allclose(out.seq_relationship_logits, model.itm_head(model.pooler(h)), atol=1e-5)
