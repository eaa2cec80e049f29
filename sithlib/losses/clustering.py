r"""Clustering-based objectives: Sinkhorn-Knopp codes and SwAV's swapped prediction, and
DINO's self-distillation with centering and sharpening (plus its center and temperature
schedules).

Scores and logits have shape (n, K): n samples, K prototypes or output dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sithlib.losses import _common as C
from sithlib.losses.distributed import all_reduce_sum, gather, is_distributed, world_size


def _global_logsumexp_rows(x: torch.Tensor, distributed: bool) -> torch.Tensor:
    """logsumexp over dim -2 (the samples) of every process's rows, shape (..., 1, K)."""
    local = torch.logsumexp(x, dim=-2, keepdim=True)
    if not (distributed and is_distributed()):
        return local
    every = gather(local.movedim(-2, 0), distributed)  # (world, ..., K)
    return torch.logsumexp(every, dim=0, keepdim=True).movedim(0, -2)


def _sinkhorn_log(log_q: torch.Tensor, iterations: int, distributed: bool) -> torch.Tensor:
    """:func:`sinkhorn` from ``log_q = S / epsilon`` of shape (..., n, K), batched over ``...``
    (SwAV's two views in one set of launches)."""
    n_global = log_q.shape[-2] * (world_size() if distributed else 1)
    log_k, log_n = math.log(log_q.shape[-1]), math.log(n_global)
    total = torch.logsumexp(_global_logsumexp_rows(log_q, distributed), dim=-1, keepdim=True)
    log_q = log_q - total
    for _ in range(iterations):
        log_q = log_q - (_global_logsumexp_rows(log_q, distributed) + log_k)
        log_q = log_q - (torch.logsumexp(log_q, dim=-1, keepdim=True) + log_n)
    return torch.exp(log_q + log_n)


@torch.no_grad()
@C.fp32
def sinkhorn(
    scores, *, epsilon: float = 0.05, iterations: int = 3, distributed: bool = False
) -> torch.Tensor:
    r"""Sinkhorn-Knopp equipartition codes of SwAV (Caron et al., 2020), in the log domain.

    Starting from :math:`Q \propto \exp(S/\varepsilon)` (normalised to total mass 1), each
    iteration rescales the prototypes' totals (columns here) to 1/K and then the samples'
    totals (rows) to 1/N; the result is multiplied by N so that every sample's code sums to 1.
    This is the official ``distributed_sinkhorn`` with every product replaced by a sum of
    logarithms, so :math:`\exp(S/\varepsilon)`, which overflows float32 once
    :math:`S/\varepsilon > 88`, is never formed.

    Parameters
    ----------
    scores : Tensor, shape (n, K)
        Scores :math:`z^\top c_k` of n samples against K prototypes (L2-normalised in SwAV).
    epsilon : float
        Entropic regularisation :math:`\varepsilon > 0` (0.05).
    iterations : int
        Number of Sinkhorn iterations, >= 0 (3).
    distributed : bool
        Prototype totals over the samples of every process (the global N).

    Returns
    -------
    Q : Tensor, shape (n, K)
        The codes, with rows summing to 1 and no gradient; float32 (float64 for float64 scores).
    """
    scores = C.tensor("scores", scores, shape="(n, K)")
    eps = C.positive("epsilon", epsilon)
    iterations = C.integer("iterations", iterations, low=0)
    C.flag("distributed", distributed)

    return _sinkhorn_log(scores.detach() / eps, iterations, distributed)


