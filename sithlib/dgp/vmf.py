"""The von Mises-Fisher distribution on the unit hypersphere S^{d-1} in R^d.

Density: p(x | mu, kappa) = C_d(kappa) exp(kappa mu^T x), the positive-pair conditional of
Zimmermann et al. (2021). Sampling is Wood's (1994) exact rejection algorithm, batched and
device-native, in float64 inside so that it stays exact from kappa = 0 to kappa = 1e5.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import special

_MAX_ROUNDS = 1000  # acceptance is >= ~0.6 for every (d, kappa); 1000 rounds never run out


def _check_mu_kappa(mu: torch.Tensor, kappa) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(mu, torch.Tensor) or mu.ndim == 0:
        raise ValueError("mu must be a tensor of shape (..., d) with d >= 2")
    if mu.shape[-1] < 2:
        raise ValueError(f"mu must have dimension d >= 2 in its last axis, got shape {tuple(mu.shape)}")
    if not mu.is_floating_point():
        raise ValueError(f"mu must be a floating-point tensor, got dtype {mu.dtype}")
    mu64 = mu.to(torch.float64)
    norms = mu64.norm(dim=-1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
        raise ValueError("mu must hold unit vectors (norm 1 along the last axis); normalize it first")
    kappa = torch.as_tensor(kappa, dtype=torch.float64, device=mu.device)
    if not torch.isfinite(kappa).all() or (kappa < 0).any():
        raise ValueError("kappa must be finite and >= 0 (kappa = 0 is the uniform distribution)")
    kappa = torch.broadcast_to(kappa, mu.shape[:-1])
    return mu64 / norms.unsqueeze(-1), kappa


def _sample_w(kappa: torch.Tensor, d: int, generator) -> torch.Tensor:
    """Wood's rejection sampler for w = mu^T x, one draw per entry of the 1-D ``kappa``."""
    m1 = d - 1
    # b = (-2k + sqrt(4k^2 + m1^2)) / m1, written without the cancellation at large kappa.
    b = m1 / (2 * kappa + torch.sqrt(4 * kappa**2 + m1**2))
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + m1 * torch.log1p(-(x0**2))
    w = torch.empty_like(kappa)
    todo = torch.arange(kappa.numel(), device=kappa.device)
    for _ in range(_MAX_ROUNDS):
        if todo.numel() == 0:
            return w
        n = todo.numel()
        # Beta(m1/2, m1/2) from two chi-square(m1) draws, so that one torch.Generator drives it.
        g = torch.randn(2, n, m1, dtype=torch.float64, device=kappa.device, generator=generator)
        chi = g.pow(2).sum(-1)
        z = chi[0] / (chi[0] + chi[1])
        bt, x0t, ct, kt = b[todo], x0[todo], c[todo], kappa[todo]
        wt = (1 - (1 + bt) * z) / (1 - (1 - bt) * z)
        u = torch.rand(n, dtype=torch.float64, device=kappa.device, generator=generator)
        ok = kt * wt + m1 * torch.log1p(-x0t * wt) - ct >= torch.log(u)
        w[todo[ok]] = wt[ok]
        todo = todo[~ok]
    raise RuntimeError("vMF rejection sampler did not converge; please report d and kappa")


def sample_vmf(mu: torch.Tensor, kappa, generator: torch.Generator | None = None) -> torch.Tensor:
    """Exact samples from vMF(mu, kappa), one per row of ``mu``.

    Parameters
    ----------
    mu : Tensor, shape (..., d)
        Mean directions (unit vectors), d >= 2. Use ``mu.expand(n, d)`` for n draws around one mean.
    kappa : float or Tensor broadcastable to ``mu.shape[:-1]``
        Concentration, kappa >= 0 (0 gives the uniform distribution on the sphere).
    generator : torch.Generator, optional
        Source of randomness on ``mu``'s device; the same seed gives the same samples.

    Returns
    -------
    Tensor of ``mu``'s shape and dtype, unit vectors with density proportional to
    :math:`\\exp(\\kappa \\mu^\\top x)`.
    """
    mu64, kappa = _check_mu_kappa(mu, kappa)
    d = mu.shape[-1]
    flat_mu = mu64.reshape(-1, d)
    w = _sample_w(kappa.reshape(-1), d, generator)
    v = torch.randn(flat_mu.shape[0], d - 1, dtype=torch.float64, device=mu.device, generator=generator)
    v = v / v.norm(dim=-1, keepdim=True)
    # sqrt(1 - w^2) from 1 - w computed without cancellation when w is close to 1.
    radial = torch.sqrt(((1 - w) * (1 + w)).clamp_min(0))
    # Draw around sigma * e_d with the sign that keeps the Householder reflection onto mu
    # well-conditioned (|u|^2 = 2 - 2 sigma mu_d >= 2).
    sigma = torch.where(flat_mu[:, -1] >= 0, -1.0, 1.0).to(torch.float64)
    x = torch.cat([radial.unsqueeze(-1) * v, (sigma * w).unsqueeze(-1)], dim=-1)
    u = -flat_mu.clone()
    u[:, -1] += sigma
    x = x - 2 * u * (u * x).sum(-1, keepdim=True) / (u * u).sum(-1, keepdim=True)
    return x.reshape(mu.shape).to(mu.dtype)


def mean_resultant_length(kappa, d: int) -> np.ndarray:
    """E[mu^T x] under vMF(mu, kappa) on S^{d-1}: A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa).

    Uses exponentially scaled Bessel functions so that it is finite for kappa up to 1e5 and
    more; the kappa -> 0 limit is 0.
    """
    if d < 2:
        raise ValueError(f"d must be >= 2, got {d}")
    kappa = np.asarray(kappa, dtype=np.float64)
    if (kappa < 0).any():
        raise ValueError("kappa must be >= 0")
    safe = np.where(kappa > 0, kappa, 1.0)
    ratio = special.ive(d / 2, safe) / special.ive(d / 2 - 1, safe)
    return np.where(kappa > 0, ratio, 0.0)
