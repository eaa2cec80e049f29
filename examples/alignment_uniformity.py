r"""Your own method in the book's experiments: alignment and uniformity (Wang & Isola, 2020).

.. math::

    L = \mathbb{E}\,\|u_a - u_b\|_2^2
        + \lambda \tfrac{1}{2}\left(\log \mathbb{E}_{i<j}\, e^{-t \|u_{a,i} - u_{a,j}\|^2}
        + \log \mathbb{E}_{i<j}\, e^{-t \|u_{b,i} - u_{b,j}\|^2}\right),
    \qquad u = f(x) / \|f(x)\|,

the large-batch limit of InfoNCE that Wang & Isola (2020) split into its two terms. On the
identifiable DGP of the Platonic chapter it should recover the latents as InfoNCE does.

Compare it with InfoNCE on that DGP (the quick profile, a few minutes on a laptop CPU)::

    python -m sithlib run platonic --import examples/alignment_uniformity.py \
        --set methods=infonce,align_uniform

or, in Python started from the repository root::

    import examples.alignment_uniformity  # registers "align_uniform"
    from sithlib.experiments import platonic
    from sithlib.results import load_or_run

    result = load_or_run("platonic", {"methods": ("infonce", "align_uniform")}, profile="quick")
    platonic.summary_table(result.metrics)

The results store hashes this file (as imported) with the config, so an edited method is
rerun, never read back from an older cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sithlib import losses
from sithlib.methods import Method, register_method
from sithlib.metrics import center_vector


@dataclass(frozen=True)
class AlignUniformConfig:
    """Wang & Isola's defaults: alpha = 2, t = 2, weight 1."""

    lambd: float = 1.0  # weight of the uniformity term
    t: float = 2.0

    def __post_init__(self):
        for name in ("lambd", "t"):
            if not getattr(self, name) > 0:
                value = getattr(self, name)
                raise ValueError(f"{name} must be > 0, got {value!r}")


@register_method
class AlignUniform(Method):
    """Alignment plus uniformity on the normalised encoder output (no head)."""

    name, label = "align_uniform", "align + uniform"
    config_class = AlignUniformConfig

    def __init__(self, encoder, config, feature_dim, generator=None):
        super().__init__(encoder, config, feature_dim)

    def _loss(self, x_a, x_b, *, index, y):
        h_a, h_b = self._pair(self.encoder, x_a, x_b)
        u_a, u_b = F.normalize(h_a, dim=1), F.normalize(h_b, dim=1)
        t = self.config.t
        uniform = (losses.uniformity(u_a, t=t)
                   + losses.uniformity(u_b, t=t)) / 2
        loss = losses.alignment(u_a, u_b) + self.config.lambd * uniform
        # Every method logs its batch's center-vector norm (stability monitor).
        center = center_vector(torch.cat([u_a, u_b]).detach()).norm().float()
        return loss, {"center_norm": center, "uniformity": uniform.detach()}
