"""Generator-driven random primitives that torch does not expose with a ``generator`` argument.

Every function here takes an explicit ``torch.Generator`` so that one seed fixes every draw of a
DGP; ``torch.distributions`` samplers (Gamma, Beta, Wishart) draw from the global state instead.
"""

from __future__ import annotations

import hashlib
import math

import torch

_MAX_ROUNDS = 10_000  # Marsaglia-Tsang accepts >= 95% per round; this never runs out


def standard_gamma(
    alpha: float,
    shape: tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Exact Gamma(alpha, 1) draws by Marsaglia and Tsang (2000), one shape for all entries.

    Parameters
    ----------
    alpha : float
        Shape, alpha > 0. For alpha < 1 it draws Gamma(alpha + 1) and multiplies by
        :math:`U^{1/\\alpha}` (Marsaglia and Tsang's boost), which is exact.
    shape : tuple of int
        Output shape.
    generator : torch.Generator, optional
        Source of randomness on ``device``.
    device : torch.device or str, optional
        Device of the output.
    dtype : torch.dtype
        Floating dtype of the output (float64 by default).

    Returns
    -------
    Tensor
        Of the given shape, with independent Gamma(alpha, 1) entries.
    """
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be finite and > 0, got {alpha}")
    n = math.prod(shape)
    boost = alpha < 1
    a = alpha + 1 if boost else alpha
    d = a - 1 / 3
    c = 1 / math.sqrt(9 * d)
    out = torch.empty(n, dtype=dtype, device=device)
    filled, rounds = 0, 0
    while filled < n:
        if rounds == _MAX_ROUNDS:
            raise RuntimeError("Gamma sampler did not converge; please report alpha")
        rounds += 1
        need = n - filled
        m = int(need * 1.1) + 16  # oversample so that one round almost always suffices
        x = torch.randn(m, dtype=dtype, device=device, generator=generator)
        u = torch.rand(m, dtype=dtype, device=device, generator=generator)
        v = (1 + c * x) ** 3
        log_v = torch.log(v.clamp_min(torch.finfo(dtype).tiny))
        ok = (v > 0) & (torch.log(u) < 0.5 * x**2 + d - d * v + d * log_v)
        acc = (d * v)[ok][:need]
        out[filled : filled + acc.numel()] = acc
        filled += acc.numel()
    if boost:
        # 1 - rand lies in (0, 1], so the power never hits 0 ** (1 / alpha) = 0 by accident.
        u = 1 - torch.rand(n, dtype=dtype, device=device, generator=generator)
        out = out * u ** (1 / alpha)
    return out.reshape(shape)


def random_orthogonal(
    n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A Haar-distributed n x n orthogonal matrix: QR of a Gaussian matrix with the signs of
    diag(R) folded into Q (without that fix, QR is not Haar; Mezzadri 2007)."""
    a = torch.randn(n, n, dtype=dtype, generator=generator)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def random_wishart(
    n: int, df: int | None = None, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A draw of W / df with W ~ Wishart(df, I_n), so that E[W / df] = I_n (float64, CPU).

    df defaults to n, as in von Kügelgen et al. (2021); df >= n makes it positive definite
    almost surely.
    """
    df = n if df is None else df
    if df < n:
        raise ValueError(f"df must be >= n = {n} for a positive-definite Wishart draw, got {df}")
    a = torch.randn(n, df, dtype=torch.float64, generator=generator)
    w = a @ a.T / df
    # Exactly symmetric: a BLAS kernel may round entries (i, j) and (j, i), the same dot
    # product at two places of its output, differently.
    return (w + w.mT) / 2


def subseed(seed: int, name: str) -> int:
    """A 63-bit seed for one named part of a DGP, so that each part (mixing, clusters, ...)
    depends only on the seed and its own name, not on the order in which parts are drawn."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator_for(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded with ``subseed(seed, name)``."""
    return torch.Generator().manual_seed(subseed(seed, name))
