r"""Marginals :math:`p(z)` on a space, and the coordinate-wise noise families they share with the
conditionals.

Noise families, each with density proportional to the expression given (scale s > 0):

- ``"normal"``: :math:`\exp(-x^2 / (2 s^2))`, the standard deviation is s;
- ``"laplace"``: :math:`\exp(-|x| / s)`;
- ``"gennormal"``: :math:`\exp(-|x / s|^p)`, the generalized normal of exponent p > 0
  (p = 1 is Laplace with scale s, p = 2 is normal with standard deviation :math:`s/\sqrt{2}`).

A non-uniform marginal is centred at :math:`\eta = e_1` on the sphere and at the origin
elsewhere (as in cl-ica), then re-projected onto the sphere or truncated to the box. In the box
[0, 1]^d that centre is a corner, so the truncated marginal is one-sided, as in the reference.
"""

from __future__ import annotations

import math

import torch

from sithlib.dgp._random import standard_gamma
from sithlib.dgp.spaces import Box, Sphere

NOISES = ("normal", "laplace", "gennormal")
MARGINALS = ("uniform",) + NOISES
_MAX_ROUNDS = 10_000


def _check_scale_p(scale: float, p: float) -> None:
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if not (isinstance(p, (int, float)) and math.isfinite(p) and p > 0):
        raise ValueError(f"p must be a finite number > 0, got {p!r}")


def sample_noise(
    name: str,
    shape: tuple[int, ...],
    scale: float = 1.0,
    p: float = 2.0,
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Independent draws of one noise family (see the module docstring).

    Parameters
    ----------
    name : str
        ``"normal"``, ``"laplace"`` or ``"gennormal"``.
    shape : tuple of int
        Output shape.
    scale : float
        Scale s > 0.
    p : float
        Exponent of ``"gennormal"`` (ignored otherwise), p > 0.
    generator : torch.Generator, optional
        Source of randomness on ``device``.
    device : torch.device or str, optional
        Where to draw.
    dtype : torch.dtype
        Floating dtype of the draws.

    Returns
    -------
    Tensor
        Of the given shape.
    """
    _check_scale_p(scale, p)
    if name == "normal":
        return scale * torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if name == "laplace":
        # The difference of two unit exponentials is a unit Laplace variable.
        e = torch.empty((2, *shape), device=device, dtype=dtype).exponential_(generator=generator)
        return scale * (e[0] - e[1])
    if name == "gennormal":
        # |x / s|^p ~ Gamma(1 / p, 1) with a uniform random sign.
        g = standard_gamma(1 / p, tuple(shape), generator=generator, device=device, dtype=dtype)
        sign = torch.rand(shape, generator=generator, device=device, dtype=dtype) < 0.5
        return scale * torch.where(sign, -1.0, 1.0).to(dtype) * g ** (1 / p)
    raise ValueError(f"noise must be one of {list(NOISES)}, got {name!r}")


def truncate_to_box(
    center: torch.Tensor,
    box: Box,
    name: str,
    scale: float,
    p: float = 2.0,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``center`` plus noise, truncated to the box by coordinate-wise rejection.

    The noise densities factorize over coordinates and the box is a product of intervals, so
    redrawing only the coordinates that fall outside is exact for the truncated joint density
    and far cheaper than redrawing whole rows in high dimension.
    """
    out = center + sample_noise(name, center.shape, scale, p, generator=generator,
                                device=center.device, dtype=center.dtype)
    bad = (out < box.low) | (out > box.high)
    for _ in range(_MAX_ROUNDS):
        idx = bad.nonzero(as_tuple=True)
        n = idx[0].numel()
        if n == 0:
            return out
        fresh = center[idx] + sample_noise(name, (n,), scale, p, generator=generator,
                                           device=center.device, dtype=center.dtype)
        out[idx] = fresh
        bad[idx] = (fresh < box.low) | (fresh > box.high)
    raise RuntimeError(
        f"truncation to the box did not finish; the {name} scale {scale} is too large for the "
        f"box width {box.high - box.low}"
    )


def sample_marginal(
    space,
    name: str,
    n: int,
    scale: float = 1.0,
    p: float = 2.0,
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """n draws from a marginal on ``space``.

    Parameters
    ----------
    space : Sphere, Box or Euclidean
        The latent space.
    name : str
        ``"uniform"`` (sphere and box only), ``"normal"``, ``"laplace"`` or ``"gennormal"``;
        the last three are centred at e_1 on the sphere (then re-projected) and at the origin
        elsewhere (truncated in the box).
    n : int
        Number of draws.
    scale : float
        Noise scale (see :func:`sample_noise`).
    p : float
        Generalized-normal exponent (see :func:`sample_noise`).
    generator : torch.Generator, optional
        Source of randomness on ``device``.
    device : torch.device or str, optional
        Where to draw.
    dtype : torch.dtype
        Floating dtype of the draws.

    Returns
    -------
    Tensor, shape (n, space.dim)
        The samples.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if name == "uniform":
        return space.uniform(n, generator=generator, device=device, dtype=dtype)
    if name not in NOISES:
        raise ValueError(f"marginal must be one of {list(MARGINALS)}, got {name!r}")
    center = torch.zeros(n, space.dim, device=device, dtype=dtype)
    if isinstance(space, Sphere):
        center[:, 0] = 1.0
    if isinstance(space, Box):
        return truncate_to_box(center, space, name, scale, p, generator=generator)
    z = center + sample_noise(name, center.shape, scale, p, generator=generator, device=device,
                              dtype=dtype)
    return space.project(z)
