r"""Exponential-moving-average (EMA) teacher with the per-step cosine momentum schedule.

BYOL (Grill et al., 2020) and DINO (Caron et al., 2021) update a target network as
:math:`\xi \leftarrow \tau_t \xi + (1 - \tau_t) \theta` after every optimiser step, with

.. math::

    \tau_t = 1 - (1 - \tau_0) \, \frac{\cos(\pi t / (T - 1)) + 1}{2},
    \qquad t = 0, \dots, T - 1,

so that the first step uses :math:`\tau_0` and the last step uses exactly 1 (the end value is
pinned: steps at or past the last one return it, with no rounding residue). This is the
BYOL formula with :math:`K = T - 1`, lightly's convention; solo-learn divides by :math:`T`
and never quite reaches the end value.
"""

from __future__ import annotations

import copy
import math
import numbers

import torch
from torch import nn

_BUFFER_MODES = ("copy", "ema", "own")


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    r"""Cosine interpolation from ``start`` (step 0) to ``end`` (step ``total_steps - 1``).

    :math:`v_t = e - (e - s)(\cos(\pi t / (T - 1)) + 1) / 2`; steps before 0 give ``start``,
    steps at or after ``T - 1`` give exactly ``end``, and ``total_steps = 1`` gives ``end``.

    Parameters
    ----------
    step : int
        Current step t (0-based).
    total_steps : int
        Number of steps T >= 1.
    start : float
        Value at the first step.
    end : float
        Value at the last step.

    Returns
    -------
    float
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral):
        raise TypeError(f"total_steps must be an int >= 1, got {total_steps!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be an int >= 1, got {total_steps!r}")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    step, total_steps = int(step), int(total_steps)
    if step >= total_steps - 1:
        return float(end)
    if step <= 0:
        return float(start)
    progress = step / (total_steps - 1)
    return float(end - (end - start) * (math.cos(math.pi * progress) + 1.0) / 2.0)


def ema_momentum(step: int, total_steps: int, tau0: float = 0.996, tau_end: float = 1.0) -> float:
    """BYOL/DINO target momentum :math:`\\tau_t` at ``step`` (cosine from ``tau0`` to ``tau_end``).

    Parameters
    ----------
    step : int
        Current optimiser step (0-based).
    total_steps : int
        Total number of optimiser steps T.
    tau0 : float
        Base momentum in [0, 1]: 0.996 (BYOL 1000 epochs, DINO), 0.99 (BYOL 100-300 epochs).
    tau_end : float
        Final momentum in [tau0, 1], 1 in both papers.

    Returns
    -------
    float
    """
    if not 0.0 <= tau0 <= 1.0:
        raise ValueError(f"tau0 must be in [0, 1], got {tau0}")
    if not tau0 <= tau_end <= 1.0:
        raise ValueError(f"tau_end must be in [tau0, 1] = [{tau0}, 1], got {tau_end}")
    return cosine_schedule(step, total_steps, tau0, tau_end)


def _move(targets: list[torch.Tensor], sources: list[torch.Tensor], tau: float) -> None:
    """``t <- tau t + (1 - tau) s`` for each pair, with the arithmetic of ``mul_`` then ``add_``."""
    if targets:
        torch._foreach_mul_(targets, tau)
        torch._foreach_add_(targets, sources, alpha=1.0 - tau)


class EMATeacher(nn.Module):
    """A frozen copy of a student network, updated as an exponential moving average.

    The teacher starts as an exact copy (``copy.deepcopy``) with ``requires_grad=False`` on
    every parameter; call :meth:`update` after ``optimizer.step()``.

    Parameters
    ----------
    student : nn.Module
        The online network to follow.
    tau0 : float
        Start of the cosine momentum schedule (see :func:`ema_momentum`).
    tau_end : float
        End of the cosine momentum schedule.
    buffers : str
        What happens to buffers (BatchNorm running statistics) at each update.
        ``"copy"`` (default): the teacher's buffers are set to the student's, so in eval mode
        the teacher normalises with the student's statistics. ``"ema"``: floating-point buffers
        follow the same moving average as the parameters (integer buffers such as
        ``num_batches_tracked`` are copied); the teacher's own train-mode forward passes also
        move them between updates. ``"own"``: buffers are left alone, so the teacher keeps the
        running statistics of its own forward passes (lightly, solo-learn and the official BYOL
        and DINO code). In train mode BatchNorm uses batch statistics and buffers do not affect
        outputs.
    """

    def __init__(
        self,
        student: nn.Module,
        *,
        tau0: float = 0.996,
        tau_end: float = 1.0,
        buffers: str = "copy",
    ) -> None:
        super().__init__()
        if not isinstance(student, nn.Module):
            raise TypeError(f"student must be an nn.Module, got {type(student).__name__}")
        if buffers not in _BUFFER_MODES:
            raise ValueError(f"buffers must be one of {_BUFFER_MODES}, got {buffers!r}")
        ema_momentum(0, 1, tau0, tau_end)  # validates tau0 and tau_end
        self.tau0, self.tau_end, self.buffers_mode = float(tau0), float(tau_end), buffers
        self.module = copy.deepcopy(student)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.last_tau: float | None = None

    def momentum(self, step: int, total_steps: int) -> float:
        """The momentum :math:`\\tau_t` this teacher uses at ``step`` of ``total_steps``."""
        return ema_momentum(step, total_steps, self.tau0, self.tau_end)

    def forward(self, *args, **kwargs):
        """Run the teacher network."""
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(
        self,
        student: nn.Module,
        *,
        step: int | None = None,
        total_steps: int | None = None,
        tau: float | None = None,
    ) -> float:
        r"""Move the teacher towards ``student``: :math:`\xi \leftarrow \tau \xi + (1-\tau)\theta`.

        Give either ``tau`` or both ``step`` and ``total_steps`` (the cosine schedule).

        Returns
        -------
        float
            The momentum that was used.
        """
        if tau is None:
            if step is None or total_steps is None:
                raise ValueError("give either tau or both step and total_steps")
            tau = self.momentum(step, total_steps)
        elif step is not None or total_steps is not None:
            raise ValueError("give either tau or step and total_steps, not both")
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {tau}")
        t_params = dict(self.module.named_parameters())
        s_params = dict(student.named_parameters())
        if t_params.keys() != s_params.keys():
            raise ValueError("student parameters do not match the teacher's (different network)")
        # Multi-tensor kernels: a few launches for the whole network instead of two per tensor.
        _move(list(t_params.values()), [s_params[k].detach() for k in t_params], tau)
        if self.buffers_mode != "own":
            t_bufs = dict(self.module.named_buffers())
            s_bufs = dict(student.named_buffers())
            if t_bufs.keys() != s_bufs.keys():
                raise ValueError("student buffers do not match the teacher's (different network)")
            moved = [k for k, b in t_bufs.items()
                     if self.buffers_mode == "ema" and b.is_floating_point()]
            copied = [k for k in t_bufs if k not in moved]
            _move([t_bufs[k] for k in moved], [s_bufs[k] for k in moved], tau)
            if copied:
                torch._foreach_copy_([t_bufs[k] for k in copied], [s_bufs[k] for k in copied])
        self.last_tau = float(tau)
        return float(tau)
