r"""VICReg chapter: VICReg as information maximisation in training (Shwartz-Ziv et al. 2023).

The information view of VICReg: for the embeddings Z, Z' of two views,

.. math::

    I(Z; Z') \ge H(Z) - \frac{\mathbb{E}\|Z - Z'\|^2}{2\sigma^2} - \text{const},

where VICReg's variance and covariance terms stand in for the entropy H(Z) and its invariance
term is the conditional part. We log, over training and on held-out pairs, the log-det
(Gaussian) entropy of the embeddings, the invariance :math:`\mathbb{E}\|Z - Z'\|^2` and the
bound's surrogate :math:`H(Z) - \lambda_s \mathbb{E}\|Z - Z'\|^2 / d` (the bound with
:math:`\sigma^2 = d / (2\lambda_s)`; with entropy weight 1 it is minus the VICReg-LogDet loss
up to half the difference of the two views' entropies, which the loss averages), beside
the kNN accuracy and the ground-truth linear :math:`R^2` of the representation. Then VICReg,
VICReg-LogDet and VICReg-pairwise are compared. The three share the invariance term, its weight
:math:`\lambda_s` (``sim_coeff``, 25) and the training budget; the other coefficients differ:
VICReg keeps its 25 / 25 / 1 for invariance, variance and covariance, and the entropy variants
replace the variance and covariance terms by the entropy estimate with weight :math:`\lambda_H`
(``entropy_coeff``, 1). Two data-generating processes with ground truth:

- ``vector``: :math:`z \sim U(S^{n-1})`, :math:`z' \sim \mathrm{vMF}(z, \kappa)`,
  :math:`x = g(z)` through an invertible leaky-ReLU MLP (Zimmermann et al. 2021); an MLP
  encoder; the kNN labels are the signed largest coordinate of z (2n balanced classes);
- ``image``: rendered one-object images with latents (:mod:`sithlib.dgp.images`), two views by
  the SimCLR CIFAR augmentations (:mod:`sithlib.dgp.augment`), a ResNet-18 with the CIFAR stem;
  kNN labels are the shapes, :math:`R^2` is over the six continuous latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from sithlib.dgp import DGP, DGPConfig, render, sample_latents
from sithlib.dgp.augment import augment
from sithlib.experiments._figures import label_bottom_row, legend_below
from sithlib.experiments._tables import METRIC_LABELS, of_agg
from sithlib.losses import logdet_entropy, pairwise_entropy, vicreg, vicreg_entropy
from sithlib.methods import VICRegConfig, build_method
from sithlib.metrics import RIDGE_GRID, r2_linear
from sithlib.metrics.probes import knn_accuracy, linear_probe
from sithlib.models import MLP, ResNet18
from sithlib.models.views import both_views
from sithlib.train import TrainConfig, train

NAME = "vicreg_information"
# 2: pairwise bandwidth sqrt(d) instead of 1; 3: bandwidth sqrt(d / (2 sim_coeff)) (the bound's
# conditional width); 4: linear R^2 with a ridge chosen on the fitting half (raw pixels)
VERSION = 4
TITLE = "VICReg as information maximization in training"
CHAPTER = "chapters/02_vicreg/03_information_training"

#: Objectives compared: VICReg and its two entropy variants (Shwartz-Ziv et al. 2023).
METHODS = {"vicreg": "VICReg", "logdet": "VICReg-LogDet", "pairwise": "VICReg-pairwise"}
DGPS = ("vector", "image")
#: Quantities logged at every evaluation and reported at the end of training.
TERMS = ("entropy", "invariance", "bound", "knn", "r2_linear")


@dataclass(frozen=True)
class Config:
    # Intervals for --set values beyond the sign rule of results.field_domain.
    DOMAINS: ClassVar[dict[str, str]] = {
        "entropy_coeff": "[0, inf)",
        "kappa": "[0, inf)",  # 0: uniform positives
    }
    dgps: tuple[str, ...] = DGPS
    methods: tuple[str, ...] = tuple(METHODS)
    seeds: int = 2
    # Shared loss coefficients: VICReg's official 25 / 25 / 1; the entropy variants keep the
    # invariance weight and put weight 1 on the entropy (the follow-up states no coefficients).
    sim_coeff: float = 25.0
    entropy_coeff: float = 1.0
    # Width of the pairwise estimator's mixture components in units of the bound's conditional
    # width sqrt(d / (2 sim_coeff)) (see bandwidth): 1 gives both Gaussians one width.
    sigma_scale: float = 1.0
    knn_k: int = 20
    # vector DGP: cl-ica's sphere (n = 10, kappa = 10, 3-layer mixing)
    dim: int = 10
    kappa: float = 10.0
    mixing_layers: int = 3
    hidden: tuple[int, ...] = (128, 128)
    feature_dim: int = 32
    vec_proj_dims: tuple[int, ...] = (64, 64, 64)
    vec_steps: int = 600
    vec_batch_size: int = 256
    vec_lr: float = 1e-3
    vec_eval_every: int = 100
    vec_n_eval: int = 4000
    # image DGP: rendered shapes, SimCLR CIFAR augmentations, ResNet-18 (CIFAR stem)
    image_size: int = 16
    width: int = 8
    recipe: str = "simclr_cifar"
    img_proj_dims: tuple[int, ...] = (128, 128, 128)
    img_steps: int = 40
    img_batch_size: int = 128
    img_lr: float = 1e-3
    img_eval_every: int = 20
    img_n_eval: int = 512
    checkpoint_every: int = 0
    dgp_seed: int = 0

    def __post_init__(self):
        for name, allowed in (("dgps", DGPS), ("methods", tuple(METHODS))):
            bad = [v for v in getattr(self, name) if v not in allowed]
            if bad or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty subset of {allowed}, got "
                                 f"{getattr(self, name)!r}")
        if not self.sigma_scale > 0:
            raise ValueError(f"sigma_scale must be > 0, got {self.sigma_scale!r}")
        if not self.sim_coeff > 0:
            raise ValueError("sim_coeff must be > 0: it also sets the pairwise estimator's "
                             f"width sqrt(d / (2 sim_coeff)), got {self.sim_coeff!r}")


PROFILES = {
    "quick": Config(seeds=2, dgps=("vector", "image"), img_steps=40, img_eval_every=20),
    # Vector: a batch of 2,048 (cl-ica's is 6,144), 3 seeds. Image: the standard ResNet-18 (width
    # 64) on 32 x 32 renders with a 2048-wide expander (solo-learn's CIFAR VICReg), sized to fit the
    # 8-minute budget on one H100 (about 2 CIFAR epochs' worth of images; the paper's protocol
    # trains 20-50 epochs, which this budget does not allow).
    "paper": Config(seeds=3, hidden=(512, 512, 512), feature_dim=64,
                    vec_proj_dims=(256, 256, 256), vec_steps=2500, vec_batch_size=2048,
                    vec_eval_every=250, vec_n_eval=10_000, image_size=32, width=64,
                    img_proj_dims=(2048, 2048, 2048), img_steps=500, img_batch_size=256,
                    img_eval_every=50, img_n_eval=5000),
}


# --------------------------------------------------------------------------- measurements
def information_terms(z_a: torch.Tensor, z_b: torch.Tensor, sim_coeff: float = 25.0
                      ) -> dict[str, float]:
    r"""Entropy, invariance and the bound's surrogate for embeddings of two views.

    ``entropy`` is the log-det (Gaussian) entropy :math:`\frac12\log\det(2\pi e\hat\Sigma_Z)`
    of the first view's embeddings (nats, see
    :func:`sithlib.losses.information.logdet_entropy`);
    ``invariance`` is :math:`\mathbb{E}\|Z - Z'\|^2`; ``bound`` is
    :math:`H(Z) - \lambda_s\,\mathbb{E}\|Z - Z'\|^2 / d`, the lower bound with
    :math:`\sigma^2 = d / (2\lambda_s)` and its constant dropped (minus the VICReg-LogDet loss
    when both views have the same entropy estimate: the loss averages the two).
    """
    return {k: float(v) for k, v in _terms(z_a, z_b, sim_coeff).items()}


def _terms(z_a: torch.Tensor, z_b: torch.Tensor, sim_coeff: float) -> dict[str, torch.Tensor]:
    # Tensors, no host sync: the training loop logs these at every step.
    entropy = logdet_entropy(z_a)
    invariance = (z_a - z_b).pow(2).sum(1).mean()
    return {"entropy": entropy, "invariance": invariance,
            "bound": entropy - sim_coeff * invariance / z_a.shape[1]}


def sector_labels(z: torch.Tensor) -> torch.Tensor:
    """Class of a latent on the sphere: the index of its largest coordinate in [z, -z]."""
    return torch.cat([z, -z], dim=1).argmax(dim=1)


@dataclass
class _EvalSet:
    """Held-out samples: clean inputs x, two views, latents (ground truth) and labels."""

    x: torch.Tensor
    view_a: torch.Tensor
    view_b: torch.Tensor
    z: torch.Tensor
    y: torch.Tensor


class VICRegData:
    """The two DGPs of the VICReg chapters: the encoder to train and its training pairs.

    Subclasses set ``name`` ("vector" or "image"), ``cfg`` (with ``dim``, ``hidden``,
    ``feature_dim``, ``width``, ``image_size``), ``device``, ``recipe`` (the image views'
    augmentation) and, for the vector DGP, ``dgp``.
    """

    name: str
    device: str
    recipe: str

    def encoder(self, gen: torch.Generator):
        cfg = self.cfg
        if self.name == "vector":
            return MLP([cfg.dim, *cfg.hidden, cfg.feature_dim], generator=gen)
        return ResNet18(width=cfg.width, generator=gen)

    def sample(self, generator, n):
        """Training pairs: the DGP's positives, or two augmented views of fresh renders."""
        if self.name == "vector":
            pairs = self.dgp.sample_pairs(n, generator)
            return pairs.x, pairs.x_pos
        x = render(sample_latents(n, generator=generator, device=self.device),
                   self.cfg.image_size)
        return (augment(x, self.recipe, generator=generator)[0],
                augment(x, self.recipe, generator=generator)[0])


