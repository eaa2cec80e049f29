r"""VICReg chapter: where the assumptions of the information view break.

The derivation of Shwartz-Ziv et al. (2023) needs three things about the views of one input
:math:`x^*`: (i) they stay in the linear region of :math:`x^*` of the continuous piecewise-affine
network f, so that :math:`f(x) = A_\omega x + b_\omega` for all of them; (ii) the input
perturbation is Gaussian, :math:`x \mid x^* \sim N(x^*, \Sigma)`; then (iii) the embedding of
the views is Gaussian with covariance :math:`A_\omega \Sigma A_\omega^\top` and the embeddings
of a dataset form a Gaussian mixture. We train a network with VICReg, then for views of held-out
inputs, at several augmentation strengths, measure

- the fraction of views that share the activation pattern of :math:`x^*` and the fraction of
  ReLU units whose sign flips;
- Mardia's normality tests on the views' embeddings (and on the input perturbations), on the
  top principal components of each cloud;
- the covariance match :math:`\|\hat C_z - J \hat\Sigma_x J^\top\|_F / \|\hat C_z\|_F`, with J
  the Jacobian of f at :math:`x^*` and :math:`\hat\Sigma_x` the views' input covariance (zero
  when every view shares the region of :math:`x^*`),

for two kinds of views of matched size: the data's own augmentations and Gaussian input noise
with the same mean squared distance to :math:`x^*`. Two settings: the vector DGP (vMF positives
through an invertible MLP, an MLP encoder; strength = :math:`1/\kappa`) and the image DGP
(rendered shapes, the SimCLR CIFAR recipe scaled by a strength s, s = 1 is the recipe; a
ResNet-18 with the CIFAR stem).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import pandas as pd
import torch

from sithlib.dgp import DGP, DGPConfig, recipe, render, sample_latents
from sithlib.dgp.augment import augment
from sithlib.dgp.vmf import sample_vmf
from sithlib.experiments._tables import of_agg
from sithlib.experiments.vicreg_information import VICRegData
from sithlib.losses import vicreg
from sithlib.methods import VICRegConfig, build_method
from sithlib.metrics.information import activation_pattern, eval_mode, mardia_test
from sithlib.models import calibrate_batchnorm, calibration_batches
from sithlib.models.views import both_views
from sithlib.train import TrainConfig, train

NAME = "vicreg_assumptions"
# 2: the init network's batch norms hold statistics of training batches (calibrate_batchnorm).
VERSION = 2
TITLE = "Where the assumptions break"
CHAPTER = "chapters/02_vicreg/04_assumptions"

SETTINGS = ("vector", "image")
FAMILIES = ("augmentation", "gaussian")
STATES = ("init", "trained")
#: Metrics measured per (setting, state, family, strength, seed).
MEASURES = ("same_region", "flipped_units", "cov_error", "reject_normal_z",
            "reject_normal_x", "rms_distance")


@dataclass(frozen=True)
class Config:
    # Intervals for --set values beyond the sign rule of results.field_domain.
    DOMAINS: ClassVar[dict[str, str]] = {"alpha": "(0, 1)"}
    settings: tuple[str, ...] = SETTINGS
    seeds: int = 2
    n_anchors: int = 12
    n_views: int = 128
    n_components: int = 4  # principal components the normality tests look at
    alpha: float = 0.05  # level of the normality test (Bonferroni over skewness and kurtosis)
    # vector DGP; strength = 1 / kappa of the vMF positives
    dim: int = 10
    kappa: float = 10.0  # the training augmentation
    strengths_vector: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0)
    mixing_layers: int = 3
    hidden: tuple[int, ...] = (128, 128)
    feature_dim: int = 32
    vec_proj_dims: tuple[int, ...] = (64, 64, 64)
    vec_steps: int = 400
    vec_batch_size: int = 256
    vec_lr: float = 1e-3
    # image DGP; strength s scales the SimCLR CIFAR recipe (s = 1 is the recipe)
    image_size: int = 16
    width: int = 8
    strengths_image: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 0.1, 1.0)
    img_proj_dims: tuple[int, ...] = (128, 128, 128)
    img_steps: int = 40
    img_batch_size: int = 128
    img_lr: float = 1e-3
    dgp_seed: int = 0
    cache_cells: bool = False  # paper runs: one resumable cell per setting

    def __post_init__(self):
        bad = [s for s in self.settings if s not in SETTINGS]
        if bad or not self.settings:
            raise ValueError(f"settings must be a non-empty subset of {SETTINGS}, "
                             f"got {self.settings!r}")
        if self.n_views <= self.n_components + 1:
            raise ValueError(f"n_views must exceed n_components + 1 = {self.n_components + 1} "
                             f"for the normality tests, got {self.n_views}")
        for name in ("strengths_vector", "strengths_image"):
            if any(not (s > 0 and math.isfinite(s)) for s in getattr(self, name)):
                raise ValueError(f"{name} must hold finite numbers > 0, "
                                 f"got {getattr(self, name)!r}")


# tools/gpu_order.py's guess of the paper profile's GPU seconds after training (the per-anchor
# Jacobians, SVDs and normality tests), from the sizing below; it only orders a GPU's queue.
MEASURE_GPU_S = 330.0

PROFILES = {
    "quick": Config(),
    # The standard ResNet-18 on 32 x 32 renders, more anchors, views, strengths and seeds.
    # Sized for one H100 in about 6 minutes: the measurement loop over anchors dominates.
    "paper": Config(seeds=3, n_anchors=32, n_views=256,
                    strengths_vector=(1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3,
                                      1.0),
                    hidden=(512, 512, 512), feature_dim=64, vec_proj_dims=(256, 256, 256),
                    vec_steps=2000, vec_batch_size=2048, image_size=32, width=64,
                    strengths_image=(1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.3, 1.0),
                    img_proj_dims=(2048, 2048, 2048), img_steps=300, img_batch_size=256,
                    cache_cells=True),
}


# --------------------------------------------------------------------------- views
def scaled_recipe(strength: float, name: str = "simclr_cifar"):
    """The augmentation recipe ``name`` with every random change scaled by ``strength``.

    The crop area's lower bound moves from 1 towards the recipe's, the aspect-ratio range
    shrinks geometrically towards 1, the jitter strengths and the flip and grayscale
    probabilities scale linearly; ``strength = 1`` returns the recipe (values above 1 are
    clipped to it).
    """
    if not (strength > 0 and math.isfinite(strength)):
        raise ValueError(f"strength must be a finite number > 0, got {strength!r}")
    s = min(float(strength), 1.0)
    base = recipe(name)
    if s == 1.0:
        return base
    lo_ratio, hi_ratio = base.crop_ratio
    return replace(
        base,
        crop_scale=(1.0 - s * (1.0 - base.crop_scale[0]), 1.0),
        crop_ratio=(lo_ratio**s, hi_ratio**s),
        flip_p=s * base.flip_p,
        brightness=s * base.brightness,
        contrast=s * base.contrast,
        saturation=s * base.saturation,
        hue=s * base.hue,
        grayscale_p=s * base.grayscale_p,
        blur_p=s * base.blur_p,
        solarize_p=s * base.solarize_p,
    )


class _Setting(VICRegData):
    """A DGP with its encoder and its two families of views around anchors x*."""

    def __init__(self, name: str, cfg: Config, device: str):
        self.name, self.cfg, self.device = name, cfg, device
        self.recipe = "simclr_cifar"  # training views; the measured views scale it
        gen = torch.Generator(device=device).manual_seed(2**31 - 1)
        if name == "vector":
            self.dgp = DGP(DGPConfig(dim=cfg.dim, kappa=cfg.kappa,
                                     mixing_layers=cfg.mixing_layers, seed=cfg.dgp_seed),
                           device=device)
            self.z_anchor = self.dgp.sample_latents(cfg.n_anchors, gen)
            self.x_anchor = self.dgp.mixing(self.z_anchor)
            self.training_strength = 1.0 / cfg.kappa
            self.strengths = tuple(sorted({*cfg.strengths_vector, self.training_strength}))
            self.steps, self.batch_size, self.lr = cfg.vec_steps, cfg.vec_batch_size, cfg.vec_lr
            self.proj_dims = cfg.vec_proj_dims
        else:
            self.x_anchor = render(sample_latents(cfg.n_anchors, generator=gen, device=device),
                                   cfg.image_size)
            self.training_strength = 1.0  # the SimCLR CIFAR recipe itself
            self.strengths = tuple(sorted({*cfg.strengths_image, self.training_strength}))
            self.steps, self.batch_size, self.lr = cfg.img_steps, cfg.img_batch_size, cfg.img_lr
            self.proj_dims = cfg.img_proj_dims

    def calibration_batches(self) -> list:
        """Training pairs (``batch_size`` each) from a stream of their own, for the batch norms
        of the init network."""
        return calibration_batches(self.sample, self.batch_size, device=self.device)

    def augmentations(self, i: int, strength: float, generator) -> torch.Tensor:
        """``n_views`` augmented views of anchor i at ``strength``, shape (k, *x.shape[1:])."""
        k = self.cfg.n_views
        if self.name == "vector":
            mu = self.z_anchor[i].expand(k, -1).double()
            z = sample_vmf(mu, 1.0 / strength, generator=generator).to(self.z_anchor.dtype)
            return self.dgp.mixing(z)
        x = self.x_anchor[i].expand(k, -1, -1, -1)
        return augment(x, scaled_recipe(strength), generator=generator)[0]


# --------------------------------------------------------------------------- measurements
def _top_components(v: torch.Tensor, k: int) -> torch.Tensor:
    """The cloud v (n, d) in the basis of its k leading principal components."""
    vc = (v - v.mean(0)).double()
    _, _, vh = torch.linalg.svd(vc, full_matrices=False)
    return vc @ vh[:k].T


def _rejects(v: torch.Tensor, cfg: Config) -> float:
    """1.0 if Mardia's skewness or kurtosis test rejects normality (Bonferroni), else 0.0."""
    test = mardia_test(_top_components(v, cfg.n_components))
    return float(min(test["skewness_pvalue"], test["kurtosis_pvalue"]) < cfg.alpha / 2)


