"""One training engine, from a laptop CPU to a GPU, for every experiment in the book.

The whole loop fits on one screen (``train``). What varies between experiments comes in as
three functions:

- ``make_model(seed) -> nn.Module``: a fresh model, initialised from ``seed``;
- ``sample(generator, n) -> tuple of tensors``: one batch, drawn on the device from ``generator``
  (or a list of such functions, one per seed: an ensemble whose members learn different data,
  such as one configuration of a grid each);
- ``loss_fn(model, batch) -> (loss, embedding)`` or ``(loss, embedding, logs)``: the scalar
  loss, an embedding whose spread is watched for collapse and, optionally, a dict of scalar
  tensors that become columns of the curves at eval steps (for example a method's center norm).

Models with state: a model that has an ``after_step(step, total_steps)`` method (every
``sithlib.methods.Method``: EMA teachers, DINO's center, SwAV's queue) gets it called after each
optimiser step with the 0-based step. Such models, and models with buffers (BatchNorm), are
trained one after the other instead of in a vmapped ensemble; the numbers are the same.

Seed ensembles: with ``seeds = S`` and ``ensemble=True`` the S models are trained in one
process, their parameters stacked and the step vectorised with ``torch.func.vmap``; each seed
keeps its own data stream and its own Adam state, so the numbers equal S separate runs up to
float rounding (Adam is elementwise, and the gradient of the summed losses with respect to the
stacked parameters is the stack of per-seed gradients).

Speed: ``precision="bf16"`` runs the forward pass under bfloat16 autocast with TF32 matmuls
(``"tf32"``: TF32 only); ``compile=True`` compiles the per-step forward and loss with
``torch.compile`` (``compile="reduce-overhead"`` also captures it as a CUDA graph, which pays
off for small networks whose step is dominated by kernel launches); ``channels_last=True``
stores image models and batches in NHWC, the layout tensor cores prefer; on a GPU Adam and SGD
use their fused kernels. The step itself never reads a device value back except at eval steps;
the exact samplers do (a rejection loop asks how many rows are still to draw), so
``prefetch = K`` draws the data of K steps in one call of ``sample`` and pays those
synchronisations once per K steps. ``sample`` must then return i.i.d.
rows (every sampler in the book does): a draw of K * batch_size rows is cut into K batches.
On the CPU the engine lets glibc keep freed memory (``keep_freed_cpu_memory``): without it the
big temporaries of a vmapped ensemble come back from the kernel as fresh pages every step.

Several GPUs: under ``torchrun --nproc_per_node=N`` (process group initialised), each process
trains on its slice of the global batch and DistributedDataParallel averages the gradients.
DDP wraps the whole of ``loss_fn`` (model and loss as one module), so the gradients are
averaged whichever submodules the loss calls, and ``loss_fn`` still receives the model itself
(its ``embed``, ``encoder``, cached outputs). Losses that need the whole batch gather it
themselves (``distributed=True`` in ``sithlib.losses``, the default of the method configs).
On GPUs BatchNorm becomes SyncBatchNorm, with statistics over the global batch; gloo on the CPU
has no SyncBatchNorm, so there it stays per process. Buffers are not broadcast from rank 0
(SwAV's queue holds each process's own rows; every other buffer is a function of the
parameters and the gathered batch, equal on all processes), and models with training hooks
(``after_step``: the methods, which freeze SwAV's prototypes or DINO's last layer for a while)
let DDP find parameters without a gradient. Vmapped ensembles are single-process only.

Checkpoints: a ``checkpoint`` object with ``load() -> dict | None`` and ``save(dict)`` (the
results store provides one that writes atomically) receives the full state every
``checkpoint_every`` steps: parameters, optimizer, generator states, the curves so far. A run
that is killed resumes from there and ends with bit-identical numbers on the CPU.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import ctypes
import functools
import inspect
import math
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.parallel import DistributedDataParallel

from sithlib.losses import distributed as dist
from sithlib.losses._common import flag, in_range, integer, nonnegative, positive
from sithlib.models.ema import cosine_schedule
from sithlib.optim import LARS

OPTIMIZERS = ("adam", "adamw", "sgd", "lars")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("fp32", "tf32", "bf16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (paper defaults of cl-ica: Adam, lr 1e-4, batch 6144).

    The learning rate is constant by default, as in cl-ica (every experiment of the book uses
    that); ``warmup_steps`` and ``lr_schedule="cosine"`` give the recipe of SimCLR, BYOL,
    Barlow Twins and VICReg (a linear warm-up, then a cosine decay to ``min_lr``), see
    :func:`learning_rate`. Weight decay,
    when set, applies to every parameter with Adam, AdamW and SGD (LARS leaves out biases and
    normalisation parameters); every experiment here uses none.
    """

    steps: int = 1000
    batch_size: int = 6144
    lr: float = 1e-4
    lr_schedule: str = "constant"  # or "cosine": from lr after the warm-up down to min_lr
    warmup_steps: int = 0  # linear warm-up: update t <= warmup_steps uses lr * t / warmup_steps
    min_lr: float = 0.0  # the cosine's last value
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    eta: float = 0.001  # LARS trust coefficient
    seeds: int = 1
    first_seed: int = 0
    ensemble: bool = True
    eval_every: int = 100
    eval_at_start: bool = False  # also record step 0 (the initial networks, no update yet)
    checkpoint_every: int = 0
    collapse_std: float = 1e-4
    precision: str = "fp32"
    compile: bool | str = False  # True or a torch.compile mode ("reduce-overhead": CUDA graphs)
    channels_last: bool = False
    prefetch: int | None = None  # steps of data per call of sample; None: 1 on CPU, 16 on CUDA

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                             f"got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                             f"got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")
        if not isinstance(self.compile, bool) and self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be False, True or one of {', '.join(COMPILE_MODES)}, "
                             f"got {self.compile!r}")
        for name in ("steps", "batch_size", "seeds", "eval_every"):
            integer(name, getattr(self, name), low=1)
        integer("first_seed", self.first_seed, low=0)
        integer("checkpoint_every (0 turns checkpoints off)", self.checkpoint_every, low=0)
        positive("lr", self.lr)
        if integer("warmup_steps", self.warmup_steps, low=0) > self.steps:
            raise ValueError(f"warmup_steps must be <= steps ({self.steps}), "
                             f"got {self.warmup_steps}")
        in_range("min_lr", self.min_lr, 0.0, self.lr)
        if self.min_lr and self.lr_schedule == "constant":
            raise ValueError(f"min_lr is the end of lr_schedule='cosine'; with 'constant' it must "
                             f"be 0, got {self.min_lr!r}")
        nonnegative("weight_decay", self.weight_decay)
        in_range("momentum", self.momentum, 0.0, 1.0, closed_high=False)
        nonnegative("eta (the LARS trust coefficient)", self.eta)
        nonnegative("collapse_std", self.collapse_std)
        for name in ("ensemble", "eval_at_start", "channels_last"):
            flag(name, getattr(self, name))
        if self.prefetch is not None and (isinstance(self.prefetch, bool) or self.prefetch < 1):
            raise ValueError(f"prefetch must be None (automatic) or an int >= 1, "
                             f"got {self.prefetch!r}")
        if self.prefetch and self.checkpoint_every % self.prefetch:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be a multiple of "
                             f"prefetch ({self.prefetch}): a checkpoint falls between draws")

    def prefetch_steps(self, device) -> int:
        """Steps of data drawn per call of ``sample``: ``prefetch``, or automatically 1 on the
        CPU (where a synchronisation costs nothing) and 16 on a GPU, cut to a divisor of
        ``checkpoint_every`` so that every checkpoint falls between two draws."""
        if self.prefetch is not None:
            return self.prefetch
        if torch.device(device).type == "cpu":
            return 1
        return math.gcd(16, self.checkpoint_every) if self.checkpoint_every else 16


