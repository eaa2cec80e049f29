"""Batched per-sample augmentations against torchvision, image by image, and their parameters'
distribution."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from sithlib.dgp import augment as A


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=16, size=32, seed=0, dtype=torch.float32):
    return torch.rand(n, 3, size, size, generator=gen(seed), dtype=dtype)


# ---------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize("kwargs", [
    dict(size=0), dict(size=32.0), dict(size=True), dict(crop_scale=(0.0, 1.0)),
    dict(crop_scale=(0.5, 0.2)), dict(crop_scale=(0.5, 1.5)), dict(crop_scale=(0.1,)),
    dict(crop_ratio=(-1.0, 1.0)), dict(crop_ratio=(1.0, math.inf)), dict(flip_p=1.5),
    dict(jitter_p=-0.1), dict(brightness=-0.1), dict(saturation=math.nan), dict(hue=0.6),
    dict(blur_sigma=(0.0, 1.0)), dict(blur_kernel=0.0), dict(blur_kernel=1.5),
    dict(solarize_p=2.0),
])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        A.AugmentConfig(**kwargs)


def test_recipes():
    assert A.recipe("simclr") == A.AugmentConfig()
    cifar = A.recipe("simclr_cifar")
    assert (cifar.brightness, cifar.contrast, cifar.saturation, cifar.hue) == pytest.approx(
        (0.4, 0.4, 0.4, 0.1)) and cifar.blur_p == 0
    b1, b2 = A.recipe("byol_1"), A.recipe("byol_2")
    assert (b1.blur_p, b1.solarize_p, b2.blur_p, b2.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert (b1.saturation, b1.hue) == (0.2, 0.1)
    simsiam = A.recipe("simsiam")
    assert simsiam.crop_scale == (0.2, 1.0) and simsiam.blur_p == 0.5
    assert (simsiam.brightness, simsiam.contrast, simsiam.saturation, simsiam.hue) == (
        pytest.approx((0.4, 0.4, 0.4, 0.1)))
    assert A.recipe("simsiam", size=16).size == 16
    assert A.AugmentConfig().kernel_size(224) == 23 and A.AugmentConfig().kernel_size(32) == 3
    with pytest.raises(ValueError):
        A.recipe("moco")


# ---------------------------------------------------------------------------------------------
# colour space


def test_hsv_conversions_match_colorsys():
    rgb = torch.rand(500, 3, generator=gen(1), dtype=torch.float64)
    rgb[:10] = rgb[:10, :1]  # grays
    rgb[10] = 0.0
    hsv = A.rgb_to_hsv(rgb.T.reshape(3, 500, 1)).reshape(3, 500).T
    ref = torch.tensor([colorsys.rgb_to_hsv(*c) for c in rgb.tolist()], dtype=torch.float64)
    torch.testing.assert_close(hsv, ref)
    back = A.hsv_to_rgb(ref[:, 0], ref[:, 1], ref[:, 2])
    torch.testing.assert_close(back, rgb)
    hues = torch.linspace(0, 1, 37, dtype=torch.float64)
    ref = torch.tensor([colorsys.hsv_to_rgb(h, 0.6, 0.35) for h in hues.tolist()])
    torch.testing.assert_close(A.hsv_to_rgb(hues, 0.6, 0.35), ref.double())


# ---------------------------------------------------------------------------------------------
# each operation against torchvision, one image at a time


@pytest.mark.parametrize("ours, ref, lo, hi", [
    (A.adjust_brightness, TF.adjust_brightness, 0.0, 2.0),
    (A.adjust_contrast, TF.adjust_contrast, 0.0, 2.0),
    (A.adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
    (A.adjust_hue, TF.adjust_hue, -0.5, 0.5),
])
def test_colour_ops_match_torchvision(ours, ref, lo, hi):
    x = images(12)
    f = lo + (hi - lo) * torch.rand(12, generator=gen(2))
    expected = torch.stack([ref(x[i], f[i].item()) for i in range(12)])
    torch.testing.assert_close(ours(x, f), expected, atol=2e-6, rtol=0)


def test_gray_blur_solarize_match_torchvision():
    x = images(12)
    torch.testing.assert_close(A.rgb_to_gray(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)
    sigma = 0.1 + 1.9 * torch.rand(12, generator=gen(3))
    for k in (3, 7):
        expected = torch.stack([TF.gaussian_blur(x[i], [k, k], [sigma[i].item()] * 2)
                                for i in range(12)])
        torch.testing.assert_close(A.gaussian_blur(x, sigma, k), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(A.solarize(x), TF.solarize(x, 0.5))
    # a kernel wider than the image still blurs (replicate padding) and keeps the mean range
    tiny = images(2, 4)
    out = A.gaussian_blur(tiny, torch.tensor([2.0, 2.0]), 9)
    assert out.shape == tiny.shape and out.min() >= tiny.min() and out.max() <= tiny.max()


def test_crop_flip_is_exact_slicing_flipping_and_resizing():
    x = images(6, 32, dtype=torch.float64)
    top = torch.tensor([0, 3, 16, 7, 0, 11])
    left = torch.tensor([0, 16, 2, 9, 13, 5])
    crop = torch.stack([top / 32, left / 32, torch.full((6,), 0.5), torch.full((6,), 0.5)], 1)
    flip = torch.tensor([False, True, False, True, True, False])
    out = A.crop_flip(x, crop.double(), flip, 16)
    for i in range(6):
        ref = x[i, :, top[i] : top[i] + 16, left[i] : left[i] + 16]
        ref = TF.horizontal_flip(ref) if flip[i] else ref
        torch.testing.assert_close(out[i], ref, atol=1e-12, rtol=0)
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64).repeat(6, 1)
    up = A.crop_flip(x, whole, torch.zeros(6, dtype=torch.bool), 48)
    torch.testing.assert_close(up, F.interpolate(x, size=48, mode="bilinear",
                                                 align_corners=False))


def _reference_view(img, p, i, k):
    """torchvision's functional ops applied to one image with the parameters of row i."""
    for op in p["jitter_order"][i].tolist():
        if p["jitter_applied"][i]:
            fn = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation,
                  TF.adjust_hue)[op]
            img = fn(img, p["jitter"][i, op].item())
    if p["grayscale"][i]:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    if p["blur_sigma"][i] > 0:
        img = TF.gaussian_blur(img, [k, k], [p["blur_sigma"][i].item()] * 2)
    if p["solarize"][i]:
        img = TF.solarize(img, 0.5)
    return img


