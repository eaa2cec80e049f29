r"""Self-supervised methods: an encoder, its heads, a loss from ``sithlib.losses`` and state.

A method is an ``nn.Module`` built by :func:`build_method` from a name, an encoder f and a
frozen dataclass config. ``method(x_a, x_b, index=..., y=...)`` returns ``(loss, logs)``: the
scalar loss to back-propagate and a dict of detached scalar tensors: ``loss``, ``center_norm``
(the norm of the batch mean of the L2-normalised embeddings that enter the loss, the stability
paper's center vector: projections, the teacher's for BYOL, the student's head outputs for
DINO, the encoder features for DIET and supervised; :meth:`Method.project` returns them for
held-out data) and method-specific state. After every
``optimizer.step()`` call ``method.after_step(step, total_steps)``: it updates EMA teachers,
renormalises SwAV prototypes and DIET rows, and advances the step counter that drives the
schedules (DINO teacher temperature, frozen prototypes / last layer, queue start).

State that needs the current batch is updated inside the forward pass in training mode, as in
the official code: DINO's center and SwAV's queue. ``method.eval()`` freezes both.

Views: SimCLR, SwAV and DINO pass the two views through the network as one concatenated batch
(BatchNorm statistics over 2n samples, as their official code does); BYOL, SimSiam, Barlow
Twins and VICReg pass them separately.

Under DDP (``sithlib.train`` does all of this): wrap the method itself (``DDP(method)``) and
call ``after_step`` on ``ddp.module``; ``distributed=True``, every config's default, makes the
losses gather across processes (an identity in a single process; set it to False for
per-process losses), and ``nn.SyncBatchNorm.convert_sync_batchnorm`` gives BatchNorm layers
global batch statistics. Frozen SwAV prototypes and a frozen DINO last layer get no gradient
(the official code sets their ``grad`` to None), so DDP needs ``find_unused_parameters=True``
while they are frozen. The SwAV queue is a per-process buffer: pass ``broadcast_buffers=False``
so that DDP does not overwrite it with rank 0's queue (the DINO center is identical on every
process when ``distributed=True``).

Defaults are the official ones (each method's paper and code); the table lists them with the
deliberate deviations from the official code and the config switches that remove one
anti-collapse device each (all off by default).

.. list-table:: Methods, defaults and deviations
   :header-rows: 1
   :widths: 10 34 34 22

   * - name
     - defaults
     - deliberate deviations from the official code
     - collapse ablations (off by default)
   * - ``simclr``
     - ``nt_xent``, temperature 0.1; projector 2 layers, hidden width =
       feature dimension, output 128, BatchNorm after every Linear (the last one scale-only)
     - the loss is the mean over the 2n views, half of the official sum of the two directions;
       BatchNorm is per process unless converted to SyncBatchNorm (``sithlib.train`` does on
       GPUs; official: global BN);
       set temperature 0.5 for the CIFAR-10 recipe
     - none
   * - ``infonce``
     - ``info_nce``, temperature 1, dot-product similarity, negatives =
       the other positives; no projector (the encoder output is the representation)
     - cl-ica's code uses the anchors, the anchor itself included, as negatives: set
       ``negatives="anchors", include_anchor=True`` to reproduce it; use temperature
       :math:`1/\kappa` for matched vMF data
     - none
   * - ``byol``
     - ``byol`` summed over both directions; projector and predictor
       Linear-BN-ReLU-Linear 4096 -> 256, the last Linear without bias; EMA 0.996 -> 1,
       cosine per step
     - cosine over T - 1 steps so the last step uses exactly 1 (official: over T steps);
       PyTorch default init instead of Haiku's; the target starts as a copy of the online
       network (official: its own random draw, which matters for the EMA 1 ablation) and
       copies its BatchNorm buffers (official: its own, used only in eval mode; we evaluate
       the online network); the optimiser (LARS) is the trainer's
     - ``predictor=False`` (the online projection regresses the target directly);
       ``tau0=tau_end=0`` (the target is the current online network, no EMA);
       ``tau0=tau_end=1`` (the target stays at its initialisation)
   * - ``simsiam``
     - ``simsiam`` averaged over both directions; projector 3 layers of
       2048 ending in BatchNorm without affine; predictor 2048 -> 512 -> 2048
     - the last projector Linear has no bias (the official frozen bias is cancelled by the
       BatchNorm); the fixed predictor learning rate is the trainer's
     - ``predictor=False`` (identity predictor); ``stop_gradient=False`` (the gradient also
       flows through the target projection)
   * - ``swav``
     - ``swav``, temperature 0.1, epsilon 0.05, 3 Sinkhorn iterations;
       projector 2048 -> 128 and L2 normalisation; 3000 prototypes with unit rows, frozen for
       the first 313 steps; no queue
     - two crops (no multi-crop); log-domain Sinkhorn (same codes, no overflow); the queue
       start and the prototype freeze count steps, not epochs
     - ``targets="softmax"``: codes are the row softmax of the scores over epsilon, with no
       equipartition
   * - ``dino``
     - ``dino``, student temperature 0.1, teacher 0.04 (the official code's default; the
       paper warms it up from 0.04 to 0.07 over 30 epochs: ``teacher_temp=0.07``,
       ``warmup_teacher_temp_steps``), center momentum 0.9; head 2048-2048-256 with GELU,
       weight-normalised last layer with gain 1, 65536 outputs; EMA 0.996 -> 1, cosine per
       step
     - two global crops, no local crops; the last layer is frozen for 0 steps by default
       (official: 1 epoch, set ``freeze_last_layer_steps``); teacher BatchNorm buffers
       copied (official: the teacher's own, ``ema_buffers="own"``); EMA cosine over T - 1
       steps (official: over T)
     - ``centering=False`` (the center stays 0); ``sharpening=False`` (teacher temperature =
       student temperature at every step)
   * - ``barlow_twins``
     - ``barlow_twins``, lambda 0.0051, scale 1; projector 8192-8192-8192
       with bias-free Linears
     - none (the batch is standardised over all processes, as with the official SyncBN)
     - ``lambd=0``: no off-diagonal (redundancy-reduction) term
   * - ``vicreg``
     - ``vicreg``, coefficients 25 / 25 / 1, gamma 1, eps 1e-4; expander
       8192-8192-8192; ``estimator="logdet"`` or ``"pairwise"`` swaps in
       ``vicreg_entropy``
     - none for ``"vicreg"``; the entropy variants' coefficients are our choice (the paper
       does not state them)
     - ``std_coeff=0``: no variance term
   * - ``diet``
     - ``diet``, bias-free linear head over ``num_instances`` indices,
       inverse temperature 1, no label smoothing, rows not normalised
     - none: no label smoothing and inverse temperature 1, as in the identifiability code of
       Reizinger et al. 2024 (klindtlab/csi); ``beta`` is learned only with ``learn_beta=True``
     - none
   * - ``supervised``
     - ``cross_entropy`` of a linear classifier (with bias) over
       ``num_classes`` classes
     - none
     - none
   * - ``stability``
     - ``stability``, lambda 1 (negative cosine invariance plus lambda
       times the squared norm of the batch center vector); no projector
     - the exact normalisation and lambda could not be confirmed from the paper; this is our
       reading of it
     - ``lambd=0``: invariance only

The ablations are the switches of the stability paper's induced-collapse experiments (Jha et
al., 2024): each removes one anti-collapse device and leaves everything else as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import numbers
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sithlib import losses
from sithlib.models import (
    DINOHead,
    EMATeacher,
    Prototypes,
    barlow_twins_projector,
    byol_mlp,
    linear_head,
    mixes_rows,
    normalize_rows,
    one_batch,
    simclr_projector,
    simsiam_predictor,
    simsiam_projector,
    swav_projector,
    vicreg_expander,
)

# ---------------------------------------------------------------------------------------------
# Config checks (errors name the field and the allowed values)


def _pos_int(name: str, v, low: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")


def _pos(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


def _nonneg(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")


def _unit(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")


def _choice(name: str, v, allowed: tuple) -> None:
    if v not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {v!r}")


def _bool(name: str, v) -> None:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be True or False, got {v!r}")


def _dims(cfg, name: str) -> None:
    v = getattr(cfg, name)
    if isinstance(v, list):  # configs read from JSON carry lists
        v = tuple(v)
        object.__setattr__(cfg, name, v)
    if not isinstance(v, tuple) or not v or any(isinstance(d, bool) or not isinstance(d, int)
                                                or d < 1 for d in v):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints, got {v!r}")


_EMA_BUFFERS = ("copy", "ema", "own")

# ---------------------------------------------------------------------------------------------
# Configs


@dataclass(frozen=True)
class SimCLRConfig:
    """SimCLR (Chen et al., 2020). ``proj_layers=0`` means no projector."""

    temperature: float = 0.1
    proj_hidden_dim: int | None = None  # None: the feature dimension, as the official head
    proj_dim: int = 128
    proj_layers: int = 2
    distributed: bool = True  # gather across processes under torch.distributed

    def __post_init__(self):
        _pos("temperature", self.temperature)
        if self.proj_hidden_dim is not None:
            _pos_int("proj_hidden_dim", self.proj_hidden_dim)
        _pos_int("proj_dim", self.proj_dim)
        _pos_int("proj_layers", self.proj_layers, low=0)
        _bool("distributed", self.distributed)


@dataclass(frozen=True)
class InfoNCEConfig:
    """InfoNCE in the identifiability form (Zimmermann et al., 2021), on the encoder output."""

    temperature: float = 1.0
    similarity: str = "dot"
    p: float = 2.0
    negatives: str = "positives"
    include_anchor: bool = False
    normalize: bool = False  # L2-normalise before the loss (if the encoder does not)
    distributed: bool = True  # gather across processes under torch.distributed

    def __post_init__(self):
        _pos("temperature", self.temperature)
        _choice("similarity", self.similarity, ("dot", "lp"))
        _pos("p", self.p)
        _choice("negatives", self.negatives, ("positives", "anchors"))
        _bool("include_anchor", self.include_anchor)
        _bool("normalize", self.normalize)
        _bool("distributed", self.distributed)


@dataclass(frozen=True)
class BYOLConfig:
    """BYOL (Grill et al., 2020).

    Collapse ablations (Grill et al., 2020; Jha et al., 2024): ``predictor=False``
    drops the predictor, so the online projection regresses the target projection directly;
    ``tau0=tau_end=0`` makes the target the current online network (no moving average) and
    ``tau0=tau_end=1`` freezes the target at its random initialisation.
    """

    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    pred_hidden_dim: int = 4096
    tau0: float = 0.996
    tau_end: float = 1.0
    ema_buffers: str = "copy"
    predictor: bool = True

    def __post_init__(self):
        for name in ("proj_hidden_dim", "proj_dim", "pred_hidden_dim"):
            _pos_int(name, getattr(self, name))
        _bool("predictor", self.predictor)
        _unit("tau0", self.tau0)
        _unit("tau_end", self.tau_end)
        if self.tau_end < self.tau0:
            raise ValueError(f"tau_end must be >= tau0 = {self.tau0}, got {self.tau_end}")
        _choice("ema_buffers", self.ema_buffers, _EMA_BUFFERS)


@dataclass(frozen=True)
class SimSiamConfig:
    """SimSiam (Chen and He, 2021); the paper uses ``proj_layers=2`` on CIFAR.

    Collapse ablations (Chen and He, 2021; Jha et al., 2024): ``predictor=False``
    removes the predictor (the module has none; each projection is compared with the other
    view's), and ``stop_gradient=False`` lets the gradient flow through the target projection
    as well.
    """

    proj_hidden_dim: int = 2048
    proj_dim: int = 2048
    proj_layers: int = 3
    pred_hidden_dim: int = 512
    predictor: bool = True
    stop_gradient: bool = True

    def __post_init__(self):
        for name in ("proj_hidden_dim", "proj_dim", "proj_layers", "pred_hidden_dim"):
            _pos_int(name, getattr(self, name))
        _bool("predictor", self.predictor)
        _bool("stop_gradient", self.stop_gradient)


@dataclass(frozen=True)
class SwAVConfig:
    r"""SwAV (Caron et al., 2020). The queue is used once ``queue_length`` rows are filled.

    Collapse ablation (Jha et al., 2024): ``targets="softmax"`` replaces the Sinkhorn codes by
    the row softmax :math:`q_i = \operatorname{softmax}(S_i / \varepsilon)` of each sample's
    scores, computed without gradient: the same sharpness, no equipartition over the
    prototypes. The queue only feeds Sinkhorn, so it must be off (``queue_length=0``).
    """

    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    num_prototypes: int = 3000
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    freeze_prototypes_steps: int = 313
    queue_length: int = 0
    queue_start_step: int = 0
    distributed: bool = True  # gather across processes under torch.distributed
    targets: str = "sinkhorn"

    def __post_init__(self):
        for name in ("proj_hidden_dim", "proj_dim", "num_prototypes"):
            _pos_int(name, getattr(self, name))
        _pos("temperature", self.temperature)
        _pos("epsilon", self.epsilon)
        for name in ("sinkhorn_iterations", "freeze_prototypes_steps", "queue_length",
                     "queue_start_step"):
            _pos_int(name, getattr(self, name), low=0)
        _bool("distributed", self.distributed)
        _choice("targets", self.targets, ("sinkhorn", "softmax"))
        if self.targets == "softmax" and self.queue_length:
            raise ValueError(
                f"queue_length must be 0 with targets='softmax' (the queue only feeds "
                f"Sinkhorn), got {self.queue_length}"
            )


@dataclass(frozen=True)
class DINOConfig:
    """DINO (Caron et al., 2021), two global crops.

    Collapse ablations (Caron et al., 2021; Jha et al., 2024):
    ``centering=False`` never subtracts a center from the teacher outputs (the center buffer
    stays 0), and ``sharpening=False`` uses the student temperature for the teacher at every
    step (no sharpening; the teacher temperature fields and their warm-up are then unused).
    """

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_layers: int = 3
    use_bn: bool = False
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_steps: int = 0
    center_momentum: float = 0.9
    tau0: float = 0.996
    tau_end: float = 1.0
    freeze_last_layer_steps: int = 0
    ema_buffers: str = "copy"
    distributed: bool = True  # gather across processes under torch.distributed
    centering: bool = True
    sharpening: bool = True

    def __post_init__(self):
        for name in ("out_dim", "hidden_dim", "bottleneck_dim", "head_layers"):
            _pos_int(name, getattr(self, name))
        _bool("use_bn", self.use_bn)
        _bool("norm_last_layer", self.norm_last_layer)
        for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
            _pos(name, getattr(self, name))
        _pos_int("warmup_teacher_temp_steps", self.warmup_teacher_temp_steps, low=0)
        _pos_int("freeze_last_layer_steps", self.freeze_last_layer_steps, low=0)
        _unit("center_momentum", self.center_momentum)
        _unit("tau0", self.tau0)
        _unit("tau_end", self.tau_end)
        if self.tau_end < self.tau0:
            raise ValueError(f"tau_end must be >= tau0 = {self.tau0}, got {self.tau_end}")
        _choice("ema_buffers", self.ema_buffers, _EMA_BUFFERS)
        _bool("distributed", self.distributed)
        _bool("centering", self.centering)
        _bool("sharpening", self.sharpening)


@dataclass(frozen=True)
class BarlowTwinsConfig:
    """Barlow Twins (Zbontar et al., 2021).

    Collapse ablation (Jha et al., 2024): ``lambd=0`` removes the off-diagonal
    (redundancy-reduction) term and keeps only the invariance of each standardised dimension.
    """

    proj_dims: tuple[int, ...] = (8192, 8192, 8192)
    lambd: float = 0.0051
    scale: float = 1.0
    distributed: bool = True  # gather across processes under torch.distributed

    def __post_init__(self):
        _dims(self, "proj_dims")
        _nonneg("lambd", self.lambd)
        _pos("scale", self.scale)
        _bool("distributed", self.distributed)


@dataclass(frozen=True)
class VICRegConfig:
    """VICReg (Bardes et al., 2022) and its entropy variants (Shwartz-Ziv et al., 2023).

    Collapse ablation (Bardes et al., 2022; Jha et al., 2024): ``std_coeff=0``
    removes the variance term and keeps invariance and covariance.
    """

    proj_dims: tuple[int, ...] = (8192, 8192, 8192)
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    estimator: str = "vicreg"
    entropy_coeff: float = 1.0
    sigma: float | None = None  # pairwise bandwidth; None: sqrt(expander width)
    kind: str = "kl"
    distributed: bool = True  # gather across processes under torch.distributed

    def __post_init__(self):
        _dims(self, "proj_dims")
        for name in ("sim_coeff", "std_coeff", "cov_coeff", "entropy_coeff"):
            _nonneg(name, getattr(self, name))
        _choice("estimator", self.estimator, ("vicreg", "logdet", "pairwise"))
        if self.sigma is not None:
            _pos("sigma", self.sigma)
        _choice("kind", self.kind, ("kl", "bhattacharyya"))
        _bool("distributed", self.distributed)


@dataclass(frozen=True)
class DIETConfig:
    """DIET (Balestriero, 2023): ``num_instances`` is required."""

    num_instances: int
    beta: float = 1.0
    learn_beta: bool = False
    label_smoothing: float = 0.0
    normalize_rows: bool = False

    def __post_init__(self):
        _pos_int("num_instances", self.num_instances, low=2)
        _pos("beta", self.beta)
        _bool("learn_beta", self.learn_beta)
        _unit("label_smoothing", self.label_smoothing)
        _bool("normalize_rows", self.normalize_rows)


@dataclass(frozen=True)
class SupervisedConfig:
    """Supervised cross-entropy: ``num_classes`` is required."""

    num_classes: int
    label_smoothing: float = 0.0

    def __post_init__(self):
        _pos_int("num_classes", self.num_classes, low=2)
        _unit("label_smoothing", self.label_smoothing)


@dataclass(frozen=True)
class StabilityConfig:
    """The stability paper's simplified objective (Jha et al., 2024)."""

    lambd: float = 1.0
    proj_dims: tuple[int, ...] | None = None  # None: no projector
    distributed: bool = True  # gather across processes under torch.distributed

    def __post_init__(self):
        _nonneg("lambd", self.lambd)
        if self.proj_dims is not None:
            _dims(self, "proj_dims")
        _bool("distributed", self.distributed)


# ---------------------------------------------------------------------------------------------
# Base class


def _upcast(z: torch.Tensor) -> torch.Tensor:
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def _chain(nets):
    """The networks ``nets`` applied in turn, as one callable."""
    if len(nets) == 1:
        return nets[0]

    def chained(x):
        for net in nets:
            x = net(x)
        return x

    return chained


@torch.no_grad()
def _center_norm(*zs: torch.Tensor) -> torch.Tensor:
    """Norm of the mean of the L2-normalised embeddings (the stability paper's center vector)."""
    u = F.normalize(torch.cat(zs).detach().float(), dim=1)
    return u.mean(0).norm()


def _negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    r"""SimSiam's loss without the stop-gradient, :math:`-\frac{1}{n}\sum_i \cos(p_i, z_i)`.

    Same value as ``losses.simsiam(p, z)``, but the gradient flows into both arguments; fp32
    as the library losses.
    """
    with torch.autocast(p.device.type, enabled=False):
        u, v = F.normalize(_upcast(p), dim=1), F.normalize(_upcast(z), dim=1)
        return -(u * v).sum(1).mean()


def _swav_softmax_targets(scores_a, scores_b, *, temperature: float, epsilon: float):
    r"""SwAV's swapped prediction with row-softmax codes instead of Sinkhorn ones.

    .. math::

        q_i = \operatorname{softmax}(S_i / \varepsilon), \qquad
        L = -\frac{1}{2n} \sum_i \sum_k \big[ q_{a,ik} \log p_{b,ik}
            + q_{b,ik} \log p_{a,ik} \big],

    with :math:`p = \operatorname{softmax}(S/\tau)` and the codes q carrying no gradient.
    """
    with torch.autocast(scores_a.device.type, enabled=False):
        s_a, s_b = _upcast(scores_a), _upcast(scores_b)
        q_a = F.softmax(s_a.detach() / epsilon, dim=1)
        q_b = F.softmax(s_b.detach() / epsilon, dim=1)
        log_p_a = F.log_softmax(s_a / temperature, dim=1)
        log_p_b = F.log_softmax(s_b / temperature, dim=1)
        return -0.5 * ((q_a * log_p_b).sum(1).mean() + (q_b * log_p_a).sum(1).mean())


class Method(nn.Module):
    """Base class: an encoder f, heads, a loss and state.

    Subclasses set ``name``, ``config_class``, ``needs`` (``None``, ``"index"`` or ``"y"``)
    and ``two_views``, and implement ``_loss``; :func:`register_method` adds one of your own.

    Attributes
    ----------
    encoder : nn.Module
        The backbone f whose output is the representation.
    config : dataclass
        The frozen config.
    feature_dim : int
        Dimension of the encoder output.
    step : int
        Number of completed optimiser steps (saved in the state dict).
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # display name in tables and legends (default: ``name``)
    config_class: ClassVar[type] = object
    needs: ClassVar[str | None] = None
    two_views: ClassVar[bool] = True
    concat_views: ClassVar[bool] = False

    def __init__(self, encoder: nn.Module, config, feature_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config
        self.feature_dim = feature_dim
        self.step = 0

    # -- public API ---------------------------------------------------------------------------

    def forward(
        self,
        x_a: torch.Tensor,
        x_b: torch.Tensor | None = None,
        *,
        index: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss on a batch of views and a dict of detached scalar logs.

        Parameters
        ----------
        x_a : Tensor
            First view of the n samples.
        x_b : Tensor or None
            Second view of the same samples, with ``x_a``'s shape. Single-view methods (``diet``,
            ``supervised``) accept ``x_b=None`` and average over the views they are given.
        index : Tensor, shape (n,), optional
            Integer sample indices (required by ``diet``).
        y : Tensor, shape (n,), optional
            Integer class labels (required by ``supervised``).

        Returns
        -------
        tuple
            ``(loss, logs)``.
        """
        self._check_inputs(x_a, x_b, index, y)
        loss, logs = self._loss(x_a, x_b, index=index, y=y)
        return loss, {"loss": loss.detach(), **logs}

    def loss(self, x_a, x_b=None, *, index=None, y=None):
        """Same as calling the method (goes through ``nn.Module.__call__`` hooks, as DDP needs)."""
        return self(x_a, x_b, index=index, y=y)

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Update state after ``optimizer.step()`` of step ``step`` (0-based) of ``total_steps``.

        Returns
        -------
        dict
            Scalars worth logging (for example the EMA momentum used).
        """
        for label, value, low in (("step", step, 0), ("total_steps", total_steps, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{label} must be an int >= {low}, got {value!r}")
        step, total_steps = int(step), int(total_steps)
        logs = self._after_step(step, total_steps)
        self.step = step + 1
        return logs

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The representation f(x) (the encoder output, before any head)."""
        return self.encoder(x)

    @torch.no_grad()
    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding the loss sees, for monitors on held-out data: the (student, online)
        projector or head output, or the encoder output for methods without a head.

        Unnormalised; the center vector of its L2-normalised rows is the ``center_norm`` that
        the forward pass logs (which uses the teacher's projections for BYOL).
        """
        return self._project(x)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, step={self.step}"

    def get_extra_state(self) -> dict[str, Any]:
        """Python-side state saved in the state dict (the step counter)."""
        return {"step": self.step}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self.step = int(state["step"])

    # -- helpers ------------------------------------------------------------------------------

    def _check_inputs(self, x_a, x_b, index, y) -> None:
        if not isinstance(x_a, torch.Tensor):
            raise TypeError(f"x_a must be a torch.Tensor, got {type(x_a).__name__}")
        if x_b is None:
            if self.two_views:
                raise ValueError(f"method {self.name!r} needs two views: x_b is None")
        elif not isinstance(x_b, torch.Tensor):
            raise TypeError(f"x_b must be a torch.Tensor or None, got {type(x_b).__name__}")
        elif x_b.shape != x_a.shape:
            raise ValueError(
                f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and "
                f"{tuple(x_b.shape)}"
            )
        for label, value in (("index", index), ("y", y)):
            if self.needs == label and value is None:
                raise ValueError(
                    f"method {self.name!r} needs {label}= (an integer tensor of shape (n,))"
                )

    def _pair(self, nets, x_a: torch.Tensor, x_b: torch.Tensor):
        """Both views through the networks ``nets`` (one module or a list, applied in turn).

        SimCLR, SwAV and DINO put the views in one batch throughout, so their batch norm sees
        both. The other methods keep each view's own batch statistics: the views share one
        batch up to the first network that mixes rows (batch norm in training mode), and go on
        as two from there. The shared stretch halves the kernel launches of, say, an MLP
        encoder under a batch-normalised projector, with the same numbers as two calls.
        """
        nets = list(nets) if isinstance(nets, (list, tuple)) else [nets]
        if not self.concat_views and not all(isinstance(net, nn.Module) for net in nets):
            raise TypeError("_pair needs modules to tell where batch norm mixes the views")
        split = len(nets) if self.concat_views else next(
            (i for i, net in enumerate(nets) if mixes_rows(net)), len(nets))
        if split:
            x_a, x_b = one_batch(_chain(nets[:split]), x_a, x_b)
        if split == len(nets):
            return x_a, x_b
        rest = _chain(nets[split:])
        return rest(x_a), rest(x_b)

    def _loss(self, x_a, x_b, *, index, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def _after_step(self, step: int, total_steps: int) -> dict[str, float]:
        return {}


# ---------------------------------------------------------------------------------------------
# Methods


class SimCLR(Method):
    """SimCLR: encoder, projector, NT-Xent over the 2n views."""

    name, config_class, concat_views = "simclr", SimCLRConfig, True
    label = "SimCLR"

    def __init__(self, encoder, config: SimCLRConfig, feature_dim, generator=None):
        super().__init__(encoder, config, feature_dim)
        self.projector = (
            simclr_projector(
                feature_dim,
                hidden_dim=config.proj_hidden_dim,
                out_dim=config.proj_dim,
                num_layers=config.proj_layers,
                generator=generator,
            )
            if config.proj_layers
            else nn.Identity()
        )

    def _project(self, x):
        return self.projector(self.encoder(x))

    def _loss(self, x_a, x_b, *, index, y):
        z_a, z_b = self._pair([self.encoder, self.projector], x_a, x_b)
        cfg = self.config
        loss = losses.nt_xent(z_a, z_b, temperature=cfg.temperature, distributed=cfg.distributed)
        return loss, {"center_norm": _center_norm(z_a, z_b)}


class InfoNCE(Method):
    """InfoNCE of the identifiability theory on the encoder output (no projector)."""

    name, config_class = "infonce", InfoNCEConfig
    label = "InfoNCE"

    def __init__(self, encoder, config: InfoNCEConfig, feature_dim, generator=None):
        super().__init__(encoder, config, feature_dim)

    def _loss(self, x_a, x_b, *, index, y):
        cfg = self.config
        z_a, z_b = self._pair(self.encoder, x_a, x_b)
        if cfg.normalize:
            # Upcast first so that the normalised embeddings reach the loss in float32.
            z_a, z_b = normalize_rows(_upcast(z_a)), normalize_rows(_upcast(z_b))
        loss = losses.info_nce(
            z_a,
            z_b,
            temperature=cfg.temperature,
            similarity=cfg.similarity,
            p=cfg.p,
            negatives=cfg.negatives,
            include_anchor=cfg.include_anchor,
            distributed=cfg.distributed,
        )
        return loss, {"center_norm": _center_norm(z_a, z_b)}


class _TeacherMixin:
    """Shared by BYOL and DINO: the student network and the EMA teacher following it."""

    def _student(self) -> nn.Sequential:
        # Built on the fly so the encoder is registered only once in the module tree; the
        # names ("0.", "1.") match the teacher's copy.
        return nn.Sequential(self.encoder, self._student_head())

    def _after_step(self, step, total_steps):
        tau = self.teacher.update(self._student(), step=step, total_steps=total_steps)
        return {"tau": tau}


class BYOL(_TeacherMixin, Method):
    """BYOL: online encoder, projector, predictor; EMA target encoder and projector."""

    name, config_class = "byol", BYOLConfig
    label = "BYOL"

    def __init__(self, encoder, config: BYOLConfig, feature_dim, generator=None):
        super().__init__(encoder, config, feature_dim)
        self.projector = byol_mlp(
            feature_dim, hidden_dim=config.proj_hidden_dim, out_dim=config.proj_dim,
            generator=generator,
        )
        self.predictor = (
            byol_mlp(
                config.proj_dim, hidden_dim=config.pred_hidden_dim, out_dim=config.proj_dim,
                generator=generator,
            )
            if config.predictor
            else None
        )
        self.teacher = EMATeacher(
            self._student(), tau0=config.tau0, tau_end=config.tau_end, buffers=config.ema_buffers
        )

    def _student_head(self):
        return self.projector

    def _project(self, x):
        return self.projector(self.encoder(x))

    def _loss(self, x_a, x_b, *, index, y):
        online = [self.encoder, self.projector] + [self.predictor] * (self.predictor is not None)
        p_a, p_b = self._pair(online, x_a, x_b)
        with torch.no_grad():
            t_a, t_b = self._pair(list(self.teacher.module), x_a, x_b)
        loss = losses.byol(p_a, t_b) + losses.byol(p_b, t_a)
        return loss, {"center_norm": _center_norm(t_a, t_b)}


class SimSiam(Method):
    """SimSiam: encoder, projector, predictor, stop-gradient on the other view's projection."""

    name, config_class = "simsiam", SimSiamConfig
    label = "SimSiam"

    def __init__(self, encoder, config: SimSiamConfig, feature_dim, generator=None):
        super().__init__(encoder, config, feature_dim)
        self.projector = simsiam_projector(
            feature_dim, hidden_dim=config.proj_hidden_dim, out_dim=config.proj_dim,
            num_layers=config.proj_layers, generator=generator,
        )
        self.predictor = (
            simsiam_predictor(
                config.proj_dim, hidden_dim=config.pred_hidden_dim, generator=generator
            )
            if config.predictor
            else None
        )

    def _project(self, x):
        return self.projector(self.encoder(x))

    def _loss(self, x_a, x_b, *, index, y):
        z_a, z_b = self._pair([self.encoder, self.projector], x_a, x_b)
        if self.predictor is None:
            p_a, p_b = z_a, z_b
        else:
            p_a, p_b = self.predictor(z_a), self.predictor(z_b)
        # losses.simsiam detaches its target: that is the stop-gradient.
        cosine = losses.simsiam if self.config.stop_gradient else _negative_cosine
        loss = 0.5 * (cosine(p_a, z_b) + cosine(p_b, z_a))
        return loss, {"center_norm": _center_norm(z_a, z_b)}


class SwAV(Method):
    """SwAV: projector, unit-norm prototypes, swapped prediction of Sinkhorn codes, queue."""

    name, config_class, concat_views = "swav", SwAVConfig, True
    label = "SwAV"

    def __init__(self, encoder, config: SwAVConfig, feature_dim, generator=None):
        super().__init__(encoder, config, feature_dim)
        self.projector = swav_projector(
            feature_dim, hidden_dim=config.proj_hidden_dim, out_dim=config.proj_dim,
            generator=generator,
        )
        self.prototypes = Prototypes(config.proj_dim, config.num_prototypes, generator=generator)
        if config.queue_length:
            self.register_buffer("queue", torch.zeros(2, config.queue_length, config.proj_dim))
        else:
            self.queue = None
        self.queue_filled = 0

    def get_extra_state(self):
        """The step counter and the number of filled queue rows."""
        return {"step": self.step, "queue_filled": self.queue_filled}

    def set_extra_state(self, state):
        """Restore what :meth:`get_extra_state` saved."""
        self.step, self.queue_filled = int(state["step"]), int(state["queue_filled"])

    def _project(self, x):
        return self.projector(self.encoder(x))

    def _loss(self, x_a, x_b, *, index, y):
        cfg = self.config
        z_a, z_b = self._pair([self.encoder, self.projector], x_a, x_b)
        frozen = self.step < cfg.freeze_prototypes_steps
        s_a, s_b = self.prototypes(z_a, detach=frozen), self.prototypes(z_b, detach=frozen)
        queue_a = queue_b = None
        use_queue = self.queue is not None and self.queue_filled >= self.queue.shape[1]
        if use_queue:
            with torch.no_grad():
                c = self.prototypes.weight.detach()
                queue_a, queue_b = self.queue[0] @ c.t(), self.queue[1] @ c.t()
        if cfg.targets == "softmax":
            loss = _swav_softmax_targets(
                s_a, s_b, temperature=cfg.temperature, epsilon=cfg.epsilon
            )
        else:
            loss = losses.swav(
                s_a, s_b, temperature=cfg.temperature, epsilon=cfg.epsilon,
                iterations=cfg.sinkhorn_iterations, queue_a=queue_a, queue_b=queue_b,
                distributed=cfg.distributed,
            )
        if self.queue is not None and self.training and self.step >= cfg.queue_start_step:
            self._push(z_a.detach(), z_b.detach())
        logs = {"center_norm": _center_norm(z_a, z_b)}
        logs["queue_used"] = torch.tensor(float(use_queue))
        return loss, logs

    @torch.no_grad()
    def _push(self, z_a, z_b):
        n, length = z_a.shape[0], self.queue.shape[1]
        if n > length:
            raise ValueError(f"queue_length ({length}) must be >= the batch size ({n})")
        self.queue[:, n:] = self.queue[:, :-n].clone()
        self.queue[0, :n] = z_a.to(self.queue.dtype)
        self.queue[1, :n] = z_b.to(self.queue.dtype)
        self.queue_filled = min(self.queue_filled + n, length)

    def _after_step(self, step, total_steps):
        self.prototypes.normalize_()
        return {}


class DINO(_TeacherMixin, Method):
    """DINO: student encoder and head, EMA teacher, centering and sharpening."""

    name, config_class, concat_views = "dino", DINOConfig, True
    label = "DINO"

    def __init__(self, encoder, config: DINOConfig, feature_dim, generator=None):
        super().__init__(encoder, config, feature_dim)
        self.head = DINOHead(
            feature_dim, config.out_dim, hidden_dim=config.hidden_dim,
            bottleneck_dim=config.bottleneck_dim, num_layers=config.head_layers,
            use_bn=config.use_bn, norm_last_layer=config.norm_last_layer, generator=generator,
        )
        self.teacher = EMATeacher(
            self._student(), tau0=config.tau0, tau_end=config.tau_end, buffers=config.ema_buffers
        )
        self.register_buffer("center", torch.zeros(1, config.out_dim))

    def _student_head(self):
        return self.head

    def teacher_temp(self) -> float:
        """The teacher temperature at the current step (linear warm-up, then constant; the
        student temperature when ``sharpening=False``)."""
        cfg = self.config
        if not cfg.sharpening:
            return cfg.student_temp
        return losses.dino_teacher_temp(
            self.step, warmup_steps=cfg.warmup_teacher_temp_steps,
            start=cfg.warmup_teacher_temp, end=cfg.teacher_temp,
        )

    def _student_forward(self, x):
        freeze = self.step < self.config.freeze_last_layer_steps
        return self.head(self.encoder(x), freeze_last_layer=freeze)

    def _project(self, x):
        return self.head(self.encoder(x))

    def _loss(self, x_a, x_b, *, index, y):
        cfg = self.config
        s_a, s_b = self._pair(self._student_forward, x_a, x_b)
        with torch.no_grad():
            t_a, t_b = self._pair(self.teacher, x_a, x_b)
        t_temp = self.teacher_temp()
        center = self.center if cfg.centering else torch.zeros_like(self.center)
        loss = losses.dino(
            torch.stack([s_a, s_b]), torch.stack([t_a, t_b]), center,
            student_temp=cfg.student_temp, teacher_temp=t_temp,
        )
        logs = {
            "center_norm": _center_norm(s_a, s_b),
            "dino_center_norm": self.center.norm().detach().clone(),
            "teacher_temp": torch.tensor(t_temp),
        }
        if self.training and cfg.centering:
            new = losses.dino_center_update(
                self.center, torch.stack([t_a, t_b]), momentum=cfg.center_momentum,
                distributed=cfg.distributed,
            )
            self.center.copy_(new)
        return loss, logs


class BarlowTwins(Method):
    """Barlow Twins: projector and the cross-correlation loss."""

    name, config_class = "barlow_twins", BarlowTwinsConfig
    label = "Barlow Twins"

    def __init__(self, encoder, config: BarlowTwinsConfig, feature_dim, generator=None):
        super().__init__(encoder, config, feature_dim)
        self.projector = barlow_twins_projector(
            feature_dim, dims=config.proj_dims, generator=generator
        )

    def _project(self, x):
        return self.projector(self.encoder(x))

    def _loss(self, x_a, x_b, *, index, y):
        cfg = self.config
        z_a, z_b = self._pair([self.encoder, self.projector], x_a, x_b)
        loss = losses.barlow_twins(
            z_a, z_b, lambd=cfg.lambd, scale=cfg.scale, distributed=cfg.distributed
        )
        return loss, {"center_norm": _center_norm(z_a, z_b)}


class VICReg(Method):
    """VICReg: expander and the variance-invariance-covariance loss (or an entropy variant)."""

    name, config_class = "vicreg", VICRegConfig
    label = "VICReg"

    def __init__(self, encoder, config: VICRegConfig, feature_dim, generator=None):
        super().__init__(encoder, config, feature_dim)
        self.projector = vicreg_expander(feature_dim, dims=config.proj_dims, generator=generator)

    def _project(self, x):
        return self.projector(self.encoder(x))

    def _loss(self, x_a, x_b, *, index, y):
        cfg = self.config
        z_a, z_b = self._pair([self.encoder, self.projector], x_a, x_b)
        if cfg.estimator == "vicreg":
            loss = losses.vicreg(
                z_a, z_b, sim_coeff=cfg.sim_coeff, std_coeff=cfg.std_coeff,
                cov_coeff=cfg.cov_coeff, distributed=cfg.distributed,
            )
        else:
            loss = losses.vicreg_entropy(
                z_a, z_b, estimator=cfg.estimator, sim_coeff=cfg.sim_coeff,
                entropy_coeff=cfg.entropy_coeff, sigma=cfg.sigma, kind=cfg.kind,
                distributed=cfg.distributed,
            )
        return loss, {"center_norm": _center_norm(z_a, z_b)}


class _Classifier(Method):
    """Shared by DIET and supervised: the mean cross-entropy over the given views."""

    two_views = False

    def _loss(self, x_a, x_b, *, index, y):
        feats = [self.encoder(x_a)] if x_b is None else list(self._pair(self.encoder, x_a, x_b))
        loss = sum(self._ce(self._logits(f), index=index, y=y) for f in feats) / len(feats)
        return loss, {"center_norm": _center_norm(*feats)}


class DIET(_Classifier):
    """DIET: a bias-free linear head over the training-sample indices."""

    name, config_class, needs = "diet", DIETConfig, "index"
    label = "DIET"

    def __init__(self, encoder, config: DIETConfig, feature_dim, generator=None):
        super().__init__(encoder, config, feature_dim)
        self.head = linear_head(feature_dim, config.num_instances, bias=False, generator=generator)
        beta = torch.tensor(float(config.beta))
        if config.learn_beta:
            self.beta = nn.Parameter(beta)
        else:
            self.register_buffer("beta", beta)
        if config.normalize_rows:
            self._normalize_rows()

    @torch.no_grad()
    def _normalize_rows(self):
        self.head.weight.copy_(normalize_rows(self.head.weight))

    def _logits(self, f):
        return self.beta * self.head(f)

    def _ce(self, logits, *, index, y):
        return losses.diet(logits, index, label_smoothing=self.config.label_smoothing)

    def _after_step(self, step, total_steps):
        if self.config.normalize_rows:
            self._normalize_rows()
        return {}


class Supervised(_Classifier):
    """Supervised cross-entropy of a linear classifier on the encoder output."""

    name, config_class, needs = "supervised", SupervisedConfig, "y"

    def __init__(self, encoder, config: SupervisedConfig, feature_dim, generator=None):
        super().__init__(encoder, config, feature_dim)
        self.classifier = linear_head(feature_dim, config.num_classes, generator=generator)

    def _logits(self, f):
        return self.classifier(f)

    def _ce(self, logits, *, index, y):
        return losses.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)


class Stability(Method):
    """The stability paper's simplified objective: invariance plus a center-vector penalty."""

    name, config_class = "stability", StabilityConfig

    def __init__(self, encoder, config: StabilityConfig, feature_dim, generator=None):
        super().__init__(encoder, config, feature_dim)
        self.projector = (
            vicreg_expander(feature_dim, dims=config.proj_dims, generator=generator)
            if config.proj_dims
            else nn.Identity()
        )

    def _project(self, x):
        return self.projector(self.encoder(x))

    def _loss(self, x_a, x_b, *, index, y):
        cfg = self.config
        z_a, z_b = self._pair([self.encoder, self.projector], x_a, x_b)
        loss = losses.stability(z_a, z_b, lambd=cfg.lambd, distributed=cfg.distributed)
        return loss, {"center_norm": _center_norm(z_a, z_b)}


# ---------------------------------------------------------------------------------------------
# Registry

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        SimCLR, InfoNCE, BYOL, SimSiam, SwAV, DINO, BarlowTwins, VICReg, DIET, Supervised,
        Stability,
    )
}


