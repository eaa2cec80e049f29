"""Autograd-aware collectives for losses that need statistics or negatives from every process.

The convention (the one DDP assumes): each process computes its own loss ``L_r`` from its local
batch plus whatever it gathers, and DDP averages the parameter gradients over processes, so the
model follows the gradient of ``mean_r L_r``. The losses are written so that ``mean_r L_r`` is the
single-process loss on the global batch, which needs two things from the collectives:

* ``gather`` concatenates every process's tensor; its backward sums, over processes, the gradient
  that each process's loss sends to the gathered tensor and returns this process's slice. The
  plain ``torch.distributed.all_gather`` carries no gradient at all, so the other processes'
  losses would never reach this process's encoder.
* ``all_reduce_sum`` sums a tensor over processes; its backward is again a sum. A raw in-place
  ``all_reduce`` on a tensor that requires grad (as in the official Barlow Twins code) gives
  1/world_size of the correct gradient.

Both are identities when ``torch.distributed`` is not initialised or has one process, so a loss
called with ``distributed=True`` on one process is the ordinary loss. Per-process batches must
have the same size (as DDP with ``drop_last=True`` gives).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 without an initialised process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without an initialised process group)."""
    return dist.get_rank() if is_distributed() else 0


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # the gradient of sum_r L_r w.r.t. the gathered tensor
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = x.contiguous().clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def gather(x: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """Concatenate ``x`` from every process along dim 0, in rank order, with gradients.

    Parameters
    ----------
    x : Tensor, shape (n, ...)
        This process's rows; n must be the same on every process.
    enabled : bool
        When False, or when no multi-process group is initialised, ``x`` is returned unchanged.

    Returns
    -------
    Tensor, shape (world_size * n, ...)
        Rows ``rank * n`` to ``(rank + 1) * n`` are ``x``.
    """
    if not (enabled and is_distributed()):
        return x
    return _Gather.apply(x)


def all_reduce_sum(x: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """Sum ``x`` over processes, with gradients (an identity when not distributed).

    Parameters
    ----------
    x : Tensor
        Same shape on every process.
    enabled : bool
        When False, or when no multi-process group is initialised, ``x`` is returned unchanged.

    Returns
    -------
    Tensor
        The sum over processes, with ``x``'s shape.
    """
    if not (enabled and is_distributed()):
        return x
    return _AllReduceSum.apply(x)


def offset(n_local: int, enabled: bool = True) -> int:
    """Row index of this process's first sample in the gathered batch."""
    return rank() * n_local if enabled else 0
