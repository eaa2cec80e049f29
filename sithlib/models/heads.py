"""Projector, predictor and prototype heads with each paper's BatchNorm placement.

The placement of BatchNorm is part of the method (SimSiam and BYOL collapse without it), so
every preset follows the official code; the table below is what each builds, with ``Lin`` a
Linear layer (``Lin0`` without bias), ``BN`` a BatchNorm1d with affine parameters:

============  ==========================================================================
head          layers
============  ==========================================================================
SimCLR        [Lin0, BN, ReLU] x (L-1), Lin0, BN with a scale but no shift (center=False)
BYOL          Lin, BN, ReLU, Lin0 (projector 4096 -> 256; the predictor has the same form)
SimSiam       projector [Lin0, BN, ReLU] x (L-1), Lin0, BN without affine;
              predictor Lin0, BN, ReLU, Lin (2048 -> 512 -> 2048)
Barlow Twins  [Lin0, BN, ReLU] x 2, Lin0 (8192-8192-8192)
VICReg        [Lin, BN, ReLU] x 2, Lin0 (8192-8192-8192)
SwAV          Lin, BN, ReLU, Lin, L2 normalisation; prototypes Lin0 with unit rows
DINO          [Lin, GELU] x 2, Lin, L2 normalisation, weight-normalised Lin0 (g fixed to 1)
============  ==========================================================================

SimSiam's official last projector Linear keeps a frozen bias that the following BatchNorm
cancels exactly; here it has no bias, which gives the same outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sithlib.models._init import reset_default_, torch_default_, trunc_normal_
from sithlib.models.mlp import SphereNorm, normalize_rows


def _scores_fp32(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # Prototype and DINO scores are divided by small temperatures (SwAV's eps 0.05, DINO's
    # teacher 0.04), which magnify bf16's rounding (a 1.6% L1 change in DINO's teacher
    # probabilities at n = 256), so this one cheap product stays in float32 under autocast.
    dtype = torch.promote_types(torch.promote_types(x.dtype, w.dtype), torch.float32)
    with torch.autocast(x.device.type, enabled=False):
        return x.to(dtype) @ w.to(dtype).t()


_LAST_NORMS = (None, "batch", "batch_no_affine", "batch_scale")


class BatchNormScale(nn.Module):
    """BatchNorm1d with a learned scale but no shift (TensorFlow's ``center=False``).

    SimCLR's last projection layer uses it; PyTorch's BatchNorm has no scale-only option.
    """

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, eps=eps, momentum=momentum, affine=False)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise each feature over the batch, then scale it."""
        return self.bn(x) * self.weight


def mlp_head(
    dims: Sequence[int],
    *,
    hidden_bias: bool = True,
    hidden_norm: bool = True,
    last_bias: bool = True,
    last_norm: str | None = None,
    activation: str = "relu",
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """A head ``dims[0] -> ... -> dims[-1]``: [Linear, BN, act] per hidden layer, then Linear.

    Parameters
    ----------
    dims : sequence of int
        Input, hidden and output widths (at least two entries).
    hidden_bias : bool
        Bias in the hidden Linear layers (redundant before BN; the papers differ).
    hidden_norm : bool
        BatchNorm1d after every hidden Linear.
    last_bias : bool
        Bias in the last Linear.
    last_norm : str or None
        After the last Linear: None, ``"batch"``, ``"batch_no_affine"`` or ``"batch_scale"``.
    activation : str
        ``"relu"`` or ``"gelu"``.
    generator : torch.Generator, optional
        Source of the initial weights (PyTorch's default init).

    Returns
    -------
    nn.Sequential
    """
    dims = [int(d) for d in dims]
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise ValueError(f"dims must hold at least two positive ints, got {dims}")
    if last_norm not in _LAST_NORMS:
        raise ValueError(f"last_norm must be one of {_LAST_NORMS}, got {last_norm!r}")
    if activation not in ("relu", "gelu"):
        raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-2], dims[1:-1], strict=True):
        layers.append(nn.Linear(a, b, bias=hidden_bias))
        if hidden_norm:
            layers.append(nn.BatchNorm1d(b))
        layers.append(nn.ReLU() if activation == "relu" else nn.GELU())
    layers.append(nn.Linear(dims[-2], dims[-1], bias=last_bias))
    if last_norm == "batch":
        layers.append(nn.BatchNorm1d(dims[-1]))
    elif last_norm == "batch_no_affine":
        layers.append(nn.BatchNorm1d(dims[-1], affine=False))
    elif last_norm == "batch_scale":
        layers.append(BatchNormScale(dims[-1]))
    head = nn.Sequential(*layers)
    reset_default_(head, generator)
    return head


