"""MLP encoders f for the synthetic data-generating processes.

The cl-ica preset (Zimmermann et al., 2021) is the encoder of the identifiability experiments:
n -> 10n -> 50n -> 50n -> 50n -> 50n -> 10n -> n, LeakyReLU between layers, no normalisation
layers, and optionally a fixed projection onto the sphere (the dot-product InfoNCE setting).
The csi preset for DIET (Reizinger et al., 2024) is the same shape with BatchNorm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sithlib.models._init import reset_default_

_ACTIVATIONS = ("leaky_relu", "relu", "gelu")
_NORMS = (None, "batch")
_OUTPUT_NORMS = (None, "sphere")


def _activation(name: str, negative_slope: float) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    if name == "relu":
        return nn.ReLU()
    return nn.GELU()


def normalize_rows(z: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise along the last axis in at least float32 (a float16 norm underflows).

    The result has the dtype of ``z``.
    """
    work = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    return F.normalize(work, dim=-1, eps=eps).to(z.dtype)


class SphereNorm(nn.Module):
    r"""Project onto the sphere of radius ``radius``: :math:`z \mapsto r z / \lVert z \rVert_2`.

    Computed in at least float32 (a float16 norm underflows) and cast back to the input dtype.
    """

    def __init__(self, radius: float = 1.0, eps: float = 1e-12) -> None:
        super().__init__()
        if not radius > 0:
            raise ValueError(f"radius must be > 0, got {radius}")
        self.radius = float(radius)
        self.eps = float(eps)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Rows of ``z`` scaled to norm ``radius``."""
        return self.radius * normalize_rows(z, self.eps)


class MLP(nn.Module):
    """A fully connected encoder with the given layer widths.

    Parameters
    ----------
    widths : sequence of int
        ``[in_dim, hidden_1, ..., out_dim]``, at least two entries, all positive.
    activation : str
        ``"leaky_relu"`` (default, as in cl-ica), ``"relu"`` or ``"gelu"``; applied between
        layers, never after the last one.
    negative_slope : float
        Slope of the LeakyReLU; cl-ica's encoder uses PyTorch's default 0.01.
    norm : str or None
        ``None`` (cl-ica: no normalisation layers) or ``"batch"`` (BatchNorm1d after every
        hidden Linear, before the activation, as in the csi DIET encoder).
    output_norm : str or None
        ``None`` or ``"sphere"`` (fixed projection onto the sphere of radius ``radius``).
    radius : float
        Radius of the output sphere.
    bias : bool
        Whether the Linear layers have a bias. A Linear followed by BatchNorm never has one:
        the batch mean subtracts it exactly (its gradient is zero), so it would only cost a
        launch forward and one backward per layer.
    generator : torch.Generator, optional
        Source of the initial weights (PyTorch's default uniform init).

    Attributes
    ----------
    in_dim : int
        Input dimension.
    out_dim : int
        Output dimension (read by heads and methods).
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        activation: str = "leaky_relu",
        negative_slope: float = 0.01,
        norm: str | None = None,
        output_norm: str | None = None,
        radius: float = 1.0,
        bias: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths must hold at least two positive ints, got {widths}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        if output_norm not in _OUTPUT_NORMS:
            raise ValueError(f"output_norm must be one of {_OUTPUT_NORMS}, got {output_norm!r}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            hidden = i < len(widths) - 2
            layers.append(nn.Linear(a, b, bias=bias and not (hidden and norm == "batch")))
            if hidden:
                if norm == "batch":
                    layers.append(nn.BatchNorm1d(b))
                layers.append(_activation(activation, negative_slope))
        if output_norm == "sphere":
            layers.append(SphereNorm(radius))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = widths[0], widths[-1]
        self.widths = tuple(widths)
        reset_default_(self, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode a batch of shape (batch, in_dim) to (batch, out_dim)."""
        if x.ndim != 2 or x.shape[-1] != self.in_dim:
            raise ValueError(f"x must have shape (batch, {self.in_dim}), got {tuple(x.shape)}")
        return self.net(x)


def cl_ica_widths(n: int, out_dim: int | None = None) -> list[int]:
    """Layer widths of the cl-ica encoder: n, 10n, 50n, 50n, 50n, 50n, 10n, out_dim (default n)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [n, 10 * n, 50 * n, 50 * n, 50 * n, 50 * n, 10 * n, n if out_dim is None else out_dim]


def cl_ica_encoder(
    n: int,
    *,
    out_dim: int | None = None,
    output_norm: str | None = None,
    norm: str | None = None,
    negative_slope: float = 0.01,
    generator: torch.Generator | None = None,
) -> MLP:
    """The cl-ica encoder (Zimmermann et al., 2021) for latent dimension ``n``.

    Parameters
    ----------
    n : int
        Input (observation) dimension, equal to the latent dimension in cl-ica.
    out_dim : int, optional
        Output dimension, default ``n`` (von Kügelgen et al. use the content dimension).
    output_norm : str or None
        ``"sphere"`` for the dot-product InfoNCE setting (cl-ica's ``fixed_sphere``), else None.
    norm : str or None
        ``None`` (cl-ica) or ``"batch"`` (the csi DIET encoder).
    negative_slope : float
        LeakyReLU slope, 0.01 as in cl-ica.
    generator : torch.Generator, optional
        Source of the initial weights.

    Returns
    -------
    MLP
    """
    return MLP(
        cl_ica_widths(n, out_dim),
        negative_slope=negative_slope,
        norm=norm,
        output_norm=output_norm,
        generator=generator,
    )
