"""Shared plumbing of the loss modules: argument checks and the float32 policy.

Every loss upcasts half-precision inputs to float32 and switches autocast off for its own body,
so that logits, normalisations and batch statistics are never rounded to bf16/fp16 even when the
model runs under autocast. Float64 inputs stay float64 (the tests compare against float64
references). The checks avoid anything that would synchronise a GPU (no ``.item()`` on data).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers

import torch

_HALF = (torch.float16, torch.bfloat16)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float32 and float64 unchanged."""
    return x.float() if x.dtype in _HALF else x


def _autocast_off(device_type: str):
    available = getattr(torch.amp, "is_autocast_available", None)
    ok = available(device_type) if available else device_type in ("cpu", "cuda")
    if not ok:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


def _first_tensor(args, kwargs):
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a
        if isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, torch.Tensor):
                    return b
    return None


def fp32(fn):
    """Run ``fn`` with autocast disabled on the device of its first tensor argument."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = _first_tensor(args, kwargs)
        if t is None:
            return fn(*args, **kwargs)
        with _autocast_off(t.device.type):
            return fn(*args, **kwargs)

    return wrapper


def tensor(name: str, x, *, ndim: int | None = 2, shape: str = "(n, d)", min_rows: int = 1):
    """Check that ``x`` is a floating tensor of rank ``ndim`` with ``min_rows`` rows; upcast it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape}, got shape {tuple(x.shape)}")
    if x.ndim >= 1 and x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (samples), got {x.shape[0]}")
    if x.ndim >= 2 and x.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one feature, got shape {tuple(x.shape)}")
    return upcast(x)


def same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    if a.device != b.device:
        raise ValueError(
            f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}"
        )


def promote(*xs: torch.Tensor) -> list[torch.Tensor]:
    """Bring the (already upcast) tensors to one common dtype."""
    dtype = functools.reduce(torch.promote_types, (x.dtype for x in xs))
    return [x.to(dtype) for x in xs]


def positive(name: str, value) -> float:
    """A finite real number > 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number > 0, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def nonnegative(name: str, value) -> float:
    """A finite real number >= 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 0, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def in_range(name: str, value, low: float, high: float, *, closed_high: bool = True) -> float:
    """A real number in [low, high] (or [low, high) with ``closed_high=False``)."""
    bracket = "]" if closed_high else ")"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in [{low}, {high}{bracket}, got {value!r}")
    value = float(value)
    ok = low <= value <= high if closed_high else low <= value < high
    if not ok:
        raise ValueError(f"{name} must lie in [{low}, {high}{bracket}, got {value!r}")
    return value


def integer(name: str, value, *, low: int) -> int:
    """An int >= low (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def choice(name: str, value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix, flattened."""
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def lp_distance_pow(u: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    r""":math:`\|u_i - v_j\|_p^p` for every pair, shape (n, m).

    ``torch.cdist`` without the matrix-product shortcut: exact zeros on coincident points (the
    shortcut's cancellation would not give them) and a zero gradient there, also for p < 1.
    """
    dist = torch.cdist(u, v, p=p, compute_mode="donot_use_mm_for_euclid_dist")
    return dist.square() if p == 2 else dist.pow(p)


def lp_rowwise_pow(u: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    r""":math:`\|u_i - v_i\|_p^p` for matching rows, shape (n,), with a zero gradient at u = v."""
    a = (u - v).abs()
    if p == 2:
        return a.square().sum(-1)
    # |0|^p has an infinite derivative for p < 1; keep it out of the graph.
    nonzero = a > 0
    safe = torch.where(nonzero, a, torch.ones_like(a))
    return torch.where(nonzero, safe.pow(p), torch.zeros_like(a)).sum(-1)


def transformed(t: torch.Tensor) -> bool:
    """Whether ``t`` is wrapped by a torch.func transform (vmap, grad), where a branch on its
    values is an error."""
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(check and check(t))
