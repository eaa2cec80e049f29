"""Negative sampling that never returns the anchor itself.

cl-ica forms negatives with ``torch.roll`` over the batch and scores the full batch matrix, so
every anchor is also one of its own negatives. Here negatives are drawn uniformly from all
indices except the anchor's (with or without replacement), so the anchor is excluded by
construction; a loss that wants the anchor among its negatives must add it explicitly.
"""

from __future__ import annotations

import torch


def negative_indices(
    anchor: torch.Tensor,
    pool_size: int,
    m: int = 1,
    *,
    replacement: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """For each anchor index, m indices drawn uniformly from ``range(pool_size)`` minus it.

    Parameters
    ----------
    anchor : Tensor of int, shape (n,)
        Anchor indices in [0, pool_size). For in-batch negatives use ``torch.arange(n)``.
    pool_size : int
        Number of candidates, >= 2.
    m : int
        Negatives per anchor, >= 1; at most pool_size - 1 without replacement.
    replacement : bool
        With replacement (O(n m), any m) or without (distinct negatives per anchor; O(n
        pool_size) memory).
    generator : torch.Generator, optional
        Source of randomness on ``anchor``'s device.

    Returns
    -------
    Tensor, shape (n, m), int64
        Row i never contains ``anchor[i]``.
    """
    if not isinstance(anchor, torch.Tensor) or anchor.ndim != 1 or anchor.is_floating_point():
        raise ValueError("anchor must be a 1-D integer tensor")
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 2:
        raise ValueError(f"pool_size must be an integer >= 2, got {pool_size!r}")
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"m must be an integer >= 1, got {m!r}")
    if not replacement and m > pool_size - 1:
        raise ValueError(
            f"without replacement m must be <= pool_size - 1 = {pool_size - 1}, got {m}"
        )
    if anchor.numel() and (anchor.min() < 0 or anchor.max() >= pool_size):
        raise ValueError(f"anchor entries must lie in [0, {pool_size})")
    n, device = anchor.shape[0], anchor.device
    anchor = anchor.long().unsqueeze(1)
    if replacement:
        j = torch.randint(0, pool_size - 1, (n, m), generator=generator, device=device)
    else:
        # The m largest of pool_size - 1 iid uniforms index a uniform random m-subset;
        # float64 makes ties (which would bias the subset) practically impossible.
        keys = torch.rand(n, pool_size - 1, generator=generator, device=device, dtype=torch.float64)
        j = keys.topk(m, dim=1).indices
    # Shift every draw at or above the anchor up by one: a bijection from
    # {0, ..., pool_size - 2} onto {0, ..., pool_size - 1} minus the anchor.
    return j + (j >= anchor).long()