def anchor_jacobian(net, x_star: torch.Tensor) -> torch.Tensor:
    """The Jacobian J of ``net`` at ``x_star`` (eval mode), flattened to (d_out, x.numel())."""
    with eval_mode(net):
        jac = torch.func.jacrev(lambda x: net(x[None])[0])(x_star)  # (d_out, *x.shape)
    return jac.detach().reshape(jac.shape[0], -1).double()


def covariance_error(net, x_star: torch.Tensor, views: torch.Tensor,
                     out: torch.Tensor | None = None, jac: torch.Tensor | None = None) -> float:
    r""":math:`\|\hat C_z - J \hat\Sigma_x J^\top\|_F / \|\hat C_z\|_F` for the views of x*.

    :math:`\hat C_z` is the covariance of the embeddings ``out`` = f(views) (computed when not
    given), :math:`\hat\Sigma_x` that of the views themselves and J the Jacobian of f at x*
    (``anchor_jacobian``, computed when not given): the error of the Gaussian push-forward
    :math:`N(f(x^*), J\Sigma J^\top)`. It is 0 when every view lies in the linear region of x*,
    whatever the distribution of the views.
    """
    if out is None:
        with eval_mode(net), torch.no_grad():
            out = net(views)
    if jac is None:
        jac = anchor_jacobian(net, x_star)
    dx = views.flatten(1).double()
    dx = dx - dx.mean(0)
    dz = out.double() - out.double().mean(0)
    k = views.shape[0]
    c_emp = dz.T @ dz / (k - 1)
    jd = jac @ dx.T
    c_lin = jd @ jd.T / (k - 1)
    return float(torch.linalg.matrix_norm(c_emp - c_lin) / torch.linalg.matrix_norm(c_emp))


