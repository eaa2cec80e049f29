r"""One object per data-generating process: space, marginal, positive-pair conditional and mixing.

``DGP(DGPConfig(...))`` builds everything that is random but fixed for the whole run (the
mixing g, the cluster vectors, the content/style dependence, a finite dataset) ONCE from the
config's seed. Each part has its own seed derived from (seed, part name), so for example two
configs that differ only in the conditional share the same g. Every later draw
(``sample_pairs``, ``sample_negatives``, ...) takes an explicit ``torch.Generator`` on the DGP's
device.

Kinds:

- ``"standard"`` (Zimmermann et al., 2021): :math:`z \sim p(z)` on a sphere, box or
  :math:`\mathbb{R}^n`, :math:`\tilde z \sim p(\tilde z \mid z)`, :math:`x = g(z)`.
- ``"content_style"`` (von Kügelgen et al., 2021): see :mod:`sithlib.dgp.content_style`.
- ``"cluster"`` (Reizinger et al., 2024, DIET): see :mod:`sithlib.dgp.clusters`; both views of
  a pair are fresh draws for the same instance.

With ``n_samples = N`` the standard and content/style kinds draw anchors from a fixed set of N
latents (a finite dataset; positives stay fresh, like augmentations); with ``None`` every call
draws fresh anchors. For the cluster kind N is the number of instances.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import torch

from sithlib.dgp._hashing import config_hash, tensors_hash
from sithlib.dgp._random import generator_for
from sithlib.dgp.clusters import ClusterInstance
from sithlib.dgp.conditionals import CONDITIONALS, sample_conditional
from sithlib.dgp.content_style import ContentStyle
from sithlib.dgp.marginals import MARGINALS, sample_marginal
from sithlib.dgp.mixing import MIXINGS, InvertibleMLP, LinearMixing, make_mixing
from sithlib.dgp.negatives import negative_indices
from sithlib.dgp.spaces import SPACES, make_space

KINDS = ("standard", "content_style", "cluster")


@dataclass(frozen=True)
class DGPConfig:
    """Typed, validated description of a DGP; invalid values raise ValueError or TypeError.

    Parameters
    ----------
    kind : str
        ``"standard"``, ``"content_style"`` or ``"cluster"``.
    dim : int
        Latent dimension n (observations have the same dimension).
    space : str
        ``"sphere"``, ``"box"`` or ``"euclidean"``.
    box_low : float
        Lower bound of the box (cl-ica: 0).
    box_high : float
        Upper bound of the box (cl-ica: 1).
    marginal : str
        ``"uniform"``, ``"normal"``, ``"laplace"`` or ``"gennormal"`` (of the latents, or of the
        cluster vectors for the cluster kind).
    marginal_scale : float
        Scale of the marginal.
    marginal_p : float
        Generalized-normal exponent of the marginal (``"gennormal"`` only).
    conditional : str
        ``"vmf"``, ``"normal"``, ``"laplace"`` or ``"gennormal"``.
    kappa : float
        vMF concentration (csi default 10; InfoNCE is matched at tau = 1 / kappa).
    conditional_scale : float
        Scale of a noise conditional (also the style change scale).
    conditional_p : float
        Generalized-normal exponent of a noise conditional (``"gennormal"`` only).
    n_content : int
        Content/style kind only: content block size.
    style_change_prob : float
        Content/style kind only: per-coordinate style change probability, in [0, 1].
    statistical_dependence : bool
        Content/style kind only: statistical dependence between content and style (see
        :mod:`sithlib.dgp.content_style`).
    causal_dependence : bool
        Content/style kind only: causal dependence of the style on the content (see
        :mod:`sithlib.dgp.content_style`).
    n_clusters : int
        Cluster kind only: number of cluster vectors.
    n_samples : int or None
        Size of the finite dataset (number of instances for the cluster kind, where it is
        required); None draws fresh anchors every call.
    mixing : str
        ``"mlp"``, ``"linear"`` or ``"identity"``.
    mixing_layers : int
        Layers of the MLP mixing (cl-ica 3, csi 4).
    mixing_cond : float
        Condition number of every mixing layer, >= 1.
    negative_slope : float
        Leaky-ReLU slope of the MLP mixing, in (0, 1].
    seed : int
        Seed of everything drawn once per DGP.
    """

    kind: str = "standard"
    dim: int = 10
    space: str = "sphere"
    box_low: float = 0.0
    box_high: float = 1.0
    marginal: str = "uniform"
    marginal_scale: float = 1.0
    marginal_p: float = 3.0
    conditional: str = "vmf"
    kappa: float = 10.0
    conditional_scale: float = 1.0
    conditional_p: float = 3.0
    n_content: int = 5
    style_change_prob: float = 1.0
    statistical_dependence: bool = False
    causal_dependence: bool = False
    n_clusters: int = 100
    n_samples: int | None = None
    mixing: str = "mlp"
    mixing_layers: int = 3
    mixing_cond: float = 4.0
    negative_slope: float = 0.2
    seed: int = 0

    def __post_init__(self):
        _validate(self)

    def to_dict(self) -> dict:
        """The config as a plain JSON-compatible dict."""
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        """sha256 (16 hex digits) of the config."""
        return config_hash(self.to_dict())


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _num(name, value, *, low=None, low_open=False, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")


def _validate(c: DGPConfig) -> None:
    _choice("kind", c.kind, KINDS)
    _choice("space", c.space, tuple(SPACES))
    _choice("marginal", c.marginal, MARGINALS)
    _choice("conditional", c.conditional, CONDITIONALS)
    _choice("mixing", c.mixing, MIXINGS)
    _int("dim", c.dim, 1)
    _int("n_content", c.n_content, 1)
    _int("n_clusters", c.n_clusters, 1)
    _int("mixing_layers", c.mixing_layers, 1)
    _int("seed", c.seed, 0)
    if c.n_samples is not None:
        _int("n_samples", c.n_samples, 1)
    for name in ("box_low", "box_high"):
        _num(name, getattr(c, name))
    for name in ("marginal_scale", "marginal_p", "conditional_scale", "conditional_p"):
        _num(name, getattr(c, name), low=0, low_open=True)
    _num("kappa", c.kappa, low=0)
    _num("style_change_prob", c.style_change_prob, low=0, high=1)
    _num("mixing_cond", c.mixing_cond, low=1)
    _num("negative_slope", c.negative_slope, low=0, low_open=True, high=1)
    for name in ("statistical_dependence", "causal_dependence"):
        if not isinstance(getattr(c, name), bool):
            raise TypeError(f"{name} must be a bool, got {type(getattr(c, name)).__name__}")
    if c.space == "sphere" and c.dim < 2:
        raise ValueError(f"the sphere needs dim >= 2, got dim = {c.dim}")
    if c.space == "box" and not c.box_low < c.box_high:
        raise ValueError(f"box_low must be < box_high, got [{c.box_low}, {c.box_high}]")
    if c.space == "euclidean" and c.marginal == "uniform":
        raise ValueError("marginal 'uniform' does not exist on space 'euclidean'; use 'normal', "
                         "'laplace' or 'gennormal'")
    if c.conditional == "vmf" and c.space != "sphere":
        raise ValueError(f"conditional 'vmf' needs space 'sphere', got {c.space!r}")
    if c.mixing != "identity" and c.dim == 1 and c.mixing_cond != 1:
        raise ValueError("with dim = 1 every mixing layer has condition number 1; "
                         "set mixing_cond=1")
    if c.kind != "content_style" and (c.statistical_dependence or c.causal_dependence):
        raise ValueError("statistical_dependence and causal_dependence need kind 'content_style'")
    if c.kind == "content_style":
        if (c.space, c.marginal, c.conditional) != ("euclidean", "normal", "normal"):
            raise ValueError("kind 'content_style' needs space='euclidean', marginal='normal' and "
                             f"conditional='normal', got {c.space!r}, {c.marginal!r}, "
                             f"{c.conditional!r}")
        if not 1 <= c.n_content <= c.dim - 1:
            raise ValueError(f"n_content must be in [1, dim - 1] = [1, {c.dim - 1}] so that "
                             f"content and style are both non-empty, got {c.n_content}")
    if c.kind == "cluster":
        if c.space != "sphere":
            raise ValueError(f"kind 'cluster' needs space 'sphere', got {c.space!r}")
        if c.n_samples is None:
            raise ValueError("kind 'cluster' needs n_samples (the number of instances N)")


PRESETS = {
    # Zimmermann et al. (2021), sphere experiments: uniform marginal, vMF conditional, cl-ica's
    # 3-layer leaky-ReLU mixing on n = 10. We do not know the paper's kappa values; 10 is a
    # middle value (our choice; pair it with tau = 1 / kappa).
    "zimmermann_sphere": DGPConfig(),
    # Zimmermann et al. (2021), cl-ica main_mlp.py defaults: box [0, 1]^10, uniform marginal,
    # Normal conditional with c-param 0.05, truncated to the box.
    "zimmermann_box": DGPConfig(space="box", conditional="normal", conditional_scale=0.05),
    # von Kügelgen et al. (2021), main_mlp.py defaults: n_c = n_s = 5, N(0, 1) marginal,
    # style changes N(0, 1) with probability 1.0 (0.75 in the README example).
    "kugelgen": DGPConfig(kind="content_style", space="euclidean", marginal="normal",
                          conditional="normal"),
    # Reizinger et al. (2024), Table 2 baseline row: d = 5, |C| = 100, N = 10^3, vMF(kappa = 10)
    # around uniform cluster vectors, 4-layer mixing (csi's code default N is 10 240) whose
    # layers have csi's condition number for d = 5 (pool_condition(5): 1.5 to 1.7 by seed; our
    # default 4 would make g far harder to invert).
    "reizinger_diet": DGPConfig(kind="cluster", dim=5, n_clusters=100, n_samples=1000,
                                mixing_layers=4, mixing_cond=1.7),
}


class Pairs(NamedTuple):
    """A batch of positive pairs: latents ``z``, ``z_pos`` and observations ``x = g(z)``,
    ``x_pos = g(z_pos)``."""

    #: Latents, shape (n, dim).
    z: torch.Tensor
    #: Positive latents drawn from the conditional around ``z``, shape (n, dim).
    z_pos: torch.Tensor
    #: Observations ``g(z)``, shape (n, obs_dim).
    x: torch.Tensor
    #: Observations ``g(z_pos)``, shape (n, obs_dim).
    x_pos: torch.Tensor


class Negatives(NamedTuple):
    """Negatives of shape (n, m, dim) and, for finite datasets and instances, their indices."""

    #: Negative latents, shape (n, m, dim).
    z: torch.Tensor
    #: Their observations ``g(z)``, shape (n, m, obs_dim).
    x: torch.Tensor
    #: Their indices into the finite dataset or the instances, shape (n, m); None otherwise.
    index: torch.Tensor | None


class DGP:
    """A data-generating process built from a :class:`DGPConfig`.

    Parameters
    ----------
    config : DGPConfig
        What to build; everything random in it is drawn from ``config.seed`` on the CPU in
        float64, so the same config gives bit-identical parts on every device.
    device : torch.device or str
        Where samples are drawn (generators passed later must live there).
    dtype : torch.dtype
        Floating dtype of the samples (float32 or float64).
    """

    def __init__(self, config: DGPConfig | None = None, *, device="cpu", dtype=torch.float32,
                 _tensors: dict | None = None):
        config = DGPConfig() if config is None else config
        if not isinstance(config, DGPConfig):
            raise TypeError(f"config must be a DGPConfig, got {type(config).__name__}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.config, self.device, self.dtype = config, torch.device(device), dtype
        c, t = config, _tensors
        self.space = make_space(c.space, c.dim, low=c.box_low, high=c.box_high)
        if t is None:
            self.mixing = make_mixing(c.mixing, c.dim, n_layers=c.mixing_layers,
                                      cond=c.mixing_cond, negative_slope=c.negative_slope,
                                      generator=generator_for(c.seed, "mixing"))
        else:
            self.mixing = _mixing_from_tensors(c, t)
        self.content_style = self.clusters = self.dataset = self._dataset64 = None
        if c.kind == "content_style":
            sub = None if t is None else {k[14:]: v for k, v in t.items()
                                          if k.startswith("content_style.")}
            self.content_style = ContentStyle(
                c.n_content, c.dim - c.n_content, change_prob=c.style_change_prob,
                marginal_scale=c.marginal_scale, change_scale=c.conditional_scale,
                statistical_dependence=c.statistical_dependence,
                causal_dependence=c.causal_dependence,
                generator=generator_for(c.seed, "content_style"), tensors=sub,
            )
        if c.kind == "cluster":
            vectors = (t["clusters.cluster_vectors"] if t is not None else sample_marginal(
                self.space, c.marginal, c.n_clusters, c.marginal_scale, c.marginal_p,
                generator=generator_for(c.seed, "clusters"), dtype=torch.float64))
            self.clusters = ClusterInstance(vectors, c.n_samples, conditional=c.conditional,
                                            kappa=c.kappa, scale=c.conditional_scale,
                                            p=c.conditional_p)
        elif c.n_samples is not None:
            # Drawn and kept in float64 on the CPU, so that every device and dtype sees the
            # same dataset (rounded once to the sampling dtype).
            self._dataset64 = (t["dataset.z"].to(torch.float64) if t is not None else
                               self._fresh_latents(c.n_samples, generator_for(c.seed, "dataset"),
                                                   torch.float64, "cpu"))
        self._move()

    def _move(self):
        self.mixing = self.mixing.to(self.device)
        if self.content_style is not None:
            self.content_style = self.content_style.to(self.device)
        if self.clusters is not None:
            self.clusters = self.clusters.to(self.device)
        if self._dataset64 is not None:
            self.dataset = self._dataset64.to(self.device, self.dtype)

    # ---- serialization -------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything drawn once, by name, on the CPU."""
        out = {f"mixing.{k}": v for k, v in self.mixing.tensors().items()}
        if self.content_style is not None:
            out.update({f"content_style.{k}": v for k, v in self.content_style.tensors().items()})
        if self.clusters is not None:
            out["clusters.cluster_vectors"] = self.clusters.cluster_vectors
        if self._dataset64 is not None:
            out["dataset.z"] = self._dataset64
        return {k: v.detach().cpu() for k, v in out.items()}

    @property
    def config_hash(self) -> str:
        return self.config.hash

    def state_dict(self) -> dict:
        """``{"config", "config_hash", "tensors", "tensors_hash"}``: a pure dict (no file I/O)
        from which :meth:`from_state_dict` rebuilds exactly this DGP."""
        tensors = self.tensors()
        return {"config": self.config.to_dict(), "config_hash": self.config_hash,
                "tensors": tensors, "tensors_hash": tensors_hash(tensors)}

    @classmethod
    def from_state_dict(cls, state: dict, *, device="cpu", dtype=torch.float32) -> DGP:
        """Rebuild a DGP from :meth:`state_dict` after checking both hashes."""
        if not isinstance(state, dict) or not {"config", "config_hash", "tensors"} <= set(state):
            raise ValueError("state must be a dict with keys 'config', 'config_hash', 'tensors'")
        if config_hash(state["config"]) != state["config_hash"]:
            raise ValueError("config_hash does not match the config: the state was altered")
        if "tensors_hash" in state and tensors_hash(state["tensors"]) != state["tensors_hash"]:
            raise ValueError("tensors_hash does not match the tensors: the state was altered")
        return cls(DGPConfig(**state["config"]), device=device, dtype=dtype,
                   _tensors=state["tensors"])

    def to(self, device) -> DGP:
        """The same DGP drawing on ``device``."""
        out = DGP.__new__(DGP)
        out.__dict__.update(self.__dict__)
        out.device = torch.device(device)
        out._move()
        return out

    # ---- sampling ------------------------------------------------------------------------
    @property
    def finite(self) -> bool:
        """Whether anchors come from a finite set (a dataset or the cluster kind's instances)."""
        return self.config.n_samples is not None

    def _fresh_latents(self, n, generator, dtype, device) -> torch.Tensor:
        c = self.config
        if c.kind == "content_style":
            return self.content_style.sample_marginal(n, generator=generator, device=device,
                                                      dtype=dtype)
        return sample_marginal(self.space, c.marginal, n, c.marginal_scale, c.marginal_p,
                               generator=generator, device=device, dtype=dtype)

    def _check_n(self, n, index):
        if index is not None:
            if not self.finite:
                raise ValueError("index needs a finite dataset or instances (set n_samples)")
            if not isinstance(index, torch.Tensor) or index.ndim != 1 or index.is_floating_point():
                raise ValueError("index must be a 1-D integer tensor")
            if index.numel() and (index.min() < 0 or index.max() >= self.config.n_samples):
                raise ValueError(f"index entries must lie in [0, {self.config.n_samples})")
            if n is not None and n != index.numel():
                raise ValueError(f"n = {n} does not match len(index) = {index.numel()}")
            return index.to(self.device)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an integer >= 0 (or pass index=), got {n!r}")
        return None

    def sample_index(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n dataset (or instance) indices, uniform with replacement."""
        self._check_n(n, None)
        if not self.finite:
            raise ValueError("sample_index needs a finite dataset or instances (set n_samples)")
        return torch.randint(0, self.config.n_samples, (n,), generator=generator,
                             device=self.device)

    def cluster_of(self, index: torch.Tensor) -> torch.Tensor:
        """Cluster of each instance (cluster kind only): index mod n_clusters."""
        if self.clusters is None:
            raise ValueError("cluster_of needs kind 'cluster'")
        return self.clusters.cluster_of(index.to(self.device))

    def sample_latents(self, n: int | None = None, generator: torch.Generator | None = None, *,
                       index: torch.Tensor | None = None) -> torch.Tensor:
        """Anchor latents z, shape (n, dim): fresh from the marginal, rows of the finite
        dataset (random or at ``index``), or fresh draws for instances."""
        index = self._check_n(n, index)
        if self.finite and index is None:
            index = self.sample_index(n, generator)
        if self.clusters is not None:
            return self.clusters.sample(index, generator=generator, dtype=self.dtype)
        if self.dataset is not None:
            return self.dataset[index]
        return self._fresh_latents(n, generator, self.dtype, self.device)

    def positive(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One positive latent per row of ``z`` (standard and content/style kinds)."""
        c = self.config
        if c.kind == "content_style":
            return self.content_style.sample_positive(z, generator=generator)
        if c.kind == "cluster":
            raise ValueError("for kind 'cluster' a positive is a fresh draw of the same instance; "
                             "use sample_pairs(index=...)")
        return sample_conditional(self.space, z, c.conditional, kappa=c.kappa,
                                  scale=c.conditional_scale, p=c.conditional_p,
                                  generator=generator)

    def sample_pairs(self, n: int | None = None, generator: torch.Generator | None = None, *,
                     index: torch.Tensor | None = None) -> Pairs:
        """n positive pairs ``Pairs(z, z_pos, x, x_pos)``, or one per entry of ``index``.

        For the cluster kind both views are independent fresh draws for the same instance.
        """
        index = self._check_n(n, index)
        if self.finite and index is None:
            index = self.sample_index(n, generator)
        if self.clusters is not None:
            z = self.clusters.sample(index, generator=generator, dtype=self.dtype)
            z_pos = self.clusters.sample(index, generator=generator, dtype=self.dtype)
        else:
            z = self.sample_latents(n, generator, index=index)
            z_pos = self.positive(z, generator)
        return Pairs(z, z_pos, self.mixing(z), self.mixing(z_pos))

    def sample_negatives(self, n: int | None = None, m: int = 1,
                         generator: torch.Generator | None = None, *,
                         index: torch.Tensor | None = None) -> Negatives:
        """m negatives per anchor, ``Negatives(z, x, index)`` with z, x of shape (n, m, dim).

        Fresh anchors: independent draws from the marginal (pass n). Finite datasets and
        instances: pass the anchors' ``index``; negatives are other dataset entries (or fresh
        draws of other instances), never the anchor's own.
        """
        index = self._check_n(n, index)
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise ValueError(f"m (negatives per anchor) must be an int >= 1, got {m!r}")
        if self.finite:
            if index is None:
                raise ValueError("with a finite dataset or instances pass the anchors' index= "
                                 "so that they can be excluded")
            neg = negative_indices(index, self.config.n_samples, m, generator=generator)
            z = self.sample_latents(generator=generator, index=neg.reshape(-1))
        else:
            neg = None
            z = self._fresh_latents(n * m, generator, self.dtype, self.device)
        z = z.reshape(-1, m, self.config.dim)
        return Negatives(z, self.mixing(z), neg)


def _mixing_from_tensors(c: DGPConfig, t: dict):
    """Rebuild the mixing from a DGP state's tensors (hashes already checked)."""
    if c.mixing == "identity":
        return make_mixing("identity", c.dim)
    if c.mixing == "linear":
        return LinearMixing(t["mixing.weight.0"], c.mixing_cond)
    weights = [t[f"mixing.weight.{i}"] for i in range(c.mixing_layers)]
    return InvertibleMLP(weights, c.negative_slope, c.mixing_cond)

