"""Batch-norm running statistics for networks that were never trained.

A freshly built batch-norm layer holds running statistics of mean 0 and variance 1. In eval
mode it normalises with them, so an untrained network scored in eval mode computes a function
that it never computes in training: its first training step normalises every layer with the
statistics of the batch. :func:`calibrate_batchnorm` replaces the defaults with statistics
estimated, as training estimates them, from a few batches of the training distribution.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def calibrate_batchnorm(modules: nn.Module | Iterable[nn.Module], batches: Iterable,
                        forward: Callable | None = None) -> int:
    r"""Set the running statistics of every batch norm in ``modules`` from ``batches``.

    Untrained networks with batch norm are baselines ("what training has to beat"); scored in
    eval mode with the default running statistics (mean 0, variance 1) they compute a function
    that the network never computes: in training, even at its first step, every batch-norm
    layer normalises with the statistics of its batch. This function resets the running
    statistics of each batch-norm layer, makes their running average cumulative
    (``momentum=None``, as ``torch.optim.swa_utils.update_bn`` does), calls
    ``forward(batch)`` for each batch under ``torch.no_grad`` with ``modules`` in training
    mode, then restores each layer's momentum and every submodule's previous training flag.

    Each layer's running mean then is the average over the batches of the batch mean of its
    input, and its running variance the average of the unbiased batch variances, where each
    layer's input is computed as in training (the layers before it normalise with batch
    statistics). With one batch they are that batch's mean and unbiased variance.

    ``forward`` should run only the networks (an encoder and its heads), with the batching of
    training (for example each view as its own batch where training keeps per-view
    statistics), never a loss: a method's state (DINO's center, SwAV's queue, an EMA teacher)
    would change. Parameters and the buffers of other modules are left alone, unless
    ``forward`` itself changes them.

    Parameters
    ----------
    modules : nn.Module or iterable of nn.Module
        The networks whose batch norms are calibrated (and put in training mode meanwhile).
    batches : iterable
        Batches of the training distribution, each passed to ``forward`` as it is. At least
        one is needed; they are collected before any statistic is reset.
    forward : callable, optional
        ``forward(batch)``; by default the one module of ``modules`` called on the batch.

    Returns
    -------
    int
        The number of batch-norm layers calibrated (0 when ``modules`` has none with running
        statistics, in which case ``forward`` is never called).
    """
    modules = [modules] if isinstance(modules, nn.Module) else list(modules)
    if not all(isinstance(m, nn.Module) for m in modules):
        raise TypeError("modules must be an nn.Module or an iterable of them")
    if forward is None:
        if len(modules) != 1:
            raise ValueError(f"forward is needed for {len(modules)} modules (the default calls "
                             "the one module given)")
        forward = modules[0]
    submodules = list(dict.fromkeys(m for module in modules for m in module.modules()))
    norms = [m for m in submodules if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty: at least one batch is needed")
    training = {m: m.training for m in submodules}
    momenta = {m: m.momentum for m in norms}
    try:
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the batches
        for m in submodules:
            m.training = True
        for batch in batches:
            forward(batch)
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        for m, flag in training.items():
            m.training = flag
    return len(norms)


def calibration_batches(sample: Callable, batch_size: int, *, device="cpu", n_batches: int = 4,
                        seed: int = 2**31 - 2) -> list:
    """``n_batches`` batches ``sample(generator, batch_size)`` for :func:`calibrate_batchnorm`,
    from a generator of their own (``seed``), so that no training stream is disturbed."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return [sample(gen, batch_size) for _ in range(n_batches)]
