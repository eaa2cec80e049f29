r"""Positive-pair conditionals :math:`p(\tilde z \mid z)` on a space.

- ``"vmf"`` (sphere only): :math:`\tilde z \sim \mathrm{vMF}(z, \kappa)`, exact (Wood, 1994);
  the conditional of Zimmermann et al. (2021), for which InfoNCE with :math:`\tau = 1/\kappa`
  is minimized by an isometry.
- ``"normal"``, ``"laplace"``, ``"gennormal"``: :math:`\tilde z = z + \varepsilon` with the
  coordinate-wise noise of :mod:`sithlib.dgp.marginals`; re-projected onto the sphere, truncated
  to the box (the conditional density is then the noise density restricted to the box and
  renormalized), unchanged in :math:`\mathbb{R}^n`.

The content/style and cluster/instance conditionals, which carry state drawn once per DGP,
live in :mod:`sithlib.dgp.content_style` and :mod:`sithlib.dgp.clusters`.
"""

from __future__ import annotations

import torch

from sithlib.dgp.marginals import NOISES, sample_noise, truncate_to_box
from sithlib.dgp.spaces import Box, Sphere
from sithlib.dgp.vmf import sample_vmf

CONDITIONALS = ("vmf",) + NOISES


def sample_conditional(
    space,
    z: torch.Tensor,
    name: str,
    *,
    kappa: float = 10.0,
    scale: float = 1.0,
    p: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One draw of :math:`\\tilde z \\sim p(\\tilde z \\mid z)` per row of ``z``.

    Parameters
    ----------
    space : Sphere, Box or Euclidean
        The latent space ``z`` lives in.
    z : Tensor, shape (n, space.dim)
        Anchors.
    name : str
        ``"vmf"`` (sphere only), ``"normal"``, ``"laplace"`` or ``"gennormal"``.
    kappa : float
        vMF concentration, kappa >= 0 (``"vmf"`` only).
    scale : float
        Noise scale (the noise families only).
    p : float
        Generalized-normal exponent (``"gennormal"`` only).
    generator : torch.Generator, optional
        Source of randomness on ``z``'s device.

    Returns
    -------
    Tensor
        Of ``z``'s shape and dtype, on ``space``.
    """
    if name not in CONDITIONALS:
        raise ValueError(f"conditional must be one of {list(CONDITIONALS)}, got {name!r}")
    if z.ndim != 2 or z.shape[-1] != space.dim:
        raise ValueError(f"z must have shape (n, {space.dim}), got {tuple(z.shape)}")
    if name == "vmf":
        if not isinstance(space, Sphere):
            raise ValueError(f"the 'vmf' conditional needs the sphere, got space {space.name!r}")
        return sample_vmf(z, kappa, generator=generator)
    if isinstance(space, Box):
        return truncate_to_box(z, space, name, scale, p, generator=generator)
    noise = sample_noise(name, z.shape, scale, p, generator=generator, device=z.device,
                         dtype=z.dtype)
    return space.project(z + noise)
