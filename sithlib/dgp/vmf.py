r"""The von Mises-Fisher distribution on the unit hypersphere :math:`S^{d-1} \subset \mathbb{R}^d`.

Density :math:`p(x \mid \mu, \kappa) = C_d(\kappa) \exp(\kappa \mu^\top x)`, the positive-pair
conditional of Zimmermann et al. (2021) and the instance conditional of Reizinger et al. (2024).
Sampling is Wood's (1994) exact rejection algorithm, batched and device-native, in float64
inside. Every quantity near :math:`w = \mu^\top x \approx 1` is computed as :math:`1 - w`
directly (never as a difference of numbers close to 1), so the sampler stays exact from
:math:`\kappa = 0` to :math:`\kappa = 10^5` and beyond.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import special

from sithlib.dgp._random import standard_gamma

_MAX_ROUNDS = 1000  # Wood's acceptance is > 0.5 for every (d, kappa); 1000 rounds never run out


def _check_mu_kappa(mu, kappa) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(mu, torch.Tensor):
        raise TypeError(f"mu must be a torch.Tensor of shape (..., d), got {type(mu).__name__}")
    if mu.ndim == 0 or mu.shape[-1] < 2:
        raise ValueError(f"mu must have shape (..., d) with d >= 2, got shape {tuple(mu.shape)}")
    if not mu.is_floating_point():
        raise TypeError(f"mu must be a floating-point tensor, got dtype {mu.dtype}")
    # Work in float64 for float64 means, else in float32: the direction part of a float32
    # output is then exact to a few float32 ulps, and w itself is always drawn in float64.
    work = torch.float64 if mu.dtype == torch.float64 else torch.float32
    mu_w = mu.detach().to(work)
    norms = mu_w.norm(dim=-1)
    # Unit vectors rounded to a low-precision dtype are only unit up to that dtype's epsilon.
    tol = max(1e-4, 8 * torch.finfo(mu.dtype).eps)
    if mu.numel() and not ((norms - 1).abs() <= tol).all():
        raise ValueError(
            "mu must hold unit vectors (norm 1 along the last axis); normalize it first"
        )
    kappa = torch.as_tensor(kappa, dtype=torch.float64, device=mu.device).detach()
    if not torch.isfinite(kappa).all() or (kappa < 0).any():
        raise ValueError("kappa must be finite and >= 0 (kappa = 0 is the uniform distribution)")
    try:
        shared = kappa.numel() == 1
        kappa = kappa.reshape(()) if shared else torch.broadcast_to(kappa, mu.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"kappa of shape {tuple(kappa.shape)} does not broadcast to mu.shape[:-1] = "
            f"{tuple(mu.shape[:-1])}"
        ) from None
    return mu_w / norms.unsqueeze(-1), kappa


def _sample_w(
    kappa: torch.Tensor, n_out: int, d: int, generator, draw_dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Wood's rejection sampler for :math:`w = \\mu^\\top x`: ``n_out`` draws for a float64
    ``kappa`` that is 0-d (shared) or of shape (n_out,). Returns ``(w, sqrt(1 - w^2))`` in
    float64; the raw uniform and Gamma draws are made in ``draw_dtype`` (float32 is several
    times faster on the CPU and resolves the distribution far beyond what a float32 output
    can show)."""
    if d == 3:
        return _sample_w_s2(kappa, n_out, generator, draw_dtype)
    m1 = d - 1
    # b = (-2k + sqrt(4k^2 + m1^2)) / m1, rationalized to avoid cancellation at large kappa;
    # x0 = (1 - b) / (1 + b) and 1 - x0 = 2b / (1 + b) exactly.
    b = m1 / (2 * kappa + torch.sqrt(4 * kappa**2 + m1**2))
    x0 = (1 - b) / (1 + b)
    omx0 = 2 * b / (1 + b)
    log_1mx0sq = torch.log(omx0 * (2 / (1 + b)))  # log(1 - x0^2)
    w = torch.empty(n_out, dtype=torch.float64, device=kappa.device)
    radial = torch.empty_like(w)
    todo = torch.arange(n_out, device=kappa.device)
    # A shared (0-d) kappa keeps every parameter a scalar: no per-round gathers.
    at = (lambda t: t) if kappa.ndim == 0 else (lambda t: t[todo, None])
    for r in range(_MAX_ROUNDS):
        n = todo.numel()
        if n == 0:
            return w, radial
        # After the first round only a few rows are left: give each several candidates so
        # that the loop ends in two or three rounds instead of log(n) / log(1 / reject).
        k = 2 if r == 0 else 8
        # z ~ Beta(m1/2, m1/2) from two Gamma draws; 1 - z = g1 / (g0 + g1), without cancellation.
        g = standard_gamma(
            m1 / 2, (2, n, k), generator=generator, device=kappa.device, dtype=draw_dtype
        ).double()
        s = g[0] + g[1]
        z, omz = g[0] / s, g[1] / s
        bt, x0t, omx0t = at(b), at(x0), at(omx0)
        den = omz + bt * z  # 1 - (1 - b) z
        omw = 2 * bt * z / den  # 1 - w
        # Wood's test kappa w + m1 log(1 - x0 w) - c >= log u, c = kappa x0 + m1 log(1 - x0^2),
        # written in 1 - w and 1 - x0 so that nothing cancels at large kappa.
        lhs = at(kappa) * (omx0t - omw) + m1 * (torch.log(omx0t + x0t * omw) - at(log_1mx0sq))
        u = torch.rand(n, k, dtype=draw_dtype, device=kappa.device, generator=generator)
        ok = lhs >= torch.log(u.double())
        first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # first accepted candidate
        done = ok.any(dim=1)
        wt = ((omz - bt * z) / den).gather(1, first).squeeze(1)
        rt = torch.sqrt(omw * (2 * omz / den)).gather(1, first).squeeze(1)  # sqrt(1 - w^2)
        if r == 0:
            w, radial = wt, rt  # rows not done are overwritten in later rounds
        else:
            w[todo[done]], radial[todo[done]] = wt[done], rt[done]
        todo = todo[~done]
    raise RuntimeError(f"vMF rejection sampler did not converge for d = {d}; please report it")