@C.fp32
def swav(
    scores_a,
    scores_b,
    *,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
    queue_a=None,
    queue_b=None,
    distributed: bool = False,
) -> torch.Tensor:
    r"""SwAV's swapped-prediction loss (Caron et al., 2020), two views.

    Codes :math:`q = \mathrm{Sinkhorn}(S)` are computed without gradient, and each view
    predicts the other's code from its softmax over prototypes:

    .. math::

        L = -\frac{1}{2n} \sum_i \sum_k \big[ q_{a,ik} \log p_{b,ik} + q_{b,ik} \log p_{a,ik}
            \big], \qquad p_{ik} = \operatorname{softmax}_k(S_{ik}/\tau).

    With more crops the official loss averages the same term over (assignment crop, other crop)
    pairs; call this function per pair for multi-crop.

    Parameters
    ----------
    scores_a : Tensor, shape (n, K)
        :math:`z C^\top` for the first view, z and the prototype rows C L2-normalised.
    scores_b : Tensor, shape (n, K)
        The same for the second view.
    temperature : float
        :math:`\tau > 0` of the prediction softmax (0.1).
    epsilon : float
        Sinkhorn entropy weight, 0.05 by default (see :func:`sinkhorn`).
    iterations : int
        Number of Sinkhorn iterations, 3 by default.
    queue_a : Tensor, shape (m, K), optional
        Scores of queued embeddings of the first view against the current prototypes; as in the
        official code they are prepended for the Sinkhorn step only, and the codes of the n
        current samples are kept.
    queue_b : Tensor, shape (m, K), optional
        The same for the second view.
    distributed : bool
        Sinkhorn over the global batch; the prediction terms stay local.

    Returns
    -------
    loss : Tensor
        A scalar.
    """
    scores_a = C.tensor("scores_a", scores_a, shape="(n, K)")
    scores_b = C.tensor("scores_b", scores_b, shape="(n, K)")
    C.same_shape("scores_a", scores_a, "scores_b", scores_b)
    tau = C.positive("temperature", temperature)
    C.flag("distributed", distributed)
    scores_a, scores_b = C.promote(scores_a, scores_b)
    n = scores_a.shape[0]

    eps = C.positive("epsilon", epsilon)
    iterations = C.integer("iterations", iterations, low=0)

    def with_queue(scores, queue, name):
        if queue is None:
            return scores.detach()
        queue = C.tensor(name, queue, shape="(m, K)")
        if queue.shape[1] != scores.shape[1] or queue.device != scores.device:
            raise ValueError(
                f"{name} must have shape (m, {scores.shape[1]}) on {scores.device}, got "
                f"shape {tuple(queue.shape)} on {queue.device}"
            )
        return torch.cat([queue.to(scores.dtype), scores.detach()])

    full_a = with_queue(scores_a, queue_a, "queue_a")
    full_b = with_queue(scores_b, queue_b, "queue_b")
    # The inputs are detached: the codes carry no gradient without a no_grad block.
    if full_a.shape == full_b.shape:  # both views' codes in one batched Sinkhorn
        q_a, q_b = _sinkhorn_log(torch.stack([full_a, full_b]) / eps, iterations,
                                 distributed)[:, -n:]
    else:
        q_a, q_b = (_sinkhorn_log(s / eps, iterations, distributed)[-n:] for s in (full_a, full_b))
    log_p_a = F.log_softmax(scores_a / tau, dim=1)
    log_p_b = F.log_softmax(scores_b / tau, dim=1)
    return -0.5 * ((q_a * log_p_b).sum(1).mean() + (q_b * log_p_a).sum(1).mean())


def _crops(name: str, x) -> list[torch.Tensor]:
    """A (V, n, K) tensor or a sequence of (n, K) tensors -> a list of V float tensors."""
    if isinstance(x, torch.Tensor):
        x = C.tensor(name, x, ndim=3, shape="(crops, n, K)")
        crops = list(x.unbind(0))
    elif isinstance(x, Sequence) and len(x) > 0:
        crops = [C.tensor(f"{name}[{i}]", c, shape="(n, K)") for i, c in enumerate(x)]
    else:
        raise TypeError(
            f"{name} must be a (crops, n, K) tensor or a non-empty list of (n, K) tensors"
        )
    for i, c in enumerate(crops[1:], 1):
        C.same_shape(f"{name}[0]", crops[0], f"{name}[{i}]", c)
    return crops