# The methods above; register_method adds a reader's own after them.
BUILTIN_METHODS: tuple[str, ...] = tuple(METHODS)


def available_methods() -> tuple[str, ...]:
    """Names accepted by :func:`build_method`, in a fixed order (registered ones last)."""
    return tuple(METHODS)


def method_label(name: str) -> str:
    """Display name of a method in tables and legends: its class's ``label``, else its
    ``name``; a string that names no method (a reference such as ``"raw x"``) comes back as is."""
    cls = METHODS.get(name)
    return (cls.label or cls.name) if cls is not None else name


def register_method(cls: type[Method] | None = None, *, replace: bool = False):
    """Make a new method known to :func:`build_method` and to the experiments that take
    method names (``platonic``); usable as a class decorator.

    The class subclasses :class:`Method`, sets ``name`` and ``config_class`` (a frozen
    dataclass whose fields all have defaults, or only the fields that :func:`method_config`
    is given), and implements ``_loss(x_a, x_b, *, index, y) -> (loss, logs)`` with a
    ``"center_norm"`` entry in ``logs``. Its ``__init__`` takes
    ``(encoder, config, feature_dim, generator=None)``. The results store keys cached results
    by the config and by a hash of the files that define the class (read here, see
    :func:`method_fingerprint`), so an edited file reruns the experiments that name the method
    in the next process that imports it (within one process, register the edited class with
    ``replace=True``).

    Parameters
    ----------
    cls : type
        The method class.
    replace : bool
        Replace an earlier registration of the same name (never a built-in method).

    Returns
    -------
    type
        ``cls`` itself (or a decorator when ``cls`` is omitted).
    """
    if cls is None:
        return lambda c: register_method(c, replace=replace)
    if not (isinstance(cls, type) and issubclass(cls, Method)) or cls is Method:
        raise TypeError(f"register_method needs a subclass of sithlib.methods.Method, got {cls!r}")
    name = cls.__dict__.get("name", "")
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(f"{cls.__name__}.name must be a lower-case identifier such as "
                         f"'my_method', got {name!r}")
    if not (dataclasses.is_dataclass(cls.config_class)
            and cls.config_class.__dataclass_params__.frozen):
        raise TypeError(f"{cls.__name__}.config_class must be a frozen dataclass, got "
                        f"{cls.config_class!r}")
    if cls.needs not in (None, "index", "y"):
        raise ValueError(f"{cls.__name__}.needs must be None, 'index' or 'y', got {cls.needs!r}")
    if name in BUILTIN_METHODS:
        raise ValueError(f"{name!r} is a built-in method; pick another name")
    if name in METHODS and not replace and METHODS[name] is not cls:
        raise ValueError(f"a method named {name!r} is already registered; pass replace=True")
    METHODS[name] = cls
    # Read now, when the files on disk are the code just imported (a later edit is not).
    _FINGERPRINTS[name] = _code_hash(cls)
    return cls


