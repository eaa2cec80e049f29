r"""Contrastive objectives: SimCLR's NT-Xent, the InfoNCE of the identifiability theory, and
Wang & Isola's alignment and uniformity.

Shapes: ``z_a`` and ``z_b`` are (n, d), row i of each being the two views of sample i. All
log-partition functions go through ``logsumexp``; nothing is exponentiated and then logged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sithlib.losses import _common as C
from sithlib.losses.distributed import gather, offset


@C.fp32
def nt_xent(z_a, z_b, *, temperature: float = 0.1, distributed: bool = False) -> torch.Tensor:
    r"""NT-Xent, the normalised-temperature cross-entropy of SimCLR (Chen et al., 2020).

    The 2n views are L2-normalised, :math:`s_{ij} = u_i^\top u_j`, and every view i is
    classified against its positive p(i), with the 2n - 2 views of the other samples as
    negatives (2n - 1 candidates):

    .. math::

        \ell_i = -\log \frac{\exp(s_{i,p(i)}/\tau)}{\sum_{k \ne i} \exp(s_{ik}/\tau)},
        \qquad L = \frac{1}{2n} \sum_{i=1}^{2n} \ell_i .

    The loss is symmetric in the two views. The official TensorFlow code returns the sum of the
    two directions' means, which is 2L; we return the paper's mean.

    Parameters
    ----------
    z_a : Tensor, shape (n, d)
        Projections of the first view, n >= 2 (not necessarily normalised).
    z_b : Tensor, shape (n, d)
        Projections of the second view.
    temperature : float
        :math:`\tau > 0`; 0.1 is SimCLR's ImageNet default (0.5 in its CIFAR-10 example).
    distributed : bool
        Take the negatives from every process (autograd-aware gather); the loss of each process
        is the mean over its own 2n views, so the mean over processes is the loss on the global
        batch.

    Returns
    -------
    loss : Tensor
        A scalar (float32, or float64 for float64 inputs).
    """
    z_a = C.tensor("z_a", z_a, min_rows=2)
    z_b = C.tensor("z_b", z_b, min_rows=2)
    C.same_shape("z_a", z_a, "z_b", z_b)
    tau = C.positive("temperature", temperature)
    C.flag("distributed", distributed)
    z_a, z_b = C.promote(z_a, z_b)

    a, b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    n = a.shape[0]
    views = torch.cat([a, b])
    candidates = torch.cat([gather(a, distributed), gather(b, distributed)])
    n_global = candidates.shape[0] // 2
    # 1/tau scales the 2n x d views, not the 2n x 2N logits: one pass over the big matrix less.
    logits = (views / tau) @ candidates.T  # (2n, 2N)

    first = offset(n, distributed)
    pos_col = torch.cat([torch.arange(n, device=a.device) + first + n_global,
                         torch.arange(n, device=a.device) + first])
    rows = torch.arange(2 * n, device=a.device)
    pos = logits[rows, pos_col]
    # A view's similarity to itself, (i, first + i) in both halves, is not a candidate. Filled in
    # place on two diagonals: a boolean mask would cost two more passes over the logits (the
    # matmul's backward does not need its output, so autograd allows it).
    logits[:n].diagonal(first).fill_(-math.inf)
    logits[n:].diagonal(first + n_global).fill_(-math.inf)
    return (torch.logsumexp(logits, dim=1) - pos).mean()


_SIMILARITIES = ("dot", "lp")
_POOLS = ("positives", "anchors")


@C.fp32
def info_nce(
    z_a,
    z_b,
    *,
    temperature: float = 1.0,
    similarity: str = "dot",
    p: float = 2.0,
    negatives=None,
    include_anchor: bool = False,
    distributed: bool = False,
) -> torch.Tensor:
    r"""InfoNCE in the form of the identifiability theory (Zimmermann et al., 2021).

    For anchor :math:`a_i` (row i of ``z_a``), positive :math:`b_i` (row i of ``z_b``) and
    negative set :math:`\mathcal{N}_i`,

    .. math::

        L = \frac{1}{n} \sum_{i=1}^{n} -\log
            \frac{e^{\phi(a_i, b_i)/\tau}}
                 {e^{\phi(a_i, b_i)/\tau} + \sum_{c \in \mathcal{N}_i} e^{\phi(a_i, c)/\tau}},

    with :math:`\phi(u, v) = u^\top v` (``similarity="dot"``, the hypersphere / vMF case) or
    :math:`\phi(u, v) = -\|u - v\|_p^p` (``similarity="lp"``, the convex-body / Lp case). The
    embeddings are used as given: normalise them (as the sphere experiments' encoder does) before
    calling if the theory asks for it. Matching the data's vMF conditional needs
    :math:`\tau = 1/\kappa`.

    The negative set of row i, exactly:

    * ``negatives=None`` or ``"positives"`` (default): the other positives,
      :math:`\mathcal{N}_i = \{b_k : k \ne i\}`; the denominator is the softmax over
      :math:`\{b_k\}_{k=1}^n`, the usual one-directional InfoNCE.
    * ``negatives="anchors"``: the other anchors, :math:`\{a_k : k \ne i\}`.
    * a tensor of shape (m, d): the same m negatives for every row (for instance encodings of
      independent draws from the marginal, as in the theorem).
    * ``include_anchor=True`` (batch pools only) keeps the entry k = i as a negative. With
      ``negatives="anchors"`` this is the cl-ica code (``main_mlp.py``, ``SimCLRLoss`` and
      ``LpSimCLRLoss`` in ``simclr_compatibility_mode``): every row's log-sum-exp runs over all
      n anchors, the anchor's own similarity (:math:`\|a_i\|^2`, or distance 0) included, plus
      the positive. That is ``info_nce(z_a, z_b, negatives="anchors", include_anchor=True)``
      with the anchors normalised for the dot-product (sphere) case.

    Parameters
    ----------
    z_a : Tensor, shape (n, d)
        Anchors :math:`f(x)`.
    z_b : Tensor, shape (n, d)
        Positives :math:`f(\tilde x)`.
    temperature : float
        :math:`\tau > 0`; the cl-ica default is 1.
    similarity : {"dot", "lp"}
        Dot product or negative p-th power of the Lp distance.
    p : float
        Exponent of the Lp distance (> 0), used when ``similarity="lp"``; cl-ica's default is 2.
    negatives : None, "positives", "anchors" or Tensor of shape (m, d)
        The negative pool, see above.
    include_anchor : bool
        Keep the pool entry with the anchor's own index (batch pools only).
    distributed : bool
        Gather the pool (or the given negatives) from every process with gradients; the
        excluded entry sits at this process's offset in the gathered batch. The mean over
        processes is then the loss on the global batch with the global pool.

    Returns
    -------
    loss : Tensor
        A scalar, the mean over the n anchors.
    """
    z_a = C.tensor("z_a", z_a)
    z_b = C.tensor("z_b", z_b)
    C.same_shape("z_a", z_a, "z_b", z_b)
    tau = C.positive("temperature", temperature)
    C.choice("similarity", similarity, _SIMILARITIES)
    if similarity == "lp":
        p = C.positive("p", p)
    C.flag("include_anchor", include_anchor)
    C.flag("distributed", distributed)

    if negatives is None or isinstance(negatives, str):
        pool_name = C.choice("negatives", "positives" if negatives is None else negatives, _POOLS)
        z_a, z_b = C.promote(z_a, z_b)
        pool = z_b if pool_name == "positives" else z_a
        batch_pool = True
    else:
        if not isinstance(negatives, torch.Tensor):
            raise TypeError(f"negatives must be None, one of {', '.join(map(repr, _POOLS))} or a "
                            f"torch.Tensor of shape (m, d), got {type(negatives).__name__}")
        negatives = C.tensor("negatives", negatives, shape="(m, d)")
        if negatives.shape[1] != z_a.shape[1] or negatives.device != z_a.device:
            raise ValueError(
                f"negatives must have shape (m, {z_a.shape[1]}) on {z_a.device} like z_a, got "
                f"shape {tuple(negatives.shape)} on {negatives.device}"
            )
        if include_anchor:
            raise ValueError(
                "include_anchor=True only applies to the batch pools (negatives=None, "
                "'positives' or 'anchors'); a given negatives tensor is used in full"
            )
        z_a, z_b, pool = C.promote(z_a, z_b, negatives)
        batch_pool = False

    n = z_a.shape[0]
    pool = gather(pool, distributed)
    excluded = batch_pool and not include_anchor
    if pool.shape[0] - int(excluded) < 1:
        raise ValueError(
            "every anchor needs at least one negative: use n >= 2, include_anchor=True or a "
            "negatives tensor"
        )

    # The (n, m) similarities are the big tensor (m = 6144 in cl-ica): every pass over them
    # counts, so 1/tau scales the (n, d) anchors, the own entry is filled in place and the
    # positive joins the log-sum-exp through logaddexp instead of a concatenated copy.
    if similarity == "dot":
        z_a = z_a / tau  # the pool keeps the unscaled anchors (negatives="anchors")
        pos = (z_a * z_b).sum(1)
        neg = z_a @ pool.T
    else:
        pos = C.lp_rowwise_pow(z_a, z_b, p) / -tau
        neg = C.lp_distance_pow(z_a, pool, p) / -tau
    if excluded:
        # In place: neither the matmul's nor the division's backward needs its output.
        neg.diagonal(offset(n, distributed)).fill_(-math.inf)
    return (torch.logaddexp(pos, torch.logsumexp(neg, dim=1)) - pos).mean()


@C.fp32
def alignment(z_a, z_b, *, alpha: float = 2) -> torch.Tensor:
    r"""Alignment loss of Wang & Isola (2020): :math:`\mathbb{E}\,\|z_a - z_b\|_2^\alpha`.

    Wang & Isola apply it to L2-normalised features; this function uses its inputs as given.

    Parameters
    ----------
    z_a : Tensor, shape (n, d)
        Features of the first member of each positive pair.
    z_b : Tensor, shape (n, d)
        Features of the second member.
    alpha : float
        Exponent :math:`\alpha > 0` (paper default 2).

    Returns
    -------
    loss : Tensor
        A scalar, the mean over the n pairs.
    """
    z_a = C.tensor("z_a", z_a)
    z_b = C.tensor("z_b", z_b)
    C.same_shape("z_a", z_a, "z_b", z_b)
    alpha = C.positive("alpha", alpha)
    z_a, z_b = C.promote(z_a, z_b)
    sq = (z_a - z_b).square().sum(1)
    if alpha == 2:
        return sq.mean()
    # ||.||^alpha = (||.||^2)^(alpha/2), kept out of the graph at coincident pairs, where the
    # derivative is infinite for alpha < 1 (the where alone would turn 0 * inf into NaN).
    nonzero = sq > 0
    safe = torch.where(nonzero, sq, torch.ones_like(sq))
    return torch.where(nonzero, safe.pow(alpha / 2), torch.zeros_like(sq)).mean()


@C.fp32
def uniformity(z, *, t: float = 2) -> torch.Tensor:
    r"""Uniformity loss of Wang & Isola (2020), the log of the mean Gaussian potential.

    .. math::

        L = \log \frac{2}{n(n-1)} \sum_{i<j} e^{-t \|z_i - z_j\|_2^2},

    computed as a ``logsumexp`` (the reference code's ``exp().mean().log()`` underflows for
    spread-out features and large t).

    Parameters
    ----------
    z : Tensor, shape (n, d)
        Features, n >= 2; the paper uses L2-normalised ones.
    t : float
        :math:`t > 0` (paper default 2).

    Returns
    -------
    loss : Tensor
        A scalar.
    """
    z = C.tensor("z", z, min_rows=2)
    t = C.positive("t", t)
    n = z.shape[0]
    i, j = torch.triu_indices(n, n, offset=1, device=z.device)
    sq = C.lp_distance_pow(z, z, 2)[i, j]
    return torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel())
