"""Each baseline keeps the trait that defines it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from bench.modalities import Modality
from bench.nn.layers import PostLNLayer, PreLNLayer
from baseline_helpers import batch, build, drop_images, gen


def _eval_embed(model, b, variant: str | None = None) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.embed(b) if variant is None else model.embed_variants(b)[variant]


# --- BERT ---------------------------------------------------------------------------------------

def test_bert_exposes_cls_and_mean_and_uses_table_as_segment_b() -> None:
    b = batch("bert")
    with_table = build("bert", use_table=True)
    assert {"cls", "mean", "default"} <= set(with_table.embed_variants(b))
    ids, mask, seg = with_table._inputs(b)
    # segment B = table tokens, packed right after the title with no gap
    n_title = b.title_mask.sum(1)
    n_table = b.table_mask[:, 1:].sum(1)
    assert torch.equal(mask.sum(1), n_title + n_table)
    for r in range(b.size):
        assert torch.equal(seg[r, : n_title[r]], torch.zeros(int(n_title[r]), dtype=torch.long))
        assert torch.equal(seg[r, n_title[r]: n_title[r] + n_table[r]], torch.ones(int(n_table[r]), dtype=torch.long))
    # the table changes the embedding only when the flag is on
    other = replace(b, table_ids=batch("bert", seed=5).table_ids, table_mask=batch("bert", seed=5).table_mask)
    assert not torch.allclose(_eval_embed(with_table, b), _eval_embed(with_table, other))
    from bench.registry import create_model
    from baseline_helpers import spec

    title_only = create_model("bert", "T", spec(), "tiny", d=32, heads=2, ffn_dim=64)
    tb = replace(b, present={k: v for k, v in b.present.items() if k != Modality.Tab})
    assert title_only.extra_state()["input"] == "title (segment A)"
    assert torch.equal(_eval_embed(title_only, tb), _eval_embed(title_only, other))
    with pytest.raises(ValueError, match="use_table"):
        build("bert", use_table=False)  # T,Tab requested but the table disabled: refused, not ignored


# --- Image-only ---------------------------------------------------------------------------------

def test_image_loss_only_over_listings_with_images() -> None:
    model = build("image")
    b = drop_images(batch("image"), torch.ones(8, dtype=torch.bool))
    out = model.pretrain_step(b, gen())
    assert float(out["mrp"]) == 0.0  # nothing to regress: no listing has an image
    e = model.embed_variants(batch("image"))
    assert torch.allclose(e["default"], e["global"])


# --- ViLBERT ------------------------------------------------------------------------------------

def test_vilbert_embedding_is_mean_of_stream_first_tokens() -> None:
    model = build("vilbert")
    b = batch("vilbert", missing_images=True)
    model.eval()
    with torch.no_grad():
        t, v = model.streams(b)
        pt, pv = model.pooled(b)
        e = model.embed(b)
        var = model.embed_variants(b)
    has = b.present[Modality.I]
    assert torch.allclose(e[has], (t[has, 0] + v[has, 0]) / 2, atol=1e-6)
    assert torch.allclose(e[~has], t[~has, 0], atol=1e-6)  # a missing image is not averaged in
    assert torch.allclose(var["product"], pt * pv)  # ViLBERT's pooler fusion, kept as a variant
    assert (pt >= 0).all() and (pv >= 0).all()  # ReLU poolers


def test_vilbert_interleaved_schedule() -> None:
    model = build("vilbert", text_layers=3, vision_layers=2, coattn_layers=2)
    order: list[str] = []
    for i, layer in enumerate(model.text_encoder.layers):
        layer.register_forward_hook(lambda *_, i=i: order.append(f"t{i}"))
    for i, layer in enumerate(model.vision_encoder.layers):
        layer.register_forward_hook(lambda *_, i=i: order.append(f"v{i}"))
    for i, layer in enumerate(model.coattn):
        layer.register_forward_hook(lambda *_, i=i: order.append(f"c{i}"))
    model.embed(batch("vilbert"))
    # text runs L_t - K = 1 layer alone; vision (L_v = K) has no self-attention before co-attention
    assert order == ["t0", "c0", "v0", "t1", "c1", "v1", "t2"]


# --- CLIP ---------------------------------------------------------------------------------------

def test_clip_towers_do_not_interact() -> None:
    model = build("clip")
    b = batch("clip")
    other = replace(b, region_feats=torch.rand_like(b.region_feats) * b.region_mask[..., None])
    assert torch.equal(_eval_embed(model, b, "text"), _eval_embed(model, other, "text"))
    assert not torch.allclose(_eval_embed(model, b, "image"), _eval_embed(model, other, "image"))
    other_t = replace(b, title_ids=batch("clip", seed=9).title_ids, title_mask=batch("clip", seed=9).title_mask)
    assert torch.equal(_eval_embed(model, b, "image"), _eval_embed(model, other_t, "image"))
    assert all(isinstance(layer, PreLNLayer) for layer in model.text_encoder.layers)


def test_clip_logit_scale_init_and_clamp_and_combination() -> None:
    model = build("clip")
    assert abs(float(model.logit_scale().detach()) - 1 / 0.07) < 1e-3
    with torch.no_grad():
        model.logit_scale.log_scale.fill_(10.0)
    assert abs(float(model.logit_scale().detach()) - 100.0) < 1e-3
    b = batch("clip", missing_images=True)
    v = model.embed_variants(b)
    img, txt = v["image"], v["text"]
    has = b.present[Modality.I]
    assert torch.allclose(v["sum"][has], img[has] + txt[has], atol=1e-6)
    assert torch.allclose(v["sum"][~has], txt[~has], atol=1e-6)  # a missing image adds nothing
    # the default: the normalised sum, a unit vector however many modalities a listing has
    assert model.config.combine == "normalized_sum"
    assert torch.allclose(v["default"], torch.nn.functional.normalize(v["sum"], dim=-1), atol=1e-6)
    assert torch.allclose(v["default"].norm(dim=-1), torch.ones(b.size), atol=1e-5)


def test_clip_uses_clip_initialisation() -> None:
    model = build("clip", text_layers=2)
    d = model.config.d
    q = model.text_encoder.layers[0].attn.q.weight
    o = model.text_encoder.layers[0].attn.o.weight
    assert abs(float(q.detach().std()) - d ** -0.5) < 0.2 * d ** -0.5  # width^-0.5, not BERT's 0.02
    assert abs(float(o.detach().std()) - d ** -0.5 * 4 ** -0.5) < 0.2 * d ** -0.5 * 4 ** -0.5


# --- VL-BERT ------------------------------------------------------------------------------------

def test_vlbert_regions_share_one_position_and_segment_c() -> None:
    model = build("vlbert")
    b = batch("vlbert")
    r = model.regions(b, None, mask=False, global_token=False)
    _, _, info = model._encode(b.title_ids, b, r)
    Lt, R = b.title_ids.shape[1], b.region_feats.shape[1]
    n = b.title_mask.sum(1)
    pos, seg = info["position_ids"], info["segment_ids"]
    assert torch.equal(pos[:, Lt:Lt + R], n[:, None].expand(-1, R))  # one shared RoI position
    assert torch.equal(pos[:, -1], n + 1)  # [END]
    assert (seg[:, Lt:] == 2).all() and (seg[:, :Lt] == 0).all()


def test_vlbert_visual_feature_starts_switched_off_then_learns() -> None:
    model = build("vlbert")
    assert (model.embedding.visual_ln_text.weight == 0).all()
    assert (model.embedding.visual_ln_object.weight == 0).all()
    b = batch("vlbert")
    other = replace(b, region_feats=torch.rand_like(b.region_feats) * b.region_mask[..., None])
    # at init the visual feature embedding contributes nothing, to any token
    assert torch.allclose(_eval_embed(model, b, "cls"), _eval_embed(model, other, "cls"))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.pretrain_step(b, gen())["loss"].backward()
    opt.step()
    assert not torch.allclose(_eval_embed(model, b, "cls"), _eval_embed(model, other, "cls"))
    # every text token carries the (whole-image) visual feature: it reaches [CLS] with one layer
    assert model.embedding.visual_ln_text.weight.abs().sum() > 0


# --- VisualBERT ---------------------------------------------------------------------------------

def test_visualbert_ignores_boxes() -> None:
    model = build("visualbert")
    b = batch("visualbert")
    moved = replace(b, region_boxes=torch.rand_like(b.region_boxes))
    assert torch.equal(_eval_embed(model, b), _eval_embed(model, moved))
    other = replace(b, region_feats=torch.rand_like(b.region_feats) * b.region_mask[..., None])
    assert not torch.allclose(_eval_embed(model, b), _eval_embed(model, other))
    # visual segment/position tables start as copies of the text ones (special_visual_initialize)
    fresh = build("visualbert")
    assert torch.equal(fresh.visual.visual_token_type.weight, fresh.text.token_type.weight)
    assert torch.equal(fresh.visual.visual_position.weight[0], fresh.text.position.weight[0])


def test_visualbert_mlm_on_text_only() -> None:
    model = build("visualbert", standardize_features=False)
    seen = {}
    orig = model.encode

    def spy(ids, t_mask, feats, r_mask):
        seen["feats"] = feats
        return orig(ids, t_mask, feats, r_mask)

    model.encode = spy
    b = batch("visualbert")
    model.pretrain_step(b, gen())
    # regions are never masked (rows may be permuted by no one: ITM swaps captions, not images)
    assert torch.equal(seen["feats"], b.region_feats)


# --- UNITER -------------------------------------------------------------------------------------

def test_uniter_conditional_masking() -> None:
    model = build("uniter")
    b = batch("uniter")
    seen = {}
    orig = model.encode

    def spy(ids, t_mask, feats, boxes, r_mask, masked=None):
        seen.update(ids=ids, feats=feats, masked=masked)
        return orig(ids, t_mask, feats, boxes, r_mask, masked)

    model.encode = spy
    model._mlm(b, gen())
    assert not torch.equal(seen["ids"], b.title_ids) and torch.equal(seen["feats"], b.region_feats)
    model._mrfr(b, gen())
    assert torch.equal(seen["ids"], b.title_ids) and not torch.equal(seen["feats"], b.region_feats)
    # at least one region masked in every listing that has an image
    has = b.present[Modality.I] & b.region_mask.any(1)
    assert seen["masked"][has].any(1).all()
    assert (seen["feats"][seen["masked"]] == 0).all()


def test_uniter_itm_swaps_images_not_titles() -> None:
    model = build("uniter")
    b = batch("uniter", size=12)
    seen = {}
    orig = model.encode

    def spy(ids, t_mask, feats, boxes, r_mask, masked=None):
        seen.update(ids=ids, feats=feats)
        return orig(ids, t_mask, feats, boxes, r_mask, masked)

    model.encode = spy
    model._itm(b, gen(2))
    assert torch.equal(seen["ids"], b.title_ids)
    assert not torch.equal(seen["feats"], b.region_feats)


def test_uniter_task_sampling_is_seeded_and_follows_ratio() -> None:
    model = build("uniter")
    b = batch("uniter", size=4)
    g1, g2 = gen(7), gen(7)
    seq1 = [next(k for k in model.pretrain_step(b, g1) if k != "loss") for _ in range(6)]
    seq2 = [next(k for k in model.pretrain_step(b, g2) if k != "loss") for _ in range(6)]
    assert seq1 == seq2
    w = torch.tensor(model.config.task_ratio)
    draws = torch.multinomial(w, 3000, replacement=True, generator=gen(0))
    freq = torch.bincount(draws, minlength=3).float() / 3000
    assert torch.allclose(freq, w / w.sum(), atol=0.03)


def test_uniter_mrfr_output_is_tied_and_ot_runs() -> None:
    model = build("uniter", task_sampling=False, wra_ot=True, ot_iterations=10)
    b = batch("uniter", size=10, missing_images=True)
    out = model.pretrain_step(b, gen(4))
    assert {"itm", "mlm", "mrfr", "ot"} <= set(out)
    out["loss"].backward()
    # the MRFR loss reaches the image input projection through the tied output layer
    model.zero_grad()
    model._mrfr(b, gen()).backward()
    assert model.image.img_linear.weight.grad.abs().sum() > 0
    assert not any("mrfr_out" in n for n, _ in model.named_parameters())


# --- CAPTURE ------------------------------------------------------------------------------------

def test_capture_contrast_before_fusion_and_pre_ln_cross() -> None:
    model = build("capture")
    model.eval()
    b = batch("capture")
    other = replace(b, region_feats=torch.rand_like(b.region_feats) * b.region_mask[..., None])
    with torch.no_grad():
        r1 = model.regions(b, None, mask=False)
        r2 = model.regions(other, None, mask=False)
        o1 = model._forward(b.title_ids, b.title_mask, r1)
        o2 = model._forward(b.title_ids, b.title_mask, r2)
    assert torch.equal(o1["z_t"], o2["z_t"])  # the text contrastive vector has seen no image
    assert not torch.allclose(o1["t"], o2["t"])  # but after co-attention and cross, text has
    assert all(isinstance(layer, PreLNLayer) for layer in model.cross_encoder.layers)
    assert all(isinstance(layer, PostLNLayer) for layer in model.text_encoder.layers)
    out = model.pretrain_step(b, gen())
    assert {"mlm", "mrp", "clr"} <= set(out) and "itm" not in out


# --- shared preprocessing -----------------------------------------------------------------------

def test_region_standardisation_updates_only_in_training_and_keeps_zeros() -> None:
    model = build("vilbert")
    b = batch("vilbert", missing_images=True)
    model.pretrain_step(b, gen())
    st = model.region_std
    assert float(st.updates) == 1.0 and not torch.allclose(st.mean, torch.zeros_like(st.mean))
    model.eval()
    p = model.prepare(b)
    model.embed(b)
    assert float(st.updates) == 1.0  # embedding never moves the statistics
    assert (p.region_feats[~b.region_mask] == 0).all()  # padding and absent images stay exactly 0
    real = p.region_feats[b.region_mask]
    assert abs(float(real.mean())) < 0.1 and abs(float(real.std()) - 1.0) < 0.1
    assert build("vilbert", standardize_features=False).region_std is None
    assert build("bert").region_std is None  # no image, nothing to standardise


def test_uniter_runs_wra_by_default() -> None:
    """UNITER's published pretraining includes word-region alignment (OT): on by default, and every
    ITM step adds the ``ot`` term to the total."""
    from baselines.uniter import UniterConfig

    assert UniterConfig().wra_ot is True and UniterConfig.preset("tiny").wra_ot is True
    model = build("uniter", task_ratio=(1.0, 0.0, 0.0))  # ITM steps only, default WRA setting
    out = model.pretrain_step(batch("uniter", size=8), gen(1))
    assert {"itm", "ot"} <= set(out)
    assert out["loss"].item() == pytest.approx(out["itm"].item() + out["ot"].item(), rel=1e-5)
    off = build("uniter", task_ratio=(1.0, 0.0, 0.0), wra_ot=False).pretrain_step(batch("uniter", size=8), gen(1))
    assert "ot" not in off
