r"""The cluster/instance latent model of the DIET identifiability result (Reizinger et al., 2024).

Cluster vectors :math:`v_1, \dots, v_{|C|}` on the unit sphere are drawn once per DGP; instance
i (of N) belongs to cluster :math:`C(i) = i \bmod |C|`; every access to instance i draws a fresh
latent :math:`z \sim p(z \mid v_{C(i)})`, by default vMF with :math:`\kappa = 10`. The fresh draw
plays the role of both intra-class variation and augmentation, as in the reference code
(csi); it is not DIET on a fixed dataset.
"""

from __future__ import annotations

import torch

from sithlib.dgp.conditionals import sample_conditional
from sithlib.dgp.spaces import Sphere


class ClusterInstance:
    """Instances, their clusters and fresh latents around the cluster vectors.

    Parameters
    ----------
    cluster_vectors : Tensor, shape (n_clusters, d)
        Unit vectors (see :func:`sithlib.dgp.marginals.sample_marginal` to draw them).
    n_instances : int
        Number of instances N >= 1; instance i belongs to cluster i mod n_clusters.
    conditional : str
        ``"vmf"`` or a noise family re-projected onto the sphere.
    kappa : float
        vMF concentration of the conditional (see
        :func:`sithlib.dgp.conditionals.sample_conditional`).
    scale : float
        Noise scale of the conditional.
    p : float
        Generalized-normal exponent of the conditional.
    """

    def __init__(
        self,
        cluster_vectors: torch.Tensor,
        n_instances: int,
        *,
        conditional: str = "vmf",
        kappa: float = 10.0,
        scale: float = 1.0,
        p: float = 2.0,
    ):
        if cluster_vectors.ndim != 2 or cluster_vectors.shape[0] < 1:
            raise ValueError("cluster_vectors must have shape (n_clusters, d) with n_clusters >= 1")
        if isinstance(n_instances, bool) or not isinstance(n_instances, int) or n_instances < 1:
            raise ValueError(f"n_instances must be an integer >= 1, got {n_instances!r}")
        self.space = Sphere(cluster_vectors.shape[1])
        if not self.space.contains(cluster_vectors.double(), atol=1e-4).all():
            raise ValueError("cluster_vectors must be unit vectors")
        self.cluster_vectors = cluster_vectors
        self.n_instances = n_instances
        self.conditional, self.kappa, self.scale, self.p = conditional, kappa, scale, p

    @property
    def n_clusters(self) -> int:
        return self.cluster_vectors.shape[0]

    def to(self, device) -> ClusterInstance:
        """A copy with the cluster vectors on ``device``."""
        return ClusterInstance(self.cluster_vectors.to(device), self.n_instances,
                               conditional=self.conditional, kappa=self.kappa, scale=self.scale,
                               p=self.p)

    def check_index(self, index: torch.Tensor) -> torch.Tensor:
        """Validate instance indices (1-D integer tensor with entries in [0, N))."""
        if not isinstance(index, torch.Tensor) or index.ndim != 1 or index.is_floating_point():
            raise ValueError("index must be a 1-D integer tensor")
        if index.numel() and (index.min() < 0 or index.max() >= self.n_instances):
            raise ValueError(f"index entries must lie in [0, {self.n_instances})")
        return index

    def cluster_of(self, index: torch.Tensor) -> torch.Tensor:
        """Cluster of each instance: index mod n_clusters."""
        return self.check_index(index) % self.n_clusters

    def sample(self, index: torch.Tensor, *, generator=None, dtype=torch.float32) -> torch.Tensor:
        """A fresh latent for each instance in ``index``, shape (len(index), d)."""
        v = self.cluster_vectors[self.cluster_of(index)].to(dtype)
        return sample_conditional(self.space, v, self.conditional, kappa=self.kappa,
                                  scale=self.scale, p=self.p, generator=generator)

    def logit_scale(self, n: int = 65_536, *, generator=None) -> float:
        r"""The concentration a linear-logit posterior fits to this model: :func:`logit_scale`
        on n fresh latents of uniformly drawn instances (the instances' cluster sizes as the
        prior). It equals :math:`\kappa` for the vMF conditional, up to sampling error."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"n must be an integer >= 2, got {n!r}")
        device = self.cluster_vectors.device
        index = torch.randint(self.n_instances, (n,), generator=generator, device=device)
        z = self.sample(index, generator=generator, dtype=torch.float64)
        sizes = torch.bincount(torch.arange(self.n_instances, device=device) % self.n_clusters,
                               minlength=self.n_clusters)
        return logit_scale(z, self.cluster_of(index), self.cluster_vectors,
                           log_prior=sizes.double().log())


def logit_scale(z: torch.Tensor, cluster: torch.Tensor, cluster_vectors: torch.Tensor, *,
                log_prior: torch.Tensor | None = None, chunk: int = 8192) -> float:
    r"""Maximum-likelihood scale :math:`\hat\kappa` of the linear-logit cluster posterior

    .. math::

        p(c \mid z) = \operatorname{softmax}_c\big(\kappa \langle v_c, z\rangle
        + \log \pi_c\big),

    fitted to latents ``z`` with their true clusters. For vMF conditionals
    :math:`z \mid c \sim \mathrm{vMF}(v_c, \kappa)` the exact posterior has this form (the
    normaliser does not depend on c), so :math:`\hat\kappa \to \kappa`. For other
    conditionals (the re-projected Laplace and Normal rows of Reizinger et al. 2024, Table 2,
    which their Theorem 1 does not cover) it is the scale at which logits linear in z, the form
    DIET's normalized head produces with :math:`h(z) = \kappa\, O z`, best fit the true
    posterior: the scale the cross-entropy pulls h towards.

    The negative log-likelihood is convex in :math:`\kappa` (a log-sum-exp of functions
    linear in it), so a Newton step kept inside a shrinking bracket finds the minimum; logits
    are evaluated in chunks of ``chunk`` rows with ``logsumexp``-stable softmax weights.

    Parameters
    ----------
    z : Tensor, shape (n, d)
    cluster : Tensor, shape (n,)
        Integer cluster of each latent, in [0, n_clusters).
    cluster_vectors : Tensor, shape (n_clusters, d)
    log_prior : Tensor, shape (n_clusters,), optional
        Log prior weights :math:`\log \pi_c` (unnormalised is fine); uniform by default.

    Returns
    -------
    float
        :math:`\hat\kappa \ge 0` (0 when the latents carry no information on the cluster).
    """
    if z.ndim != 2 or cluster_vectors.ndim != 2 or z.shape[1] != cluster_vectors.shape[1]:
        raise ValueError(f"z (n, d) and cluster_vectors (n_clusters, d) must share d, got "
                         f"{tuple(z.shape)} and {tuple(cluster_vectors.shape)}")
    if cluster.shape != (z.shape[0],) or cluster.is_floating_point():
        raise ValueError(f"cluster must be an integer tensor of shape ({z.shape[0]},), got "
                         f"{cluster.dtype} {tuple(cluster.shape)}")
    a = z.double() @ cluster_vectors.double().T  # <v_c, z>
    a_true = a.gather(1, cluster[:, None].long())[:, 0]
    prior = (torch.zeros(a.shape[1], dtype=a.dtype, device=a.device) if log_prior is None
             else log_prior.to(a))

    def slope_curvature(k: float) -> tuple[float, float]:
        # d/dk and d^2/dk^2 of the mean NLL: E_p[a] - a_true and Var_p[a], p the posterior.
        g = c = 0.0
        for s in range(0, a.shape[0], chunk):
            part = a[s:s + chunk]
            p = torch.softmax(k * part + prior, dim=1)
            mean = (p * part).sum(1)
            g += float((mean - a_true[s:s + chunk]).sum())
            c += float(((p * part * part).sum(1) - mean * mean).sum())
        return g / a.shape[0], c / a.shape[0]

    lo, hi = 0.0, 1.0
    if slope_curvature(lo)[0] >= 0:
        return 0.0
    while True:
        g, c = slope_curvature(hi)
        if g >= 0 and c > 0:  # the minimum lies in [lo, hi]
            break
        if c == 0 or hi > 1e6:  # one-hot posteriors: larger scales only fit better
            raise ValueError("the likelihood keeps rising with the scale: the clusters are "
                             "separable from z without error")
        lo, hi = hi, 2 * hi
    k = 0.5 * (lo + hi)
    for _ in range(100):
        g, c = slope_curvature(k)
        lo, hi = (k, hi) if g < 0 else (lo, k)
        step = k - g / c if c > 0 else -1.0
        new = step if lo <= step <= hi else 0.5 * (lo + hi)
        if abs(new - k) <= 1e-10 * k:
            return new
        k = new
    return k
