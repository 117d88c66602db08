"""Image regions: grid boxes, seeded random backbone, local weights, colour information."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.features.image import Backbone, global_features, grid_boxes, load_image, region_features
from test_features_media import COLORS, make_jpeg


def test_grid_boxes():
    b = grid_boxes(3)
    assert b.shape == (9, 5)
    np.testing.assert_allclose(b[:, 4].sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(b[0], [0, 0, 1 / 3, 1 / 3, 1 / 9], rtol=1e-6)
    np.testing.assert_allclose(b[5], [2 / 3, 1 / 3, 1, 2 / 3, 1 / 9], rtol=1e-6)  # row 1, column 2 (row-major)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    out = {}
    for name, rgb in COLORS.items():
        for shape in ("circle", "square"):
            out[(name, shape)] = load_image(str(make_jpeg(d / f"{name}_{shape}.jpg", rgb, shape, size=(120, 90))), 64)
    return out


def test_load_image_resizes_whole_image(images):
    im = images[("red", "circle")]
    assert im.shape == (64, 64, 3) and im.dtype == np.uint8
    assert im[32, 32, 0] > 180 and im[32, 32, 1] < 80  # the red shape is in the middle
    assert im[1, 1].min() > 230  # the light background survives at the corner


def test_seeded_random_backbone_is_deterministic_and_informative(images):
    a, b = Backbone("resnet18", 3, None, seed=0), Backbone("resnet18", 3, None, seed=0)
    c = Backbone("resnet18", 3, None, seed=1)
    x = np.stack(list(images.values()))
    fa, fb, fc = (region_features(m, x, 4, False) for m in (a, b, c))
    assert fa.shape == (len(x), 16, 256)
    np.testing.assert_array_equal(fa, fb)
    assert not np.allclose(fa, fc)
    # Random conv features still separate colours and shapes: every image's nearest other image
    # (by pooled feature) differs from it, and same-colour pairs are closer than the average pair.
    g = fa.mean(1)
    d = np.linalg.norm(g[:, None] - g[None], axis=-1)
    keys = list(images)
    same_colour = np.array([[k1[0] == k2[0] and k1 != k2 for k2 in keys] for k1 in keys])
    assert d[same_colour].mean() < d[~same_colour & ~np.eye(len(keys), dtype=bool)].mean()
    assert (d + np.eye(len(keys)) * 1e9).min() > 0


def test_colour_channels_and_global_pool(images):
    bb = Backbone("resnet18", 3, None, seed=0)
    x = images[("blue", "square")][None]
    f = region_features(bb, x, 2, True)
    assert f.shape == (1, 4, 259)
    np.testing.assert_allclose(f[0, :, 256:].mean(0), x[0].reshape(-1, 3).mean(0) / 255.0, atol=1e-4)
    gl = global_features(bb, x, False)
    np.testing.assert_allclose(gl[0], region_features(bb, x, 4, False)[0].mean(0), rtol=1e-4, atol=1e-5)


def test_local_weights_file(tmp_path, images):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(123)
    full = timm.create_model("resnet18", pretrained=False)
    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.01)
    path = tmp_path / "r18.safetensors"
    save_file(full.state_dict(), str(path))
    bb = Backbone("resnet18", 3, str(path), seed=0)
    sd = bb.model.state_dict()
    np.testing.assert_array_equal(sd["conv1.weight"].numpy(), full.state_dict()["conv1.weight"].numpy())
    rnd = Backbone("resnet18", 3, None, seed=0)
    x = images[("green", "circle")][None]
    assert not np.allclose(region_features(bb, x, 4, False), region_features(rnd, x, 4, False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_backbone_on_the_gpu_matches_the_cpu(images):
    cpu, gpu = Backbone("resnet18", 3, None, seed=0), Backbone("resnet18", 3, None, seed=0, device="cuda:0")
    x = np.stack(list(images.values()) * 40)  # 320 images: several CPU chunks, one GPU chunk
    fc, fg = region_features(cpu, x, 4, True), region_features(gpu, x, 4, True)
    assert fg.dtype == np.float32 and fg.shape == fc.shape
    # fp32 without TF32: as close as the float16 the store keeps, and the same bytes on every run
    np.testing.assert_allclose(fg, fc, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(fg, region_features(gpu, x, 4, True))
    assert next(gpu.model.parameters()).device.type == "cuda"
