r"""Entropy estimators and the VICReg variants of the information-theory paper
(Shwartz-Ziv, Balestriero, Kawaguchi, Rudner & LeCun, 2023).

VICReg maximises a lower bound :math:`I(Z; Z') \ge H(Z) - \mathbb{E}\|Z - Z'\|^2/(2\sigma^2) -
\text{const}`; its variance and covariance terms stand in for the entropy :math:`H(Z)`. The
paper swaps them for explicit estimators: a log-determinant (Gaussian) one and the pairwise-
distance bounds of Kolchinsky & Tracey (2017) for the Gaussian-mixture embedding model. The
estimators here are in nats and include their constants, so they can be compared with a
ground-truth entropy. The paper does not give every constant and coefficient we need (ridge,
bandwidth, loss weights); our choices are documented where they are made.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sithlib.losses import _common as C
from sithlib.losses.distributed import gather

_KINDS = ("kl", "bhattacharyya")
_ESTIMATORS = ("logdet", "pairwise")


def _logdet_spd(m: torch.Tensor) -> torch.Tensor:
    """log det of a symmetric positive-definite matrix.

    On the CPU: Cholesky, and eigenvalues if it fails (rounding can make a ridged covariance
    numerically indefinite). Asking whether it failed reads a value back, which on a GPU would
    stall every training step, and under vmap a branch on values is an error; there the LU
    factorisation of ``slogdet`` gives the same value with no branch and no sync.
    """
    if m.device.type != "cpu" or C.transformed(m):
        return torch.linalg.slogdet(m).logabsdet
    chol, info = torch.linalg.cholesky_ex(m)
    if not bool(info.any()):
        return 2 * torch.log(torch.diagonal(chol)).sum()
    if not bool(torch.isfinite(m).all()):
        # NaN / Inf embeddings give a NaN loss, as on a GPU and in every other loss (eigvalsh
        # would raise instead); the engine then reports the failure with its step and seed.
        return torch.linalg.slogdet(m).logabsdet
    eig = torch.linalg.eigvalsh(m)
    return torch.log(eig.clamp_min(torch.finfo(m.dtype).tiny)).sum()


def _logdet_entropy(z: torch.Tensor, eps: float, distributed: bool) -> torch.Tensor:
    x = gather(z, distributed)
    n, d = x.shape
    xc = x - x.mean(0)
    if n < d:
        # Sylvester: the nonzero spectrum of xc^T xc equals that of xc xc^T; the remaining
        # d - n eigenvalues of the covariance are 0, i.e. eps after the ridge.
        gram = xc @ xc.T / (n - 1)
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        logdet = _logdet_spd(gram + eps * eye) + (d - n) * math.log(eps)
    else:
        cov = xc.T @ xc / (n - 1)
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        logdet = _logdet_spd(cov + eps * eye)
    return 0.5 * d * math.log(2 * math.pi * math.e) + 0.5 * logdet


@C.fp32
def logdet_entropy(z, *, eps: float = 1e-4, distributed: bool = False) -> torch.Tensor:
    r"""Log-determinant (Gaussian) entropy estimate of the embedding distribution.

    .. math::

        \hat H(Z) = \tfrac12 \log\det\big(2\pi e\,(\hat\Sigma_Z + \epsilon I_d)\big),

    the entropy of a Gaussian with the batch covariance :math:`\hat\Sigma_Z` (unbiased, N - 1)
    plus a ridge :math:`\epsilon`. For a fixed covariance the Gaussian has the largest entropy, so
    this is the paper's log-det surrogate for :math:`H(Z)`. Up to a constant it is the LogDet
    estimator of Zhouyin & Liu (2021), :math:`\tfrac12\log\det(I + \beta\hat\Sigma)` with
    :math:`\beta = 1/\epsilon`:
    :math:`\hat H = \tfrac12\log\det(I + \hat\Sigma/\epsilon) + \tfrac d2 \log(2\pi e\,\epsilon)`.
    The ridge keeps it finite for N <= d or collapsed embeddings. The paper does not state its
    value; ours is 1e-4 (VICReg's variance eps, our choice). For N < d it is computed from the
    N x N Gram matrix.

    Parameters
    ----------
    z : Tensor, shape (n, d)
        Embeddings, n >= 2.
    eps : float
        Ridge :math:`\epsilon > 0` added to the covariance's eigenvalues.
    distributed : bool
        Covariance of the global batch (autograd-aware gather); every process gets the same
        value.

    Returns
    -------
    entropy : Tensor
        A scalar, in nats.
    """
    z = C.tensor("z", z, min_rows=2)
    eps = C.positive("eps", eps)
    C.flag("distributed", distributed)
    return _logdet_entropy(z, eps, distributed)


def _bandwidth(sigma, d: int) -> float:
    """``sigma``, or sqrt(d) for None (see :func:`pairwise_entropy`)."""
    return math.sqrt(d) if sigma is None else C.positive("sigma", sigma)


def _pairwise_entropy(z: torch.Tensor, sigma, kind: str, distributed: bool) -> torch.Tensor:
    columns = gather(z, distributed)
    n_global, d = columns.shape
    sigma = _bandwidth(sigma, d)
    # KL and Bhattacharyya distances between N(z_i, sigma^2 I) and N(z_j, sigma^2 I).
    scale = 2 * sigma**2 if kind == "kl" else 8 * sigma**2
    dist = C.lp_distance_pow(z, columns, 2) / scale
    component = 0.5 * d * math.log(2 * math.pi * math.e * sigma**2)
    return component + math.log(n_global) - torch.logsumexp(-dist, dim=1).mean()


@C.fp32
def pairwise_entropy(
    z, *, sigma: float | None = None, kind: str = "kl", distributed: bool = False
) -> torch.Tensor:
    r"""Pairwise-distance bounds on the entropy of a Gaussian mixture (Kolchinsky & Tracey, 2017).

    The embeddings are modelled as the equal-weight mixture
    :math:`p = \frac1N \sum_j \mathcal{N}(z_j, \sigma^2 I_d)` (the paper's model of the embedding
    distribution), whose entropy is bounded by

    .. math::

        \hat H_D = \tfrac d2 \log(2\pi e\sigma^2) - \frac1N \sum_i \log \frac1N \sum_j
        e^{-D(p_i \| p_j)},

    with the KL divergence :math:`D = \|z_i - z_j\|^2 / (2\sigma^2)` (an upper bound) or the
    Bhattacharyya distance :math:`D = \|z_i - z_j\|^2 / (8\sigma^2)` (a lower bound); the sum
    runs over all j, i included. Both equal :math:`\tfrac d2 \log(2\pi e\sigma^2)` when all
    :math:`z_i` coincide, and both tend to that value plus :math:`\log N` (the entropy of a
    mixture of disjoint components) as the components separate.

    Parameters
    ----------
    z : Tensor, shape (n, d)
        Mixture means (the embeddings).
    sigma : float, optional
        Component standard deviation :math:`\sigma > 0`, the estimator's bandwidth; None (the
        default) takes :math:`\sqrt d`. The paper does not state its value. Ours follows from
        VICReg's unit-variance target: at unit variance per dimension,
        :math:`\|z_i - z_j\|^2 \approx 2d`, so :math:`\sigma^2 = d` puts the KL distances near
        1, where the bound responds to the spread. A fixed :math:`\sigma = 1` puts them near d:
        beyond a few dozen dimensions every :math:`e^{-D}` with :math:`j \ne i` underflows, the
        estimate sits at its ceiling :math:`\tfrac d2 \log(2\pi e\sigma^2) + \log N` and its
        gradient is zero. In a loss without a unit-variance target the width also sets how
        strongly the estimate spreads the embeddings against other terms:
        ``sithlib.experiments.vicreg_information.bandwidth`` ties it to the invariance weight.
    kind : {"kl", "bhattacharyya"}
        Upper (KL) or lower (Bhattacharyya) bound.
    distributed : bool
        Mixture over the global batch: local rows i, gathered columns j; the mean over
        processes is the estimate on the global batch.

    Returns
    -------
    entropy : Tensor
        A scalar, in nats.
    """
    z = C.tensor("z", z)
    _bandwidth(sigma, z.shape[1])
    C.choice("kind", kind, _KINDS)
    C.flag("distributed", distributed)
    return _pairwise_entropy(z, sigma, kind, distributed)


@C.fp32
def vicreg_entropy(
    z_a,
    z_b,
    *,
    estimator: str = "logdet",
    sim_coeff: float = 25.0,
    entropy_coeff: float = 1.0,
    eps: float = 1e-4,
    sigma: float | None = None,
    kind: str = "kl",
    distributed: bool = False,
) -> torch.Tensor:
    r"""VICReg with its variance and covariance terms replaced by an entropy estimate.

    .. math::

        L = \lambda_s \frac{1}{N d} \sum_i \|z_{a,i} - z_{b,i}\|^2
            - \lambda_H \tfrac12 \big[\hat H(z_a) + \hat H(z_b)\big],

    with :math:`\hat H` from :func:`logdet_entropy` (``estimator="logdet"``) or
    :func:`pairwise_entropy` (``estimator="pairwise"``). The invariance term is VICReg's (mean
    squared error over batch and dimensions). The paper does not state the coefficients; ours
    are VICReg's 25 for invariance and 1 for the entropy (our choice); sweep them in experiments.

    Parameters
    ----------
    z_a : Tensor, shape (n, d)
        Expander outputs of the first view.
    z_b : Tensor, shape (n, d)
        Expander outputs of the second view.
    estimator : {"logdet", "pairwise"}
        Entropy estimator.
    sim_coeff : float
        Invariance weight :math:`\lambda_s \ge 0`.
    entropy_coeff : float
        Entropy weight :math:`\lambda_H \ge 0`.
    eps : float
        Ridge of the log-det estimator.
    sigma : float, optional
        Bandwidth of the pairwise estimator (None: :math:`\sqrt d`, see
        :func:`pairwise_entropy`).
    kind : {"kl", "bhattacharyya"}
        Bound of the pairwise estimator.
    distributed : bool
        Entropy over the global batch; the invariance term stays local.

    Returns
    -------
    loss : Tensor
        A scalar.
    """
    C.choice("estimator", estimator, _ESTIMATORS)
    z_a = C.tensor("z_a", z_a, min_rows=2)
    z_b = C.tensor("z_b", z_b, min_rows=2)
    C.same_shape("z_a", z_a, "z_b", z_b)
    sim_coeff = C.nonnegative("sim_coeff", sim_coeff)
    entropy_coeff = C.nonnegative("entropy_coeff", entropy_coeff)
    eps = C.positive("eps", eps)
    _bandwidth(sigma, z_a.shape[1])
    C.choice("kind", kind, _KINDS)
    C.flag("distributed", distributed)
    z_a, z_b = C.promote(z_a, z_b)

    if estimator == "logdet":
        h_a, h_b = _logdet_entropy(z_a, eps, distributed), _logdet_entropy(z_b, eps, distributed)
    else:
        h_a = _pairwise_entropy(z_a, sigma, kind, distributed)
        h_b = _pairwise_entropy(z_b, sigma, kind, distributed)
    return sim_coeff * F.mse_loss(z_a, z_b) - entropy_coeff * 0.5 * (h_a + h_b)