class _Task(VICRegData):
    """One data-generating process: how to make the encoder, sample pairs and evaluate."""

    def __init__(self, dgp: str, cfg: Config, device: str):
        self.name, self.cfg, self.device = dgp, cfg, device
        self.recipe = cfg.recipe
        gen = torch.Generator(device=device).manual_seed(2**31 - 1)  # held-out stream
        if dgp == "vector":
            self.dgp = DGP(DGPConfig(dim=cfg.dim, kappa=cfg.kappa,
                                     mixing_layers=cfg.mixing_layers, seed=cfg.dgp_seed),
                           device=device)
            p = self.dgp.sample_pairs(cfg.vec_n_eval, gen)
            self.eval = _EvalSet(p.x, p.x, p.x_pos, p.z, sector_labels(p.z))
            self.steps, self.batch_size, self.lr = cfg.vec_steps, cfg.vec_batch_size, cfg.vec_lr
            self.eval_every, self.proj_dims = cfg.vec_eval_every, cfg.vec_proj_dims
        else:
            z = sample_latents(cfg.img_n_eval, generator=gen, device=device)
            x = render(z, cfg.image_size)
            view_a, _ = augment(x, cfg.recipe, generator=gen)
            view_b, _ = augment(x, cfg.recipe, generator=gen)
            self.eval = _EvalSet(x, view_a, view_b, z[:, :6], z[:, 6].long())
            self.steps, self.batch_size, self.lr = cfg.img_steps, cfg.img_batch_size, cfg.img_lr
            self.eval_every, self.proj_dims = cfg.img_eval_every, cfg.img_proj_dims

    def scores(self, method) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """Held-out terms, kNN accuracy and linear R^2; also returns the two views' Z."""
        ev, cfg = self.eval, self.cfg
        h = method.embed(ev.x)
        z_a = method.projector(method.embed(ev.view_a))
        z_b = method.projector(method.embed(ev.view_b))
        out = information_terms(z_a, z_b, cfg.sim_coeff)
        out.update(_probes(h, ev, cfg.knn_k))
        return out, z_a, z_b


