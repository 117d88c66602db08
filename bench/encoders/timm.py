"""``timm:NAME[@FILE]``: a timm image backbone on images (I) and video frames (V).

Built with ``timm.create_model(NAME, num_classes=0)`` (the pooled pre-logits features), with the
weights of FILE loaded by timm itself (``pretrained_cfg_overlay=dict(file=FILE)``); without FILE the
weights are timm's random initialisation, seeded by the run's seed (recorded as random). Inputs go
through timm's own data config and evaluation transform (``resolve_data_config`` /
``create_transform``). A video is the mean of its sampled frames' vectors, frames sampled as the
feature stage samples them (``features.video_fps``, ``max_frames``, ``video_min_frames``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from bench.console import UserError
from bench.encoders.base import FrozenEncoder, Weights, local_path


class _Backbone(nn.Module):
    def __init__(self, name: str, file: str | None):
        super().__init__()
        import timm
        from timm.data import create_transform, resolve_data_config

        kwargs: dict[str, Any] = {"pretrained": True, "pretrained_cfg_overlay": {"file": file}} if file else {}
        self.model = timm.create_model(name, num_classes=0, **kwargs)
        self.data_config = resolve_data_config({}, model=self.model)
        self.transform = create_transform(**self.data_config)


class TimmEncoder(FrozenEncoder):
    """A frozen timm backbone: pooled features of image files, and of video frames averaged."""

    family = "timm"

    @classmethod
    def resolve(cls, argument: str) -> Weights:
        import timm

        label = f"timm:{argument}"
        name, file = cls.split(argument)
        cls.check_known(argument, name, timm.list_models(), "model", "timm.list_models()")
        if file is None:
            return Weights("random")
        path = local_path(file)
        if path is None or not path.is_file():
            raise UserError(f"model {label!r}: no weights file at {file!r}; pass a local file: "
                            f"--model timm:{name}@/path/to/weights (.safetensors, .pth or .bin)")
        return Weights("file", str(path.resolve()))

    def build_encoder(self) -> nn.Module:
        name, _ = self.split(self.argument)
        return _Backbone(name, self.weights.location)

    def encode(self, code: str, values: Sequence[Any]) -> torch.Tensor:
        from PIL import Image

        bb = self.encoder
        device = next(bb.model.parameters()).device
        if code == "I":
            def load(p: str) -> torch.Tensor:
                with Image.open(p) as im:
                    return bb.transform(im.convert("RGB"))

            return bb.model(torch.stack([load(p) for p in values]).to(device))
        from bench.features.video import sample_frames

        size = max(bb.data_config["input_size"][1:])
        clips = [sample_frames(p, self.video["fps"], self.video["max_frames"], size, self.video["min_frames"])[0]
                 for p in values]
        frames = torch.stack([bb.transform(Image.fromarray(f)) for clip in clips for f in clip]).to(device)
        feats = bb.model(frames)
        counts = torch.tensor([len(c) for c in clips], device=device)
        owner = torch.repeat_interleave(torch.arange(len(clips), device=device), counts)
        sums = feats.new_zeros((len(clips), feats.shape[1])).index_add(0, owner, feats)
        return sums / counts.clamp(min=1).unsqueeze(1).to(feats.dtype)

    def preprocessing(self, code: str) -> dict[str, Any]:
        out: dict[str, Any] = {"data_config": {k: (list(v) if isinstance(v, tuple) else v)
                                               for k, v in self.encoder.data_config.items()}}
        if code == "V":
            out["frames"] = dict(self.video, pooling="mean over sampled frames")
        return out
