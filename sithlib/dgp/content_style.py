r"""The content/style latent model of von Kügelgen et al. (2021).

Latents :math:`z = (c, s) \in \mathbb{R}^{n_c + n_s}`. The positive view keeps the content,
:math:`\tilde c = c`, and each style coordinate changes independently with probability
``change_prob``: :math:`\tilde s_j = s_j + m_j \varepsilon_j` with :math:`m_j \sim`
Bernoulli(change_prob) and :math:`\varepsilon \sim N(0, \sigma^2 I)`.

Options, all drawn ONCE per DGP from its seed (the reference code re-draws them at every
batch, which makes the dependence structure random per batch; we fix it so that the model is
one well-defined distribution):

- statistical dependence: :math:`(c, s) \sim N(0, \sigma_m^2 \Sigma)` with
  :math:`\Sigma \sim W(n, I_n) / n` over all n coordinates, so content and style are
  correlated (the reference draws one covariance per block, which leaves c and s
  independent); the style change noise then has covariance :math:`\sigma^2 \Sigma_s` with its
  own :math:`\Sigma_s \sim W(n_s, I) / n_s`. Dividing by the degrees of freedom makes
  :math:`E[\Sigma] = I`, so the scales match the independent case.
- causal dependence: :math:`s \leftarrow s + B c + a` with :math:`B \sim N(0, 1)^{n_s \times
  n_c}` and :math:`a \sim N(0, 1)^{n_s}`.
"""

from __future__ import annotations

import math

import torch

from sithlib.dgp._random import random_wishart

_TENSORS = ("marginal_chol", "change_chol", "B", "a")


class ContentStyle:
    """Content/style marginal and positive-pair conditional with fixed dependence structure.

    Parameters
    ----------
    n_content : int
        Size of the content block, >= 1.
    n_style : int
        Size of the style block, >= 1.
    change_prob : float
        Probability that a style coordinate changes in the positive view, in [0, 1]
        (1.0 in the reference code, 0.75 in its README example).
    marginal_scale : float
        Standard deviation of the (independent) marginal, > 0.
    change_scale : float
        Standard deviation of a style change, > 0.
    statistical_dependence : bool
        Correlate content and style through a shared random covariance (see the module
        docstring).
    causal_dependence : bool
        Shift the style by a random affine function of the content (see the module docstring).
    generator : torch.Generator, optional
        CPU generator for the objects drawn once (covariances, B, a).
    tensors : dict, optional
        Those objects from :meth:`tensors` (for deserialization); then nothing is drawn.
    """

    def __init__(
        self,
        n_content: int,
        n_style: int,
        *,
        change_prob: float = 1.0,
        marginal_scale: float = 1.0,
        change_scale: float = 1.0,
        statistical_dependence: bool = False,
        causal_dependence: bool = False,
        generator: torch.Generator | None = None,
        tensors: dict | None = None,
    ):
        for name, v in (("n_content", n_content), ("n_style", n_style)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (0.0 <= change_prob <= 1.0):
            raise ValueError(f"change_prob must be in [0, 1], got {change_prob!r}")
        for name, v in (("marginal_scale", marginal_scale), ("change_scale", change_scale)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v!r}")
        self.n_content, self.n_style = n_content, n_style
        self.change_prob = float(change_prob)
        self.marginal_scale, self.change_scale = float(marginal_scale), float(change_scale)
        self.statistical_dependence = bool(statistical_dependence)
        self.causal_dependence = bool(causal_dependence)
        if tensors is None:
            tensors = self._draw(generator)
        self.marginal_chol = tensors.get("marginal_chol")
        self.change_chol = tensors.get("change_chol")
        self.B, self.a = tensors.get("B"), tensors.get("a")

    @property
    def dim(self) -> int:
        return self.n_content + self.n_style

    def _draw(self, generator) -> dict:
        out = {}
        if self.statistical_dependence:
            chol = torch.linalg.cholesky
            out["marginal_chol"] = chol(random_wishart(self.dim, generator=generator))
            out["change_chol"] = chol(random_wishart(self.n_style, generator=generator))
        if self.causal_dependence:
            out["B"] = torch.randn(self.n_style, self.n_content, dtype=torch.float64,
                                   generator=generator)
            out["a"] = torch.randn(self.n_style, dtype=torch.float64, generator=generator)
        return out

    def tensors(self) -> dict:
        """The objects drawn once, by name (only those that exist)."""
        return {k: getattr(self, k) for k in _TENSORS if getattr(self, k) is not None}

    def to(self, device) -> ContentStyle:
        """A copy with its tensors on ``device``."""
        return ContentStyle(
            self.n_content, self.n_style, change_prob=self.change_prob,
            marginal_scale=self.marginal_scale, change_scale=self.change_scale,
            statistical_dependence=self.statistical_dependence,
            causal_dependence=self.causal_dependence,
            tensors={k: t.to(device) for k, t in self.tensors().items()},
        )

    def sample_marginal(
        self, n: int, *, generator=None, device=None, dtype=torch.float32
    ) -> torch.Tensor:
        """n latents z = (c, s), shape (n, n_content + n_style)."""
        eps = torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)
        if self.marginal_chol is not None:
            eps = eps @ self.marginal_chol.to(eps).T
        z = self.marginal_scale * eps
        if self.B is not None:
            c = z[:, : self.n_content]
            shift = c @ self.B.to(z).T + self.a.to(z)
            z = torch.cat([c, z[:, self.n_content :] + shift], dim=1)
        return z

    def sample_positive(self, z: torch.Tensor, *, generator=None) -> torch.Tensor:
        """The positive view of each row of ``z``: same content, changed style."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"z must have shape (n, {self.dim}), got {tuple(z.shape)}")
        n = z.shape[0]
        eps = torch.randn(n, self.n_style, generator=generator, device=z.device, dtype=z.dtype)
        if self.change_chol is not None:
            eps = eps @ self.change_chol.to(eps).T
        u = torch.rand(n, self.n_style, generator=generator, device=z.device, dtype=z.dtype)
        change = (u < self.change_prob).to(z.dtype)
        s_pos = z[:, self.n_content :] + change * self.change_scale * eps
        return torch.cat([z[:, : self.n_content], s_pos], dim=1)
