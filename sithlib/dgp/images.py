r"""A device-native image DGP with ground-truth latents: :math:`x = g(z)`, rendered in batches.

One coloured object on a coloured background, drawn from signed-distance functions (SDFs) with
a smooth one-pixel edge, so the images are anti-aliased and :math:`g` is continuous (and
differentiable almost everywhere) in the continuous latents. In the spirit of 3DIdent
(Zimmermann et al., 2021), small enough to render thousands of images per second on a CPU.

Latent layout: a float tensor ``z`` of shape (n, 7), columns in the order of :data:`LATENTS`.

=========  ===========  ===================================================================
column     range        meaning
=========  ===========  ===================================================================
x          [0, 1]       horizontal centre, 0 left, 1 right: :math:`u_c = 0.4 (2x - 1)`
y          [0, 1]       vertical centre, 0 bottom, 1 top: :math:`v_c = 0.4 (2y - 1)`
scale      [0, 1]       circumradius :math:`r = 0.35 + 0.25 \cdot` scale
rotation   [0, 1]       angle :math:`\theta = (\pi / 2)(2 \cdot \mathrm{rotation} - 1)`,
                        counter-clockwise
hue        [0, 1]       object hue :math:`0.8 \cdot` hue turns (saturation 1, value 1)
bg_hue     [0, 1]       background hue :math:`0.8 \cdot` bg_hue turns (saturation 0.6,
                        value 0.35)
shape      0, ..., 5    index into :data:`SHAPES` (stored as a float)
=========  ===========  ===================================================================

Lengths are in units of the image half-width: the image is :math:`[-1, 1]^2` with v pointing
up, so objects always lie inside it. The ranges make :math:`g` injective on the latent box:
every shape is mirror-symmetric about its own vertical axis but has no rotational symmetry,
rotations span half a turn, and hues span 0.8 of the colour circle (so that 0 and 1 are
different colours). The dark, less saturated background keeps the object visible for every
pair of hues. Latents outside the ranges still render (the views of
:func:`augmented_latents` use that), as long as the radius stays positive.

Positive pairs come in two kinds, both with the ground-truth latents of each view:
latent-space conditionals (:func:`positive_latents`, :func:`sample_pairs`) and image-space
augmentations (:mod:`sithlib.dgp.augment`, whose views' latents :func:`augmented_latents`
computes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from sithlib.dgp.augment import AugmentConfig, augment, hsv_to_rgb, recipe
from sithlib.dgp.vmf import sample_vmf

#: Names of the latent columns, in order.
LATENTS = ("x", "y", "scale", "rotation", "hue", "bg_hue", "shape")
#: The continuous latents (the first six columns).
CONTINUOUS = LATENTS[:6]
#: The shapes, indexed by the last latent column.
SHAPES = ("triangle", "heart", "pacman", "arrow", "tee", "moon")
#: Half-range of the object centre, in image half-widths.
POSITION = 0.4
#: Range of the circumradius, in image half-widths.
RADIUS = (0.35, 0.6)
#: Half-range of the rotation angle, in radians.
ROTATION = math.pi / 2
#: Fraction of the colour circle spanned by the hue latents.
HUE_SPAN = 0.8
#: Saturation and value of the object colour.
OBJECT_SV = (1.0, 1.0)
#: Saturation and value of the background colour.
BACKGROUND_SV = (0.6, 0.35)
#: Latent-space conditionals of :func:`positive_latents`.
CONDITIONALS = ("normal", "laplace", "vmf", "uniform")

# ---------------------------------------------------------------------------------------------
# shapes: signed distances in the unit frame (negative inside, every shape inside the unit disc)


def _polygon(qx, qy, verts):
    """Exact SDF of a simple polygon: distance to the nearest edge, sign from the crossing
    number of a horizontal ray (the formulation of Inigo Quilez)."""
    d2 = (qx - verts[0][0]) ** 2 + (qy - verts[0][1]) ** 2
    inside = torch.zeros_like(qx, dtype=torch.bool)
    for i in range(len(verts)):
        (ax, ay), (bx, by) = verts[i], verts[i - 1]
        ex, ey = bx - ax, by - ay
        wx, wy = qx - ax, qy - ay
        t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0)
        d2 = torch.minimum(d2, (wx - ex * t) ** 2 + (wy - ey * t) ** 2)
        c1, c2, c3 = qy >= ay, qy < by, ex * wy > ey * wx
        inside = inside ^ ((c1 & c2 & c3) | (~c1 & ~c2 & ~c3))
    return torch.where(inside, -1.0, 1.0).to(qx.dtype) * d2.sqrt()


_TRIANGLE = ((0.0, 1.0), (-0.65, -0.75), (0.65, -0.75))
_ARROW = ((0.0, 1.0), (-0.6, 0.2), (-0.22, 0.2), (-0.22, -0.95), (0.22, -0.95), (0.22, 0.2),
          (0.6, 0.2))
_TEE = ((-0.22, -0.9), (0.22, -0.9), (0.22, 0.3), (0.7, 0.3), (0.7, 0.7), (-0.7, 0.7),
        (-0.7, 0.3), (-0.22, 0.3))
_HEART_SCALE, _HEART_SHIFT = 0.632, 0.6306  # tip and lobe tops equidistant from (0, 0.6306)
_PACMAN_MOUTH = 0.55  # half-angle of the mouth (radians), opening towards -v
_MOON = (0.45, 0.8)  # centre height and radius of the disc cut out of the unit disc


def _heart(qx, qy):
    """Quilez's exact heart (tip at the origin, lobes of radius sqrt(2)/4), rescaled."""
    px = (qx * _HEART_SCALE).abs()
    py = qy * _HEART_SCALE + _HEART_SHIFT
    lobe = ((px - 0.25) ** 2 + (py - 0.75) ** 2).sqrt() - math.sqrt(2) / 4
    m = 0.5 * (px + py).clamp_min(0.0)
    edge = torch.minimum(px**2 + (py - 1) ** 2, (px - m) ** 2 + (py - m) ** 2).sqrt()
    lower = edge * torch.sign(px - py)
    return torch.where(px + py > 1, lobe, lower) / _HEART_SCALE