def learning_rate(step: int, cfg: TrainConfig) -> float:
    r"""The learning rate of update ``step`` (1 to ``cfg.steps``).

    A linear warm-up over the first :math:`W` = ``warmup_steps`` updates,
    :math:`\mathrm{lr}\, t / W` (Goyal et al. 2017, as in the SimCLR, BYOL, Barlow Twins and
    VICReg recipes), then ``lr`` (``"constant"``) or a cosine from ``lr`` at update
    :math:`W + 1` to ``min_lr`` at the last update (``"cosine"``, Loshchilov & Hutter 2017,
    without restarts). A pure function of the step, so a resumed run follows the same schedule.
    """
    if step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    return cosine_schedule(step - cfg.warmup_steps - 1, cfg.steps - cfg.warmup_steps, cfg.lr,
                           cfg.min_lr)


class TrainingFailure(RuntimeError):
    """Every seed's loss became NaN / Inf; the message names the first failure's evaluation
    step, seed, method and config, and ``failures`` holds every failure recorded."""

    def __init__(self, message: str, failures: list[dict] | None = None):
        super().__init__(message)
        self.failures = list(failures or [])


def _optimizer(params, cfg: TrainConfig, stacked: bool = False) -> torch.optim.Optimizer:
    if cfg.optimizer == "lars":  # per-model trust ratios when parameters are stacked (vmap)
        return LARS(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    eta=cfg.eta, batch_dims=int(stacked))
    # Fused: one launch for all parameters on a GPU; on the CPU one C++ pass instead of
    # Python's loop over tensors (5x less host time per step for a small MLP).
    fused = ({"fused": True} if params and all(p.device.type in ("cpu", "cuda") for p in params)
             else {})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, **fused)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


