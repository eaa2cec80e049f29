r"""VICReg chapter: entropy estimators against ground truth (Shwartz-Ziv et al. 2023; Kolchinsky
and Tracey 2017; Zhouyin and Liu 2021).

Under the derivation's assumptions the embeddings form a Gaussian mixture
:math:`p = \frac1m \sum_i N(\mu_i, \Sigma_i)`, whose entropy has no closed form. For mixtures of
known parameters we compare, as functions of the separation of the components and of the
dimension d:

* the Monte-Carlo entropy :math:`-\frac1S \sum_s \log p(x_s)` (ground truth, with its standard
  error);
* the Gaussian upper bound :math:`\tfrac12 \log\det(2\pi e\,\Sigma_p)`, with :math:`\Sigma_p` the
  mixture's covariance (closed form), and its estimate from samples (``gaussian_entropy``);
* the LogDet estimator used as a training objective, :math:`\tfrac12 \log\det(2\pi e(\hat\Sigma +
  \epsilon I))` on one mini-batch (``sithlib.losses.logdet_entropy``);
* the pairwise-distance estimators of Kolchinsky and Tracey (2017) from the known parameters:
  KL (an upper bound) and Bhattacharyya (a lower bound).

The true entropy and both pairwise estimates lie between :math:`\sum_i c_i H(p_i)` (the
entropy given the component) and that plus :math:`\log m`; the Gaussian bound lies above the
true entropy, and for far-apart components above that bracket too. The estimates from samples
have no such guarantee: the one-batch LogDet estimate is biased low (the eigenvalues of a
sample covariance spread out as d approaches the batch size, and the logarithm weighs the
small ones most), and it falls below :math:`\sum_i c_i H(p_i)` in many cells, in every one at
the largest dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from sithlib.experiments._figures import (
    label_bottom_row,
    label_first_column,
    legend_below,
    panel_grid,
)
from sithlib.experiments._tables import of_values
from sithlib.losses import logdet_entropy as logdet_objective
from sithlib.metrics import gaussian_entropy, mixture_entropy_mc, mixture_entropy_pairwise

NAME = "entropy_estimators"
VERSION = 1
TITLE = "Entropy estimators against ground truth"
CHAPTER = "chapters/02_vicreg/02_entropy_estimators"

_DTYPE = torch.float64
ESTIMATORS = {  # metric name -> label in figures and tables
    "mc": "Monte Carlo (truth)",
    "kl_upper": "pairwise KL (upper)",
    "bhattacharyya_lower": "pairwise Bhattacharyya (lower)",
    "gaussian_bound": "Gaussian bound (closed form)",
    "gaussian_samples": "log-det from samples",
    "logdet_batch": "LogDet on one batch",
}


@dataclass(frozen=True)
class Config:
    components: int = 8
    separations: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0)
    dims: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    # Eigenvalues of each component covariance: log-uniform in this range, random rotation.
    cov_low: float = 0.7
    cov_high: float = 1.4
    seeds: int = 3
    mc_samples: int = 20_000
    n_samples: int = 20_000  # samples for the log-det estimate of the Gaussian bound
    batch_size: int = 256  # a training batch for the LogDet objective
    eps: float = 1e-4  # the LogDet objective's ridge (sithlib.losses.logdet_entropy default)


PROFILES = {
    "quick": Config(),
    "paper": Config(components=16, separations=(0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0,
                                                 12.0),
                    dims=(1, 2, 4, 8, 16, 32, 64, 128), seeds=5, mc_samples=100_000,
                    n_samples=100_000),
}


# --------------------------------------------------------------------------- mixtures
def random_mixture(m: int, d: int, generator: torch.Generator, cov_low: float = 0.7,
                   cov_high: float = 1.4):
    r"""Mean directions and covariances of a random m-component Gaussian mixture in d dimensions.

    The means at separation s are :math:`\mu_i = s\, u_i`, with :math:`u_i \sim N(0, I_d /
    (2d))` returned here, so that :math:`E\|\mu_i - \mu_j\|^2 = s^2` in every dimension: s is
    the typical distance between component means in units of the components' standard deviation
    (about 1). Covariances are random rotations of diagonals with log-uniform entries in
    [cov_low, cov_high].

    Returns
    -------
    (u (m, d), covariances (m, d, d)), float64 on the CPU.
    """
    u = torch.randn(m, d, generator=generator, dtype=_DTYPE) / math.sqrt(2 * d)
    q = torch.linalg.qr(torch.randn(m, d, d, generator=generator, dtype=_DTYPE))[0]
    log_e = math.log(cov_low) + (math.log(cov_high) - math.log(cov_low)) * torch.rand(
        m, d, generator=generator, dtype=_DTYPE)
    covs = q @ torch.diag_embed(log_e.exp()) @ q.mT
    return u, 0.5 * (covs + covs.mT)


def sample_mixture(means: torch.Tensor, covs: torch.Tensor, n: int,
                   generator: torch.Generator) -> torch.Tensor:
    """n samples of the equal-weight mixture of N(means[i], covs[i])."""
    m, d = means.shape
    comp = torch.randint(0, m, (n,), generator=generator, device=means.device)
    x = torch.randn(n, d, generator=generator, dtype=means.dtype, device=means.device)
    chol = torch.linalg.cholesky(covs)
    # Per component, not chol[comp]: that gather would hold n x d x d numbers.
    for k in range(m):
        rows = comp == k
        x[rows] = means[k] + x[rows] @ chol[k].T
    return x


def mixture_covariance(means: torch.Tensor, covs: torch.Tensor) -> torch.Tensor:
    r"""Covariance of the equal-weight mixture: :math:`\bar\Sigma + \frac1m \sum_i (\mu_i - \bar\mu)
    (\mu_i - \bar\mu)^\top`."""
    centred = means - means.mean(0)
    return covs.mean(0) + centred.T @ centred / means.shape[0]


def gaussian_bound(means: torch.Tensor, covs: torch.Tensor) -> float:
    r"""Entropy of the Gaussian with the mixture's covariance, an upper bound on its entropy."""
    d = means.shape[1]
    logdet = torch.linalg.slogdet(mixture_covariance(means, covs))[1]
    return float(0.5 * (d * math.log(2 * math.pi * math.e) + logdet))