def _pacman(qx, qy):
    """Quilez's exact pie of half-aperture pi - mouth around +v: a disc with a wedge cut."""
    phi = math.pi - _PACMAN_MOUTH
    cx, cy = math.sin(phi), math.cos(phi)
    px = qx.abs()
    disc = (px**2 + qy**2).sqrt() - 1.0
    t = (px * cx + qy * cy).clamp(0.0, 1.0)
    ray = ((px - cx * t) ** 2 + (qy - cy * t) ** 2).sqrt()
    return torch.maximum(disc, ray * torch.sign(cy * px - cx * qy))


def _moon(qx, qy):
    """Unit disc minus a disc above its centre (a bowl-shaped crescent); exact inside, a lower
    bound of the distance outside near the two tips."""
    c, rad = _MOON
    return torch.maximum((qx**2 + qy**2).sqrt() - 1.0, rad - (qx**2 + (qy - c) ** 2).sqrt())


_SDF = {
    "triangle": lambda qx, qy: _polygon(qx, qy, _TRIANGLE),
    "heart": _heart,
    "pacman": _pacman,
    "arrow": lambda qx, qy: _polygon(qx, qy, _ARROW),
    "tee": lambda qx, qy: _polygon(qx, qy, _TEE),
    "moon": _moon,
}


def shape_sdf(shape: str, q: torch.Tensor) -> torch.Tensor:
    """Signed distance of points to a shape in its unit frame (negative inside).

    Parameters
    ----------
    shape : str
        One of :data:`SHAPES`.
    q : Tensor, shape (..., 2)
        Points (u, v) of the unit frame (v up; the shape lies inside the unit disc).

    Returns
    -------
    Tensor, shape q.shape[:-1]
        The signed distances.
    """
    if shape not in _SDF:
        raise ValueError(f"shape must be one of {list(SHAPES)}, got {shape!r}")
    if q.shape[-1] != 2:
        raise ValueError(f"q must have shape (..., 2), got {tuple(q.shape)}")
    return _SDF[shape](q[..., 0], q[..., 1])


# ---------------------------------------------------------------------------------------------
# latents


def _indices(names, allowed=LATENTS) -> list[int]:
    names = (names,) if isinstance(names, str) else tuple(names)
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(f"latent names must be among {list(allowed)}, got {bad}")
    return sorted({LATENTS.index(n) for n in names})


def _shape_ids(shapes) -> list[int]:
    if shapes is None:
        return list(range(len(SHAPES)))
    shapes = (shapes,) if isinstance(shapes, str) else tuple(shapes)
    bad = [s for s in shapes if s not in SHAPES]
    if bad or not shapes:
        raise ValueError(f"shapes must be a non-empty selection of {list(SHAPES)}, got {shapes}")
    return sorted({SHAPES.index(s) for s in shapes})