def measure(net, setting, family: str, strength: float, seed: int,
            jacobians: list[torch.Tensor] | None = None) -> dict[str, float]:
    """Every measure of ``MEASURES``, averaged over the anchors, for one kind of views.

    Parameters
    ----------
    net : torch.nn.Module
        The encoder, in eval mode.
    setting : object
        The experiment's setting: a DGP with its anchors and augmentations.
    family : str
        ``"augmentation"`` or ``"gaussian"`` (isotropic noise with the augmentations' mean
        squared distance to the anchor, drawn per anchor).
    strength : float
        Augmentation strength (1 / kappa for vectors, s for images).
    seed : int
        Seed of the views.
    jacobians : list of torch.Tensor, optional
        ``anchor_jacobian`` of ``net`` at each anchor; they depend on neither the family nor
        the strength, so ``run`` computes them once per network. Computed when not given.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    cfg = setting.cfg
    gen = torch.Generator(device=setting.device).manual_seed(
        1_000_003 * seed + int(round(1e6 * strength)))
    ref = activation_pattern(net, setting.x_anchor)
    totals = dict.fromkeys(MEASURES, 0.0)
    for i in range(cfg.n_anchors):
        x_star = setting.x_anchor[i]
        views = setting.augmentations(i, strength, gen)
        # One draw of each family per anchor, so both families use the same generator stream.
        noise = torch.randn(views.shape, generator=gen, device=setting.device, dtype=views.dtype)
        rms = float((views - x_star).pow(2).flatten(1).sum(1).mean().sqrt())
        if family == "gaussian":
            # Isotropic noise with the same mean squared distance to x* as the augmentations.
            views = x_star + noise * rms / math.sqrt(x_star.numel())
        pattern = activation_pattern(net, views)
        totals["same_region"] += float((pattern == ref[i]).all(1).float().mean())
        totals["flipped_units"] += float((pattern != ref[i]).float().mean())
        with torch.no_grad():
            out = net(views)
        jac = jacobians[i] if jacobians is not None else None
        totals["cov_error"] += covariance_error(net, x_star, views, out, jac)
        totals["reject_normal_z"] += _rejects(out, cfg)
        totals["reject_normal_x"] += _rejects(views.flatten(1), cfg)
        totals["rms_distance"] += rms
    return {k: v / cfg.n_anchors for k, v in totals.items()}


def _train(setting: _Setting, cfg: Config, device: str):
    vcfg = VICRegConfig(proj_dims=setting.proj_dims)

    def make_model(seed: int):
        gen = torch.Generator().manual_seed(seed)
        return build_method("vicreg", setting.encoder(gen), vcfg, generator=gen)

    def loss_fn(method, batch):
        h, h_b = both_views(method.encoder, *batch)
        z_a, z_b = method.projector(h), method.projector(h_b)
        return vicreg(z_a, z_b, distributed=True), h

    return train(make_model, setting.sample, loss_fn,
                 TrainConfig(steps=setting.steps, batch_size=setting.batch_size, lr=setting.lr,
                             seeds=cfg.seeds, eval_every=setting.steps),
                 device=device, name=f"{NAME}-{setting.name}")


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train VICReg, then measure, per augmentation setting (one grid cell each, cached), how
    far the Gaussian and single-region assumptions hold at held-out anchors (``metrics``; no
    ``curves``)."""
    from sithlib.results import run_grid  # results imports experiments: import late

    cells = [{**asdict(cfg), "settings": (name,)} for name in cfg.settings]
    return run_grid(NAME, cells, lambda cell: run_cell(cell, device), cache=cfg.cache_cells)