def _probes(h: torch.Tensor, ev: _EvalSet, k: int) -> dict[str, float]:
    half = h.shape[0] // 2  # first half: the labelled bank, second half: the queries
    knn = knn_accuracy(h[:half], ev.y[:half], h[half:], ev.y[half:], k=k)
    # Ridge chosen on the fitting half: least squares overfits raw pixels, which have more
    # dimensions than there are fitting rows.
    r2 = r2_linear(h, ev.z, generator=torch.Generator(device=h.device).manual_seed(0),
                   ridge=RIDGE_GRID)
    return {"knn": knn, "r2_linear": float(r2)}


def bandwidth(cfg: Config, d: int) -> float:
    r"""The pairwise estimator's sigma for d-dimensional embeddings: ``sigma_scale`` times the
    width of the bound's Gaussian conditional, :math:`\sigma^2 = d / (2\lambda_s)`.

    In the paper's model the embeddings are a mixture of the Gaussians that the augmentations
    spread around each input, and the conditional :math:`q(z \mid z')` is such a Gaussian, so one
    width serves both. It also fixes the balance of the VICReg-pairwise loss, which (unlike
    VICReg) has no unit-variance target to hold the scale: while the embeddings are close
    compared with sigma, the estimator is about :math:`\mathrm{tr}\hat\Sigma_Z / \sigma^2`, so the
    loss is about :math:`\frac{\lambda_s}{d}(\mathbb{E}\|Z - Z'\|^2 - 2\,\mathrm{tr}\hat\Sigma_Z)`
    (for :math:`\lambda_H = 1`): it spreads the embeddings when two views are closer than two
    inputs (relative invariance below 1) and shrinks them otherwise. A width of
    :math:`\sqrt d` (KL distances near 1 at unit variance) weighs the spread :math:`2\lambda_s`
    = 50 times less, so the loss spreads the embeddings only below a relative invariance of
    1/50; VICReg-pairwise collapsed with it."""
    return cfg.sigma_scale * math.sqrt(d / (2 * cfg.sim_coeff))


