"""The image DGP: layout, determinism, what each latent does, SDFs, anti-aliasing, positive
pairs in latent space and the latents of augmented views."""

from __future__ import annotations

import colorsys
import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.path import Path as MplPath
from scipy import stats
from torchvision.transforms.v2 import functional as TF

from sithlib.dgp import images as I
from sithlib.dgp.augment import AugmentConfig, apply_params

matplotlib.use("Agg")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def centred(shape: int, **values) -> torch.Tensor:
    """One latent row: centred, mid scale, no rotation (rotation latent 0.5), given values."""
    row = dict(x=0.5, y=0.5, scale=0.5, rotation=0.5, hue=0.0, bg_hue=0.5, shape=float(shape))
    row.update(values)
    return torch.tensor([[row[k] for k in I.LATENTS]], dtype=torch.float64)


def coverage(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """alpha recovered from the image by projecting on object - background, with the colours
    from colorsys (independent of the renderer's HSV code)."""
    alphas = []
    for zi, xi in zip(z, x, strict=True):
        obj = torch.tensor(colorsys.hsv_to_rgb(I.HUE_SPAN * zi[4].item() % 1, *I.OBJECT_SV))
        bg = torch.tensor(colorsys.hsv_to_rgb(I.HUE_SPAN * zi[5].item() % 1, *I.BACKGROUND_SV))
        diff = (obj - bg).to(xi)
        alphas.append(torch.einsum("chw,c->hw", xi - bg.to(xi)[:, None, None], diff)
                      / diff.dot(diff))
    return torch.stack(alphas)


def centre_of_mass(alpha: torch.Tensor) -> torch.Tensor:
    """(column, row) centre of mass of (n, H, W) weights, in pixels."""
    n, h, w = alpha.shape
    rows = torch.arange(h, dtype=alpha.dtype)[:, None]
    cols = torch.arange(w, dtype=alpha.dtype)[None, :]
    mass = alpha.sum((1, 2))
    return torch.stack([(alpha * cols).sum((1, 2)) / mass, (alpha * rows).sum((1, 2)) / mass], 1)


# ---------------------------------------------------------------------------------------------
# layout, shapes of outputs, determinism


@pytest.mark.parametrize("size", [32, 64, 17])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_render_shape_range_dtype(size, dtype):
    z = I.sample_latents(50, generator=gen(), dtype=dtype)
    x = I.render(z, size)
    assert x.shape == (50, 3, size, size) and x.dtype == dtype and x.device == z.device
    assert x.min() >= 0 and x.max() <= 1
    # every image shows both colours: pixels fully object (at 32 px and up; a thin moon
    # at 17 px may cover no pixel fully) and pixels fully background
    alpha = coverage(z.double(), x.double())
    assert (alpha.amax((1, 2)) > (0.99 if size >= 32 else 0.5)).all()
    assert (alpha.amin((1, 2)) < 0.01).all()


def test_sample_latents_layout_and_determinism():
    z = I.sample_latents(3000, generator=gen(3))
    assert z.shape == (3000, 7) and z.dtype == torch.float32
    assert (z[:, :6] >= 0).all() and (z[:, :6] <= 1).all()
    counts = torch.bincount(z[:, 6].long(), minlength=6)
    assert counts.sum() == 3000 and (z[:, 6] == z[:, 6].round()).all()
    chi2 = stats.chisquare(counts.numpy())
    assert chi2.pvalue > 1e-3
    for j in range(6):  # each continuous column is U[0, 1]
        assert stats.kstest(z[:, j].numpy(), "uniform").pvalue > 1e-3
    assert torch.equal(z, I.sample_latents(3000, generator=gen(3)))
    assert not torch.equal(z, I.sample_latents(3000, generator=gen(4)))
    sub = I.sample_latents(500, shapes=("moon", "heart"), generator=gen())
    assert set(sub[:, 6].long().tolist()) == {I.SHAPES.index("moon"), I.SHAPES.index("heart")}
    assert I.sample_latents(0).shape == (0, 7) and I.render(I.sample_latents(0)).shape[0] == 0


def test_same_latents_same_image_and_batch_independence():
    z = I.sample_latents(40, generator=gen(1))
    x = I.render(z, 32)
    assert torch.equal(x, I.render(z.clone(), 32))
    one_by_one = torch.cat([I.render(z[i : i + 1], 32) for i in range(40)])
    torch.testing.assert_close(one_by_one, x, atol=1e-6, rtol=0)
    perm = torch.randperm(40, generator=gen(2))
    torch.testing.assert_close(I.render(z[perm], 32), x[perm], atol=1e-6, rtol=0)
    # batches larger than the CPU chunk (256 images at 64 px) are split and put back in order
    z = I.sample_latents(300, generator=gen(3))
    parts = torch.cat([I.render(z[:100], 64), I.render(z[100:], 64)])
    torch.testing.assert_close(I.render(z, 64), parts, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# each latent measurably changes the image, in the documented way


@pytest.mark.parametrize("shape", range(6))
def test_x_and_y_translate_the_centre_of_mass(shape):
    size = 64
    z = torch.cat([centred(shape, x=0.3, y=0.4, rotation=0.7),
                   centred(shape, x=0.7, y=0.4, rotation=0.7),
                   centred(shape, x=0.3, y=0.8, rotation=0.7)])
    com = centre_of_mass(coverage(z, I.render(z, size)))
    px = I.POSITION * 2 * (size / 2)  # pixels per unit of the x, y latents
    # translation equivariance: the object moves rigidly by the latent step
    # (to 0.1 px of a 10 px move: edges aligned with the pixel grid alias a little)
    torch.testing.assert_close(com[1] - com[0], torch.tensor([0.4 * px, 0.0]).double(),
                               atol=0.1, rtol=0)
    torch.testing.assert_close(com[2] - com[0], torch.tensor([0.0, -0.4 * px]).double(),
                               atol=0.1, rtol=0)  # y up is rows up


@pytest.mark.parametrize("shape", range(6))
def test_scale_sets_the_area(shape):
    z = torch.cat([centred(shape, scale=0.0), centred(shape, scale=1.0)])
    size = 128  # fine enough that the anti-aliased area is within 1% of the true area
    area = coverage(z, I.render(z, size)).sum((1, 2))
    ratio = (I.RADIUS[1] / I.RADIUS[0]) ** 2
    assert abs(area[1] / area[0] / ratio - 1) < 0.02
    # and the area matches the shape's own area (fine-grid count of sdf < 0)
    grid = torch.linspace(-1, 1, 801, dtype=torch.float64)
    q = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1)
    unit_area = (I.shape_sdf(I.SHAPES[shape], q) < 0).double().mean() * 4
    expected = unit_area * (I.RADIUS[1] * size / 2) ** 2
    assert abs(area[1] / expected - 1) < 0.01


@pytest.mark.parametrize("shape", range(6))
def test_rotation_rotates_the_object(shape):
    size = 64
    x0 = I.render(centred(shape), size)[0]
    for rot in (0.15, 0.4, 0.9):
        theta = I.ROTATION * (2 * rot - 1)
        rendered = I.render(centred(shape, rotation=rot), size)[0]
        fill = x0[:, 0, 0].tolist()
        rotate = lambda deg, fill=fill: TF.rotate(  # noqa: E731
            x0, deg, interpolation=TF.InterpolationMode.BILINEAR, fill=fill)
        good = (rotate(math.degrees(theta)) - rendered).abs().mean()
        mirrored = (rotate(-math.degrees(theta)) - rendered).abs().mean()
        assert good < 0.01 and good < mirrored / 3


@pytest.mark.parametrize("shape", range(6))
def test_rotation_is_injective_over_its_range(shape):
    rots = torch.linspace(0, 1, 9, dtype=torch.float64)
    z = torch.cat([centred(shape, rotation=r.item()) for r in rots])
    x = I.render(z, 32)
    d = (x[:, None] - x[None]).abs().mean((2, 3, 4))
    off = d[~torch.eye(9, dtype=torch.bool)]
    assert off.min() > 5e-3  # rotation by 22.5 degrees or more always shows


def test_hues_set_the_colours():
    hues = torch.tensor([0.0, 0.2, 0.45, 0.7, 1.0], dtype=torch.float64)
    z = torch.cat([centred(1, hue=h.item(), bg_hue=(1 - h).item()) for h in hues])
    x = I.render(z, 32)
    for zi, xi in zip(z, x, strict=True):
        inside = xi[:, 16, 16].tolist()  # the heart covers the centre
        corner = xi[:, 0, 0].tolist()
        h, s, v = colorsys.rgb_to_hsv(*inside)
        assert math.isclose(h, I.HUE_SPAN * zi[4].item() % 1, abs_tol=1e-6)
        assert math.isclose(s, 1) and math.isclose(v, 1)
        h, s, v = colorsys.rgb_to_hsv(*corner)
        assert math.isclose(h, I.HUE_SPAN * zi[5].item() % 1, abs_tol=1e-6)
        assert math.isclose(s, I.BACKGROUND_SV[0]) and math.isclose(v, I.BACKGROUND_SV[1])
    # hue 0 and hue 1 are different colours (the span is 0.8 of the circle)
    assert (x[0] - x[-1]).abs().max() > 0.5


def test_every_latent_changes_every_image():
    z = I.sample_latents(60, generator=gen(5), dtype=torch.float64)
    x = I.render(z, 32)
    for j in range(6):
        z2 = z.clone()
        z2[:, j] = torch.where(z[:, j] < 0.5, z[:, j] + 0.1, z[:, j] - 0.1)
        change = (I.render(z2, 32) - x).abs().mean((1, 2, 3))
        assert change.min() > 1e-3, I.LATENTS[j]
    z2 = z.clone()
    z2[:, 6] = (z[:, 6] + 1) % 6
    assert (I.render(z2, 32) - x).abs().mean((1, 2, 3)).min() > 1e-3


# ---------------------------------------------------------------------------------------------
# SDFs against geometric references


def _boundary(shape: str, m: int = 1500) -> np.ndarray:
    """Dense samples of each shape's boundary, built from its geometric description."""
    t = np.linspace(0, 1, m)[:, None]

    def segments(verts):
        v = np.asarray(verts + (verts[0],))
        return np.concatenate([a + t * (b - a) for a, b in zip(v[:-1], v[1:], strict=True)])

    def arc(c, r, a0, a1):
        a = a0 + (a1 - a0) * t[:, 0]
        return np.stack([c[0] + r * np.cos(a), c[1] + r * np.sin(a)], 1)

    if shape in ("triangle", "arrow", "tee"):
        return segments({"triangle": I._TRIANGLE, "arrow": I._ARROW, "tee": I._TEE}[shape])
    if shape == "pacman":
        mouth = I._PACMAN_MOUTH
        ends = [np.array([np.sin(s * mouth), -np.cos(s * mouth)]) for s in (-1, 1)]
        rim = arc((0, 0), 1, -math.pi / 2 + mouth, 3 * math.pi / 2 - mouth)
        return np.concatenate([rim, t * ends[0], t * ends[1]])
    if shape == "moon":
        c, r = I._MOON
        y = (1 - r**2 + c**2) / (2 * c)  # height where the two circles meet
        a_out = math.atan2(y, math.sqrt(1 - y**2))
        a_in = math.atan2(y - c, math.sqrt(1 - y**2))
        return np.concatenate([arc((0, 0), 1, math.pi - a_out, 2 * math.pi + a_out),
                               arc((0, c), r, math.pi - a_in, 2 * math.pi + a_in)])
    # heart: in its own frame, segments from the tip (0, 0) to (+-0.5, 0.5) and two arcs of
    # radius sqrt(2)/4 around (+-0.25, 0.75) from there to (0, 1)
    rad = math.sqrt(2) / 4
    right = np.concatenate([t * np.array([0.5, 0.5]),
                            arc((0.25, 0.75), rad, -math.pi / 4, 3 * math.pi / 4)])
    heart = np.concatenate([right, right * np.array([-1, 1])])
    return (heart - np.array([0, I._HEART_SHIFT])) / I._HEART_SCALE


def _inside(shape: str, q: np.ndarray) -> np.ndarray:
    x, y = q[:, 0], q[:, 1]
    if shape in ("triangle", "arrow", "tee"):
        verts = {"triangle": I._TRIANGLE, "arrow": I._ARROW, "tee": I._TEE}[shape]
        return MplPath(np.asarray(verts)).contains_points(q)
    if shape == "pacman":
        angle_from_down = np.abs(np.arctan2(x, -y))
        return (x**2 + y**2 < 1) & (angle_from_down > I._PACMAN_MOUTH)
    if shape == "moon":
        c, r = I._MOON
        return (x**2 + y**2 < 1) & (x**2 + (y - c) ** 2 > r**2)
    px, py = np.abs(x * I._HEART_SCALE), y * I._HEART_SCALE + I._HEART_SHIFT
    square = (px < py) & (px + py <= 1)
    lobe = (px + py > 1) & ((px - 0.25) ** 2 + (py - 0.75) ** 2 < 1 / 8)
    return square | lobe


@pytest.mark.parametrize("shape", I.SHAPES)
def test_sdf_sign_and_distance(shape):
    rng = np.random.default_rng(0)
    q = rng.uniform(-1.3, 1.3, size=(2000, 2))
    d = I.shape_sdf(shape, torch.from_numpy(q)).numpy()
    boundary = _boundary(shape)
    dist = np.sqrt(((q[:, None, :] - boundary[None]) ** 2).sum(-1)).min(1)
    clear = dist > 5e-3
    assert np.array_equal(d[clear] < 0, _inside(shape, q)[clear])
    step = 2.5e-3  # boundary sampling resolution
    if shape == "moon":  # exact inside; outside a lower bound near the tips
        assert np.allclose(-d[d < 0], dist[d < 0], atol=step)
        assert (d[d > 0] <= dist[d > 0] + step).all()
    else:
        assert np.allclose(np.abs(d), dist, atol=step)


@pytest.mark.parametrize("shape", I.SHAPES)
def test_shapes_lie_in_the_unit_disc_and_are_mirror_symmetric(shape):
    grid = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64)
    q = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1)
    d = I.shape_sdf(shape, q)
    assert (d[q.norm(dim=-1) > 1.0] > 0).all()
    assert (d >= q.norm(dim=-1) - 1 - 1e-12).all()  # what render's pixel culling relies on
    torch.testing.assert_close(d, I.shape_sdf(shape, q * torch.tensor([-1.0, 1.0]).double()))


