"""LARS, the layer-wise adaptive optimiser of the large-batch SSL recipes.

SimCLR, BYOL, Barlow Twins and VICReg train with LARS (You, Gitman and Ginsburg, 2017): SGD with
momentum whose step on each weight tensor is rescaled by a trust ratio, so every layer moves
by about the same fraction of its norm whatever the scale of its gradient. Their code uses
:math:`\\eta \\, \\|w\\| / \\|g + \\lambda w\\|`; You et al.'s Algorithm 1 has
:math:`\\|g\\| + \\lambda \\|w\\|` in the denominator. torch has no LARS, hence this module.
"""

from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    """LARS as in the Barlow Twins and VICReg code (a variant of You et al., 2017, Algorithm 1).

    For each weight tensor :math:`w` with gradient :math:`g`:

    .. math::

        d = g + \\lambda w, \\qquad
        q = \\eta \\, \\frac{\\|w\\|}{\\|d\\|} \\;(q = 1 \\text{ if } \\|w\\| = 0
        \\text{ or } \\|d\\| = 0), \\qquad
        v \\leftarrow m \\, v + q \\, d, \\qquad w \\leftarrow w - \\text{lr} \\, v .

    Biases and normalisation parameters (tensors with one dimension, not counting the
    ``batch_dims`` leading ones) get neither weight decay nor the trust ratio, as in the
    official recipes. The optimiser is the official one; the recipes around it are not all
    here: ``sithlib.train`` keeps the learning rate constant (the recipes warm up for 10 epochs
    and decay it with a cosine) and gives biases the weights' rate (Barlow Twins gives them
    0.0048 against 0.2); pass parameter groups for separate rates.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups.
    lr : float
        Learning rate (the recipes scale it with the batch size; 0.2 x batch / 256 for
        Barlow Twins' weights).
    momentum : float
        Momentum :math:`m`.
    weight_decay : float
        Weight decay :math:`\\lambda` (Barlow Twins 1.5e-6, SimCLR 1e-6).
    eta : float
        Trust coefficient :math:`\\eta` (0.001 in the paper and the SSL recipes).
    batch_dims : {0, 1}
        Leading dimensions that index independent models (1 for the stacked parameters of a
        ``vmap`` seed ensemble): norms are taken per model, so an ensemble takes the same
        steps as its members trained one by one.
    """

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001, batch_dims: int = 0):
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                            ("eta", eta)):
            if not value >= 0:
                raise ValueError(f"LARS {name} must be >= 0, got {value}")
        if batch_dims not in (0, 1):
            raise ValueError(f"LARS batch_dims must be 0 or 1, got {batch_dims}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      eta=eta, batch_dims=batch_dims))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            nb = group["batch_dims"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim - nb > 1:
                    d = d.add(p, alpha=group["weight_decay"])
                    dims = tuple(range(nb, p.ndim))
                    w_norm = torch.linalg.vector_norm(p, dim=dims, keepdim=True)
                    d_norm = torch.linalg.vector_norm(d, dim=dims, keepdim=True)
                    ok = (w_norm > 0) & (d_norm > 0)
                    # where() keeps the division safe: the 1 branch is taken when a norm is 0
                    q = torch.where(ok, group["eta"] * w_norm / torch.where(ok, d_norm, 1.0), 1.0)
                    d = d * q
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                v = state["momentum_buffer"]
                v.mul_(group["momentum"]).add_(d)
                p.add_(v, alpha=-group["lr"])
        return loss
