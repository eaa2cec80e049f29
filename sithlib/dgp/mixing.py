r"""Invertible mixings :math:`x = g(z)` with certified conditioning and an exact inverse.

The nonlinear mixing is the leaky-ReLU MLP of cl-ica (Zimmermann et al., 2021): L square
bias-free layers, LeakyReLU(0.2) between layers and none after the last,

.. math:: g(z) = W_L\, \sigma(W_{L-1} \cdots \sigma(W_1 z)).

cl-ica draws column-normalized uniform matrices and rejects them until the condition number is
below a threshold taken from a pool of 25 000 draws. Here every layer is built with its target
condition number exactly: :math:`W = U \operatorname{diag}(s) V^\top` with Haar-random
orthogonal U, V and geometrically spaced singular values from :math:`s_1` down to
:math:`s_1/\mathrm{cond}`, scaled so that :math:`\lVert W \rVert_F^2 = d` (mean squared column
norm 1, as for cl-ica's unit columns). For d = 10, cl-ica's selected thresholds correspond to
condition numbers of about 3.6 (best of 25 000, its default) and 5.3 (0.1% quantile, von
Kügelgen et al.); the default target here is 4.

Serialization: ``state_dict()`` returns a plain dict ``{"config", "config_hash", "tensors",
"tensors_hash"}`` (tensors only, no file I/O), and ``from_state_dict`` checks both hashes, so a
chapter can prove that it uses exactly the same g.
"""

from __future__ import annotations

import math

import torch

from sithlib.dgp._hashing import config_hash, tensors_hash
from sithlib.dgp._random import random_orthogonal

MIXINGS = ("mlp", "linear", "identity")


def _check_int(name: str, v, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")


def _check_cond(dim: int, cond) -> None:
    if not (isinstance(cond, (int, float)) and math.isfinite(cond) and cond >= 1):
        raise ValueError(f"cond must be a finite number >= 1, got {cond!r}")
    if dim == 1 and cond != 1:
        raise ValueError(f"a 1 x 1 matrix has condition number 1, so cond must be 1, got {cond}")


def random_matrix(dim: int, cond: float = 4.0, *, generator: torch.Generator | None = None):
    """A random dim x dim matrix with condition number exactly ``cond`` (float64, CPU).

    :math:`W = U \\operatorname{diag}(s) V^\\top` with Haar-random orthogonal U and V and
    singular values :math:`s_i \\propto \\mathrm{cond}^{-(i-1)/(d-1)}`, scaled so that
    :math:`\\lVert W \\rVert_F^2 = d`. ``cond = 1`` gives a random orthogonal matrix.
    """
    _check_int("dim", dim, 1)
    _check_cond(dim, cond)
    u = random_orthogonal(dim, generator=generator)
    v = random_orthogonal(dim, generator=generator)
    expo = torch.arange(dim, dtype=torch.float64) / max(dim - 1, 1)
    s = float(cond) ** (-expo)
    s = s * math.sqrt(dim) / s.norm()
    return (u * s) @ v.T


def pool_condition(dim: int, pool: int = 25_000, quantile: float = 0.0, *,
                   generator: torch.Generator | None = None) -> float:
    """The condition number cl-ica's rejection sampler accepts up to, for dim x dim layers.

    cl-ica (and csi, which copies it) draws ``pool`` matrices with U(-1, 1) entries and unit
    columns, sorts their condition numbers and takes the one at index ``int(pool * quantile)``
    as the threshold each mixing layer must meet. The threshold depends strongly on dim: the
    best of 25 000 (``quantile=0``, csi's DIET setting) is about 1.4-1.7 for d = 5, 3.6-4.0
    for d = 10 and 8.7-9.3 for d = 20 (over draws), so one fixed condition number cannot
    stand for all of them.
    """
    _check_int("dim", dim, 1)
    _check_int("pool", pool, 1)
    if not (isinstance(quantile, (int, float)) and 0.0 <= quantile < 1.0):
        raise ValueError(f"quantile must be in [0, 1), got {quantile!r}")
    a = torch.rand(pool, dim, dim, generator=generator, dtype=torch.float64) * 2 - 1
    a = a / a.norm(dim=1, keepdim=True)
    s = torch.linalg.svdvals(a)
    cond = (s[:, 0] / s[:, -1]).sort().values
    return float(cond[int(pool * quantile)])


class _Serializable:
    """Shared serialization: subclasses define ``config`` and ``tensors``."""

    config: dict

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    def state_dict(self) -> dict:
        """``{"config", "config_hash", "tensors", "tensors_hash"}``; tensors on the CPU."""
        tensors = {k: t.detach().cpu() for k, t in self.tensors().items()}
        return {"config": dict(self.config), "config_hash": self.config_hash,
                "tensors": tensors, "tensors_hash": tensors_hash(tensors)}


def _verified(state: dict) -> tuple[dict, dict]:
    if not isinstance(state, dict) or not {"config", "config_hash", "tensors"} <= set(state):
        raise ValueError("state must be a dict with keys 'config', 'config_hash' and 'tensors'")
    config, tensors = state["config"], state["tensors"]
    if config_hash(config) != state["config_hash"]:
        raise ValueError("config_hash does not match the config: the state was altered")
    if "tensors_hash" in state and tensors_hash(tensors) != state["tensors_hash"]:
        raise ValueError("tensors_hash does not match the tensors: the weights were altered")
    return config, tensors


class IdentityMixing(_Serializable):
    """:math:`g(z) = z`."""

    def __init__(self, dim: int):
        _check_int("dim", dim, 1)
        self.dim = dim
        self.config = {"kind": "identity", "dim": dim}

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.dim, dtype=torch.float64, device=z.device)
        return eye.expand(z.shape[0], self.dim, self.dim)

    def layer_condition_numbers(self) -> torch.Tensor:
        return torch.ones(0, dtype=torch.float64)

    def to(self, device) -> IdentityMixing:
        return self