def unregister_method(name: str) -> None:
    """Forget a method added by :func:`register_method` (built-in methods stay)."""
    if name in BUILTIN_METHODS:
        raise ValueError(f"{name!r} is a built-in method and cannot be unregistered")
    if name not in METHODS:
        raise ValueError(f"no registered method {name!r}; registered: "
                         f"{[m for m in METHODS if m not in BUILTIN_METHODS]}")
    del METHODS[name]
    _FINGERPRINTS.pop(name, None)


def method_fingerprint(name: str) -> str:
    """A hash of a registered method's code ("" for built-ins, which ``VERSION`` covers), read
    when it was registered.

    The source files that define the class, its base classes and its config class, except
    sithlib's own (``VERSION`` covers those), so that an edited helper in the same file counts
    too; code they import from other modules of yours is not covered. A class whose file Python
    cannot read (one defined in a notebook cell) contributes its own source where ``inspect``
    finds it, and otherwise a token unique to this process, so that a later process never
    reuses results of code it cannot read.
    """
    _method_class(name)
    return "" if name in BUILTIN_METHODS else _FINGERPRINTS[name]


def _code_hash(cls: type) -> str:
    parts = []
    for c in (*cls.__mro__, cls.config_class):
        module = inspect.getmodule(c)
        if c is object or module is None or module.__name__.partition(".")[0] in (
                "sithlib", "torch", "builtins"):
            continue
        try:
            path = inspect.getsourcefile(c)
            text = Path(path).read_text() if path and Path(path).is_file() else None
            parts.append(text if text is not None else inspect.getsource(c))
        except (OSError, TypeError):
            # The token is already unique to this process: no pid needed beside it.
            parts.append(f"{c.__module__}.{c.__qualname__}:{id(c)}:{_PROCESS_TOKEN}")
    text = "\n".join(dict.fromkeys(parts))  # one copy of a file several classes share
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_PROCESS_TOKEN = secrets.token_hex(8)
_FINGERPRINTS: dict[str, str] = {}