def component_entropy(covs: torch.Tensor) -> float:
    r""":math:`\frac1m \sum_i H(N(\mu_i, \Sigma_i))`, the entropy of x given its component."""
    d = covs.shape[-1]
    return float((0.5 * (d * math.log(2 * math.pi * math.e) + torch.linalg.slogdet(covs)[1]))
                 .mean())


# --------------------------------------------------------------------------- experiment
def _cell(cfg: Config, means: torch.Tensor, covs: torch.Tensor, seed: int,
          device: str) -> dict[str, float]:
    # Draws on the device: at paper size the samples dominate the cost.
    gen = torch.Generator(device=device).manual_seed(seed)
    means_dev, covs_dev = means.to(device), covs.to(device)
    mc, mc_se = mixture_entropy_mc(means_dev, covs_dev, n_samples=cfg.mc_samples,
                                   generator=gen, return_stderr=True)
    x = sample_mixture(means_dev, covs_dev, max(cfg.n_samples, cfg.batch_size), gen)
    return {
        "mc": mc,
        "mc_se": mc_se,
        "component_entropy": component_entropy(covs),
        "log_components": math.log(cfg.components),
        "kl_upper": mixture_entropy_pairwise(means, covs, divergence="kl"),
        "bhattacharyya_lower": mixture_entropy_pairwise(means, covs, divergence="bhattacharyya"),
        "gaussian_bound": gaussian_bound(means, covs),
        "gaussian_samples": gaussian_entropy(x[: cfg.n_samples]),
        "logdet_batch": float(logdet_objective(x[: cfg.batch_size], eps=cfg.eps)),
    }


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Compare every entropy estimator with the Monte-Carlo entropy of Gaussian mixtures of
    known parameters, over component separation and dimension (``metrics``; no ``curves``)."""
    if cfg.components < 2:
        raise ValueError(f"components must be >= 2, got {cfg.components}")
    rows = []
    for seed in range(cfg.seeds):
        for d in cfg.dims:
            # One mixture shape per (seed, d), moved apart by the separation: the curves
            # against s follow one mixture instead of jumping between random draws.
            gen = torch.Generator().manual_seed(seed * 1_000_003 + d)
            u, covs = random_mixture(cfg.components, d, gen, cfg.cov_low, cfg.cov_high)
            for separation in cfg.separations:
                cell_seed = int(torch.randint(2**62, (1,), generator=gen))
                values = _cell(cfg, separation * u, covs, cell_seed, device)
                rows += [{"seed": seed, "dim": d, "separation": separation, "metric": k,
                          "value": float(v)} for k, v in values.items()]
    return {"metrics": pd.DataFrame(rows), "curves": None}


# --------------------------------------------------------------------------- tables and figures
def wide(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (seed, dim, separation), one column per metric."""
    return metrics.pivot_table(index=["seed", "dim", "separation"], columns="metric",
                               values="value").reset_index()


