"""Both views of a pair through one network."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def mixes_rows(f: Callable) -> bool:
    """Whether ``f`` is a module with batch normalisation in training mode, whose output for
    one row depends on the other rows of its batch. A plain callable (the engine's vmapped
    ensemble member, which has no buffers and so no batch norm) does not."""
    return isinstance(f, nn.Module) and any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in f.modules())


def both_views(f: Callable, x_a: torch.Tensor, x_b: torch.Tensor):
    """``(f(x_a), f(x_b))``, computed as one batch when ``f``'s rows are independent.

    One call on the concatenated views launches half the kernels of two calls, and its backward
    has no gradients to add up between the calls: a small network's step on a GPU is bound by
    its kernel launches. A network that mixes rows (batch norm in training mode) keeps each
    view's own batch statistics: two calls then.
    """
    if x_a.shape[1:] != x_b.shape[1:]:
        raise ValueError(f"x_a and x_b must have the same row shape, got {tuple(x_a.shape)} "
                         f"and {tuple(x_b.shape)}")
    if mixes_rows(f):
        return f(x_a), f(x_b)
    return one_batch(f, x_a, x_b)


def one_batch(f: Callable, x_a: torch.Tensor, x_b: torch.Tensor):
    """``f`` on the concatenated views, split back: ``(f(x_a), f(x_b))`` for row-independent
    ``f``; with batch norm, statistics over both views (SimCLR's, SwAV's and DINO's choice)."""
    # split, not two slices: its backward joins the two gradients in one launch.
    h_a, h_b = f(torch.cat([x_a, x_b])).split([x_a.shape[0], x_b.shape[0]])
    return h_a, h_b