def _check_n(n) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")


def sample_latents(
    n: int,
    *,
    shapes: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """n latents: continuous columns uniform on [0, 1], the shape uniform over ``shapes``.

    Parameters
    ----------
    n : int
        Number of latents.
    shapes : sequence of str, optional
        The shapes to draw from (all of :data:`SHAPES` when None).
    generator : torch.Generator, optional
        Source of randomness on ``device``.
    device : torch.device or str, optional
        Device of the output.
    dtype : torch.dtype
        Floating dtype of the output.

    Returns
    -------
    Tensor, shape (n, 7)
        In the layout of :data:`LATENTS`.
    """
    _check_n(n)
    ids = torch.tensor(_shape_ids(shapes), device=device)
    cont = torch.rand(n, len(CONTINUOUS), generator=generator, device=device, dtype=dtype)
    pick = torch.randint(len(ids), (n,), generator=generator, device=device)
    return torch.cat([cont, ids[pick].to(dtype)[:, None]], dim=1)


def _check_latents(z) -> torch.Tensor:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a torch.Tensor of shape (n, 7), got {type(z).__name__}")
    if z.ndim != 2 or z.shape[1] != len(LATENTS):
        raise ValueError(f"z must have shape (n, {len(LATENTS)}) with columns {LATENTS}, "
                         f"got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise TypeError(f"z must be a floating-point tensor, got dtype {z.dtype}")
    shape = z[:, 6].detach()
    ids = shape.round().long()
    if not ((shape == ids) & (ids >= 0) & (ids < len(SHAPES))).all():
        raise ValueError(f"z[:, 6] (shape) must hold integers in 0..{len(SHAPES) - 1}")
    if not torch.isfinite(z[:, :6].detach()).all():
        raise ValueError("z must be finite")
    if not (z[:, 2].detach() > -1).all():
        raise ValueError("z[:, 2] (scale) must be > -1 so that the radius is positive")
    return ids


# ---------------------------------------------------------------------------------------------
# rendering


def render(z: torch.Tensor, size: int = 32, *, edge: float = 1.0) -> torch.Tensor:
    r"""Render :math:`x = g(z)`: RGB images of one object each, on ``z``'s device and dtype.

    Each pixel centre p gets the signed distance d of :math:`R(-\theta)(p - c) / r` to the
    shape, converted to pixels; its coverage is :math:`\alpha = \mathrm{smoothstep}(t)`,
    :math:`t = \mathrm{clamp}(1/2 - d / \mathrm{edge}, 0, 1)`, which approximates the
    box-filtered (supersampled) image, and the colour is
    :math:`\alpha \, \mathrm{object} + (1 - \alpha) \, \mathrm{background}`.

    Parameters
    ----------
    z : Tensor, shape (n, 7)
        Latents in the layout of :data:`LATENTS`.
    size : int
        Side of the square images in pixels (32 and 64 are the usual ones), >= 4.
    edge : float
        Width of the anti-aliased edge in pixels, > 0 (1 is a box filter's width).

    Returns
    -------
    Tensor, shape (n, 3, size, size)
        The images, with values in [0, 1].
    """
    ids = _check_latents(z)
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise ValueError(f"size must be an integer >= 4, got {size!r}")
    if not (isinstance(edge, (int, float)) and math.isfinite(edge) and edge > 0):
        raise ValueError(f"edge must be a finite number > 0, got {edge!r}")
    chunk = max(1, 2**20 // (size * size))
    if z.device.type == "cpu" and z.shape[0] > chunk:
        # Memory-bound on the CPU: chunks of about 2^20 pixels stay in cache (1.5-2x faster).
        return torch.cat([_render(zc, ic, size, edge)
                          for zc, ic in zip(z.split(chunk), ids.split(chunk), strict=True)])
    return _render(z, ids, size, edge)


def _render(z: torch.Tensor, ids: torch.Tensor, size: int, edge: float) -> torch.Tensor:
    n, dt, dev = z.shape[0], z.dtype, z.device
    # Rows sorted by shape, so that the pixels near the objects, listed in row-major order,
    # come grouped by shape: one SDF call per shape, then a scatter back.
    order = torch.argsort(ids, stable=True)
    zs = z[order]
    centres = (2 * torch.arange(size, device=dev, dtype=dt) + 1) / size - 1
    u, v = centres.view(1, 1, size), -centres.view(1, size, 1)  # rows run top to bottom
    col = lambda t: t.view(n, 1, 1)  # noqa: E731
    du = u - col(POSITION * (2 * zs[:, 0] - 1))
    dv = v - col(POSITION * (2 * zs[:, 1] - 1))
    r = col(RADIUS[0] + (RADIUS[1] - RADIUS[0]) * zs[:, 2])
    theta = ROTATION * (2 * zs[:, 3] - 1)
    cos, sin = col(torch.cos(theta)), col(torch.sin(theta))
    qx, qy = (cos * du + sin * dv) / r, (cos * dv - sin * du) / r
    # Every shape lies in the unit disc, so its SDF is >= |q| - 1 and pixels farther than half
    # an edge outside the disc have coverage exactly 0: skip them (most of the image).
    px_per_unit = r * (size / 2)
    near = (qx * qx + qy * qy).detach() < (1 + 0.5 * edge / px_per_unit.detach()) ** 2
    row_counts = near.reshape(n, size * size).sum(1)
    counts = torch.bincount(ids[order], weights=row_counts.double(), minlength=len(SHAPES))
    counts = counts.long().tolist()
    chunks = zip(SHAPES, qx[near].split(counts), qy[near].split(counts), strict=True)
    sdf = torch.cat([_SDF[name](a, b) for name, a, b in chunks])
    t = (0.5 - sdf * px_per_unit.expand_as(qx)[near] / edge).clamp(0.0, 1.0)
    alpha = torch.zeros_like(qx).masked_scatter(near, t * t * (3 - 2 * t))
    alpha = alpha[torch.argsort(order)].unsqueeze(1)
    obj = hsv_to_rgb(HUE_SPAN * z[:, 4], *OBJECT_SV).view(n, 3, 1, 1)
    bg = hsv_to_rgb(HUE_SPAN * z[:, 5], *BACKGROUND_SV).view(n, 3, 1, 1)
    return bg + alpha * (obj - bg)


# ---------------------------------------------------------------------------------------------
# latent-space positive pairs


def _reflect(t: torch.Tensor) -> torch.Tensor:
    """Fold the real line into [0, 1] by reflection at 0 and 1 (period 2)."""
    return 1 - (1 - torch.remainder(t, 2.0)).abs()


def positive_latents(
    z: torch.Tensor,
    change: Sequence[str] | str = CONTINUOUS,
    *,
    conditional: str = "normal",
    scale: float = 0.05,
    kappa: float = 10.0,
    change_prob: float = 1.0,
    shapes: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Latents :math:`\tilde z \sim p(\tilde z \mid z)` of the positive view of each row.

    The latents not named in ``change`` are content and are copied exactly. Each named latent
    of each row changes independently with probability ``change_prob`` (von Kügelgen et al.,
    2021: with ``change_prob < 1`` the changed style subset is random per sample). A changed
    continuous latent moves by a step :math:`\varepsilon` and is reflected back into [0, 1]:
    :math:`\tilde z_j = \rho(z_j + \varepsilon)` with :math:`\rho` the reflection at 0 and 1.
    Because the reflected kernel is symmetric, a uniform marginal stays uniform, so both views
    have the same distribution. Steps, by ``conditional``:

    - ``"normal"``: :math:`\varepsilon \sim N(0, \mathrm{scale}^2)`;
    - ``"laplace"``: :math:`\varepsilon \sim \mathrm{Laplace}(0, \mathrm{scale})`;
    - ``"vmf"``: :math:`\varepsilon = \phi / 2\pi` with :math:`\phi` the angle of a
      :math:`\mathrm{vMF}(e_1, \kappa)` draw on the circle (the von Mises distribution), one
      turn per unit of latent; its standard deviation is about :math:`1 / (2\pi\sqrt{\kappa})`;
    - ``"uniform"``: a fresh draw :math:`\tilde z_j \sim U[0, 1]` (no dependence on z).

    A changed ``"shape"`` is redrawn uniformly from ``shapes`` (it may stay the same).

    Parameters
    ----------
    z : Tensor, shape (n, 7)
        Anchor latents.
    change : str or sequence of str
        Names from :data:`LATENTS` that may change (default: every continuous latent).
    conditional : str
        ``"normal"``, ``"laplace"``, ``"vmf"`` or ``"uniform"``.
    scale : float
        Step scale of ``"normal"`` and ``"laplace"``, > 0.
    kappa : float
        Concentration of ``"vmf"``, >= 0.
    change_prob : float
        Probability that a named latent changes, in [0, 1].
    shapes : sequence of str, optional
        Shapes a changed shape is drawn from (all when None).
    generator : torch.Generator, optional
        Source of randomness on ``z``'s device.

    Returns
    -------
    Tensor
        Of ``z``'s shape, dtype and device.
    """
    _check_latents(z)
    idx = _indices(change)
    if conditional not in CONDITIONALS:
        raise ValueError(f"conditional must be one of {list(CONDITIONALS)}, got {conditional!r}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if not (isinstance(kappa, (int, float)) and math.isfinite(kappa) and kappa >= 0):
        raise ValueError(f"kappa must be a finite number >= 0, got {kappa!r}")
    if not (isinstance(change_prob, (int, float)) and 0 <= change_prob <= 1):
        raise ValueError(f"change_prob must be in [0, 1], got {change_prob!r}")
    ids = torch.tensor(_shape_ids(shapes), device=z.device)
    n, k, g, dev, dt = z.shape[0], len(CONTINUOUS), generator, z.device, z.dtype
    # Every tensor is drawn whatever the options, so one seed gives the same stream.
    if conditional == "vmf":
        mu = torch.zeros(n * k, 2, device=dev, dtype=torch.float64)
        mu[:, 0] = 1
        w = sample_vmf(mu, kappa, generator=g) if n else mu
        step = (torch.atan2(w[:, 1], w[:, 0]) / (2 * math.pi)).to(dt).view(n, k)
    elif conditional == "laplace":
        u = torch.rand(n, k, generator=g, device=dev, dtype=dt) - 0.5
        # rand returns exactly 0 once in 2^24 draws (float32): clamp its log(0) to a finite step.
        floor = -1 + torch.finfo(dt).eps
        step = -scale * torch.sign(u) * torch.log1p((-2 * u.abs()).clamp_min(floor))
    elif conditional == "normal":
        step = scale * torch.randn(n, k, generator=g, device=dev, dtype=dt)
    else:
        step = torch.rand(n, k, generator=g, device=dev, dtype=dt)
    new = step if conditional == "uniform" else _reflect(z[:, :k] + step)
    new_shape = ids[torch.randint(len(ids), (n,), generator=g, device=dev)].to(dt)
    mask = torch.rand(n, len(LATENTS), generator=g, device=dev) < change_prob
    named = torch.zeros(len(LATENTS), dtype=torch.bool, device=dev)
    named[idx] = True
    mask = mask & named
    proposal = torch.cat([new, new_shape[:, None]], dim=1)
    return torch.where(mask, proposal, z)


class ImagePairs(NamedTuple):
    """Positive pairs of rendered images with their latents."""

    #: First views, images (n, 3, H, W) in [0, 1].
    x1: torch.Tensor
    #: Second views, images (n, 3, H, W) in [0, 1].
    x2: torch.Tensor
    #: Latents of the first views.
    z1: torch.Tensor
    #: Latents of the second views.
    z2: torch.Tensor


def sample_pairs(
    n: int,
    size: int = 32,
    *,
    change: Sequence[str] | str = CONTINUOUS,
    conditional: str = "normal",
    scale: float = 0.05,
    kappa: float = 10.0,
    change_prob: float = 1.0,
    shapes: Sequence[str] | None = None,
    edge: float = 1.0,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> ImagePairs:
    """n anchors :math:`z \\sim U`, their positives from :func:`positive_latents`, rendered.

    The parameters are those of :func:`sample_latents`, :func:`positive_latents` and
    :func:`render`; returns ``ImagePairs(x1, x2, z1, z2)`` with images (n, 3, size, size).
    """
    z1 = sample_latents(n, shapes=shapes, generator=generator, device=device, dtype=dtype)
    z2 = positive_latents(z1, change, conditional=conditional, scale=scale, kappa=kappa,
                          change_prob=change_prob, shapes=shapes, generator=generator)
    return ImagePairs(render(z1, size, edge=edge), render(z2, size, edge=edge), z1, z2)


# ---------------------------------------------------------------------------------------------
# image-space positive pairs: the latents of an augmented view


def augmented_latents(z: torch.Tensor, params: dict) -> torch.Tensor:
    r"""The latents of the views that :func:`sithlib.dgp.augment.apply_params` makes of
    ``render(z)``, in the same layout (values may leave [0, 1]).

    A crop box (top, left, height h, width w), as fractions of the image, maps image
    coordinates to :math:`u' = (u - u_b) / w`, :math:`v' = (v - v_b) / h` around its centre
    :math:`(u_b, v_b)`; a flip maps :math:`u' \to -u'` and :math:`\theta \to -\theta` (every
    shape is mirror-symmetric, so the mirrored object is the object rotated by
    :math:`-\theta`). The radius becomes :math:`r / \sqrt{w h}`, exact for square crops; a
    crop of aspect ratio other than 1 also stretches the object, which then leaves the
    renderer's family. The hue jitter shifts both hues by the same number of turns, returned
    unwrapped (the rendered hue is :math:`0.8 \cdot \mathrm{hue} \bmod 1`), and exact up to
    the clamping of brightened colours. Grayscale views have no hue: both hues are NaN.
    Brightness, contrast, saturation, blur and solarization are nuisances not in the layout.

    Parameters
    ----------
    z : Tensor, shape (n, 7)
        Latents of the original images.
    params : dict
        Parameters of the views, from :func:`sithlib.dgp.augment.sample_params` or
        :func:`sithlib.dgp.augment.augment`.

    Returns
    -------
    Tensor, shape (n, 7)
        The latents of the augmented views.
    """
    _check_latents(z)
    crop = params["crop"].to(z)
    if crop.shape != (z.shape[0], 4):
        raise ValueError(f"params are for {crop.shape[0]} views, z holds {z.shape[0]} rows")
    top, left, h, w = crop.unbind(1)
    flip = params["flip"].to(z.device)
    u_b, v_b = 2 * left + w - 1, 1 - 2 * top - h
    u = (POSITION * (2 * z[:, 0] - 1) - u_b) / w
    u = torch.where(flip, -u, u)
    v = (POSITION * (2 * z[:, 1] - 1) - v_b) / h
    r = (RADIUS[0] + (RADIUS[1] - RADIUS[0]) * z[:, 2]) / (w * h).sqrt()
    rotation = torch.where(flip, 1 - z[:, 3], z[:, 3])
    shift = params["jitter"][:, 3].to(z) / HUE_SPAN
    gray = params["grayscale"].to(z.device)
    nan = torch.full_like(shift, math.nan)
    hue = torch.where(gray, nan, z[:, 4] + shift)
    bg_hue = torch.where(gray, nan, z[:, 5] + shift)
    return torch.stack([(u / POSITION + 1) / 2, (v / POSITION + 1) / 2,
                        (r - RADIUS[0]) / (RADIUS[1] - RADIUS[0]), rotation, hue, bg_hue,
                        z[:, 6]], dim=1)


# ---------------------------------------------------------------------------------------------
# figure


def plot_pairs(
    n: int = 8,
    *,
    size: int = 64,
    seed: int = 0,
    change: Sequence[str] | str = CONTINUOUS,
    conditional: str = "normal",
    scale: float = 0.05,
    kappa: float = 10.0,
    change_prob: float = 1.0,
    augment_config: AugmentConfig | str = "simclr",
):
    """A grid of rendered samples and their positive pairs under both kinds of augmentation.

    Rows: the anchors :math:`x = g(z)`; their latent-space positives :math:`g(\\tilde z)`
    (:func:`positive_latents` with ``change``, ``conditional``, ``scale``, ``kappa``,
    ``change_prob``); two image-space views :math:`t(x)`, :math:`t'(x)` drawn from
    ``augment_config`` (an :class:`~sithlib.dgp.augment.AugmentConfig` or a recipe name).
    One column per sample, all drawn from ``seed``. Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    _check_n(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cfg = recipe(augment_config) if isinstance(augment_config, str) else augment_config
    gen = torch.Generator().manual_seed(seed)
    pairs = sample_pairs(n, size, change=change, conditional=conditional, scale=scale,
                         kappa=kappa, change_prob=change_prob, generator=gen)
    view1, _ = augment(pairs.x1, cfg, generator=gen)
    view2, _ = augment(pairs.x1, cfg, generator=gen)
    rows = [(r"$x = g(z)$", pairs.x1), (r"$g(\tilde z)$" + "\nlatent", pairs.x2),
            (r"$t(x)$" + "\nimage", view1), (r"$t'(x)$" + "\nimage", view2)]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.15 * n + 0.6, 1.15 * len(rows)),
                             squeeze=False)
    for i, (label, images) in enumerate(rows):
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(images[j].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        # Upright and large: the figure is shrunk to the page width.
        axes[i, 0].set_ylabel(label, fontsize=13, rotation=0, ha="right", va="center",
                              labelpad=6)
    fig.tight_layout(pad=0.3)
    return fig