@contextlib.contextmanager
def _float32_precision(matmul: str, tf32_convolutions: bool):
    """The process-global float32 matmul precision and cuDNN's TF32 switch for convolutions
    inside the block, both restored after."""
    try:
        previous = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    except RuntimeError as err:
        # PyTorch >= 2.9 refuses to read these once the process has set its newer
        # fp32_precision switches: the caller manages TF32 itself, so leave it alone.
        warnings.warn(f"TF32 left as set: this process uses PyTorch's fp32_precision switches, "
                      f"which cannot be mixed with the ones sithlib sets ({err})", stacklevel=3)
        yield
        return
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = tf32_convolutions
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous[0])
        torch.backends.cudnn.allow_tf32 = previous[1]


def _uses_tf32(cfg: TrainConfig, device) -> bool:
    """Whether the run's training steps use TF32: a tf32 / bf16 run on a GPU."""
    return cfg.precision in ("tf32", "bf16") and torch.device(device).type == "cuda"


def _matmul_precision(cfg: TrainConfig, device="cuda"):
    """TF32 for the run's float32 matmuls and cuDNN convolutions where ``precision`` asks for
    it on a GPU, off otherwise (PyTorch's default lets convolutions use TF32 even in a float32
    run). On the CPU a ``tf32`` run stays in full float32: PyTorch's "high" precision would
    also let oneDNN run CPU matmuls in reduced precision on CPUs that have the instructions
    (AMX), so the same run would give different numbers on different CPUs.

    ``tf32`` lets float32 matmuls and convolutions use TensorFloat-32 on Ampere+ GPUs (10-bit
    mantissa inputs, fp32 accumulation); ``bf16`` also runs the forward under bfloat16 autocast
    (in the loop). The switch is process-wide while the run trains, so the losses' matmuls (the
    losses still upcast to float32 and accumulate in it) use TF32 too; the data (``sample``)
    and the held-out evaluations are computed in full float32 (:func:`full_fp32`).
    """
    tf32 = _uses_tf32(cfg, device)
    return _float32_precision("high" if tf32 else "highest", tf32)


def full_fp32():
    """Float32 matmuls and convolutions in full precision inside the block, restored after.

    On Ampere+ GPUs PyTorch lets cuDNN convolutions use TF32 by default (a 10-bit mantissa,
    relative error ~5e-4), so a float32 measurement on a GPU would differ from the same on the
    CPU; ``sithlib.results.run_experiment`` runs every experiment under this, and ``train``
    turns TF32 on for its training steps only where ``precision`` asks. No effect on the CPU.
    """
    return _float32_precision("highest", False)