def _check_layers(num_layers: int) -> None:
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")


def simclr_projector(
    in_dim: int,
    *,
    hidden_dim: int | None = None,
    out_dim: int = 128,
    num_layers: int = 2,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """SimCLR projection head g (Chen et al., 2020): hidden width = ``in_dim`` by default.

    Every Linear is bias-free and followed by BatchNorm (the official ``linear_layer`` with
    ``use_bn=True``); the last BatchNorm learns a scale but no shift. ``num_layers=2`` is
    SimCLR v1, 3 is v2.
    """
    _check_layers(num_layers)
    hidden = in_dim if hidden_dim is None else hidden_dim
    dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
    return mlp_head(
        dims, hidden_bias=False, last_bias=False, last_norm="batch_scale", generator=generator
    )


def byol_mlp(
    in_dim: int,
    *,
    hidden_dim: int = 4096,
    out_dim: int = 256,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """BYOL projector and predictor (Grill et al., 2020): Linear, BN, ReLU, Linear without bias
    (the official ``MLP`` of ``byol/utils/networks.py``)."""
    return mlp_head([in_dim, hidden_dim, out_dim], last_bias=False, generator=generator)


def simsiam_projector(
    in_dim: int,
    *,
    hidden_dim: int = 2048,
    out_dim: int = 2048,
    num_layers: int = 3,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """SimSiam projector (Chen and He, 2021): last layer followed by BatchNorm without affine.

    The paper uses 3 layers on ImageNet and 2 on CIFAR.
    """
    _check_layers(num_layers)
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    return mlp_head(
        dims, hidden_bias=False, last_bias=False, last_norm="batch_no_affine", generator=generator
    )


def simsiam_predictor(
    dim: int = 2048, *, hidden_dim: int = 512, generator: torch.Generator | None = None
) -> nn.Sequential:
    """SimSiam predictor h: a 2048 -> 512 -> 2048 bottleneck, Lin0, BN, ReLU, Lin."""
    return mlp_head([dim, hidden_dim, dim], hidden_bias=False, generator=generator)


def barlow_twins_projector(
    in_dim: int, *, dims: Sequence[int] = (8192, 8192, 8192), generator=None
) -> nn.Sequential:
    """Barlow Twins projector (Zbontar et al., 2021): bias-free Linears, BN + ReLU inside.

    The batch standardisation of the loss (BatchNorm without affine) lives in the loss.
    """
    return mlp_head([in_dim, *dims], hidden_bias=False, last_bias=False, generator=generator)


def vicreg_expander(
    in_dim: int, *, dims: Sequence[int] = (8192, 8192, 8192), generator=None
) -> nn.Sequential:
    """VICReg expander (Bardes et al., 2022): Linear + BN + ReLU inside, last Linear bias-free."""
    return mlp_head([in_dim, *dims], last_bias=False, generator=generator)


def swav_projector(
    in_dim: int, *, hidden_dim: int = 2048, out_dim: int = 128, generator=None
) -> nn.Sequential:
    """SwAV projection head (Caron et al., 2020) followed by L2 normalisation."""
    head = mlp_head([in_dim, hidden_dim, out_dim], generator=generator)
    head.append(SphereNorm(1.0))
    return head


class Prototypes(nn.Module):
    """SwAV prototypes C (K x d, no bias); the scores are :math:`z C^\\top`.

    The rows are kept on the unit sphere by :meth:`normalize_`, which the method calls at
    construction and after every optimiser step (the official code does it at the start of
    every iteration, which is the same point in the loop).
    """

    def __init__(
        self, dim: int = 128, num_prototypes: int = 3000, *, generator=None
    ) -> None:
        super().__init__()
        if dim < 1 or num_prototypes < 1:
            raise ValueError(
                f"dim and num_prototypes must be >= 1, got {dim} and {num_prototypes}"
            )
        self.weight = nn.Parameter(torch.empty(num_prototypes, dim))
        bound = 1.0 / dim**0.5
        with torch.no_grad():
            self.weight.uniform_(-bound, bound, generator=generator)
        self.normalize_()

    @torch.no_grad()
    def normalize_(self) -> None:
        """Project every prototype (row of the weight) onto the unit sphere, in place."""
        self.weight.copy_(normalize_rows(self.weight))

    def forward(self, z: torch.Tensor, *, detach: bool = False) -> torch.Tensor:
        """Scores (n, K); ``detach`` stops the gradient to the prototypes (frozen phase)."""
        w = self.weight.detach() if detach else self.weight
        return _scores_fp32(z, w)


class WeightNormLinear(nn.Module):
    r"""Bias-free Linear with weight normalisation, :math:`W = g \, V / \lVert V \rVert`.

    The norm is taken per output unit (row), as ``torch.nn.utils.weight_norm(dim=0)``.
    With ``fix_norm`` (DINO's ``norm_last_layer=True``) g is fixed to 1, so the layer is a
    cosine similarity with learnable directions.
    """

    def __init__(
        self, in_dim: int, out_dim: int, *, fix_norm: bool = True, generator=None
    ) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not fix_norm)
        bound = 1.0 / in_dim**0.5
        with torch.no_grad():
            self.weight_v.uniform_(-bound, bound, generator=generator)

    def weight(self, *, detach: bool = False) -> torch.Tensor:
        """The effective weight g V / ||V|| (detached when the layer is frozen)."""
        v, g = self.weight_v, self.weight_g
        if detach:
            v, g = v.detach(), g.detach()
        return g * v / v.norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor, *, detach: bool = False) -> torch.Tensor:
        """x W^T; ``detach`` stops the gradient to the layer (frozen phase)."""
        return _scores_fp32(x, self.weight(detach=detach))


class DINOHead(nn.Module):
    """DINO projection head (Caron et al., 2021).

    MLP ``in_dim -> hidden -> ... -> bottleneck`` with GELU (trunc-normal init, std 0.02, zero
    bias), L2 normalisation, then a weight-normalised bias-free Linear to ``out_dim``.

    Parameters
    ----------
    in_dim : int
        Backbone feature dimension.
    out_dim : int
        Number of output dimensions K (65536 in the paper).
    hidden_dim : int
        Width of the hidden layers, 2048 in the paper.
    bottleneck_dim : int
        Width of the bottleneck before the last layer, 256 in the paper.
    num_layers : int
        Linear layers before the bottleneck normalisation (3 in the paper).
    use_bn : bool
        BatchNorm after the hidden Linears (off for ViTs in the paper).
    norm_last_layer : bool
        Fix the weight-norm gain of the last layer to 1 (the paper's default).
    generator : torch.Generator, optional
        Source of the initial weights.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_layers(num_layers)
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        self.mlp = mlp_head(dims, hidden_norm=use_bn, activation="gelu")
        with torch.no_grad():
            for m in self.mlp.modules():
                if isinstance(m, nn.Linear):
                    trunc_normal_(m.weight, 0.02, generator)
                    m.bias.zero_()
        self.norm = SphereNorm(1.0)
        self.last_layer = WeightNormLinear(
            bottleneck_dim, out_dim, fix_norm=norm_last_layer, generator=generator
        )
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor, *, freeze_last_layer: bool = False) -> torch.Tensor:
        """Head outputs (n, out_dim); ``freeze_last_layer`` stops its gradient."""
        return self.last_layer(self.norm(self.mlp(x)), detach=freeze_last_layer)


def linear_head(
    in_dim: int, out_dim: int, *, bias: bool = True, generator: torch.Generator | None = None
) -> nn.Linear:
    """A Linear layer (the DIET instance head and the supervised classifier)."""
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    torch_default_(layer, generator)
    return layer
