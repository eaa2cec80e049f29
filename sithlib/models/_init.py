"""Weight initialisation driven by an explicit ``torch.Generator``.

``nn.Linear`` and ``nn.Conv2d`` initialise themselves from the global RNG. The project rule is
that every random draw takes a generator, so each model re-draws its weights here, with the
same distributions PyTorch (or the official code) uses, from the generator it was given.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _fan_in(weight: torch.Tensor) -> int:
    return weight.shape[1] * weight[0][0].numel() if weight.ndim > 1 else weight.shape[0]


def _fan_out(weight: torch.Tensor) -> int:
    return weight.shape[0] * weight[0][0].numel()


@torch.no_grad()
def torch_default_(layer: nn.Module, generator: torch.Generator | None) -> None:
    """PyTorch's default for Linear / Conv: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (kaiming_uniform with a = sqrt(5) reduces to exactly this bound.)
    """
    bound = 1.0 / math.sqrt(_fan_in(layer.weight))
    layer.weight.uniform_(-bound, bound, generator=generator)
    if getattr(layer, "bias", None) is not None:
        layer.bias.uniform_(-bound, bound, generator=generator)


@torch.no_grad()
def kaiming_normal_fan_out_(weight: torch.Tensor, generator: torch.Generator | None) -> None:
    """He normal with mode fan_out for ReLU, torchvision's ResNet convolution init."""
    weight.normal_(0.0, math.sqrt(2.0 / _fan_out(weight)), generator=generator)


@torch.no_grad()
def trunc_normal_(
    tensor: torch.Tensor, std: float, generator: torch.Generator | None, bound: float = 2.0
) -> None:
    """N(0, std^2) truncated to [-bound, bound] (absolute, as in timm / DINO), by inverse CDF."""
    lo = 0.5 * (1.0 + math.erf(-bound / std / math.sqrt(2.0)))
    hi = 0.5 * (1.0 + math.erf(bound / std / math.sqrt(2.0)))
    tensor.uniform_(2 * lo - 1, 2 * hi - 1, generator=generator)
    tensor.erfinv_().mul_(std * math.sqrt(2.0)).clamp_(-bound, bound)


@torch.no_grad()
def reset_default_(module: nn.Module, generator: torch.Generator | None) -> None:
    """Re-draw every Linear / Conv layer of ``module`` with PyTorch's default init.

    Normalisation layers are reset to weight 1, bias 0 and fresh running statistics.
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            torch_default_(m, generator)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