@C.fp32
def dino(
    student_out,
    teacher_out,
    center,
    *,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> torch.Tensor:
    r"""DINO's self-distillation loss (Caron et al., 2021), multi-crop.

    The teacher's probabilities are centered and sharpened and carry no gradient,
    :math:`P_t = \operatorname{softmax}((t - c)/T_t)`; the student's are
    :math:`P_s = \operatorname{softmax}(s/T_s)`. The loss is the cross-entropy
    :math:`-\sum_k P_t \log P_s` averaged over the batch and over all pairs (teacher crop q,
    student crop v) with v != q, as in the official code: student crop i is the same view as
    teacher crop i (the global crops come first), and the remaining student crops are local.

    Parameters
    ----------
    student_out : Tensor of shape (V_s, n, K), or a list of V_s tensors of shape (n, K)
        Student head outputs for every crop.
    teacher_out : Tensor of shape (V_t, n, K), or a list of V_t tensors of shape (n, K)
        Teacher head outputs for the global crops (detached here), V_t <= V_s.
    center : Tensor, shape (K,) or (1, K)
        The running center c (see :func:`dino_center_update`).
    student_temp : float
        :math:`T_s > 0` (0.1).
    teacher_temp : float
        :math:`T_t > 0` (0.04 after warm-up, see :func:`dino_teacher_temp`).

    Returns
    -------
    loss : Tensor
        A scalar.
    """
    s_crops = _crops("student_out", student_out)
    t_crops = _crops("teacher_out", teacher_out)
    C.same_shape("student_out[0]", s_crops[0], "teacher_out[0]", t_crops[0])
    if len(t_crops) > len(s_crops) or len(s_crops) < 2:
        raise ValueError(
            "dino needs at least 2 student crops and no more teacher crops than student crops, "
            f"got {len(s_crops)} student and {len(t_crops)} teacher crops"
        )
    k = s_crops[0].shape[1]
    center = C.tensor("center", center, ndim=None, shape="(K,) or (1, K)")
    if center.shape not in ((k,), (1, k)):
        raise ValueError(f"center must have shape ({k},) or (1, {k}), got {tuple(center.shape)}")
    t_temp = C.positive("teacher_temp", teacher_temp)
    s_temp = C.positive("student_temp", student_temp)

    center = center.detach().reshape(1, k)
    p_t = [F.softmax((t.detach() - center) / t_temp, dim=1) for t in t_crops]
    log_p_s = [F.log_softmax(s / s_temp, dim=1) for s in s_crops]
    total, terms = 0.0, 0
    for q, pt in enumerate(p_t):
        for v, lps in enumerate(log_p_s):
            if v == q:
                continue
            total = total + (-(pt * lps).sum(1)).mean()
            terms += 1
    return total / terms


@torch.no_grad()
@C.fp32
def dino_center_update(
    center, teacher_out, *, momentum: float = 0.9, distributed: bool = False
) -> torch.Tensor:
    r"""DINO's center update, :math:`c \leftarrow m c + (1 - m) \bar t`.

    :math:`\bar t` is the mean teacher output over every row of every teacher crop (and, with
    ``distributed``, every process), as in the official ``update_center``.

    Parameters
    ----------
    center : Tensor, shape (K,) or (1, K)
        Current center.
    teacher_out : Tensor of shape (V_t, n, K) or (n, K), or a list of (n, K) tensors
        Teacher outputs of this step.
    momentum : float
        :math:`m \in [0, 1]` (0.9).
    distributed : bool
        Average over the teacher outputs of every process.

    Returns
    -------
    center : Tensor
        The new center, with ``center``'s shape and dtype and no gradient (the input is not
        modified).
    """
    if isinstance(teacher_out, torch.Tensor) and teacher_out.ndim == 2:
        teacher_out = teacher_out.unsqueeze(0)
    crops = _crops("teacher_out", teacher_out)
    k = crops[0].shape[1]
    if not isinstance(center, torch.Tensor) or not center.is_floating_point():
        raise TypeError("center must be a floating-point tensor of shape (K,) or (1, K)")
    if center.shape not in ((k,), (1, k)):
        raise ValueError(f"center must have shape ({k},) or (1, {k}), got {tuple(center.shape)}")
    m = C.in_range("momentum", momentum, 0.0, 1.0)
    C.flag("distributed", distributed)

    t = torch.cat(crops).detach()
    batch_sum = all_reduce_sum(t.sum(0), distributed)
    batch_mean = batch_sum / (t.shape[0] * (world_size() if distributed else 1))
    new = m * C.upcast(center).reshape(k) + (1 - m) * batch_mean
    return new.reshape(center.shape).to(center.dtype)


def dino_teacher_temp(
    step: int, *, warmup_steps: int = 0, start: float = 0.04, end: float = 0.04
) -> float:
    r"""DINO's teacher temperature schedule: linear warm-up, then constant.

    As the official ``np.linspace(start, end, warmup_steps)`` followed by ``end``:
    :math:`T_t = \mathrm{start} + (\mathrm{end} - \mathrm{start})\, k / (W - 1)` for step
    :math:`k < W` (W = ``warmup_steps``; W = 1 gives start), and end afterwards. The official
    code counts epochs; pass steps or epochs consistently. Official defaults: 0.04 to 0.04
    over 0 epochs (a constant 0.04), which are ours; its help text suggests end <= 0.07, with
    warm-up (e.g. 30 epochs) when raising it, and the paper's recipe is 0.04 to 0.07 over the
    first 30 epochs.

    Parameters
    ----------
    step : int
        Current step (or epoch), >= 0.
    warmup_steps : int
        Length W of the warm-up, >= 0.
    start : float
        Temperature (> 0) at the start of the warm-up.
    end : float
        Temperature (> 0) after the warm-up.

    Returns
    -------
    float
    """
    step = C.integer("step", step, low=0)
    warmup_steps = C.integer("warmup_steps", warmup_steps, low=0)
    start = C.positive("start", start)
    end = C.positive("end", end)
    if step >= warmup_steps:
        return end
    if warmup_steps == 1:
        return start
    return start + (end - start) * step / (warmup_steps - 1)
