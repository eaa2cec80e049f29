r"""Stability and collapse indicators (Jha et al. 2024, "The common Stability Mechanism behind
most Self-Supervised Learning Approaches").

Notation of the paper: the normalised embedding :math:`z = f(x)/\|f(x)\|`, the per-sample mean
over augmentations :math:`\mu_x = E_\omega[z(\omega(x))]` and the center vector
:math:`s = E_x[\mu_x]`. Independent views give :math:`E_{\omega,\omega'} \langle z, z' \rangle =
\|\mu_x\|^2`, and the variance decomposition

.. math:: E_x \|\mu_x\|^2 = \|s\|^2 + E_x \|\mu_x - s\|^2

says that maximising the agreement of views while minimising the center norm spreads the
per-sample means apart; complete collapse is :math:`\mu_x = s` with :math:`\|s\| = 1`.
Views are passed as a tensor of shape (K, N, D): K augmentations of the same N inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _checks


def _embeddings(name: str, z, normalize: bool, shapes=(2, 3)) -> torch.Tensor:
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
    if isinstance(z, torch.Tensor) and z.ndim in shapes:
        ndim = z.ndim
    else:
        ndim = shapes[0]
    shape = "(n, d)" if ndim == 2 else "(k, n, d)"
    z = _checks.features(name, z, ndim=ndim, shape=shape)
    z = z.to(_checks.work_dtype(z.device))
    return F.normalize(z, dim=-1) if normalize else z


def center_vector(z, *, normalize: bool = True) -> torch.Tensor:
    r"""The center vector :math:`s = \frac{1}{N} \sum_i z_i / \|z_i\|`: the mean normalised
    embedding over all samples (and all views).

    Parameters
    ----------
    z : Tensor, shape (n, d) or (k, n, d)
        Embeddings; with k views every view counts as a sample.
    normalize : bool
        L2-normalise each embedding first (the paper's definition).

    Returns
    -------
    Tensor, shape (d,)
        The center vector, float64, on z's device.
    """
    z = _embeddings("z", z, normalize)
    return z.reshape(-1, z.shape[-1]).mean(0)


def center_vector_norm(z, *, normalize: bool = True) -> float:
    r"""Norm of the center vector, :math:`\|s\| = \|E_x E_\omega[z]\|` (Jha et al. 2024).

    In [0, 1] for normalised embeddings: 1 under complete collapse, about
    :math:`1/\sqrt{N}` for N embeddings spread uniformly on the sphere.

    Parameters
    ----------
    z : Tensor, shape (n, d) or (k, n, d)
        Embeddings; with k views every view counts as a sample.
    normalize : bool
        L2-normalise each embedding first.

    Returns
    -------
    float
        The norm of the center vector.
    """
    return float(center_vector(z, normalize=normalize).norm())


def sample_mean_norm(views, *, normalize: bool = True, unbiased: bool = False) -> float:
    r"""Mean norm of each sample's mean embedding over its K augmentations,
    :math:`\frac{1}{N} \sum_x \|\mu_x\|` with :math:`\mu_x = \frac{1}{K} \sum_k z_k(x)`.

    Close to 1 when augmentations of a sample agree (invariance), whatever the center norm.

    The norm of the K-view average overestimates :math:`\|E_\omega z(\omega(x))\|`: its square
    is :math:`1/K + (K-1)/K` times the mean inner product of distinct views (unit embeddings),
    so views in independent random directions (:math:`\mu_x = 0`) read about
    :math:`1/\sqrt K`. With ``unbiased`` each
    sample's squared norm is estimated from the distinct pairs of its views alone,
    :math:`\frac{1}{K(K-1)} \sum_{k \ne k'} \langle z_k, z_{k'} \rangle` (unbiased for
    independent views), clamped at 0 before the square root (so it reads a little above 0
    where :math:`\mu_x = 0`).

    Parameters
    ----------
    views : Tensor, shape (k, n, d)
        K augmented views of the same N inputs (K >= 2 with ``unbiased``).
    normalize : bool
        L2-normalise each embedding first.
    unbiased : bool
        Estimate each squared norm from distinct pairs of views only.

    Returns
    -------
    float
        The mean norm.
    """
    z = _embeddings("views", views, normalize, shapes=(3,))
    if not unbiased:
        return float(z.mean(0).norm(dim=1).mean())
    if z.shape[0] < 2:
        raise ValueError(f"views needs K >= 2 views per sample for unbiased=True, got "
                         f"K = {z.shape[0]}")
    return float(_pair_products(z).clamp_min(0).sqrt().mean())


def _pair_products(z: torch.Tensor) -> torch.Tensor:
    """Per sample, the mean inner product of its K >= 2 distinct views (shape (n,))."""
    k = z.shape[0]
    # ||sum_k z_k||^2 sums over all view pairs, k = k' included: take those out.
    return (z.sum(0).pow(2).sum(1) - z.pow(2).sum((0, 2))) / (k * (k - 1))


def mean_norm_decomposition(views, *, normalize: bool = True) -> dict[str, float]:
    r"""The terms of :math:`E_x \|\mu_x\|^2 = \|s\|^2 + E_x \|\mu_x - s\|^2` on a batch of views.

    With empirical means over the K views and N samples the identity holds exactly (up to
    rounding), which the tests check.

    Parameters
    ----------
    views : Tensor, shape (k, n, d)
        K augmented views of the same N inputs.
    normalize : bool
        L2-normalise each embedding first.

    Returns
    -------
    dict of float
        ``"mean_sq_norm"`` :math:`E_x\|\mu_x\|^2`, ``"center_sq_norm"`` :math:`\|s\|^2`,
        ``"spread"`` :math:`E_x\|\mu_x - s\|^2`, and ``"view_alignment"``, the mean inner product
        between distinct views of a sample,
        :math:`E_x \frac{1}{K(K-1)} \sum_{k \ne k'} \langle z_k, z_{k'} \rangle`, which is the
        unbiased estimate of :math:`E_x \|\mu_x\|^2` under independent views (NaN when K = 1).
    """
    z = _embeddings("views", views, normalize, shapes=(3,))
    k = z.shape[0]
    mu = z.mean(0)
    s = mu.mean(0)
    if k > 1:
        alignment = float(_pair_products(z).mean())
    else:
        alignment = math.nan
    return {
        "mean_sq_norm": float(mu.pow(2).sum(1).mean()),
        "center_sq_norm": float(s.pow(2).sum()),
        "spread": float((mu - s).pow(2).sum(1).mean()),
        "view_alignment": alignment,
    }


def embedding_std(z, *, normalize: bool = True) -> float:
    r"""Mean over dimensions of the per-dimension standard deviation of the embeddings.

    The collapse monitor of SimSiam (Chen and He 2021) on normalised outputs: 0 under complete
    collapse, about :math:`1/\sqrt{d}` for embeddings spread isotropically on the sphere.
    With ``normalize=False`` it is the quantity VICReg's variance term pushes above 1.

    Parameters
    ----------
    z : Tensor, shape (n, d)
        Embeddings, n >= 2.
    normalize : bool
        L2-normalise each embedding first.

    Returns
    -------
    float
        The unbiased per-dimension standard deviation, averaged over the d dimensions.
    """
    z = _embeddings("z", z, normalize, shapes=(2,))
    if z.shape[0] < 2:
        raise ValueError(f"z needs at least 2 samples for a standard deviation, got {z.shape[0]}")
    return float(z.std(0, correction=1).mean())


def effective_rank(z, *, eps: float = 1e-7, center: bool = False) -> float:
    r"""Effective rank of an embedding matrix, RankMe (Garrido et al. 2023, "RankMe: Assessing
    the Downstream Performance of Pretrained Self-Supervised Representations by Their Rank").

    With singular values :math:`\sigma_k` of Z, :math:`p_k = \sigma_k / \|\sigma\|_1 + \epsilon`
    and :math:`\mathrm{RankMe} = \exp(-\sum_k p_k \log p_k)`. Ranges from about 1 (collapse to a
    line) to min(n, d) (equal singular values); with eps = 0 it is the effective rank of Roy and
    Vetterli (2007).

    Parameters
    ----------
    z : Tensor, shape (n, d)
        Embeddings (not normalised by this function).
    eps : float
        RankMe's smoothing constant, >= 0.
    center : bool
        Subtract the mean embedding first (RankMe does not).

    Returns
    -------
    float
        The effective rank.
    """
    z = _embeddings("z", z, False, shapes=(2,))
    eps = _checks.positive("eps", eps, allow_zero=True)
    if center:
        z = z - z.mean(0)
    s = torch.linalg.svdvals(z)
    if not s.sum() > 0:
        raise ValueError("z is zero (after centring): its effective rank is undefined")
    p = s / s.sum() + eps
    # 0 log 0 = 0 when eps = 0 and a singular value vanishes.
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))