def test_whole_pipeline_matches_a_torchvision_loop():
    n = 64
    x = images(n, 32)
    cfg = A.AugmentConfig(size=16, jitter_p=0.7, grayscale_p=0.3, blur_p=0.5, solarize_p=0.3)
    p = A.sample_params(n, cfg, height=32, width=32, generator=gen(4))
    # whole-pixel boxes of the output size, so that torchvision's crop is a plain slice
    top = torch.randint(0, 17, (n,), generator=gen(5))
    left = torch.randint(0, 17, (n,), generator=gen(6))
    p["crop"] = torch.stack([top / 32, left / 32, torch.full((n,), 0.5),
                             torch.full((n,), 0.5)], 1)
    out = A.apply_params(x, p, cfg)
    for i in range(n):
        img = TF.crop(x[i], top[i].item(), left[i].item(), 16, 16)
        img = TF.horizontal_flip(img) if p["flip"][i] else img
        torch.testing.assert_close(out[i], _reference_view(img, p, i, cfg.kernel_size(16)),
                                   atol=2e-5, rtol=0)
    # every kind of operation was exercised
    for key in ("flip", "jitter_applied", "grayscale", "solarize"):
        assert 0 < p[key].sum() < n
    assert 0 < (p["blur_sigma"] > 0).sum() < n


# ---------------------------------------------------------------------------------------------
# parameters


def test_params_are_deterministic_and_well_formed():
    cfg = A.AugmentConfig()
    p = A.sample_params(3000, cfg, height=32, width=32, generator=gen(7))
    q = A.sample_params(3000, cfg, height=32, width=32, generator=gen(7))
    assert p.keys() == q.keys() and all(torch.equal(p[k], q[k]) for k in p)
    top, left, h, w = p["crop"].unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 1 + 1e-6).all()
    assert (left + w <= 1 + 1e-6).all()
    area, ratio = h * w, w / h
    assert (area >= 0.08 - 1e-6).all() and (area <= 1 + 1e-6).all()
    assert (ratio >= 3 / 4 - 1e-5).all() and (ratio <= 4 / 3 + 1e-5).all()
    n = 3000
    for key, prob in (("flip", 0.5), ("jitter_applied", 0.8), ("grayscale", 0.2)):
        assert abs(p[key].float().mean() - prob) < 4 * math.sqrt(prob * (1 - prob) / n)
    assert abs((p["blur_sigma"] > 0).float().mean() - 0.5) < 4 * math.sqrt(0.25 / n)
    assert not p["solarize"].any()
    on = p["jitter_applied"]
    j = p["jitter"]
    assert (j[on, :3] >= 0.2).all() and (j[on, :3] <= 1.8).all()
    assert (j[on, 3].abs() <= 0.2).all()
    assert torch.equal(j[~on], torch.tensor([[1.0, 1.0, 1.0, 0.0]]).expand(int((~on).sum()), 4))
    assert torch.equal(p["jitter_order"].sort(1).values, torch.arange(4).expand(n, 4))
    s = p["blur_sigma"][p["blur_sigma"] > 0]
    assert (s >= 0.1).all() and (s <= 2.0).all()
    # brightness factors are uniform on [0.2, 1.8]
    assert stats.kstest(j[on, 0].numpy(), stats.uniform(0.2, 1.6).cdf).pvalue > 1e-3