def test_antialiasing_approximates_supersampling():
    z = I.sample_latents(64, generator=gen(7), dtype=torch.float64)
    lo = I.render(z, 32)
    box = F.avg_pool2d(I.render(z, 128), 4)  # 16 samples per pixel
    assert (lo - box).abs().mean() < 3e-3
    aliased = I.render(z, 32, edge=1e-6)  # (almost) a hard threshold
    assert (aliased - box).abs().mean() > 2 * (lo - box).abs().mean()
    alpha = coverage(z, lo)
    frac = ((alpha > 0.02) & (alpha < 0.98)).double().mean()
    assert frac > 0.01  # the edges are soft


def test_render_is_differentiable_in_the_continuous_latents():
    z = I.sample_latents(6, generator=gen(1), dtype=torch.float64)
    z[:, 6] = torch.arange(6.0)
    c = z[:, :6].clone().requires_grad_(True)
    w = torch.randn(3, 3, 12, 12, generator=gen(2), dtype=torch.float64)

    def projected(c):  # a few random projections keep the Jacobian small
        x = I.render(torch.cat([c, z[:, 6:]], 1), 12, edge=2.0)
        return torch.einsum("nchw,kchw->nk", x, w)

    assert torch.autograd.gradcheck(projected, (c,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("bad, error", [
    (lambda: I.render(np.zeros((2, 7))), TypeError),
    (lambda: I.render(torch.zeros(2, 6)), ValueError),
    (lambda: I.render(torch.zeros(2, 7, dtype=torch.int64)), TypeError),
    (lambda: I.render(centred(6).float()), ValueError),
    (lambda: I.render(centred(0.5).float()), ValueError),
    (lambda: I.render(centred(0, x=math.nan).float()), ValueError),
    (lambda: I.render(centred(0, scale=-1.0).float()), ValueError),
    (lambda: I.render(centred(0).float(), 3), ValueError),
    (lambda: I.render(centred(0).float(), 32.0), ValueError),
    (lambda: I.render(centred(0).float(), True), ValueError),
    (lambda: I.render(centred(0).float(), edge=0.0), ValueError),
    (lambda: I.sample_latents(-1), ValueError),
    (lambda: I.sample_latents(3, shapes=("square",)), ValueError),
    (lambda: I.sample_latents(3, shapes=()), ValueError),
    (lambda: I.shape_sdf("circle", torch.zeros(3, 2)), ValueError),
    (lambda: I.shape_sdf("heart", torch.zeros(3, 3)), ValueError),
])
def test_bad_inputs(bad, error):
    with pytest.raises(error):
        bad()


def test_out_of_range_latents_still_render():
    z = centred(2, x=1.4, scale=1.8, hue=1.3).float()
    x = I.render(z, 32)
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


# ---------------------------------------------------------------------------------------------
# latent-space positive pairs


def test_positive_keeps_content_and_changes_style():
    z = I.sample_latents(500, generator=gen(), dtype=torch.float64)
    for cond in I.CONDITIONALS:
        zp = I.positive_latents(z, ("x", "hue"), conditional=cond, generator=gen(1))
        keep = [1, 2, 3, 5, 6]
        assert torch.equal(zp[:, keep], z[:, keep])
        assert (zp[:, [0, 4]] != z[:, [0, 4]]).all()
        assert (zp[:, :6] >= 0).all() and (zp[:, :6] <= 1).all()
        assert torch.equal(zp, I.positive_latents(z, ("x", "hue"), conditional=cond,
                                                  generator=gen(1)))


def test_normal_and_laplace_steps_have_the_stated_scale():
    n = 4000
    z = centred(0).repeat(n, 1)  # at 0.5 the reflection never triggers for small steps
    for cond, sd in (("normal", 0.03), ("laplace", 0.03 * math.sqrt(2))):
        step = (I.positive_latents(z, "x", conditional=cond, scale=0.03, generator=gen(2))
                - z)[:, 0]
        se = sd / math.sqrt(2 * (n - 1))
        assert abs(step.std().item() - sd) < 4 * se * (3 if cond == "laplace" else 1)
        ref = stats.norm(scale=0.03) if cond == "normal" else stats.laplace(scale=0.03)
        assert stats.kstest(step.numpy(), ref.cdf).pvalue > 1e-3


def test_laplace_step_stays_finite_when_rand_returns_zero(monkeypatch):
    """torch.rand returns exactly 0 once in 2^24 float32 draws; its Laplace step is log(0)."""
    z = centred(0).repeat(8, 1)
    rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros_like(rand(*a, **k)))
    zp = I.positive_latents(z, "x", conditional="laplace", scale=0.03, generator=gen(2))
    assert torch.isfinite(zp).all() and (zp[:, 0] >= 0).all() and (zp[:, 0] <= 1).all()


def test_vmf_step_is_von_mises_in_turns():
    n, kappa = 4000, 50.0
    z = centred(0).repeat(n, 1)
    step = (I.positive_latents(z, "rotation", conditional="vmf", kappa=kappa, generator=gen(3))
            - z)[:, 3]
    angles = 2 * math.pi * step.numpy()
    assert stats.kstest(angles, stats.vonmises(kappa).cdf).pvalue > 1e-3


def test_reflection_keeps_the_uniform_marginal():
    z = I.sample_latents(4000, generator=gen(4), dtype=torch.float64)
    zp = I.positive_latents(z, conditional="normal", scale=0.3, generator=gen(5))
    for j in range(6):
        assert stats.kstest(zp[:, j].numpy(), "uniform").pvalue > 1e-3
    assert torch.equal(I._reflect(torch.tensor([-0.25, 0.0, 0.3, 1.0, 1.25, 2.5, -1.75])),
                       torch.tensor([0.25, 0.0, 0.3, 1.0, 0.75, 0.5, 0.25]))


def test_change_prob_and_shape_changes():
    n, p = 4000, 0.3
    z = I.sample_latents(n, generator=gen(6), dtype=torch.float64)
    zp = I.positive_latents(z, I.LATENTS, change_prob=p, generator=gen(7))
    changed = (zp[:, :6] != z[:, :6]).double().mean(0)
    se = math.sqrt(p * (1 - p) / n)
    assert (changed - p).abs().max() < 4 * se
    # a changed shape is a fresh uniform draw, so it differs with probability p * 5 / 6
    assert abs((zp[:, 6] != z[:, 6]).double().mean() - p * 5 / 6) < 4 * se
    zs = I.positive_latents(z, "shape", shapes=("tee",), generator=gen(8))
    assert (zs[:, 6] == I.SHAPES.index("tee")).all()
    assert torch.equal(I.positive_latents(z, change_prob=0.0, generator=gen(9)), z)


@pytest.mark.parametrize("kwargs", [dict(change=("depth",)), dict(conditional="cauchy"),
                                    dict(scale=0.0), dict(scale=math.inf), dict(kappa=-1.0),
                                    dict(change_prob=1.5), dict(shapes=("square",))])
def test_positive_bad_inputs(kwargs):
    z = I.sample_latents(4, generator=gen())
    with pytest.raises(ValueError):
        I.positive_latents(z, **kwargs)


def test_sample_pairs_renders_both_views():
    pairs = I.sample_pairs(20, 32, change=("x", "y"), generator=gen(10))
    assert torch.equal(pairs.x1, I.render(pairs.z1, 32))
    assert torch.equal(pairs.x2, I.render(pairs.z2, 32))
    assert torch.equal(pairs.z1[:, 2:], pairs.z2[:, 2:])
    again = I.sample_pairs(20, 32, change=("x", "y"), generator=gen(10))
    assert all(torch.equal(a, b) for a, b in zip(pairs, again, strict=True))


# ---------------------------------------------------------------------------------------------
# latents of image-space views


def _square_crop_params(n, generator):
    """Square crops, flips and pure hue shifts: the views stay in the renderer's family."""
    side = 0.45 + 0.55 * torch.rand(n, generator=generator, dtype=torch.float64)
    top = (1 - side) * torch.rand(n, generator=generator, dtype=torch.float64)
    left = (1 - side) * torch.rand(n, generator=generator, dtype=torch.float64)
    shift = 0.3 * torch.rand(n, generator=generator, dtype=torch.float64) - 0.15
    one = torch.ones(n, dtype=torch.float64)
    return {
        "crop": torch.stack([top, left, side, side], 1),
        "flip": torch.rand(n, generator=generator) < 0.5,
        "jitter": torch.stack([one, one, one, shift], 1),
        "jitter_order": torch.arange(4).repeat(n, 1),
        "jitter_applied": torch.ones(n, dtype=torch.bool),
        "grayscale": torch.zeros(n, dtype=torch.bool),
        "blur_sigma": torch.zeros(n, dtype=torch.float64),
        "solarize": torch.zeros(n, dtype=torch.bool),
    }


def test_augmented_latents_render_the_augmented_view():
    g = gen(11)
    z = I.sample_latents(48, generator=g, dtype=torch.float64)
    params = _square_crop_params(48, g)
    view = apply_params(I.render(z, 64), params, AugmentConfig())
    zv = I.augmented_latents(z, params)
    rerendered = I.render(zv, 64)
    err = (view - rerendered).abs().mean((1, 2, 3))
    # zoomed views have wider (upsampled) edges than a fresh render: small differences only
    assert err.mean() < 0.006 and err.max() < 0.02
    ignored = (view - I.render(z, 64)).abs().mean((1, 2, 3))
    assert err.mean() < ignored.mean() / 5
    # the identity crop changes nothing; a flip mirrors x and the rotation
    none = {**params, "crop": torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(48, 1),
            "jitter": torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(48, 1)}
    zn = I.augmented_latents(z, none)
    flip = none["flip"]
    torch.testing.assert_close(zn[~flip], z[~flip])
    torch.testing.assert_close(zn[flip][:, [0, 3]], 1 - z[flip][:, [0, 3]])


def test_augmented_latents_of_grayscale_views_have_no_hue():
    z = I.sample_latents(4, generator=gen())
    params = _square_crop_params(4, gen(1))
    params["grayscale"] = torch.tensor([True, False, True, False])
    zv = I.augmented_latents(z, params)
    assert zv[[0, 2]][:, 4:6].isnan().all() and not zv[[1, 3]].isnan().any()
    with pytest.raises(ValueError):
        I.augmented_latents(z[:3], params)


def test_plot_pairs_draws_the_grid():
    fig = I.plot_pairs(3, size=32, seed=1, augment_config="simclr_cifar")
    assert len(fig.axes) == 12
    assert fig.axes[0].get_ylabel().startswith("$x = g(z)$")
    assert len(fig.axes[5].get_images()) == 1
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError):
        I.plot_pairs(0)