def _sample_w_s2(kappa, n_out: int, generator, draw_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """On :math:`S^2`, w has density proportional to exp(kappa w) on [-1, 1] and an explicit
    inverse CDF, :math:`1 - w = -\\log(1 + v (e^{-2\\kappa} - 1)) / \\kappa` with v uniform on
    [0, 1) (Wood, 1994, notes the same special case); exact and without rejection."""
    v = torch.rand(n_out, dtype=draw_dtype, device=kappa.device, generator=generator)
    v = v.double()
    tiny = kappa > 1e-300  # below that, kappa is numerically 0 and w is uniform
    safe = torch.where(tiny, kappa, 1.0)
    omw = torch.where(tiny, -torch.log1p(v * torch.expm1(-2 * safe)) / safe, 2 * v)
    return 1 - omw, torch.sqrt(omw * (2 - omw))


def sample_vmf(mu: torch.Tensor, kappa, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Exact samples from vMF(mu, kappa), one per row of ``mu`` (Wood, 1994).

    Parameters
    ----------
    mu : Tensor, shape (..., d)
        Mean directions (unit vectors), d >= 2. Use ``mu.expand(n, d)`` for n draws around one
        mean; every row may have its own mean.
    kappa : float or Tensor broadcastable to ``mu.shape[:-1]``
        Concentration, kappa >= 0 (0 gives the uniform distribution on the sphere).
    generator : torch.Generator, optional
        Source of randomness on ``mu``'s device; the same seed gives the same samples.

    Returns
    -------
    Tensor
        ``mu``'s shape and dtype: unit vectors with density proportional to
        :math:`\exp(\kappa \mu^\top x)`.
    """
    mu_w, kappa = _check_mu_kappa(mu, kappa)
    d, work = mu.shape[-1], mu_w.dtype
    flat_mu = mu_w.reshape(-1, d)
    n_out = flat_mu.shape[0]
    w, radial = _sample_w(kappa.reshape(-1) if kappa.ndim else kappa, n_out, d, generator, work)
    # A uniform unit direction in the tangent space of mu: project a Gaussian onto mu's
    # orthogonal complement, which is rotation-equivariant and needs no reflection matrix.
    v = torch.randn(flat_mu.shape, dtype=work, device=mu.device, generator=generator)
    v = v - (v * flat_mu).sum(-1, keepdim=True) * flat_mu
    v = v / v.norm(dim=-1, keepdim=True)
    x = w.to(work).unsqueeze(-1) * flat_mu + radial.to(work).unsqueeze(-1) * v
    return x.reshape(mu.shape).to(mu.dtype)


def _ratio_by_recurrence(kappa: np.ndarray, nu: float, steps: int = 400) -> np.ndarray:
    """I_nu / I_{nu-1} by the backward recurrence r_nu = kappa / (2 nu + kappa r_{nu+1}),
    started from the large-order approximation kappa / (mu + sqrt(mu^2 + kappa^2)).
    Each step shrinks the starting error by r^2 < 1, fast where kappa is small next to nu."""
    mu = nu + steps
    r = kappa / (mu + np.sqrt(mu**2 + kappa**2))
    for k in range(steps - 1, -1, -1):
        r = kappa / (2 * (nu + k) + kappa * r)
    return r


def mean_resultant_length(kappa, d: int) -> np.ndarray:
    r"""Mean cosine :math:`E[\mu^\top x]` under vMF(mu, kappa) on :math:`S^{d-1}`.

    :math:`A_d(\kappa) = I_{d/2}(\kappa) / I_{d/2-1}(\kappa)`, from exponentially scaled Bessel
    functions where they are representable and from the backward recurrence of the Bessel ratio
    where they underflow (small kappa in high dimension, e.g. d = 512, kappa = 0.1). The limit at
    kappa = 0 is 0.

    Parameters
    ----------
    kappa : float or array
        Concentration(s), kappa >= 0.
    d : int
        Ambient dimension, d >= 2.

    Returns
    -------
    numpy.ndarray
        :math:`A_d(\kappa)`, float64, of ``kappa``'s shape.
    """
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 2:
        raise ValueError(f"d must be an integer >= 2, got {d!r}")
    kappa = np.asarray(kappa, dtype=np.float64)
    if not np.isfinite(kappa).all() or (kappa < 0).any():
        raise ValueError("kappa must be finite and >= 0")
    nu = d / 2
    safe = np.where(kappa > 0, kappa, 1.0)
    with np.errstate(all="ignore"):
        den = special.ive(nu - 1, safe)
        ratio = np.asarray(special.ive(nu, safe) / den)
    bad = ~(den > 1e-280) | ~np.isfinite(ratio)
    if bad.any():
        ratio = np.where(bad, _ratio_by_recurrence(safe, nu), ratio)
    return np.where(kappa > 0, ratio, 0.0)
