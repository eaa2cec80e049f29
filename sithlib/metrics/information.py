r"""Information measurements for the VICReg view (Shwartz-Ziv et al. 2023, "An Information
Theory Perspective on Variance-Invariance-Covariance Regularization").

The argument: a ReLU network is continuous piecewise affine, so if the Gaussian augmentations of
each input stay in one linear region the embeddings form a Gaussian mixture
:math:`p(z) = \sum_i c_i N(\mu_i, \Sigma_i)`, whose entropy has no closed form. This module
measures each step:

* entropy estimators from samples: ``gaussian_entropy`` (the log-det upper bound) and
  ``logdet_entropy`` (Zhouyin and Liu 2021);
* entropy of a known Gaussian mixture: the Kolchinsky and Tracey (2017) pairwise-distance
  estimators ``mixture_entropy_pairwise`` (KL: upper bound, Bhattacharyya: lower bound) and a
  Monte-Carlo ground truth ``mixture_entropy_mc``;
* the assumptions: ``same_region_fraction`` (do augmentations stay in one linear region?) and
  ``mardia_test`` (is an embedding cloud Gaussian?).

Entropies are differential entropies in nats. These are measurements, returned as floats
without gradients; the training-time surrogates live in ``sithlib.losses``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from scipy import stats
from torch import nn

from . import _checks

_LOG_2PI = math.log(2.0 * math.pi)
_BLOCK_ELEMENTS = 1 << 22  # entries of the largest intermediate tensor per block


# --------------------------------------------------------------------------- from samples
def _samples(z, min_rows: int = 2) -> torch.Tensor:
    z = _checks.features("z", z, shape="(n, d)", min_rows=min_rows)
    return z.to(_checks.work_dtype(z.device))


def _covariance(z: torch.Tensor) -> torch.Tensor:
    zc = z - z.mean(0)
    return zc.T @ zc / (z.shape[0] - 1)


def gaussian_entropy(z) -> float:
    r"""Entropy of the Gaussian with the samples' covariance, :math:`\frac{1}{2} \log\det(2 \pi e
    \hat\Sigma)`.

    For a fixed covariance the Gaussian has maximal entropy, so this is an upper bound on the
    entropy of the distribution that produced z (up to the estimation error of
    :math:`\hat\Sigma`, the unbiased sample covariance); it is the surrogate VICReg's variance and
    covariance terms maximise (Shwartz-Ziv et al. 2023).

    Parameters
    ----------
    z : Tensor, shape (n, d)
        Samples, n >= 2.

    Returns
    -------
    float
        The entropy in nats; -inf when :math:`\hat\Sigma` is singular (e.g. n <= d or collapsed z).
    """
    z = _samples(z)
    d = z.shape[1]
    # The sign of slogdet misses singular covariances: rounding leaves a tiny positive
    # eigenvalue whose size depends on the BLAS kernel. Count as zero what is below the
    # rounding level of the largest eigenvalue, as numpy.linalg.matrix_rank does.
    eig = torch.linalg.eigvalsh(_covariance(z))
    if eig[0] <= eig[-1] * d * torch.finfo(eig.dtype).eps:
        return -math.inf
    return float(0.5 * (d * (_LOG_2PI + 1.0) + eig.log().sum()))


def logdet_entropy(z, *, beta: float = 1.0) -> float:
    r"""The LogDet entropy estimator :math:`\frac{1}{2} \log\det(I + \beta \hat\Sigma)`
    (Zhouyin and Liu 2021, "Understanding Neural Networks with Logarithm Determinant Entropy
    Estimator").

    The identity keeps it finite for singular covariances (n <= d, collapsed directions), which
    makes it usable on mini-batches; :math:`\beta` sets the scale below which a direction stops
    counting. :math:`\hat\Sigma` is the unbiased sample covariance. The training loss's
    :func:`sithlib.losses.information.logdet_entropy` is another quantity: the Gaussian entropy
    :math:`\frac12\log\det(2\pi e(\hat\Sigma + \epsilon I))`, which is this estimator with
    :math:`\beta = 1/\epsilon` plus :math:`\frac d2 \log(2\pi e\,\epsilon)`.

    Parameters
    ----------
    z : Tensor, shape (n, d)
        Samples, n >= 2.
    beta : float
        Scale of the covariance, > 0.

    Returns
    -------
    float
        The estimate, >= 0.
    """
    z = _samples(z)
    beta = _checks.positive("beta", beta)
    eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    return float(0.5 * torch.linalg.slogdet(eye + beta * _covariance(z))[1])


# --------------------------------------------------------------------------- Gaussian mixtures
@dataclass
class _Mixture:
    """A Gaussian mixture, isotropic (``var``) or full (``chol``), with log weights.

    A shared full covariance is whitened away (``offset`` = its half log-determinant): entropy
    is shift-equivariant under the linear map and the pairwise divergences are invariant.
    """

    means: torch.Tensor  # (m, d)
    log_w: torch.Tensor  # (m,)
    var: torch.Tensor | None  # (m,) isotropic variances
    chol: torch.Tensor | None  # (m, d, d) lower Cholesky factors
    offset: float

    @property
    def d(self) -> int:
        return self.means.shape[1]

    def component_entropies(self) -> torch.Tensor:
        if self.var is not None:
            return 0.5 * self.d * (_LOG_2PI + 1.0 + self.var.log())
        logdet = 2.0 * self.chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return 0.5 * (self.d * (_LOG_2PI + 1.0) + logdet)


def _mixture(means, covariances, weights) -> _Mixture:
    means = _checks.features("means", means, shape="(m, d)")
    dtype = _checks.work_dtype(means.device)
    means = means.to(dtype)
    m, d = means.shape
    cov = torch.as_tensor(covariances, dtype=dtype, device=means.device)
    if not torch.isfinite(cov).all():
        raise ValueError("covariances contains NaN or infinite values")
    if weights is None:
        log_w = torch.full((m,), -math.log(m), dtype=dtype, device=means.device)
    else:
        w = torch.as_tensor(weights, dtype=dtype, device=means.device)
        if w.shape != (m,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {m} finite non-negative numbers with a positive sum")
        log_w = (w / w.sum()).log()

    var = chol = None
    offset = 0.0
    if cov.ndim <= 1:
        var = cov.expand(m).clone() if cov.ndim == 0 else cov
        if var.shape != (m,) or (var <= 0).any():
            raise ValueError(
                f"covariances as variances must be one positive number or shape ({m},), "
                f"got shape {tuple(cov.shape)}"
            )
    elif cov.ndim == 2:
        if cov.shape != (d, d):
            raise ValueError(
                f"a shared covariance must have shape ({d}, {d}), got {tuple(cov.shape)}"
            )
        shared, info = torch.linalg.cholesky_ex(cov)
        if info != 0:
            raise ValueError("covariances must be symmetric positive definite")
        means = torch.linalg.solve_triangular(shared, means.T, upper=False).T
        var = torch.ones(m, dtype=dtype, device=means.device)
        offset = float(shared.diagonal().log().sum())
    elif cov.ndim == 3 and cov.shape == (m, d, d):
        chol, info = torch.linalg.cholesky_ex(cov)
        if (info != 0).any():
            raise ValueError("every covariances[i] must be symmetric positive definite")
    else:
        raise ValueError(
            f"covariances must be a variance, shape ({m},), ({d}, {d}) or ({m}, {d}, {d}); "
            f"got shape {tuple(cov.shape)}"
        )
    return _Mixture(means, log_w, var, chol, offset)


def _divergence_rows(mix: _Mixture, rows: slice, divergence: str) -> torch.Tensor:
    """D(p_i || p_j) for i in ``rows`` and every j: shape (len(rows), m)."""
    mu, d = mix.means, mix.d
    diff = mu[rows, None, :] - mu[None, :, :]
    if mix.var is not None:
        sq = diff.pow(2).sum(-1)
        vi, vj = mix.var[rows, None], mix.var[None, :]
        if divergence == "kl":
            return 0.5 * (d * vi / vj + sq / vj - d + d * torch.log(vj / vi))
        vbar = 0.5 * (vi + vj)
        return sq / (8.0 * vbar) + 0.5 * d * torch.log(vbar / torch.sqrt(vi * vj))
    chol = mix.chol
    logdet = 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    if divergence == "kl":
        cov_i = chol[rows] @ chol[rows].mT
        # y = L_j^{-1} (mu_i - mu_j) and L_j^{-1} L_i for every pair at once.
        y = torch.linalg.solve_triangular(chol[None], diff.unsqueeze(-1), upper=False)
        maha = y.pow(2).sum((-2, -1))
        prec = torch.cholesky_inverse(chol)
        trace = (prec[None] * cov_i[:, None]).sum((-2, -1))
        return 0.5 * (trace + maha - d + logdet[None, :] - logdet[rows, None])
    cov = chol @ chol.mT
    cbar = 0.5 * (cov[rows, None] + cov[None])
    lbar = torch.linalg.cholesky(cbar)
    y = torch.linalg.solve_triangular(lbar, diff.unsqueeze(-1), upper=False)
    logdet_bar = 2.0 * lbar.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return 0.125 * y.pow(2).sum((-2, -1)) + 0.5 * (
        logdet_bar - 0.5 * (logdet[rows, None] + logdet[None, :])
    )


def mixture_entropy_pairwise(
    means,
    covariances,
    weights=None,
    *,
    divergence: str = "kl",
) -> float:
    r"""Pairwise-distance estimate of a Gaussian mixture's entropy (Kolchinsky and Tracey 2017,
    "Estimating Mixture Entropy with Pairwise Distances").

    For :math:`p = \sum_i c_i p_i` and a divergence D between components,
    :math:`\hat H_D = \sum_i c_i H(p_i) - \sum_i c_i \log \sum_j c_j e^{-D(p_i \| p_j)}`.
    With D = KL it is an upper bound on H(p); with the Bhattacharyya distance it is a lower
    bound. Both lie between :math:`\sum_i c_i H(p_i)` and that plus the entropy of c, and both
    are exact for one component or for infinitely separated ones.

    Parameters
    ----------
    means : Tensor, shape (m, d)
        Component means.
    covariances : float or Tensor
        One variance shared by all components, shape (m,) isotropic variances per component,
        shape (d, d) one shared covariance, or shape (m, d, d) one covariance per component.
    weights : Tensor, shape (m,), optional
        Non-negative mixture weights (normalised here); uniform when None.
    divergence : {"kl", "bhattacharyya"}
        KL for the upper bound, Bhattacharyya for the lower bound.

    Returns
    -------
    float
        The estimate in nats.
    """
    _checks.choice("divergence", divergence, ("kl", "bhattacharyya"))
    mix = _mixture(means, covariances, weights)
    m, d = mix.means.shape
    per_row = m * (d * d if mix.chol is not None else d)
    block = max(1, _BLOCK_ELEMENTS // per_row)
    log_sums = []
    for s in range(0, m, block):
        rows = slice(s, min(s + block, m))
        div = _divergence_rows(mix, rows, divergence)
        log_sums.append(torch.logsumexp(mix.log_w[None, :] - div, dim=1))
    w = mix.log_w.exp()
    h = (w * mix.component_entropies()).sum() - (w * torch.cat(log_sums)).sum()
    return float(h) + mix.offset


def _log_density(mix: _Mixture, x: torch.Tensor) -> torch.Tensor:
    """log p(x) of the mixture for a batch x of shape (b, d)."""
    d = mix.d
    if mix.var is not None:
        sq = (
            x.pow(2).sum(1)[:, None] + mix.means.pow(2).sum(1)[None, :] - 2.0 * x @ mix.means.T
        ).clamp_min(0.0)
        log_n = -0.5 * (d * (_LOG_2PI + mix.var.log())[None, :] + sq / mix.var[None, :])
    else:
        diff = (x[None, :, :] - mix.means[:, None, :]).mT  # (m, d, b)
        y = torch.linalg.solve_triangular(mix.chol, diff, upper=False)
        half_logdet = mix.chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        log_n = (-0.5 * (d * _LOG_2PI + y.pow(2).sum(1)) - half_logdet[:, None]).T
    return torch.logsumexp(mix.log_w[None, :] + log_n, dim=1)


def mixture_entropy_mc(
    means,
    covariances,
    weights=None,
    *,
    n_samples: int = 100_000,
    generator: torch.Generator | None = None,
    return_stderr: bool = False,
):
    r"""Monte-Carlo entropy of a Gaussian mixture, :math:`H(p) \approx -\frac{1}{S}\sum_s \log
    p(x_s)` with :math:`x_s \sim p`: the ground truth for the entropy estimators.

    Unbiased, with standard error :math:`\mathrm{std}(\log p(x_s)) / \sqrt{S}`.

    Parameters
    ----------
    means : Tensor, shape (m, d)
        Component means.
    covariances : float or Tensor
        As in ``mixture_entropy_pairwise``.
    weights : Tensor, shape (m,), optional
        Mixture weights; uniform when None.
    n_samples : int
        Number of Monte-Carlo samples S, >= 2.
    generator : torch.Generator, optional
        Source of the samples (on its own device); the same seed gives the same estimate.
    return_stderr : bool
        Also return the standard error.

    Returns
    -------
    entropy : float
        The estimate in nats.
    stderr : float
        Its Monte-Carlo standard error; returned (as the second item of a tuple) only when
        ``return_stderr``.
    """
    n_samples = _checks.integer("n_samples", n_samples, low=2)
    _checks.generator_or_none("generator", generator)
    mix = _mixture(means, covariances, weights)
    m, d = mix.means.shape
    device, dtype = mix.means.device, mix.means.dtype
    draw_device = generator.device if generator is not None else device
    # All draws first, so the estimate does not depend on the evaluation batch size.
    comp = torch.multinomial(
        mix.log_w.exp().to(draw_device), n_samples, replacement=True, generator=generator
    ).to(device)
    eps = torch.randn(n_samples, d, generator=generator, device=draw_device, dtype=dtype)
    eps = eps.to(device)
    # Per sample: m x d for the densities, d x d for a full covariance's Cholesky factor.
    block = max(1, _BLOCK_ELEMENTS // (d * max(m, d)))
    log_p = []
    for s in range(0, n_samples, block):
        c, e = comp[s : s + block], eps[s : s + block]
        if mix.var is not None:
            x = mix.means[c] + mix.var[c].sqrt()[:, None] * e
        else:
            x = mix.means[c] + (mix.chol[c] @ e.unsqueeze(-1)).squeeze(-1)
        log_p.append(_log_density(mix, x))
    log_p = torch.cat(log_p)
    h = float(-log_p.mean()) + mix.offset
    if return_stderr:
        return h, float(log_p.std() / math.sqrt(n_samples))
    return h


# --------------------------------------------------------------------------- assumptions
_KINKED = (nn.ReLU, nn.LeakyReLU, nn.PReLU)


def _inputs(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must have a leading sample axis with at least one sample")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x.detach()


@contextlib.contextmanager
def eval_mode(net: nn.Module):
    """``net`` in eval mode (BatchNorm statistics fixed), its mode restored afterwards."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def activation_pattern(net: nn.Module, x, *, batch_size: int = 1024) -> torch.Tensor:
    r"""The linear region of each input: the signs of the inputs of every ReLU-type unit.

    A network built from affine layers and ReLU, LeakyReLU or PReLU modules is affine on each
    set of inputs that share this pattern (Balestriero and Baraniuk 2018). The network runs in
    eval mode (restored afterwards), so BatchNorm uses its running statistics and the pattern of
    an input does not depend on the rest of the batch. Kinks reached through functional calls
    (``torch.relu``) or max-pooling are not seen.

    Parameters
    ----------
    net : torch.nn.Module
        The network; its ReLU-type nn modules are hooked in call order.
    x : Tensor, shape (n, ...)
        Inputs, on the network's device.
    batch_size : int
        Inputs per forward pass.

    Returns
    -------
    Tensor, shape (n, u), bool
        True where a unit's input is > 0, u units in total.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    x = _inputs("x", x)
    batch_size = _checks.integer("batch_size", batch_size, low=1)
    kinked = [mod for mod in net.modules() if isinstance(mod, _KINKED)]
    if not kinked:
        raise ValueError("net has no nn.ReLU, nn.LeakyReLU or nn.PReLU module: no linear regions")
    record: list[torch.Tensor] = []
    # A pre-hook sees the input before an in-place activation overwrites it.
    hooks = [
        mod.register_forward_pre_hook(lambda _m, inp: record.append(inp[0].flatten(1) > 0))
        for mod in kinked
    ]
    patterns = []
    try:
        with eval_mode(net), torch.no_grad():
            for s in range(0, x.shape[0], batch_size):
                record.clear()
                net(x[s : s + batch_size])
                patterns.append(torch.cat(record, dim=1))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(patterns)


def same_region_fraction(net: nn.Module, x, x_perturbed, *, batch_size: int = 1024) -> float:
    r"""Fraction of perturbed inputs that stay in the linear region of their clean input.

    The assumption behind the Gaussian-mixture view of VICReg (Shwartz-Ziv et al. 2023): if
    :math:`x' = x + \epsilon` shares the activation pattern of x, then
    :math:`f(x') = A_\omega x' + b_\omega` and Gaussian noise stays Gaussian after the network.

    Parameters
    ----------
    net : torch.nn.Module
        A ReLU-type network (see ``activation_pattern``).
    x : Tensor, shape (n, ...)
        Clean inputs.
    x_perturbed : Tensor, shape (k, n, ...) or (n, ...)
        K perturbed versions of each input (e.g. ``x + sigma * noise``).
    batch_size : int
        Inputs per forward pass.

    Returns
    -------
    float
        The fraction over all K x n perturbed inputs, in [0, 1].
    """
    x = _inputs("x", x)
    x_perturbed = _inputs("x_perturbed", x_perturbed)
    if x_perturbed.shape == x.shape:
        x_perturbed = x_perturbed.unsqueeze(0)
    if x_perturbed.ndim != x.ndim + 1 or x_perturbed.shape[1:] != x.shape:
        raise ValueError(
            f"x_perturbed must have shape (k, *x.shape) = (k, {', '.join(map(str, x.shape))}) or "
            f"x's shape, got {tuple(x_perturbed.shape)}"
        )
    ref = activation_pattern(net, x, batch_size=batch_size)
    same = 0
    for view in x_perturbed:
        same += int((activation_pattern(net, view, batch_size=batch_size) == ref).all(1).sum())
    return same / (x_perturbed.shape[0] * x.shape[0])


def _cube_sum(w: torch.Tensor, batch_size: int) -> float:
    r""":math:`\sum_{ij} \langle w_i, w_j\rangle^3`, the numerator of Mardia's skewness.

    Expanding the cube, it equals :math:`\sum_{abc} T_{abc}^2` with the third-moment tensor
    :math:`T_{abc} = \sum_i w_{ia} w_{ib} w_{ic}`: O(n d^3) work instead of the n x n sum's
    O(n^2 d), so the tensor is used whenever d^2 <= n (it is also a sum of squares, free of the
    cancellation between cubes of either sign)."""
    n, d = w.shape
    if d * d > n:
        return sum(float((w[s : s + batch_size] @ w.T).pow(3).sum())
                   for s in range(0, n, batch_size))
    rows = max(1, (1 << 22) // (d * d))  # keeps each block's n_b x d^2 outer products small
    t = torch.zeros(d * d, d, dtype=w.dtype, device=w.device)
    for s in range(0, n, rows):
        block = w[s : s + rows]
        t += (block[:, :, None] * block[:, None, :]).reshape(len(block), d * d).T @ block
    return float(t.pow(2).sum())


def mardia_test(z, *, batch_size: int = 4096) -> dict[str, float]:
    r"""Mardia's (1970) multivariate skewness and kurtosis tests of normality.

    With :math:`m_{ij} = (z_i - \bar z)^\top S^{-1} (z_j - \bar z)` and S the maximum-likelihood
    covariance: skewness :math:`b_1 = \frac{1}{n^2}\sum_{ij} m_{ij}^3`, with
    :math:`n b_1 / 6 \sim \chi^2_{d(d+1)(d+2)/6}` under normality; kurtosis
    :math:`b_2 = \frac{1}{n}\sum_i m_{ii}^2`, with
    :math:`(b_2 - d(d+2)) / \sqrt{8 d (d+2) / n} \sim N(0, 1)`. Both asymptotic; small p-values
    reject normality. The n x n sum runs in row blocks (or, for d^2 <= n, through the
    third-moment tensor, which gives the same sum in O(n d^3)).

    Parameters
    ----------
    z : Tensor, shape (n, d)
        Samples, n > d (S must be invertible).
    batch_size : int
        Rows per block.

    Returns
    -------
    dict of float
        ``"skewness"`` (:math:`b_1`), ``"skewness_statistic"``, ``"skewness_pvalue"``,
        ``"kurtosis"`` (:math:`b_2`), ``"kurtosis_statistic"`` and ``"kurtosis_pvalue"``
        (two-sided).
    """
    z = _samples(z, min_rows=3)
    batch_size = _checks.integer("batch_size", batch_size, low=1)
    n, d = z.shape
    if n <= d:
        raise ValueError(f"z needs more samples than dimensions (n > d), got n = {n}, d = {d}")
    zc = z - z.mean(0)
    cov = zc.T @ zc / n
    chol, info = torch.linalg.cholesky_ex(cov)
    # Rounding often leaves a collinear column a tiny pivot instead of failing Cholesky.
    # L_jj^2 / S_jj is the share of column j's variance that the columns before it leave
    # unexplained (scale-free); exact collinearity leaves rounding, up to ~1e-11 in float64,
    # so below sqrt(eps) the column is taken as collinear.
    collinear = math.sqrt(torch.finfo(cov.dtype).eps)
    if info != 0 or bool((chol.diagonal().square() / cov.diagonal()).min() < collinear):
        raise ValueError(
            "the covariance of z is singular (a column of z is, to rounding, a linear "
            "combination of the others): Mardia's statistics are undefined"
        )
    w = torch.linalg.solve_triangular(chol, zc.T, upper=False).T  # m_ij = <w_i, w_j>
    b1 = _cube_sum(w, batch_size) / n**2
    b2 = float(w.pow(2).sum(1).pow(2).mean())
    skew_stat = n * b1 / 6.0
    kurt_stat = (b2 - d * (d + 2)) / math.sqrt(8.0 * d * (d + 2) / n)
    return {
        "skewness": b1,
        "skewness_statistic": skew_stat,
        "skewness_pvalue": float(stats.chi2.sf(skew_stat, d * (d + 1) * (d + 2) / 6)),
        "kurtosis": b2,
        "kurtosis_statistic": kurt_stat,
        "kurtosis_pvalue": float(2.0 * stats.norm.sf(abs(kurt_stat))),
    }
