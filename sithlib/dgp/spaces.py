r"""Latent spaces: the unit hypersphere, an axis-aligned box and :math:`\mathbb{R}^n`.

A space knows its dimension, how to put a point back on it (``project``), whether points lie on
it (``contains``) and, where it exists, its uniform distribution. Marginals and conditionals use
``project`` for the sphere (re-projection, as in Zimmermann et al., 2021) and the bounds for the
box (truncation by rejection).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _check_dim(dim, minimum: int = 1) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < minimum:
        raise ValueError(f"dim must be an integer >= {minimum}, got {dim!r}")


@dataclass(frozen=True)
class Sphere:
    r"""The unit hypersphere :math:`S^{d-1} = \{z \in \mathbb{R}^d : \lVert z \rVert = 1\}`.

    Parameters
    ----------
    dim : int
        Ambient dimension d >= 2.
    """

    dim: int
    name = "sphere"

    def __post_init__(self):
        _check_dim(self.dim, 2)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Radial projection onto the sphere (z / norm(z))."""
        return z / z.norm(dim=-1, keepdim=True)

    def contains(self, z: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
        """Boolean per row: is the norm 1 within ``atol``?"""
        return (z.norm(dim=-1) - 1).abs() <= atol

    def uniform(self, n: int, *, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """n uniform points: normalized standard Gaussian vectors (rotation invariant)."""
        g = torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)
        return self.project(g)


@dataclass(frozen=True)
class Box:
    """The box :math:`[\\text{low}, \\text{high}]^d`.

    Parameters
    ----------
    dim : int
        Dimension d >= 1.
    low : float
        Lower bound, finite; cl-ica uses 0.
    high : float
        Upper bound, finite and > ``low``; cl-ica uses 1.
    """

    dim: int
    low: float = 0.0
    high: float = 1.0
    name = "box"

    def __post_init__(self):
        _check_dim(self.dim)
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(
                f"box bounds must be finite with low < high, got [{self.low}, {self.high}]"
            )

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Coordinate-wise clamp into the box."""
        return z.clamp(self.low, self.high)

    def contains(self, z: torch.Tensor, atol: float = 0.0) -> torch.Tensor:
        """Boolean per row: are all coordinates within the bounds (up to ``atol``)?"""
        return ((z >= self.low - atol) & (z <= self.high + atol)).all(dim=-1)

    def uniform(self, n: int, *, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """n uniform points in the box."""
        u = torch.rand(n, self.dim, generator=generator, device=device, dtype=dtype)
        return self.low + (self.high - self.low) * u


@dataclass(frozen=True)
class Euclidean:
    r""":math:`\mathbb{R}^d`, with no uniform distribution.

    Parameters
    ----------
    dim : int
        Dimension d >= 1.
    """

    dim: int
    name = "euclidean"

    def __post_init__(self):
        _check_dim(self.dim)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """The identity."""
        return z

    def contains(self, z: torch.Tensor, atol: float = 0.0) -> torch.Tensor:
        """Boolean per row: are all coordinates finite?"""
        return torch.isfinite(z).all(dim=-1)

    def uniform(self, n: int, *, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """Always raises: R^d has no uniform distribution."""
        raise ValueError("the Euclidean space R^d has no uniform distribution; use 'normal', "
                         "'laplace' or 'gennormal' as marginal")


SPACES = {"sphere": Sphere, "box": Box, "euclidean": Euclidean}


def make_space(name: str, dim: int, *, low: float = 0.0, high: float = 1.0):
    """A space from its name: ``"sphere"``, ``"box"`` (with ``low``, ``high``) or
    ``"euclidean"``."""
    if name not in SPACES:
        raise ValueError(f"space must be one of {sorted(SPACES)}, got {name!r}")
    if name == "box":
        return Box(dim, float(low), float(high))
    return SPACES[name](dim)