class InvertibleMLP(_Serializable):
    """Bias-free leaky-ReLU MLP with square layers, its exact inverse and its Jacobian.

    Parameters
    ----------
    weights : sequence of Tensor, each (d, d)
        Layer matrices, applied as ``h @ W.T``; stored in float64.
    negative_slope : float
        Leaky-ReLU slope in (0, 1]; 0.2 as in cl-ica.
    cond : float, optional
        The target condition number the weights were built with (recorded in the config).
    """

    kind = "mlp"

    def __init__(self, weights, negative_slope: float = 0.2, cond: float | None = None):
        weights = [torch.as_tensor(w, dtype=torch.float64) for w in weights]
        if not weights or any(w.ndim != 2 or w.shape[0] != w.shape[1] for w in weights):
            raise ValueError("weights must be a non-empty sequence of square matrices")
        if len({w.shape for w in weights}) != 1:
            raise ValueError("weights must all have the same size; got shapes "
                             + ", ".join(str(tuple(w.shape)) for w in weights))
        if not (0 < negative_slope <= 1):
            raise ValueError(
                f"negative_slope must be in (0, 1] for invertibility, got {negative_slope}"
            )
        svals = [torch.linalg.svdvals(w.cpu()) for w in weights]
        if any(s[-1] <= 0 or not torch.isfinite(s).all() for s in svals):
            raise ValueError("every weight matrix must be invertible")
        self.weights = weights
        # Inverses from float64 LU: accurate to ~cond * 1e-16, far below float32 rounding.
        self.inverse_weights = [torch.linalg.inv(w) for w in weights]
        self.negative_slope = float(negative_slope)
        self.dim = weights[0].shape[0]
        self.config = {"kind": self.kind, "dim": self.dim, "n_layers": len(weights),
                       "cond": None if cond is None else float(cond),
                       "negative_slope": self.negative_slope}
        self._cache: dict = {}

    @classmethod
    def random(
        cls,
        dim: int,
        n_layers: int = 3,
        cond: float = 4.0,
        negative_slope: float = 0.2,
        *,
        generator: torch.Generator | None = None,
    ) -> InvertibleMLP:
        """Layers from :func:`random_matrix` with condition number ``cond`` each (CPU
        generator); 3 layers and slope 0.2 as in cl-ica (csi uses 4 layers)."""
        _check_int("n_layers", n_layers, 1)
        weights = [random_matrix(dim, cond, generator=generator) for _ in range(n_layers)]
        return cls(weights, negative_slope, cond)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"weight.{i}": w for i, w in enumerate(self.weights)}

    def to(self, device) -> InvertibleMLP:
        """A copy with the weights on ``device``."""
        out = type(self).__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.weights = [w.to(device) for w in self.weights]
        out.inverse_weights = [w.to(device) for w in self.inverse_weights]
        out._cache = {}
        return out

    def _cast(self, like: torch.Tensor) -> tuple[list, list]:
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = ([w.to(like) for w in self.weights],
                                [w.to(like) for w in self.inverse_weights])
        return self._cache[key]

    def _check(self, t: torch.Tensor, name: str) -> None:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.shape[-1] != self.dim:
            raise ValueError(f"{name} must be a floating tensor of shape (..., {self.dim})")

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """x = g(z), computed in ``z``'s dtype on ``z``'s device."""
        self._check(z, "z")
        ws, _ = self._cast(z)
        h = z
        for i, w in enumerate(ws):
            h = h @ w.T
            if i < len(ws) - 1:
                h = torch.nn.functional.leaky_relu(h, self.negative_slope)
        return h

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """z = g^{-1}(x): inverse matrices and the inverse leaky ReLU, layer by layer."""
        self._check(x, "x")
        _, inv = self._cast(x)
        h = x
        for i in range(len(inv) - 1, -1, -1):
            if i < len(inv) - 1:
                h = torch.where(h >= 0, h, h / self.negative_slope)
            h = h @ inv[i].T
        return h

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """Jacobian dg/dz at each row of ``z`` (float64), shape (n, d, d):
        :math:`W_L D_{L-1} W_{L-1} \\cdots D_1 W_1` with D the leaky-ReLU slopes (1 or 0.2)."""
        self._check(z, "z")
        z = z.detach().to(torch.float64).reshape(-1, self.dim)
        ws = [w.to(z.device) for w in self.weights]
        jac = ws[0].expand(z.shape[0], self.dim, self.dim)
        pre = z @ ws[0].T
        for w in ws[1:]:
            # Built from float64 tensors: torch.where with two Python scalars would give a
            # float32 tensor and round the slope.
            slope = torch.where(pre > 0, torch.ones_like(pre),
                                torch.full_like(pre, self.negative_slope))
            jac = w @ (slope.unsqueeze(-1) * jac)
            pre = torch.nn.functional.leaky_relu(pre, self.negative_slope) @ w.T
        return jac

    def layer_condition_numbers(self) -> torch.Tensor:
        """Measured condition number (largest / smallest singular value) of every layer."""
        return torch.stack([s[0] / s[-1] for s in map(torch.linalg.svdvals, self.weights)])


