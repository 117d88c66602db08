"""``open_clip:ARCH[@PRETRAINED]``: an open_clip model on images (I) and titles (T).

Built with ``open_clip.create_model_and_transforms`` and ``open_clip.get_tokenizer``: the model's
own evaluation transform and tokenizer. PRETRAINED is an open_clip pretrained tag (downloaded and
cached by open_clip, or found in its cache offline) or a local checkpoint file; without it the
weights are open_clip's random initialisation, seeded by the run's seed (recorded as random).
(Named ``openclip`` so that it does not shadow the ``open_clip`` package.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import torch
from torch import nn

from bench.console import UserError
from bench.encoders.base import FrozenEncoder, Weights, hub_reachable, local_path, refuse_offline

_HOW = "--model open_clip:ARCH@/path/to/checkpoint (a file open_clip can load: .pt, .bin or .safetensors)"


def _cached_tag(arch: str, tag: str) -> str | None:
    """The local file of a pretrained tag when open_clip (or the hub cache) already holds it."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hub = cfg.get("hf_hub") or ""
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, fname = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        for name in ([fname] if fname else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]):
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str):
                return hit
    url = cfg.get("url") or ""
    if url:
        f = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if f.is_file():
            return str(f)
    return None


def _reachable(arch: str, tag: str) -> bool:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if cfg.get("hf_hub"):
        return hub_reachable()
    host = urlparse(cfg.get("url") or "").hostname
    if not host or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return False
    import socket

    try:
        socket.create_connection((host, 443), timeout=3.0).close()
        return True
    except OSError:
        return False


class _Clip(nn.Module):
    def __init__(self, arch: str, pretrained: str | None):
        super().__init__()
        import open_clip

        self.model, _, self.transform = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
        self.tokenizer = open_clip.get_tokenizer(arch)


class OpenClipEncoder(FrozenEncoder):
    """A frozen open_clip model: image tower on image files, text tower on titles."""

    family = "open_clip"

    @classmethod
    def resolve(cls, argument: str) -> Weights:
        import open_clip

        name = f"open_clip:{argument}"
        arch, pre = cls.split(argument)
        cls.check_known(argument, arch, open_clip.list_models(), "architecture", "open_clip.list_models()")
        if pre is None:
            return Weights("random")
        tags = open_clip.list_pretrained_tags_by_model(arch)
        path = local_path(pre)
        if pre not in tags and path is not None:
            if not path.is_file():
                raise UserError(f"model {name!r}: no checkpoint file at {path}")
            return Weights("file", str(path.resolve()))
        if pre not in tags:
            raise UserError(f"model {name!r}: {pre!r} is neither a local checkpoint file nor a pretrained tag of "
                            f"{arch} ({', '.join(tags) or 'it has none'})")
        cached = _cached_tag(arch, pre)
        if cached is not None:
            return Weights("cache", cached, pre)
        if not _reachable(arch, pre):
            raise refuse_offline(name, f"pretrained weights {pre!r} are not in the local cache", _HOW)
        return Weights("hub", None, pre)

    def build_encoder(self) -> nn.Module:
        arch, _ = self.split(self.argument)
        return _Clip(arch, self.weights.location or self.weights.tag)

    def encode(self, code: str, values: Sequence[Any]) -> torch.Tensor:
        clip = self.encoder
        device = next(clip.model.parameters()).device
        if code == "I":
            from PIL import Image

            def load(p: str) -> torch.Tensor:
                with Image.open(p) as im:
                    return clip.transform(im.convert("RGB"))

            return clip.model.encode_image(torch.stack([load(p) for p in values]).to(device))
        return clip.model.encode_text(clip.tokenizer([v or "" for v in values]).to(device))

    def preprocessing(self, code: str) -> dict[str, Any]:
        what = self.encoder.transform if code == "I" else self.encoder.tokenizer
        return {"open_clip": "create_model_and_transforms (eval transform)" if code == "I" else "get_tokenizer",
                "detail": " ".join(repr(what).split())[:400]}
