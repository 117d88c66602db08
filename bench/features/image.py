"""Image (I) region features from a timm CNN, and the reader for official precomputed region TSVs.

The paper uses 36 bottom-up-attention (Faster R-CNN, Visual Genome) regions of 2048 dims per image.
No detector weights are available offline, so the harness uses grid regions instead: a timm backbone
(``features_only``) runs on the whole image resized to a small square, and its feature map is
adaptive-average-pooled to ``grid x grid`` cells; each cell is one region with its normalised box
``(x1, y1, x2, y2, area)``. Weights come from a local file when given, otherwise from a seeded random
init (random conv features still carry colour and shape; each region can also carry its mean RGB).
When a catalog ships the official TSV, its regions are read instead.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import numpy as np


class Backbone:
    """A timm ``features_only`` CNN that maps uint8 RGB images to feature maps (one torch thread).

    ``device`` is where the CNN runs (``"cpu"`` or ``"cuda:N"``); the weights are always made on the
    CPU first, so a seeded random init is the same on every device.
    """

    def __init__(self, name: str, stage: int, weights: str | None, seed: int, device: str = "cpu") -> None:
        import timm
        import torch

        self.torch = torch
        self.device = torch.device(device)
        torch.manual_seed(seed)  # the random init is part of the config: same seed, same features
        kwargs: dict[str, Any] = {"features_only": True, "out_indices": (stage,)}
        if weights:
            # timm's own local-file path: pretrained_cfg_overlay(file=...) loads and adapts the checkpoint.
            self.model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}, **kwargs)
        else:
            self.model = timm.create_model(name, pretrained=False, **kwargs)
        self.model.eval().to(self.device)
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.dim = int(self.model.feature_info.channels()[-1])

    def feature_maps(self, images: np.ndarray, chunk: int | None = None) -> Any:
        """``[N, H, W, 3] uint8`` -> ``[N, C, h, w]`` float tensor on the CPU, ``chunk`` images per
        forward pass (default 64 on the CPU, 512 on a GPU)."""
        torch = self.torch
        gpu = self.device.type == "cuda"
        chunk = chunk or (512 if gpu else 64)
        # On a GPU: no TF32 and deterministic kernels, so the features stay close to the CPU's and
        # the same images give the same bytes on every run.
        flags = torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False,
                                           fp32_precision="ieee") if gpu else contextlib.nullcontext()
        outs = []
        with torch.inference_mode(), flags:
            for s in range(0, len(images), chunk):
                # uint8 crosses to the device (4x less than float); a no-op on the CPU
                x = torch.from_numpy(np.ascontiguousarray(images[s : s + chunk])).to(self.device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                x = (x - self.mean) / self.std
                outs.append(self.model(x)[-1].cpu())
        return torch.cat(outs) if outs else None


def load_image(path: str, size: int) -> np.ndarray:
    """Decode an image file to ``[size, size, 3] uint8`` RGB (resized, not cropped)."""
    from PIL import Image

    with Image.open(path) as im:
        # JPEG draft mode decodes at a reduced DCT scale: several times faster for large photos.
        im.draft("RGB", (size * 2, size * 2))
        im = im.convert("RGB")
        if im.width < 1 or im.height < 1:
            raise ValueError("empty image")
        im = im.resize((size, size), Image.Resampling.BILINEAR)
        return np.array(im, dtype=np.uint8)  # a writable copy (torch.from_numpy warns on read-only arrays)


def grid_boxes(grid: int) -> np.ndarray:
    """``[grid*grid, 5]`` normalised boxes of a regular grid, row-major."""
    edges = np.linspace(0.0, 1.0, grid + 1, dtype=np.float32)
    boxes = []
    for r in range(grid):
        for c in range(grid):
            x1, x2, y1, y2 = edges[c], edges[c + 1], edges[r], edges[r + 1]
            boxes.append((x1, y1, x2, y2, (x2 - x1) * (y2 - y1)))
    return np.asarray(boxes, dtype=np.float32)


def region_features(backbone: Backbone, images: np.ndarray, grid: int, color: bool) -> np.ndarray:
    """``[N, size, size, 3] uint8`` -> ``[N, grid*grid, dim (+3)]`` float32 region features."""
    import torch.nn.functional as F

    fmap = backbone.feature_maps(images)
    pooled = F.adaptive_avg_pool2d(fmap, grid)  # [N, C, g, g]
    feats = pooled.flatten(2).transpose(1, 2).numpy()  # row-major cells, matching grid_boxes
    if color:
        rgb = backbone.torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        mean_rgb = F.adaptive_avg_pool2d(rgb, grid).flatten(2).transpose(1, 2).numpy()
        feats = np.concatenate([feats, mean_rgb], axis=2)
    return feats.astype(np.float32, copy=False)


def global_features(backbone: Backbone, images: np.ndarray, color: bool) -> np.ndarray:
    """``[N, size, size, 3] uint8`` -> ``[N, dim (+3)]`` globally pooled features (video frames)."""
    return region_features(backbone, images, 1, color)[:, 0, :]


# ---------------------------------------------------------------------------------------------
# Official precomputed regions: TSV rows ``image_id, image_w, image_h, num_boxes, boxes, features[, title]``
# with base64 float32 boxes (N x 4, pixels) and features (N x 2048).

TSV_FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")


def index_region_tsv(path: str) -> dict[str, int]:
    """Map ``image_id`` -> byte offset of its line, in one pass (workers then seek to their rows)."""
    index: dict[str, int] = {}
    with open(path, "rb") as f:
        while True:
            off = f.tell()
            line = f.readline()
            if not line:
                break
            key = line.split(b"\t", 1)[0].decode("utf-8", "replace").strip()
            if key and key != "image_id":  # tolerate a header line
                index.setdefault(key, off)
    return index


#: A shard's index lives in the high bits of a packed location, its byte offset in the low 40 (1 TiB).
OFFSET_BITS = 40


def shard_location(packed: int) -> tuple[int, int]:
    """``(shard, byte offset)`` of a packed location (:mod:`bench.features.region_index`)."""
    return packed >> OFFSET_BITS, packed & ((1 << OFFSET_BITS) - 1)


def tsv_feature_dim(path: str) -> int:
    """Feature dimension of the first data row of a region TSV."""
    with open(path, "rb") as f:
        for line in f:
            parts = line.rstrip(b"\r\n").split(b"\t")
            if len(parts) >= 6 and parts[0] != b"image_id":
                n = int(parts[3])
                return len(base64.b64decode(parts[5])) // 4 // max(n, 1)
    raise ValueError(f"{path}: no data rows")


def read_tsv_regions(f: Any, offset: int, max_regions: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one TSV row at ``offset`` -> (features ``[n, D]``, boxes ``[n, 5]`` normalised)."""
    f.seek(offset)
    parts = f.readline().rstrip(b"\r\n").split(b"\t")
    w, h, n = float(parts[1]), float(parts[2]), int(parts[3])
    boxes = np.frombuffer(base64.b64decode(parts[4]), dtype=np.float32).reshape(n, 4)
    feats = np.frombuffer(base64.b64decode(parts[5]), dtype=np.float32).reshape(n, -1)
    n = min(n, max_regions)
    b = boxes[:n].astype(np.float32)
    norm = np.empty((n, 5), dtype=np.float32)
    norm[:, 0] = b[:, 0] / w
    norm[:, 1] = b[:, 1] / h
    norm[:, 2] = b[:, 2] / w
    norm[:, 3] = b[:, 3] / h
    norm[:, 4] = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / (w * h)
    return feats[:n].astype(np.float32), np.clip(norm, 0.0, 1.0)