def _method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def method_config(name: str, config=None, **overrides):
    """The typed config of method ``name``: defaults, a mapping or a config, plus overrides.

    Parameters
    ----------
    name : str
        A method name (see :func:`available_methods`).
    config : dataclass instance, mapping or None
        A config of the method's class, a mapping of field values, or None for the defaults.
    **overrides
        Field values that replace those of ``config``.

    Returns
    -------
    config : dataclass instance
        The frozen config dataclass of the method.
    """
    cls = _method_class(name).config_class
    fields = {f.name for f in dataclasses.fields(cls)}
    if config is None:
        values: dict[str, Any] = {}
    elif isinstance(config, cls):
        values = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        values = dict(config)
    else:
        raise TypeError(
            f"config for method {name!r} must be a {cls.__name__}, a mapping or None, got "
            f"{type(config).__name__}"
        )
    values.update(overrides)
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(
            f"unknown config field(s) {unknown} for method {name!r}; allowed: {sorted(fields)}"
        )
    required = sorted(
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    missing = [f for f in required if f not in values]
    if missing:
        raise ValueError(f"method {name!r} needs the config field(s) {missing}")
    return cls(**values)


def build_method(
    name: str,
    encoder: nn.Module,
    config=None,
    *,
    feature_dim: int | None = None,
    generator: torch.Generator | None = None,
) -> Method:
    """Build the SSL method ``name`` around ``encoder``.

    Parameters
    ----------
    name : str
        One of ``simclr``, ``infonce``, ``byol``, ``simsiam``, ``swav``, ``dino``,
        ``barlow_twins``, ``vicreg``, ``diet``, ``supervised``, ``stability``, or a name added
        with :func:`register_method`.
    encoder : nn.Module
        The backbone f, mapping a batch of inputs to (n, feature_dim) features.
    config : dataclass instance, mapping or None
        The method's config (see :func:`method_config`); None gives the official defaults.
    feature_dim : int, optional
        Encoder output dimension; read from ``encoder.out_dim`` when not given.
    generator : torch.Generator, optional
        Source of the heads' initial weights (the encoder brings its own).

    Returns
    -------
    Method
    """
    cls = _method_class(name)
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
    cfg = method_config(name, config)
    if feature_dim is None:
        feature_dim = getattr(encoder, "out_dim", None)
        if feature_dim is None:
            raise ValueError("feature_dim is needed: the encoder has no out_dim attribute")
    _pos_int("feature_dim", feature_dim)
    return cls(encoder, cfg, feature_dim, generator=generator)