@functools.cache
def keep_freed_cpu_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the kernel.

    PyTorch's CPU allocator calls ``malloc`` and ``free`` directly. By default glibc serves big
    blocks with ``mmap`` and unmaps them on ``free`` (and trims the heap's free top), so a
    training step that allocates big temporaries gets fresh pages from the kernel every time,
    and every page costs a fault and its zeroing. The vmapped seed ensemble allocates S times
    bigger temporaries than one seed (four InfoNCE similarity matrices of 1024 x 1024 at once):
    measured on the 2-core CPU, 21,000 page faults per step for 4 seeds against 0 to 2,000 when
    the same seeds ran one after the other, which made the ensemble a quarter slower. With both
    thresholds at 1 GiB the faults go away (under 60 per step).

    Called by ``train`` on the CPU; process-wide and once. The price: a process keeps its peak
    memory until it exits. Returns whether glibc accepted the settings (False off glibc).
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_trim_threshold, 1 << 30)) and bool(mallopt(m_mmap_threshold, 1 << 30))


def _progress(total: int, desc: str):
    """A tqdm bar in terminals and notebooks; silent when SITH_PROGRESS=0 (the book build)."""
    quiet = os.environ.get("SITH_PROGRESS", "1") == "0" or not sys.stderr
    if quiet:  # tqdm.auto would warn about missing ipywidgets even for a disabled bar
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=quiet, mininterval=1.0, leave=False)


@dataclass
class TrainResult:
    """Trained models (one per seed), curves and the failures the guards recorded.

    The guards run at evaluation steps (every ``eval_every``): a failure's ``step`` is the first
    evaluation step that saw it, and each seed has at most one failure of each kind. A seed whose
    loss became non-finite stopped learning there; its weights may be NaN, so
    :meth:`finished` leaves it out of anything scored.
    """

    models: list[nn.Module]
    curves: list[dict]
    failures: list[dict]
    steps_done: int
    alive: list[bool] | None = None  # per seed; None: every seed

    def finished(self) -> list[tuple[int, nn.Module]]:
        """``(i, model)`` for every seed i (0-based) whose loss stayed finite."""
        alive = self.alive if self.alive is not None else [True] * len(self.models)
        return [(i, m) for i, (m, ok) in enumerate(zip(self.models, alive, strict=True)) if ok]


class _Ensemble:
    """S copies of a model with stacked parameters; ``forward`` is vmapped over the seed axis."""

    def __init__(self, models: list[nn.Module]):
        self.base = models[0]
        params, buffers = stack_module_state(models)
        if buffers:
            raise ValueError("vmap ensembles need models without buffers (e.g. no BatchNorm); "
                             "pass ensemble=False")
        # A parameter the model froze stays frozen, as it would in S separate runs.
        frozen = {k for k, p in self.base.named_parameters() if not p.requires_grad}
        self.params = {k: v.detach().requires_grad_(k not in frozen) for k, v in params.items()}
        # Untying names costs a walk over the modules at every call: only where weights are tied.
        self.tied = (sum(1 for _ in self.base.named_parameters(remove_duplicate=False))
                     != len(params))

    def per_seed_loss(self, loss_fn, batches):
        def one(params, batch):
            return loss_fn(lambda *a: functional_call(self.base, params, a,
                                                      tie_weights=self.tied), batch)

        return vmap(one, randomness="error")(self.params, batches)

    def unstack(self, i: int) -> nn.Module:
        model = copy.deepcopy(self.base)
        with torch.no_grad():  # tied parameters appear once here, as in self.params
            for k, p in model.named_parameters():
                p.copy_(self.params[k][i])
        return model