def test_crop_distribution_matches_torchvision():
    n, side = 2000, 256
    p = A.sample_params(n, A.AugmentConfig(), height=side, width=side, generator=gen(8))
    top, left, h, w = p["crop"].double().unbind(1)
    rrc = RandomResizedCrop(side)
    boxes = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        img = torch.zeros(3, side, side)
        for _ in range(n):
            boxes.append(rrc.get_params(img, rrc.scale, rrc.ratio))
    ref = torch.tensor(boxes, dtype=torch.float64) / side  # (i, j, h, w)
    for ours, theirs in ((h * w, ref[:, 2] * ref[:, 3]), (w / h, ref[:, 3] / ref[:, 2]),
                         (left + w / 2, ref[:, 1] + ref[:, 3] / 2)):
        assert stats.ks_2samp(ours.numpy(), theirs.numpy()).pvalue > 1e-3


def test_crop_fallback_is_the_central_crop_of_clamped_ratio():
    cfg = A.AugmentConfig(crop_scale=(0.5, 1.0), crop_ratio=(4.0, 5.0))  # never fits a square
    p = A.sample_params(5, cfg, height=40, width=40, generator=gen())
    torch.testing.assert_close(p["crop"], torch.tensor([[0.375, 0.0, 0.25, 1.0]]).expand(5, 4))
    rrc = RandomResizedCrop(40, scale=cfg.crop_scale, ratio=cfg.crop_ratio)
    assert rrc.get_params(torch.zeros(3, 40, 40), rrc.scale, rrc.ratio) == (15, 0, 10, 40)


# ---------------------------------------------------------------------------------------------
# augment


def test_augment_views_shapes_range_and_determinism():
    x = images(40, 32, dtype=torch.float64)
    for cfg in ("simclr", "byol_2", A.AugmentConfig(size=24), None):
        v, p = A.augment(x, cfg, generator=gen(9))
        size = 24 if isinstance(cfg, A.AugmentConfig) else 32
        assert v.shape == (40, 3, size, size) and v.dtype == torch.float64
        assert v.min() >= 0 and v.max() <= 1
        w, q = A.augment(x, cfg, generator=gen(9))
        assert torch.equal(v, w) and all(torch.equal(p[k], q[k]) for k in p)
        torch.testing.assert_close(A.apply_params(x, p, A.recipe(cfg) if isinstance(cfg, str)
                                                  else cfg), v)


def test_augment_draws_each_sample_independently():
    one = images(1, 32).expand(20, 3, 32, 32)
    v, p = A.augment(one, "simclr", generator=gen(10))
    assert len({tuple(np.round(c, 6)) for c in p["crop"].tolist()}) == 20
    flat = v.reshape(20, -1)
    assert (torch.cdist(flat, flat) + torch.eye(20) > 1e-3).all()


def test_batch_split_into_cpu_chunks_gives_the_same_views():
    x = images(600, 32)  # 256 images per CPU chunk at 32 px
    cfg = A.recipe("byol_2", solarize_p=0.5)
    p = A.sample_params(600, cfg, height=32, width=32, generator=gen(11))
    whole = A.apply_params(x, p, cfg)
    for lo, hi in ((0, 100), (100, 350), (350, 600)):
        part = A.apply_params(x[lo:hi], {k: v[lo:hi] for k, v in p.items()}, cfg)
        torch.testing.assert_close(whole[lo:hi], part, atol=1e-6, rtol=0)


def test_identity_config_returns_the_input():
    cfg = A.AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0,
                          jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    x = images(8)
    v, _ = A.augment(x, cfg, generator=gen())
    torch.testing.assert_close(v, x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad, error", [
    (lambda: A.augment(np.zeros((2, 3, 8, 8))), TypeError),
    (lambda: A.augment(torch.zeros(2, 1, 8, 8)), ValueError),
    (lambda: A.augment(torch.zeros(2, 3, 8)), ValueError),
    (lambda: A.augment(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)), TypeError),
    (lambda: A.augment(torch.zeros(2, 3, 8, 6)), ValueError),
    (lambda: A.augment(torch.zeros(2, 3, 8, 8), "moco"), ValueError),
    (lambda: A.sample_params(2, "simclr", height=8, width=8), TypeError),
    (lambda: A.sample_params(-1, height=8, width=8), ValueError),
    (lambda: A.sample_params(2, height=0, width=8), ValueError),
    (lambda: A.apply_params(torch.zeros(3, 3, 8, 8),
                            A.sample_params(2, height=8, width=8)), ValueError),
])
def test_bad_inputs(bad, error):
    with pytest.raises(error):
        bad()


def test_non_square_input_with_size():
    x = torch.rand(4, 3, 20, 30, generator=gen())
    v, p = A.augment(x, A.AugmentConfig(size=16), generator=gen(1))
    assert v.shape == (4, 3, 16, 16)
    ratio = (p["crop"][:, 3] * 30) / (p["crop"][:, 2] * 20)  # in pixels
    assert (ratio >= 3 / 4 - 1e-5).all() and (ratio <= 4 / 3 + 1e-5).all()