def run_cell(cell: dict, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train and measure one setting (``cell`` is the config as a dict, one setting in it)."""
    cfg = Config(**cell)  # run_grid hands over the cell as built, tuples and all
    (name,) = cfg.settings
    rows = []
    setting = _Setting(name, cfg, device)
    result = _train(setting, cfg, device)
    for seed, method in result.finished():
        # make_model draws the encoder first, so this is the trained encoder's init.
        init = setting.encoder(torch.Generator().manual_seed(seed)).to(device)
        # Its batch norms (the ResNet's) get the statistics of training batches, each view on
        # its own as in training: with their defaults (mean 0, variance 1) the init network
        # would be measured as a function that no step of training computes.
        calibrate_batchnorm(init, setting.calibration_batches(),
                            lambda batch, net=init: both_views(net, *batch))
        nets = {"init": init, "trained": method.encoder}
        for state, net in nets.items():
            net.eval()
            jacobians = [anchor_jacobian(net, x) for x in setting.x_anchor]
            for family in FAMILIES:
                for strength in setting.strengths:
                    values = measure(net, setting, family, strength, seed, jacobians)
                    rows += [{"setting": name, "state": state, "family": family,
                              "strength": strength,
                              "training": strength == setting.training_strength,
                              "seed": seed, "metric": k, "value": v}
                             for k, v in values.items()]
    for failure in result.failures:
        rows.append({"setting": name, "state": "trained", "family": "training",
                     "strength": math.nan, "training": False, "seed": failure["seed"],
                     "metric": "failure_step",
                     "value": float(failure["step"]), "failure": failure["kind"]})
    return {"metrics": pd.DataFrame(rows), "curves": None}


# --------------------------------------------------------------------------- figures, tables
LABELS = {
    "same_region": "views in the region of x*",
    "flipped_units": "ReLU units that flip sign",
    "cov_error": "covariance error ‖Ĉ − JΣJᵀ‖ / ‖Ĉ‖",
    "reject_normal_z": "normality rejected, embeddings",
    "reject_normal_x": "normality rejected, inputs",
    "rms_distance": "RMS distance ‖x − x*‖",
}
_STRENGTH = {"vector": "augmentation strength 1/κ", "image": "augmentation strength s"}
# Legend entries: seaborn's group titles and values, in words.
_LEGEND = {"family": "views", "augmentation": "augmentations", "gaussian": "Gaussian noise",
           "state": "network", "init": "untrained", "trained": "VICReg-trained"}


def plot_measures(metrics: pd.DataFrame, setting: str = "vector",
                  measures=("same_region", "flipped_units"), axes=None):
    """Measures against the augmentation strength, augmentations vs matched Gaussian noise.

    Colour: the kind of views; line style: untrained (init) or VICReg-trained network; mean
    over seeds with a band of one standard deviation; the dotted line marks the strength used
    in training. Two measures sit side by side with the legend below them; more go two per
    row, the legend in a spare cell of the grid or below it.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = metrics[(metrics.setting == setting) & metrics.metric.isin(measures)]
    if data.empty:
        raise ValueError(f"no rows for setting {setting!r} and measures {measures!r}")
    spare = []
    if axes is None:
        n = len(measures)
        nrows, ncols = (1, n) if n <= 2 else (math.ceil(n / 2), 2)
        _, grid = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows + 0.4),
                               constrained_layout=True, squeeze=False)
        flat = list(grid.ravel())
        axes, spare = flat[:n], flat[n:]
        for ax in spare:
            ax.axis("off")
    train_strength = data[data.training].strength.unique()
    for ax, name in zip(axes, measures, strict=True):
        sns.lineplot(data=data[data.metric == name], x="strength", y="value", hue="family",
                     style="state", style_order=list(STATES), errorbar="sd", marker="o",
                     markersize=4, ax=ax, legend=ax is axes[0])
        for s in train_strength:
            ax.axvline(s, color="0.5", ls=":", lw=1)
        ax.set(xscale="log", xlabel=_STRENGTH[setting], ylabel="", title=LABELS[name])
    # One legend for all panels, where it covers no data: in a spare cell, else below.
    legend = axes[0].get_legend()
    if legend is not None:
        handles, labels = axes[0].get_legend_handles_labels()
        labels = [_LEGEND.get(label, label) for label in labels]
        legend.remove()
        if spare:
            spare[0].legend(handles, labels, loc="center", fontsize=10, frameon=False)
        else:
            axes[0].figure.legend(handles, labels, loc="outside lower center",
                                  ncol=len(handles), fontsize=9, frameon=False,
                                  columnspacing=1.2, handletextpad=0.4)
    return axes


def summary_table(metrics: pd.DataFrame, state: str = "trained") -> pd.DataFrame:
    """Every measure (rows) at the training strength, per setting and kind of views (columns),
    as 'mean ± sd' over seeds; the last row counts the seeds."""
    data = metrics[metrics.training & (metrics.state == state) & metrics.metric.isin(MEASURES)]
    agg = data.groupby(["setting", "family", "metric"]).value.agg(["mean", "std", "count"])
    text = of_agg(agg)
    table = text.unstack("metric").reindex(columns=list(MEASURES)).fillna("–")
    table["seeds"] = agg["count"].groupby(["setting", "family"]).max()
    # Measures as rows: their names are long, the four columns of numbers are not.
    table = table.rename(columns=LABELS).T
    table.columns.names = [None, None]
    table.index.name = None
    return table