def bracket_table(metrics: pd.DataFrame, n_se: float = 4.0) -> pd.DataFrame:
    """Per dimension: the percentage of (separation, seed) cells where each bound sits on its
    side of the Monte-Carlo entropy, within ``n_se`` Monte-Carlo standard errors, and the number
    of cells."""
    w = wide(metrics)
    tol = n_se * w.mc_se
    checks = pd.DataFrame({
        "dim": w.dim.astype(int),
        "Bhattacharyya ≤ MC (% of cells)": w.bhattacharyya_lower <= w.mc + tol,
        "MC ≤ KL (% of cells)": w.mc <= w.kl_upper + tol,
        "MC ≤ Gaussian (% of cells)": w.mc <= w.gaussian_bound + tol,
        "KL ≤ H(X|C) + log m (% of cells)":
            w.kl_upper <= w.component_entropy + w.log_components + 1e-9,
    })
    table = (100 * checks.groupby("dim").mean()).round(1)
    table["cells"] = checks.groupby("dim").size()
    table.index.name = "d"
    return table


def _band(ax, frame: pd.DataFrame, x: str, label: str, colour, style="-", marker=".",
          zorder=2.0, lw=1.5):
    g = frame.groupby(x).y
    mid, lo, hi = g.mean(), g.min(), g.max()
    ax.plot(mid.index, mid.values, style, color=colour, label=label, marker=marker, ms=4,
            zorder=zorder, lw=lw)
    ax.fill_between(mid.index, lo.values, hi.values, color=colour, alpha=0.2, lw=0)


# Line styles in the figures. The Gaussian bound in closed form and its estimate from samples
# coincide: the closed form is drawn last, dotted, on top of the estimate's thicker line.
_STYLES = {  # metric -> (line style, marker, z-order, line width)
    "mc": ("-", ".", 2.5, 1.8),
    "kl_upper": ("--", ".", 2.0, 1.5),
    "bhattacharyya_lower": ("--", ".", 2.0, 1.5),
    "gaussian_samples": ("-", "", 2.0, 3.5),
    "gaussian_bound": (":", "x", 3.0, 1.5),
    "logdet_batch": ("--", ".", 3.5, 1.5),  # on top: at small d it follows the thick line
}
_ORDER = ("mc", "kl_upper", "bhattacharyya_lower", "gaussian_samples", "gaussian_bound",
          "logdet_batch")


def _note_below(ax, cell: pd.DataFrame, colour) -> None:
    """A note in the panel where the one-batch LogDet (mean over seeds) falls below the y axis:
    with the dimension near the batch size it drops far below every other estimate."""
    mid = (cell.logdet_batch - cell.component_entropy).groupby(cell.separation).mean()
    below = mid < ax.get_ylim()[0]
    if not below.any():
        return
    lowest = f"{mid.min():.1f}".replace("-", "\u2212")
    # One line in the strip under zero, right-aligned: clear of the curves, which start at or
    # above zero, and of the batch LogDet's own line, which crosses it at small separations.
    ax.text(0.97, 0.025, f"\u2193 {ESTIMATORS['logdet_batch']}: min {lowest} nats",
            transform=ax.transAxes, ha="right", va="bottom", fontsize=9, color=colour,
            zorder=5)