def _objective(method_name: str, cfg: Config):
    if method_name == "vicreg":
        return lambda z_a, z_b: vicreg(z_a, z_b, sim_coeff=cfg.sim_coeff, distributed=True)
    return lambda z_a, z_b: vicreg_entropy(z_a, z_b, estimator=method_name,
                                           sim_coeff=cfg.sim_coeff,
                                           entropy_coeff=cfg.entropy_coeff,
                                           sigma=bandwidth(cfg, z_a.shape[1]), distributed=True)


def _train(task: _Task, method_name: str, cfg: Config, device: str):
    from sithlib.results import checkpoint_for  # results imports experiments: import late

    objective = _objective(method_name, cfg)
    vcfg = VICRegConfig(proj_dims=task.proj_dims, sim_coeff=cfg.sim_coeff,
                        estimator=method_name, entropy_coeff=cfg.entropy_coeff,
                        sigma=bandwidth(cfg, task.proj_dims[-1]))

    def make_model(seed: int):
        gen = torch.Generator().manual_seed(seed)
        return build_method("vicreg", task.encoder(gen), vcfg, generator=gen)

    def loss_fn(method, batch):
        h, h_b = both_views(method.encoder, *batch)
        z_a, z_b = method.projector(h), method.projector(h_b)
        with torch.no_grad():  # the training batch's terms, logged at eval steps
            logs = {f"train_{k}": v for k, v in _terms(z_a, z_b, cfg.sim_coeff).items()}
        return objective(z_a, z_b), h, logs

    def evaluate(method, seed):
        return task.scores(method)[0]

    part = f"{task.name}-{method_name}"
    checkpoint = checkpoint_for(NAME, cfg, part=part) if cfg.checkpoint_every else None
    result = train(make_model, task.sample, loss_fn,
                   TrainConfig(steps=task.steps, batch_size=task.batch_size, lr=task.lr,
                               seeds=cfg.seeds, eval_every=task.eval_every,
                               checkpoint_every=cfg.checkpoint_every),
                   device=device, evaluate=evaluate, checkpoint=checkpoint, name=f"{NAME}-{part}")
    if checkpoint is not None:
        checkpoint.clear()
    return result


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train VICReg and its entropy variants on each DGP of ``cfg.dgps``; final kNN accuracy,
    R^2 and entropy terms (``metrics``) and the terms over training (``curves``)."""
    rows, curves = [], []
    for dgp in cfg.dgps:
        task = _Task(dgp, cfg, device)
        for method_name in cfg.methods:
            result = _train(task, method_name, cfg, device)
            frame = pd.DataFrame(result.curves)
            frame.insert(0, "method", METHODS[method_name])
            frame.insert(0, "dgp", dgp)
            curves.append(frame)
            for seed, method in result.finished():
                method.eval()
                with torch.no_grad():
                    values, z_a, _ = task.scores(method)
                    h_bank = method.embed(task.eval.x)
                    values["linear_probe"] = _linear_probe(h_bank, task.eval)
                    values["entropy_pairwise"] = float(pairwise_entropy(
                        z_a, sigma=bandwidth(cfg, z_a.shape[1])))
                    values["embedding_std"] = float(z_a.std(0).mean())
                    # Scale-free: the share of the embedding variance that differs between views.
                    values["invariance_relative"] = values["invariance"] / float(
                        2 * z_a.var(0).sum())
                rows += [{"dgp": dgp, "method": METHODS[method_name], "seed": seed,
                          "metric": k, "value": float(v)} for k, v in values.items()]
            for failure in result.failures:
                rows.append({"dgp": dgp, "method": METHODS[method_name],
                             "seed": failure["seed"], "metric": "failure_step",
                             "value": float(failure["step"]), "failure": failure["kind"]})
        # The raw input (flattened pixels for images) through the same probes.
        ev = task.eval
        raw = _probes(ev.x.flatten(1), ev, cfg.knn_k)
        raw["linear_probe"] = _linear_probe(ev.x.flatten(1), ev)
        rows += [{"dgp": dgp, "method": "raw input", "seed": 0, "metric": k, "value": float(v)}
                 for k, v in raw.items()]
        if dgp == "vector":  # the true latents: the best a representation can do
            best = _probes(ev.z, ev, cfg.knn_k)
            best["linear_probe"] = _linear_probe(ev.z, ev)
            rows += [{"dgp": dgp, "method": "true latents z", "seed": 0, "metric": k,
                      "value": float(v)} for k, v in best.items()]
    return {"metrics": pd.DataFrame(rows), "curves": pd.concat(curves, ignore_index=True)}


def _linear_probe(h: torch.Tensor, ev: _EvalSet) -> float:
    half = h.shape[0] // 2
    return linear_probe(h[:half], ev.y[:half], h[half:], ev.y[half:], max_iter=200)


# --------------------------------------------------------------------------- figures, tables
_PANELS = (("entropy", r"log-det entropy $\hat H(Z)$ (nats)"),
           ("invariance", r"invariance $\mathbb{E}\|Z - Z'\|^2$"),
           ("bound", r"bound $B = \hat H(Z) - \lambda_s \mathbb{E}\|Z - Z'\|^2 / d$"),
           ("knn", "kNN accuracy (h)"),
           ("r2_linear", "linear R² of latents (h)"),
           ("train_entropy", r"$\hat H(Z)$ of the training batch (nats)"))


def plot_curves(curves: pd.DataFrame, dgp: str = "vector", axes=None):
    """The held-out terms, kNN accuracy and R^2 against training steps for one DGP.

    One colour per objective; lines are the mean over seeds with a band of one standard
    deviation.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = curves[curves.dgp == dgp]
    if data.empty:
        raise ValueError(f"no curves for dgp {dgp!r}; available: {sorted(curves.dgp.unique())}")
    if axes is None:
        # Two a row at page width (~7.3 in): three shrink to unreadable text in the book.
        _, axes = plt.subplots(3, 2, figsize=(7.2, 7.6), sharex=True, constrained_layout=True)
    axes = list(getattr(axes, "flat", axes))
    for ax, (col, label) in zip(axes, _PANELS, strict=False):
        sns.lineplot(data=data, x="step", y=col, hue="method", errorbar="sd", ax=ax,
                     legend=ax is axes[0], marker="o", markersize=5)
        ax.set(ylabel="")
        ax.set_title(label, fontsize=10.5)
    # The x label on the bottom row only, clear of the titles of the panels below it.
    label_bottom_row(axes[:len(_PANELS)], "training step")
    legend_below(axes, ncol=data.method.nunique())
    return axes


