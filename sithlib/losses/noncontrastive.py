r"""Non-contrastive objectives: BYOL, SimSiam, Barlow Twins, VICReg, and the simplified
objective of the stability paper.

Predictor-based losses (BYOL, SimSiam) take one direction; the methods symmetrise them. The
redundancy-reduction losses take both views' projections, shape (n, d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sithlib.losses import _common as C
from sithlib.losses.distributed import all_reduce_sum, gather, world_size


def _prediction_pair(p, z_target):
    p = C.tensor("p", p)
    z_target = C.tensor("z_target", z_target)
    C.same_shape("p", p, "z_target", z_target)
    p, z_target = C.promote(p, z_target)
    return F.normalize(p, dim=1), F.normalize(z_target.detach(), dim=1)


@C.fp32
def byol(p, z_target) -> torch.Tensor:
    r"""BYOL's regression loss (Grill et al., 2020), one direction.

    .. math::

        L = \frac{1}{n} \sum_i \Big\| \frac{p_i}{\|p_i\|} - \frac{z'_i}{\|z'_i\|} \Big\|^2
          = \frac{1}{n} \sum_i \big(2 - 2 \cos(p_i, z'_i)\big),

    with the target :math:`z'` (the EMA network's projection of the other view) detached.
    The method sums (or averages) the two directions.

    Parameters
    ----------
    p : Tensor, shape (n, d)
        The online network's prediction for one view.
    z_target : Tensor, shape (n, d)
        The target network's projection of the other view (no gradient flows into it).

    Returns
    -------
    loss : Tensor
        A scalar in [0, 4].
    """
    p, z = _prediction_pair(p, z_target)
    return (2 - 2 * (p * z).sum(1)).mean()


@C.fp32
def simsiam(p, z_target) -> torch.Tensor:
    r"""SimSiam's negative cosine similarity with stop-gradient (Chen & He, 2021), one direction.

    .. math:: L = -\frac{1}{n} \sum_i \cos\big(p_i, \operatorname{sg}(z_i)\big).

    The official symmetric loss is :math:`\tfrac12 [L(p_1, z_2) + L(p_2, z_1)]`.

    Parameters
    ----------
    p : Tensor, shape (n, d)
        The predictor's output for one view.
    z_target : Tensor, shape (n, d)
        The projection of the other view; detached here (the stop-gradient).

    Returns
    -------
    loss : Tensor
        A scalar in [-1, 1].
    """
    p, z = _prediction_pair(p, z_target)
    return -(p * z).sum(1).mean()


_BN_EPS = 1e-5  # nn.BatchNorm1d's default, used by the official batch standardisation


@C.fp32
def barlow_twins(
    z_a, z_b, *, lambd: float = 0.0051, scale: float = 1.0, distributed: bool = False
) -> torch.Tensor:
    r"""Barlow Twins' redundancy-reduction loss (Zbontar et al., 2021).

    Each view is standardised per dimension over the batch as ``BatchNorm1d(affine=False)`` does
    in training mode (biased variance, eps 1e-5), :math:`c = \hat z_a^\top \hat z_b / N` is the
    cross-correlation matrix, and

    .. math::

        L = s \Big[ \sum_i (1 - c_{ii})^2 + \lambda \sum_{i \ne j} c_{ij}^2 \Big].

    Parameters
    ----------
    z_a : Tensor, shape (n, d)
        Projections of the first view, n >= 2.
    z_b : Tensor, shape (n, d)
        Projections of the second view.
    lambd : float
        :math:`\lambda \ge 0`, weight of the off-diagonal (redundancy) term; the official value
        is 0.0051.
    scale : float
        Overall factor :math:`s > 0` (the ``scale_loss`` of early code versions, e.g. 1/32);
        1 in the current official code.
    distributed : bool
        Standardise with the global batch statistics (as the official SyncBatchNorm does) and
        sum the cross-correlation over processes, both with autograd-aware reductions, so every
        process computes the loss of the global batch.

    Returns
    -------
    loss : Tensor
        A scalar.
    """
    z_a = C.tensor("z_a", z_a, min_rows=2)
    z_b = C.tensor("z_b", z_b, min_rows=2)
    C.same_shape("z_a", z_a, "z_b", z_b)
    lambd = C.nonnegative("lambd", lambd)
    scale = C.positive("scale", scale)
    C.flag("distributed", distributed)
    z_a, z_b = C.promote(z_a, z_b)

    n_global = z_a.shape[0] * (world_size() if distributed else 1)

    def standardise(z):
        mean = all_reduce_sum(z.sum(0), distributed) / n_global
        centred = z - mean
        var = all_reduce_sum(centred.square().sum(0), distributed) / n_global
        return centred / torch.sqrt(var + _BN_EPS)

    c = all_reduce_sum(standardise(z_a).T @ standardise(z_b), distributed) / n_global
    on_diag = (1 - torch.diagonal(c)).square().sum()
    off_diag = C.off_diagonal(c).square().sum()
    return scale * (on_diag + lambd * off_diag)


@C.fp32
def vicreg(
    z_a,
    z_b,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    distributed: bool = False,
) -> torch.Tensor:
    r"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce & LeCun, 2022).

    Exactly the official ``main_vicreg.py``: with N the (global) batch size and d the width,

    .. math::

        s = \frac{1}{N d} \sum_{i} \|z_{a,i} - z_{b,i}\|^2, \qquad
        v = \frac{1}{2d} \sum_{j} \big[\max(0, \gamma - \sigma_{a,j})
            + \max(0, \gamma - \sigma_{b,j})\big],

    .. math::

        c = \frac{1}{d} \sum_{j \ne k} \big[C(z_a)_{jk}^2 + C(z_b)_{jk}^2\big], \qquad
        L = \lambda_s s + \lambda_v v + \lambda_c c,

    where :math:`\sigma_j = \sqrt{\operatorname{Var}(z_{\cdot j}) + \epsilon}` and
    :math:`C(z)` use the unbiased (N - 1) batch variance and covariance. The /2 convention: the
    official code halves the variance term (the mean of the two views' hinges) but not the
    covariance term (the sum of the two views'); the paper's equations and solo-learn sum both
    hinge terms, so their variance term is twice ours. The paper's invariance term (its Eq. 4)
    has no 1/d, :math:`\frac1N \sum_i \|z_{a,i} - z_{b,i}\|^2`; the official code, whose
    weights 25 / 25 / 1 the defaults are, takes the mean over batch and dimensions as here.

    Parameters
    ----------
    z_a : Tensor, shape (n, d)
        Expander outputs of the first view, n >= 2.
    z_b : Tensor, shape (n, d)
        Expander outputs of the second view.
    sim_coeff : float
        Invariance weight :math:`\lambda_s \ge 0`; official 25.
    std_coeff : float
        Variance weight :math:`\lambda_v \ge 0`; official 25.
    cov_coeff : float
        Covariance weight :math:`\lambda_c \ge 0`; official 1.
    gamma : float
        Target standard deviation :math:`\gamma > 0` (1).
    eps : float
        :math:`\epsilon > 0` inside the square root (1e-4); it keeps the gradient finite at
        collapse.
    distributed : bool
        Variance and covariance from the global batch (autograd-aware gather, as the official
        ``FullGatherLayer``); the invariance term stays local, so the mean over processes is
        the loss on the global batch.

    Returns
    -------
    loss : Tensor
        A scalar.
    """
    z_a = C.tensor("z_a", z_a, min_rows=2)
    z_b = C.tensor("z_b", z_b, min_rows=2)
    C.same_shape("z_a", z_a, "z_b", z_b)
    sim_coeff = C.nonnegative("sim_coeff", sim_coeff)
    std_coeff = C.nonnegative("std_coeff", std_coeff)
    cov_coeff = C.nonnegative("cov_coeff", cov_coeff)
    gamma = C.positive("gamma", gamma)
    eps = C.positive("eps", eps)
    C.flag("distributed", distributed)
    z_a, z_b = C.promote(z_a, z_b)

    invariance = F.mse_loss(z_a, z_b)
    xa, xb = gather(z_a, distributed), gather(z_b, distributed)
    n, d = xa.shape
    xa, xb = xa - xa.mean(0), xb - xb.mean(0)
    std_a = torch.sqrt(xa.square().sum(0) / (n - 1) + eps)
    std_b = torch.sqrt(xb.square().sum(0) / (n - 1) + eps)
    variance = F.relu(gamma - std_a).mean() / 2 + F.relu(gamma - std_b).mean() / 2
    cov_a = xa.T @ xa / (n - 1)
    cov_b = xb.T @ xb / (n - 1)
    covariance = (C.off_diagonal(cov_a).square().sum() + C.off_diagonal(cov_b).square().sum()) / d
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


@C.fp32
def stability(z_a, z_b, *, lambd: float = 1.0, distributed: bool = False) -> torch.Tensor:
    r"""Simplified objective of the stability paper (Jha, Blaschko, Asano & Tuytelaars, 2024).

    With :math:`u = z/\|z\|` and the center vector :math:`\hat s` the mean of the 2N normalised
    embeddings of the batch (both views),

    .. math::

        L = -\frac{1}{n} \sum_i u_{a,i}^\top u_{b,i} + \lambda \|\hat s\|^2 .

    The first term maximises the per-sample mean embedding's norm (invariance): for independent
    views :math:`\mathbb{E}[u_a^\top u_b \mid x] = \|\mu_x\|^2`, so it is an unbiased estimate
    of :math:`-\mathbb{E}_x\|\mu_x\|^2` (not of the two-view mean's norm, which adds a
    self term). The second shrinks the center vector. Since :math:`\mathbb{E}\|\mu_x\|^2 -
    \|s\|^2 = \mathbb{E}\|\mu_x - s\|^2`, :math:`\lambda = 1` is the linearised contrastive
    objective :math:`-\mathbb{E}\|\mu_x - s\|^2`. The
    paper's exact normalisation and value of :math:`\lambda` could not be confirmed from its
    text or code; this form is our reading of the paper.

    Parameters
    ----------
    z_a : Tensor, shape (n, d)
        Embeddings of the first view (normalised here).
    z_b : Tensor, shape (n, d)
        Embeddings of the second view (normalised here).
    lambd : float
        :math:`\lambda \ge 0`, weight of the center-vector penalty.
    distributed : bool
        Center vector over the global batch (autograd-aware sum); the invariance term stays
        local.

    Returns
    -------
    loss : Tensor
        A scalar.
    """
    z_a = C.tensor("z_a", z_a)
    z_b = C.tensor("z_b", z_b)
    C.same_shape("z_a", z_a, "z_b", z_b)
    lambd = C.nonnegative("lambd", lambd)
    C.flag("distributed", distributed)
    z_a, z_b = C.promote(z_a, z_b)

    u_a, u_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    invariance = -(u_a * u_b).sum(1).mean()
    n_global = 2 * z_a.shape[0] * (world_size() if distributed else 1)
    center = all_reduce_sum(u_a.sum(0) + u_b.sum(0), distributed) / n_global
    return invariance + lambd * center.square().sum()
