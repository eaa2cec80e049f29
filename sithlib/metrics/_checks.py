"""Argument checks shared by the metric modules.

Every error names the argument and what was expected, so that a metric called from a notebook
fails at the call with a message the reader can act on, not deep inside a solver.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def work_dtype(device: torch.device) -> torch.dtype:
    """float64 for the metrics' internal arithmetic, except where the device has none (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def features(name: str, x, *, ndim: int = 2, shape: str = "(n, d)", min_rows: int = 1):
    """Check ``x`` is a finite floating tensor of rank ``ndim``; return it detached.

    NumPy arrays are accepted and converted, so that SciPy-style callers work too.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (samples), got {x.shape[0]}")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one feature, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x.detach()


def same_rows(**tensors: torch.Tensor) -> int:
    """Check that all tensors have the same number of samples (first axis); return it."""
    names = list(tensors)
    n = tensors[names[0]].shape[0]
    for name in names[1:]:
        if tensors[name].shape[0] != n:
            sizes = ", ".join(f"{k} has {v.shape[0]}" for k, v in tensors.items())
            raise ValueError(f"the inputs must hold the same samples (same n): {sizes}")
        if tensors[name].device != tensors[names[0]].device:
            raise ValueError(
                f"{names[0]} and {name} must be on the same device, got "
                f"{tensors[names[0]].device} and {tensors[name].device}"
            )
    return n


def integer(name: str, value, *, low: int, high: int | None = None) -> int:
    """Check ``low <= value <= high`` for an int (bools are refused)."""
    bound = f"between {low} and {high}" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int {bound}, got {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def positive(name: str, value, *, allow_zero: bool = False) -> float:
    """Check a finite positive (or non-negative) real number."""
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number {bound}, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def choice(name: str, value, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def generator_or_none(name: str, generator) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    return generator