def plot_comparison(metrics: pd.DataFrame, metric_names=("knn", "linear_probe", "r2_linear"),
                    ax=None):
    """Final held-out scores per objective and DGP: mean over seeds with one sd, seeds as dots,
    dashed: the raw input."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    data = metrics[metrics.metric.isin(metric_names) & metrics.method.isin(METHODS.values())]
    if ax is None:  # page width (~7.3 in): the book shrinks wider figures and their text
        _, ax = plt.subplots(1, len(metric_names), figsize=(7.2, 3.0), constrained_layout=True,
                             squeeze=False)
        ax = ax[0]
    labels = {"knn": "kNN accuracy", "linear_probe": "linear probe accuracy",
              "r2_linear": "linear R² of latents"}
    for a, name in zip(ax, metric_names, strict=True):
        sub = data[data.metric == name]
        sns.barplot(data=sub, x="dgp", y="value", hue="method", errorbar="sd", ax=a,
                    alpha=0.7, legend=a is ax[0])
        sns.stripplot(data=sub, x="dgp", y="value", hue="method", dodge=True, ax=a,
                      palette=dict.fromkeys(sub.method.unique(), "0.2"), size=3.5,
                      legend=False)
        raw = metrics[(metrics.method == "raw input") & (metrics.metric == name)]
        for i, dgp in enumerate(sub.dgp.unique()):
            v = raw[raw.dgp == dgp].value
            if len(v):
                a.hlines(float(v.iloc[0]), i - 0.45, i + 0.45, color="0.3", ls="--", lw=1)
        a.set(xlabel="", ylabel="")
        a.set_title(labels.get(name, name), fontsize=11)
        a.tick_params(labelsize=10)
    handles, names = ax[0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.3", ls="--", lw=1))
    names.append("raw input")
    legend_below(ax, handles, names, ncol=len(names))
    return ax


# Entropies, the bound and the invariance are large: fewer decimals are enough.
_DECIMALS = {"entropy": "{:.1f}", "entropy_pairwise": "{:.1f}", "bound": "{:.1f}",
             "invariance": "{:.2f}"}
# Column names with spaces, so that a header can wrap in the book's narrow tables.
_TABLE_LABELS = {"knn": "kNN", "linear_probe": "linear probe", "r2_linear": "linear R²",
                 "entropy_pairwise": "pairwise entropy",
                 "invariance_relative": "relative invariance"}


def summary_table(metrics: pd.DataFrame, dgp: str | None = None) -> pd.DataFrame:
    """Final held-out metrics per DGP and objective as 'mean ± sd over seeds' strings (columns
    named as in ``_TABLE_LABELS``)."""
    order = ["knn", "linear_probe", "r2_linear", "entropy", "entropy_pairwise", "invariance",
             "invariance_relative", "bound"]
    data = metrics[metrics.metric.isin(order)]
    if dgp is not None:
        data = data[data.dgp == dgp]
    agg = data.groupby(["dgp", "method", "metric"]).value.agg(["mean", "std", "count"])
    table = of_agg(agg, fmts=_DECIMALS).unstack("metric")
    table = table.reindex(columns=[c for c in order if c in set(data.metric)])
    table = table.fillna("–").rename(columns=_TABLE_LABELS)
    table["seeds"] = agg["count"].groupby(["dgp", "method"]).max()
    return table.rename_axis(index=["process", "objective"], columns=None)


def tracking_table(curves: pd.DataFrame, scores=("knn", "r2_linear")) -> pd.DataFrame:
    """Spearman correlation, over evaluation steps and seeds, between each information term
    and each downstream score, per DGP and objective: does the term track the score? The last
    column, ``points``, is the number of (step, seed) points behind each correlation."""
    out = {}
    for (dgp, method), grp in curves.groupby(["dgp", "method"], sort=False):
        out[(dgp, method)] = {(METRIC_LABELS.get(score, score), term):
                              grp[term].corr(grp[score], method="spearman")
                              for score in scores for term in ("entropy", "invariance", "bound")}
    # Columns (score, term): a header row per level keeps the columns narrow.
    table = pd.DataFrame(out).T.round(2)
    table[("", "points")] = curves.groupby(["dgp", "method"], sort=False).size()
    return table
