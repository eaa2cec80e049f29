r"""Representational similarity: how alike two representations of the same n inputs are.

Two families, both comparing the kernels :math:`K_{ij} = k(a_i, a_j)` and
:math:`L_{ij} = k(b_i, b_j)` that the representations induce (Huh et al. 2024, "The Platonic
Representation Hypothesis"):

* centred kernel alignment, ``cka_linear`` and ``cka_rbf`` (Kornblith et al. 2019), from the
  biased or the unbiased HSIC estimator (Song et al. 2012);
* neighbourhood agreement, ``mutual_knn``, ``cycle_knn`` and ``cknna``, with the Platonic
  paper's conventions: inner-product neighbours, each sample excluded from its own
  neighbourhood, optional clamping of outlying values and L2 normalisation of the rows.

Neighbours are ranked with a stable sort, so a tie is broken towards the lower sample index and
the result is deterministic. Arithmetic is float64 on the inputs' device; the kNN metrics work
in row blocks of ``batch_size`` so that no n x n matrix is held for large n.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _checks


# --------------------------------------------------------------------------- helpers
def _pair(a, b, names=("a", "b"), min_rows=2):
    a = _checks.features(names[0], a, shape=f"(n, d_{names[0]})", min_rows=min_rows)
    b = _checks.features(names[1], b, shape=f"(n, d_{names[1]})", min_rows=min_rows)
    _checks.same_rows(**{names[0]: a, names[1]: b})
    dtype = _checks.work_dtype(a.device)
    return a.to(dtype), b.to(dtype)


def _median(v: torch.Tensor) -> torch.Tensor:
    """The median of a 1-D tensor, averaging the two middle values (as numpy.median)."""
    m = v.numel()
    lo = torch.kthvalue(v, (m + 1) // 2).values
    hi = torch.kthvalue(v, m // 2 + 1).values
    return (lo + hi) / 2


def _sq_dists(x: torch.Tensor) -> torch.Tensor:
    sq = x.pow(2).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_min_(0.0)


def _hsic_gram(k: torch.Tensor, l: torch.Tensor, unbiased: bool) -> torch.Tensor:
    r"""HSIC of two n x n kernel matrices (not necessarily symmetric).

    Biased: :math:`\mathrm{tr}(K H L H) / (n-1)^2` with :math:`H = I - \frac{1}{n} 1 1^\top`.
    Unbiased (Song et al. 2012, eq. 5), with :math:`\tilde K, \tilde L` the kernels with zero
    diagonal: :math:`[\mathrm{tr}(\tilde K \tilde L) + \frac{1^\top \tilde K 1\, 1^\top \tilde L 1}
    {(n-1)(n-2)} - \frac{2}{n-2} 1^\top \tilde K \tilde L 1] / (n(n-3))`.
    """
    n = k.shape[0]
    if unbiased:
        k = k.clone().fill_diagonal_(0.0)
        l = l.clone().fill_diagonal_(0.0)
        trace = (k * l.T).sum()
        sums = k.sum() * l.sum() / ((n - 1) * (n - 2))
        cross = 2.0 * (k.sum(0) @ l.sum(1)) / (n - 2)
        return (trace + sums - cross) / (n * (n - 3))
    kc = k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()
    return (kc * l.T).sum() / (n - 1) ** 2


def _hsic_linear(x: torch.Tensor, y: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """``_hsic_gram(x x^T, y y^T)`` in O(n d^2) from the features, never forming n x n."""
    n = x.shape[0]
    cross = (x.T @ y).pow(2).sum()  # tr(K L) for K = x x^T, L = y y^T
    if not unbiased:
        # x, y are centred, so K and L already equal H K H and H L H.
        return cross / (n - 1) ** 2
    kd, ld = x.pow(2).sum(1), y.pow(2).sum(1)
    k1 = x @ x.sum(0) - kd  # (K - diag K) 1
    l1 = y @ y.sum(0) - ld
    trace = cross - (kd * ld).sum()
    sums = k1.sum() * l1.sum() / ((n - 1) * (n - 2))
    return (trace + sums - 2.0 * (k1 @ l1) / (n - 2)) / (n * (n - 3))


def _cka_from(hsic_xy, hsic_xx, hsic_yy) -> float:
    denom = hsic_xx * hsic_yy
    # The unbiased estimates of the self-HSICs can be <= 0 for tiny n: CKA is then undefined.
    return float(hsic_xy / denom.sqrt()) if denom > 0 else math.nan


def _not_constant(name: str, x: torch.Tensor) -> None:
    if not (x - x[:1]).abs().amax() > 0:
        raise ValueError(f"{name} is constant over the samples: CKA is undefined")


# --------------------------------------------------------------------------- CKA
def cka_linear(x, y, *, unbiased: bool = False) -> float:
    r"""Linear centred kernel alignment (Kornblith et al. 2019, "Similarity of Neural Network
    Representations Revisited").

    :math:`\mathrm{CKA}(K, L) = \mathrm{HSIC}(K, L) / \sqrt{\mathrm{HSIC}(K, K)\,
    \mathrm{HSIC}(L, L)}` with :math:`K = X X^\top, L = Y Y^\top` on column-centred features;
    the biased form equals :math:`\|Y^\top X\|_F^2 / (\|X^\top X\|_F \|Y^\top Y\|_F)`. It is
    invariant to orthogonal transforms and isotropic scaling of either input, not to general
    invertible linear maps. Computed from features in :math:`O(n d^2)` when n >= d_x + d_y, from
    the n x n Gram matrices otherwise.

    Parameters
    ----------
    x : Tensor, shape (n, d_x)
        First representation.
    y : Tensor, shape (n, d_y)
        Second representation of the same n inputs.
    unbiased : bool
        Use the unbiased HSIC estimator of Song et al. (2012) (needs n >= 4), which removes the
        bias of CKA towards 1 when n is small relative to d.

    Returns
    -------
    float
        The CKA, in [0, 1] (biased); the unbiased value can be slightly negative, and is NaN if an
        unbiased self-HSIC is <= 0.
    """
    x, y = _pair(x, y, ("x", "y"), min_rows=4 if unbiased else 2)
    _not_constant("x", x)
    _not_constant("y", y)
    x, y = x - x.mean(0), y - y.mean(0)
    if x.shape[0] >= x.shape[1] + y.shape[1]:
        hsic = lambda a, b: _hsic_linear(a, b, unbiased)  # noqa: E731
        return _cka_from(hsic(x, y), hsic(x, x), hsic(y, y))
    k, l = x @ x.T, y @ y.T
    return _cka_from(
        _hsic_gram(k, l, unbiased), _hsic_gram(k, k, unbiased), _hsic_gram(l, l, unbiased)
    )


def cka_rbf(x, y, *, sigma: float | None = None, unbiased: bool = False) -> float:
    r"""RBF-kernel centred kernel alignment (Kornblith et al. 2019).

    Kernels :math:`K_{ij} = \exp(-\|x_i - x_j\|^2 / (2\sigma^2))` (and likewise L), combined as in
    ``cka_linear``. Memory and time are O(n^2).

    Parameters
    ----------
    x : Tensor, shape (n, d_x)
        First representation.
    y : Tensor, shape (n, d_y)
        Second representation of the same n inputs.
    sigma : float, optional
        Kernel width for both inputs. None uses the median heuristic separately for each input,
        :math:`\sigma^2` = the median squared distance between distinct samples, which keeps
        CKA invariant to isotropic scaling.
    unbiased : bool
        Use the unbiased HSIC estimator (needs n >= 4).

    Returns
    -------
    float
        The CKA; NaN if an unbiased self-HSIC is <= 0.
    """
    x, y = _pair(x, y, ("x", "y"), min_rows=4 if unbiased else 2)
    _not_constant("x", x)
    _not_constant("y", y)
    if sigma is not None:
        sigma = _checks.positive("sigma", sigma)

    def kernel(v):
        d2 = _sq_dists(v)
        if sigma is None:
            i, j = torch.triu_indices(len(v), len(v), offset=1, device=v.device)
            width2 = _median(d2[i, j])
        else:
            width2 = torch.tensor(sigma**2, dtype=v.dtype, device=v.device)
        return torch.exp(-d2 / (2.0 * width2))

    k, l = kernel(x), kernel(y)
    return _cka_from(
        _hsic_gram(k, l, unbiased), _hsic_gram(k, k, unbiased), _hsic_gram(l, l, unbiased)
    )


# --------------------------------------------------------------------------- kNN family
def _prepare(x: torch.Tensor, normalize: bool, clamp_quantile: float | None) -> torch.Tensor:
    """The Platonic preprocessing: clamp magnitudes at their q-quantile, L2-normalise rows."""
    if clamp_quantile is not None:
        flat = x.abs().flatten()
        # The exact order statistic (as platonic-rep's exact mode), one threshold per tensor.
        rank = min(int(clamp_quantile * flat.numel()), flat.numel() - 1)
        t = torch.kthvalue(flat, rank + 1).values
        x = x.clamp(-t, t)
    if normalize:
        x = F.normalize(x, dim=1)
    return x


def _check_knn_options(normalize, clamp_quantile, batch_size) -> int:
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
    if clamp_quantile is not None:
        if isinstance(clamp_quantile, bool) or not isinstance(clamp_quantile, (int, float)):
            raise TypeError("clamp_quantile must be None or a float in (0, 1]")
        if not 0.0 < clamp_quantile <= 1.0:
            raise ValueError(f"clamp_quantile must be in (0, 1] (e.g. 0.95), got {clamp_quantile}")
    return _checks.integer("batch_size", batch_size, low=1)


def _sorted_neighbours(x: torch.Tensor, k: int, batch_size: int, select=None) -> torch.Tensor:
    """Indices (n, k) of each row's k largest inner products, self excluded, ties to low index;
    ``select(sim, k)`` picks them from a block of similarities (default ``_top_k``)."""
    select = select or _top_k
    n = x.shape[0]
    out = torch.empty(n, k, dtype=torch.long, device=x.device)
    # Equal rows (a collapsed representation) must get bitwise-equal similarities, or the tie
    # rule never applies: a BLAS kernel may round one dot product differently at different
    # places of its output (blocking edges, memory alignment). So each block computes every
    # pair of distinct rows once and spreads it to the copies.
    distinct, cls = torch.unique(x, dim=0, return_inverse=True)
    repeated = distinct.shape[0] < n
    for s in range(0, n, batch_size):
        if repeated:
            block, local = torch.unique(cls[s : s + batch_size], return_inverse=True)
            sim = (distinct[block] @ distinct.T)[local][:, cls]
        else:
            sim = x[s : s + batch_size] @ x.T
        rows = torch.arange(sim.shape[0], device=x.device)
        sim[rows, rows + s] = -math.inf
        out[s : s + batch_size] = select(sim, k)
    return out


def _top_k(sim: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices (m, k) of each row's k largest values, largest first, ties to the lower
    index: the first k of a stable descending sort, in O(n) per row instead of O(n log n).

    ``torch.topk`` alone breaks ties arbitrarily, which would make neighbour sets (and so the
    scores) depend on the backend; the k-th largest value is all we take from it.
    """
    kth = torch.topk(sim, k, dim=1).values[:, -1:]
    hit = (sim >= kth).nonzero()  # at least k per row, in index order
    m = sim.shape[0]
    if hit.shape[0] == m * k:  # no row has a tie across its k-th value: the usual case
        idx = hit[:, 1].view(m, k)
    else:  # the few rows with such ties take the stable sort
        idx = torch.empty(m, k, dtype=torch.long, device=sim.device)
        count = torch.bincount(hit[:, 0], minlength=m)
        exact = count == k
        idx[exact] = hit[exact[hit[:, 0]], 1].view(-1, k)
        tied = sim[~exact]
        idx[~exact] = torch.sort(tied, dim=1, descending=True, stable=True).indices[:, :k]
    order = torch.sort(sim.gather(1, idx), dim=1, descending=True, stable=True).indices
    return idx.gather(1, order)


def _knn_inputs(a, b, k, normalize, clamp_quantile, batch_size):
    a, b = _pair(a, b)
    n = a.shape[0]
    k = _checks.integer("k", k, low=1, high=n - 1)
    batch_size = _check_knn_options(normalize, clamp_quantile, batch_size)
    a = _prepare(a, normalize, clamp_quantile)
    b = _prepare(b, normalize, clamp_quantile)
    return a, b, k, batch_size


def mutual_knn(
    a,
    b,
    *,
    k: int = 10,
    normalize: bool = True,
    clamp_quantile: float | None = None,
    batch_size: int = 4096,
) -> float:
    r"""Mutual k-nearest-neighbour alignment (Huh et al. 2024, "The Platonic Representation
    Hypothesis").

    With :math:`N_A(i)` the k samples with the largest inner products :math:`\langle a_i, a_j
    \rangle`, :math:`j \ne i` (likewise :math:`N_B(i)`), the score is
    :math:`\frac{1}{n} \sum_i |N_A(i) \cap N_B(i)| / k`. It is 1 for identical neighbourhoods,
    invariant to orthogonal transforms of either input (without clamping), and about
    :math:`k/(n-1)` for independent representations. The paper's pipeline is
    ``clamp_quantile=0.95, normalize=True, k=10`` and reports the maximum over layer pairs.

    Parameters
    ----------
    a : Tensor, shape (n, d_a)
        First representation.
    b : Tensor, shape (n, d_b)
        Second representation of the same n inputs.
    k : int
        Neighbourhood size, 1 <= k <= n - 1.
    normalize : bool
        L2-normalise the rows first (cosine neighbours), as the paper does.
    clamp_quantile : float, optional
        Clamp each input's values to :math:`\pm` this quantile of its absolute values before
        normalising (0.95 in the paper). Coordinate-wise, so it breaks rotation invariance.
    batch_size : int
        Rows per block of the n x n similarity computation.

    Returns
    -------
    float
        The score, in [0, 1].
    """
    a, b, k, batch_size = _knn_inputs(a, b, k, normalize, clamp_quantile, batch_size)
    knn_a = _sorted_neighbours(a, k, batch_size)
    knn_b = _sorted_neighbours(b, k, batch_size)
    n, shared = a.shape[0], 0
    for s in range(0, n, batch_size):
        rows = knn_a[s : s + batch_size]
        member = torch.zeros(rows.shape[0], n, dtype=torch.bool, device=a.device)
        member.scatter_(1, rows, True)
        shared += int(member.gather(1, knn_b[s : s + batch_size]).sum())
    return shared / (n * k)


def cycle_knn(
    a,
    b,
    *,
    k: int = 10,
    normalize: bool = True,
    clamp_quantile: float | None = None,
    batch_size: int = 4096,
) -> float:
    r"""Cycle k-nearest-neighbour consistency (Huh et al. 2024, platonic-rep ``cycle_knn``).

    The fraction of samples i that come back to themselves along a cycle B then A: i is among
    the A-neighbours :math:`N_A(j)` of at least one of its B-neighbours :math:`j \in N_B(i)`.
    Neighbourhoods are as in ``mutual_knn``. Not symmetric in (a, b), and below 1 even for
    a = b when neighbourhoods are not reciprocal.

    Parameters
    ----------
    a : Tensor, shape (n, d_a)
        Representation whose neighbourhoods close the cycle.
    b : Tensor, shape (n, d_b)
        Representation whose neighbourhoods start it.
    k : int
        Neighbourhood size, 1 <= k <= n - 1.
    normalize : bool
        L2-normalise the rows first.
    clamp_quantile : float, optional
        Clamp values at this quantile of their absolute values first.
    batch_size : int
        Rows per block.

    Returns
    -------
    float
        The score, in [0, 1].
    """
    a, b, k, batch_size = _knn_inputs(a, b, k, normalize, clamp_quantile, batch_size)
    knn_a = _sorted_neighbours(a, k, batch_size)
    knn_b = _sorted_neighbours(b, k, batch_size)
    n, hits = a.shape[0], 0
    rows_per_block = max(1, (1 << 22) // (k * k))
    for s in range(0, n, rows_per_block):
        back = knn_a[knn_b[s : s + rows_per_block]]  # (rows, k, k): A-neighbours of B-neighbours
        me = torch.arange(s, s + back.shape[0], device=a.device).view(-1, 1, 1)
        hits += int((back == me).flatten(1).any(1).sum())
    return hits / n


def cknna(
    a,
    b,
    *,
    k: int | None = None,
    unbiased: bool = True,
    normalize: bool = True,
    clamp_quantile: float | None = None,
) -> float:
    r"""Centred kernel nearest-neighbour alignment (Huh et al. 2024, platonic-rep ``cknna``).

    CKA of linear kernels restricted to mutual neighbours: with the mask
    :math:`M_{ij} = 1[j \in N_A(i)]\, 1[j \in N_B(i)]` (k inner-product neighbours, self excluded
    when ``unbiased``), :math:`\mathrm{CKNNA} = \mathrm{HSIC}(M \odot K, M \odot L) /
    \sqrt{\mathrm{HSIC}(M_A \odot K, M_A \odot K)\, \mathrm{HSIC}(M_B \odot L, M_B \odot L)}`,
    where the self terms use each kernel's own neighbour mask. ``k=None`` means every other
    sample (n - 1 when unbiased, n otherwise), in which case CKNNA reduces to CKA of the
    (uncentred) linear kernels; the reference code crashes on ``topk=None``. Memory O(n^2).

    Parameters
    ----------
    a : Tensor, shape (n, d_a)
        First representation.
    b : Tensor, shape (n, d_b)
        Second representation of the same n inputs.
    k : int, optional
        Neighbourhood size, 2 <= k <= n - 1 (n when biased); None for all samples.
    unbiased : bool
        Exclude each sample from its own neighbourhood and use the unbiased HSIC (n >= 4).
    normalize : bool
        L2-normalise the rows first.
    clamp_quantile : float, optional
        Clamp values at this quantile of their absolute values first.

    Returns
    -------
    float
        The score; NaN when a self-similarity term is <= 0.
    """
    a, b = _pair(a, b, min_rows=4 if unbiased else 2)
    n = a.shape[0]
    k_max = n - 1 if unbiased else n
    k = k_max if k is None else _checks.integer("k", k, low=2, high=k_max)
    if not isinstance(unbiased, bool):
        raise TypeError(f"unbiased must be a bool, got {type(unbiased).__name__}")
    _check_knn_options(normalize, clamp_quantile, 1)
    a = _prepare(a, normalize, clamp_quantile)
    b = _prepare(b, normalize, clamp_quantile)
    kern_a, kern_b = a @ a.T, b @ b.T

    def mask(kern):
        idx = _sorted_neighbours_from(kern, k, unbiased)
        return torch.zeros_like(kern).scatter_(1, idx, 1.0)

    m_a, m_b = mask(kern_a), mask(kern_b)
    m_ab = m_a * m_b
    hsic_ab = _hsic_gram(m_ab * kern_a, m_ab * kern_b, unbiased)
    hsic_aa = _hsic_gram(m_a * kern_a, m_a * kern_a, unbiased)
    hsic_bb = _hsic_gram(m_b * kern_b, m_b * kern_b, unbiased)
    return _cka_from(hsic_ab, hsic_aa, hsic_bb)


def _sorted_neighbours_from(kern: torch.Tensor, k: int, self_excluded: bool) -> torch.Tensor:
    if self_excluded:
        kern = kern.clone().fill_diagonal_(-math.inf)
    return _top_k(kern, k)
