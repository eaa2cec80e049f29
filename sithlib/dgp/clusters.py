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
    kappa, scale, p : float
        Parameters of the conditional (see :func:`sithlib.dgp.conditionals.sample_conditional`).
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