# Newer torch deprecates broadcast_buffers for forward_sync_buffers (the device has torch 2.11).
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers"
                   in inspect.signature(DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


def _state(model: nn.Module) -> tuple[list, dict]:
    """Copies of the buffers and of the Python-side extra state (SwAV's queue fill count)."""
    extra = {name: copy.deepcopy(mod.get_extra_state()) for name, mod in model.named_modules()
             if type(mod).get_extra_state is not nn.Module.get_extra_state}
    return [b.clone() for b in model.buffers()], extra


def _restore(model: nn.Module, state: tuple[list, dict]) -> None:
    buffers, extra = state
    for b, v in zip(model.buffers(), buffers, strict=True):
        b.copy_(v)
    for name, value in extra.items():
        model.get_submodule(name).set_extra_state(value)


class _Step(nn.Module):
    """``loss_fn(model, batch)`` as a module, for DistributedDataParallel to wrap whole."""

    def __init__(self, model: nn.Module, loss_fn: Callable):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def _sync_batchnorm(model: nn.Module, world_size: int, device) -> nn.Module:
    """``model`` with every BatchNorm as SyncBatchNorm when several processes train on GPUs
    (statistics over the global batch, as one process would see), else ``model`` unchanged:
    gloo on the CPU has no SyncBatchNorm. A helper so that the decision is testable without
    GPUs; it runs after ``make_model``, so an EMA teacher built there is converted too."""
    if world_size > 1 and torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def _per_seed(sample, n: int) -> list[Callable]:
    if callable(sample):
        return [sample] * n
    samplers = list(sample)
    if len(samplers) != n or not all(callable(f) for f in samplers):
        raise ValueError(f"sample must be a function or a list of {n} functions (one per seed), "
                         f"got {sample!r}")
    return samplers


def train(make_model: Callable[[int], nn.Module], sample: Callable, loss_fn: Callable,
          cfg: TrainConfig, *, device: str = "cpu", evaluate: Callable | None = None,
          checkpoint=None, name: str = "run", data_seed_offset: int = 10_000,
          project: Callable | None = None) -> TrainResult:
    """Train ``cfg.seeds`` models; returns them with their curves.

    ``evaluate(model, seed) -> dict[str, float]`` is called every ``eval_every`` steps and at
    the end (and at step 0 with ``eval_at_start``), per seed, under ``torch.no_grad``; its
    values become rows of the curves.

    ``project(i, params)`` keeps parameters on a constraint set: it is called under
    ``torch.no_grad`` before the first step and after every optimiser step, for every seed i
    (0-based), with that seed's parameters by name, to be changed in place (in a vmapped
    ensemble they are views into the stacked tensors). DIET's unit-norm head rows use it.

    Speed settings in ``cfg``: ``precision`` (``fp32``; ``tf32`` matmuls; ``bf16`` autocast
    of the forward pass plus tf32), ``compile`` (``torch.compile`` of the per-step forward and
    loss), ``channels_last`` (memory format of image models and 4-d batches). Adam and SGD use
    their fused CUDA kernels when every parameter is on a GPU.
    """
    with _matmul_precision(cfg, device):
        return _train(make_model, sample, loss_fn, cfg, device, evaluate, checkpoint, name,
                      data_seed_offset, project)


def _train(make_model, sample, loss_fn, cfg, device, evaluate, checkpoint, name,
           data_seed_offset, project) -> TrainResult:
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))
    samplers = _per_seed(sample, len(seeds))
    if torch.device(device).type == "cpu":
        keep_freed_cpu_memory()
    memory = {"memory_format": torch.channels_last} if cfg.channels_last else {}
    models = [make_model(s).to(device, **memory) for s in seeds]
    gens = [torch.Generator(device=device).manual_seed(data_seed_offset + s) for s in seeds]
    world, rank = (dist.world_size(), dist.rank()) if dist.is_distributed() else (1, 0)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")
    # Under torchrun every process draws the same global batch and keeps its slice, so the run
    # equals a single-process run on the global batch (sampling is cheap next to the encoder).
    models = [_sync_batchnorm(m, world, device) for m in models]
    if world > 1:
        forward = [DistributedDataParallel(_Step(m, loss_fn), **_NO_BUFFER_SYNC,
                                           find_unused_parameters=hasattr(m, "after_step"))
                   for m in models]
    else:
        forward = [functools.partial(loss_fn, m) for m in models]
    stateful = hasattr(models[0], "after_step") or any(True for _ in models[0].buffers())
    use_vmap = cfg.ensemble and len(models) > 1 and world == 1 and not stateful
    hooks = models if hasattr(models[0], "after_step") else []
    ens = _Ensemble(models) if use_vmap else None
    params = list(ens.params.values()) if use_vmap else [p for m in models for p in m.parameters()]
    opt = _optimizer(params, cfg, stacked=use_vmap)
    curves: list[dict] = []
    failures: list[dict] = []
    alive = [True] * len(seeds)  # by position in ``seeds``
    start = 0

    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        start, curves, failures, alive = (state["step"], state["curves"], state["failures"],
                                          state["alive"])
        if use_vmap:
            for k, v in state["params"].items():
                ens.params[k].data.copy_(v)
        else:
            for m, sd in zip(models, state["models"], strict=True):
                m.load_state_dict(sd)
        opt.load_state_dict(state["optimizer"])
        for g, gs in zip(gens, state["generators"], strict=True):
            g.set_state(gs)

    # Each seed's parameters by name; in an ensemble, views that write through to the stack.
    members = ([{k: v[i] for k, v in ens.params.items()} for i in range(len(seeds))]
               if use_vmap else [dict(m.named_parameters()) for m in models])

    def apply_project() -> None:
        with torch.no_grad():
            for i, params in enumerate(members):
                project(i, params)

    if project is not None and state is None:  # a checkpoint's parameters are projected already
        apply_project()

    def current_models() -> list[nn.Module]:
        return [ens.unstack(i) for i in range(len(seeds))] if use_vmap else models

    # Data and evaluations in full float32; a run without TF32 is in it already, so its
    # per-step draws pay nothing for switching.
    exact = full_fp32 if _uses_tf32(cfg, device) else contextlib.nullcontext

    def record(step: int, losses: torch.Tensor, embeddings: torch.Tensor | list, logs):
        # Outside autocast and TF32: held-out evaluations read the model in full float32,
        # also at step 0, whose forward ran under autocast like every training step.
        with torch.autocast(amp["device_type"], enabled=False), exact():
            _record(step, losses, embeddings, logs)

    def _record(step: int, losses: torch.Tensor, embeddings: torch.Tensor | list, logs):
        losses = losses.detach().float()
        if world > 1:  # the logged loss is the mean over processes, like the global-batch loss
            losses = dist.all_reduce_sum(losses) / world
        losses = losses.cpu()  # the only host sync, every eval_every steps
        seen = {(f["seed"], f["kind"]) for f in failures}
        # Unstacking copies every ensemble member: only worth it when they are evaluated.
        evaluated = current_models() if evaluate is not None else [None] * len(seeds)
        for i, (s, model) in enumerate(zip(seeds, evaluated, strict=True)):
            if not alive[i]:
                continue
            row = {"step": step, "seed": s, "loss": float(losses[i])}
            emb = embeddings[i].detach().float()
            row["embedding_std"] = float(emb.std(dim=0).mean())
            seed_logs = {k: v[i] for k, v in logs.items()} if use_vmap else logs[i]
            row.update({k: float(v.detach()) for k, v in seed_logs.items()})
            if not math.isfinite(row["loss"]):
                alive[i] = False
                mask[i] = 0
                failures.append({"step": step, "seed": s, "kind": "non-finite loss",
                                 "method": name, "config": asdict(cfg)})
            elif row["embedding_std"] < cfg.collapse_std and (s, "collapse") not in seen:
                failures.append({"step": step, "seed": s, "kind": "collapse",
                                 "method": name, "config": asdict(cfg)})
            if evaluate is not None and alive[i]:
                modes = [(m, m.training) for m in model.modules()]
                model.eval()
                with torch.no_grad():
                    values = evaluate(model, s)
                for m, training in modes:  # a submodule left in eval mode stays there
                    m.train(training)
                # Plain floats: a NumPy scalar would make the checkpoint unreadable.
                row.update({k: float(v) for k, v in values.items()})
            curves.append(row)

    def step_losses(batches):
        if use_vmap:
            stacked = tuple(torch.stack(parts) for parts in zip(*batches, strict=True))
            losses, embeddings, *logs = ens.per_seed_loss(loss_fn, stacked)
            return losses, embeddings, logs[0] if logs else {}
        outs = [f(b) for f, b in zip(forward, batches, strict=True)]
        return (torch.stack([o[0] for o in outs]), [o[1] for o in outs],
                [o[2] if len(o) > 2 else {} for o in outs])

    prefetch = cfg.prefetch_steps(device)
    pending: collections.deque[list[tuple]] = collections.deque()  # coming steps' batches

    def draw_steps(g, draw) -> list[tuple]:
        # One call for `prefetch` steps: the sampler's syncs are paid once for all of them.
        # The data-generating process is exact whatever the training precision (no TF32 in g).
        with exact():
            drawn = draw(g, cfg.batch_size * prefetch)
        parts = [t.split(cfg.batch_size) for t in drawn]
        steps = []
        for batch in zip(*parts, strict=True):
            batch = tuple(t.chunk(world)[rank] for t in batch)
            if cfg.channels_last:
                batch = tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4
                              else t for t in batch)
            steps.append(batch)
        return steps

    def next_batches() -> list[tuple]:
        # Checkpoints fall on multiples of `prefetch`, where nothing is pending: resuming
        # draws exactly what the uninterrupted run drew.
        if not pending:
            pending.extend(list(step) for step in zip(
                *[draw_steps(g, f) for g, f in zip(gens, samplers, strict=True)], strict=True))
        return pending.popleft()

    if cfg.compile:
        # "reduce-overhead" replays the step as a CUDA graph: one launch instead of hundreds,
        # possible because the step never synchronises (the data comes from `pending`).
        step_losses = torch.compile(step_losses,
                                    mode=None if cfg.compile is True else cfg.compile)
    amp = {"device_type": torch.device(device).type, "dtype": torch.bfloat16,
           "enabled": cfg.precision == "bf16"}
    # Dead seeds (non-finite loss) stop learning; updated at eval steps, never synced per step.
    mask = torch.tensor(alive, device=device, dtype=torch.float32)
    if cfg.eval_at_start and start == 0:
        # Step 0 sees step 1's batch, which is kept for step 1, and buffers (batch-norm running
        # statistics, DINO's centre, SwAV's queue) are put back: every later number is the same
        # as without the extra evaluation.
        first = next_batches()
        pending.appendleft(first)  # step 1 trains on it
        saved = [_state(m) for m in models]
        with torch.no_grad():
            with torch.autocast(**amp):
                out = step_losses(first)
            # Put the buffers back before the evaluation too, so that it sees the initial
            # networks, not batch-norm statistics already moved by the loss's forward pass.
            for m, state in zip(models, saved, strict=True):
                _restore(m, state)
            record(0, *out)
    scheduled = cfg.lr_schedule != "constant" or cfg.warmup_steps > 0
    bar = _progress(cfg.steps, name)
    bar.update(start)
    for step in range(start + 1, cfg.steps + 1):
        batches = next_batches()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(**amp):
            losses, embeddings, logs = step_losses(batches)
        torch.where(mask > 0, losses, torch.zeros_like(losses)).sum().backward()
        if scheduled:
            lr = learning_rate(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
        opt.step()
        if project is not None:
            apply_project()
        for m in hooks:
            m.after_step(step - 1, cfg.steps)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            record(step, losses, embeddings, logs)
            bar.set_postfix(loss=f"{losses.detach().float().mean().item():.4f}")
            if not any(alive):
                bar.close()
                raise TrainingFailure(f"{name}: every seed failed; first failure: {failures[0]}",
                                      failures)
        bar.update(1)
        if (checkpoint is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0
                and rank == 0):
            checkpoint.save({
                "step": step, "curves": curves, "failures": failures, "alive": alive,
                "params": {k: v.detach() for k, v in ens.params.items()} if use_vmap else None,
                "models": None if use_vmap else [m.state_dict() for m in models],
                "optimizer": opt.state_dict(),
                "generators": [g.get_state() for g in gens],
            })
    bar.close()
    return TrainResult(current_models(), curves, failures, cfg.steps, list(alive))