class LinearMixing(InvertibleMLP):
    """:math:`g(z) = W z`, one matrix with a target condition number (an MLP with one layer)."""

    kind = "linear"

    def __init__(self, weight, cond: float | None = None):
        super().__init__([weight], 1.0, cond)
        self.config = {"kind": "linear", "dim": self.dim,
                       "cond": None if cond is None else float(cond)}

    @classmethod
    def random(cls, dim: int, cond: float = 4.0, *, generator=None) -> LinearMixing:
        """W from :func:`random_matrix` (CPU generator)."""
        return cls(random_matrix(dim, cond, generator=generator), cond)


def make_mixing(
    name: str,
    dim: int,
    *,
    n_layers: int = 3,
    cond: float = 4.0,
    negative_slope: float = 0.2,
    generator: torch.Generator | None = None,
):
    """A mixing from its name: ``"mlp"``, ``"linear"`` or ``"identity"``."""
    if name == "mlp":
        return InvertibleMLP.random(dim, n_layers, cond, negative_slope, generator=generator)
    if name == "linear":
        return LinearMixing.random(dim, cond, generator=generator)
    if name == "identity":
        return IdentityMixing(dim)
    raise ValueError(f"mixing must be one of {list(MIXINGS)}, got {name!r}")


def mixing_from_state_dict(state: dict):
    """Rebuild a mixing from its ``state_dict()``, after checking its config and tensor hashes."""
    config, tensors = _verified(state)
    kind = config.get("kind")
    if kind == "identity":
        return IdentityMixing(config["dim"])
    if kind == "linear":
        return LinearMixing(tensors["weight.0"], config["cond"])
    if kind == "mlp":
        weights = [tensors[f"weight.{i}"] for i in range(config["n_layers"])]
        return InvertibleMLP(weights, config["negative_slope"], config["cond"])
    raise ValueError(f"unknown mixing kind {kind!r} in state; expected one of {list(MIXINGS)}")


def jacobian_condition_number(g, z: torch.Tensor) -> torch.Tensor:
    """Condition number of the Jacobian of ``g`` at each row of ``z`` (float64, shape (n,)).

    Parameters
    ----------
    g : InvertibleMLP, LinearMixing or IdentityMixing
        The mixing.
    z : Tensor, shape (n, d)
        Points at which to evaluate it.

    Returns
    -------
    Tensor
        :math:`\\sigma_{\\max}(J_g(z)) / \\sigma_{\\min}(J_g(z))` per row.
    """
    s = torch.linalg.svdvals(g.jacobian(z))
    return s[..., 0] / s[..., -1]