def plot_vs_separation(metrics: pd.DataFrame, dims=(2, 8, 64, 128), axes=None):
    """Each estimate minus the components' entropy against the separation, one panel per d
    (those of ``dims`` that were run); dotted grey: log m (the most a mixture adds); band:
    min-max over seeds. The legend sits below the panels."""
    w = wide(metrics)
    dims = [d for d in dims if d in set(w.dim)]
    if axes is None:  # at most two a row: more shrink to unreadable text at page width
        axes = panel_grid(len(dims), 2, 3.6, 3.0, sharex=True, sharey=True,
                          constrained_layout=True)
    log_m = float(w.log_components.iloc[0])
    colours = {metric: f"C{i}" for i, metric in enumerate(ESTIMATORS)}
    for ax, d in zip(axes, dims, strict=True):
        cell = w[w.dim == d]
        for metric in _ORDER:
            style, marker, zorder, lw = _STYLES[metric]
            frame = cell.assign(y=cell[metric] - cell.component_entropy)
            _band(ax, frame, "separation", ESTIMATORS[metric], colours[metric], style, marker,
                  zorder, lw)
        ax.axhline(log_m, color="0.3", ls=":", lw=1, label=r"$\log m$")
        ax.axhline(0.0, color="0.3", lw=0.6)
        ax.set(title=f"d = {d}", ylim=(-0.6, log_m + 1.2))
        _note_below(ax, cell, colours["logdet_batch"])
    label_bottom_row(axes, "separation $s$")
    label_first_column(axes, r"$\hat H - \sum_i c_i H(p_i)$ (nats)")
    legend_below(axes, ncol=2)
    return axes


def plot_vs_dimension(metrics: pd.DataFrame, separation: float = 3.0, ax=None):
    """Each estimate minus the Monte-Carlo entropy against d at one separation; the grey band is
    +- 3 Monte-Carlo standard errors; bands: min-max over seeds."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8.0, 4.0))
    w = wide(metrics)
    cell = w[np.isclose(w.separation, separation)]
    colours = {metric: f"C{i}" for i, metric in enumerate(ESTIMATORS)}
    for metric in _ORDER[1:]:
        style, marker, zorder, lw = _STYLES[metric]
        _band(ax, cell.assign(y=cell[metric] - cell.mc), "dim", ESTIMATORS[metric],
              colours[metric], "-" if style == "--" else style, marker, zorder, lw)
    se = cell.groupby("dim").mc_se.max()
    ax.fill_between(se.index, -3 * se.values, 3 * se.values, color="0.5", alpha=0.4, lw=0,
                    label="MC ± 3 s.e.")
    ax.axhline(0.0, color="0.3", lw=0.6)
    # Linear within 0.1 nats of the truth, logarithmic beyond: small and large errors both show.
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set(xscale="log", xlabel="dimension d",
           ylabel=r"$\hat H - H_{\mathrm{MC}}$ (nats)", title=f"separation s = {separation:g}")
    ax.set_xticks(sorted(cell.dim.unique()), [str(int(d)) for d in sorted(cell.dim.unique())])
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.figure.tight_layout()
    return ax


def error_table(metrics: pd.DataFrame, separation: float = 3.0) -> pd.DataFrame:
    """Error of each estimator against the Monte-Carlo entropy (nats), 'mean±sd' over seeds per
    dimension, at one separation, with the mean Monte-Carlo standard error."""
    w = wide(metrics)
    cell = w[np.isclose(w.separation, separation)]
    out = {label: (cell[metric] - cell.mc).groupby(cell.dim).agg(of_values)
           for metric, label in ESTIMATORS.items() if metric != "mc"}
    out["MC s.e."] = cell.groupby("dim").mc_se.mean().round(3)
    table = pd.DataFrame(out)
    table.index = table.index.astype(int)
    return table.rename_axis(index="d")
