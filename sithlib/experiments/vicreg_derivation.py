r"""VICReg chapter: the information-theoretic derivation (Shwartz-Ziv et al. 2022, 2023), one
numerical check per step.

* Step (a): a ReLU network is continuous piecewise affine. On the set of inputs that share an
  activation pattern it is :math:`f(x) = A_\omega x + b_\omega`, so its Jacobian is constant
  there.
* Step (b): Gaussian augmentations :math:`x = x^* + \epsilon`,
  :math:`\epsilon \sim N(0, \Sigma)`, that stay in the region of :math:`x^*` come out as
  :math:`z \sim N(f(x^*), A \Sigma A^\top)` with :math:`A = \partial f / \partial x (x^*)`. We
  scan the noise scale and measure the fraction of samples in the region of :math:`x^*`,
  Mardia's normality statistics and the relative error of the empirical covariance against
  :math:`A \Sigma A^\top`.
* Step (c): with the variational conditional :math:`q(z \mid z') = N(z', \sigma^2 I)`,
  :math:`I(Z; Z') \ge H(Z) - E\|Z - Z'\|^2 / (2\sigma^2) - \tfrac d2 \log(2\pi\sigma^2)`. For
  jointly Gaussian two-view embeddings :math:`Z = X + s\epsilon`, :math:`Z' = X + s\epsilon'`
  the mutual information is known in closed form, so the bound and its gap are exact numbers;
  the bound is also evaluated from samples, with :math:`H(Z)` from the log-det (Gaussian)
  estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from sithlib.experiments._figures import label_bottom_row, legend_below
from sithlib.experiments._tables import of_agg
from sithlib.metrics import activation_pattern, gaussian_entropy, mardia_test, same_region_fraction
from sithlib.models.mlp import MLP

NAME = "vicreg_derivation"
VERSION = 1
TITLE = "What do we maximize? The derivation, step by step"
CHAPTER = "chapters/02_vicreg/01_derivation"

_DTYPE = torch.float64  # exact-arithmetic checks: a constant Jacobian is constant to ~1e-15


@dataclass(frozen=True)
class Config:
    # (a), (b): random ReLU networks in_dim -> hidden -> out_dim, several anchors x* each.
    in_dim: int = 10
    hidden: tuple[int, ...] = (64, 64)
    out_dim: int = 4
    seeds: int = 5
    points: int = 2
    neighbours: int = 64
    noise_scales: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3,
                                       1.0, 3.0)
    noise_samples: int = 2000
    # (c): jointly Gaussian two-view embeddings.
    mi_dims: tuple[int, ...] = (2, 8, 32)
    aug_stds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
    q_sigmas: tuple[float, ...] = (1.0,)
    mi_samples: int = 20_000


PROFILES = {
    "quick": Config(),
    "paper": Config(hidden=(256, 256, 256), out_dim=8, seeds=10, points=5, neighbours=256,
                    noise_scales=(1e-7, 1e-6, 1e-5, 3e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3,
                                  1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
                    noise_samples=20_000, mi_dims=(2, 8, 32, 128),
                    aug_stds=(0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
                    q_sigmas=(0.5, 1.0, 2.0), mi_samples=200_000),
}


# --------------------------------------------------------------------------- building blocks
def make_network(seed: int, in_dim: int, hidden: tuple[int, ...], out_dim: int,
                 device: str = "cpu") -> MLP:
    """A random ReLU MLP in float64 (PyTorch's default init), the CPA map f of the derivation."""
    net = MLP([in_dim, *hidden, out_dim], activation="relu",
              generator=torch.Generator().manual_seed(seed))
    # Frozen: Jacobians are taken with respect to the input only.
    return net.to(device=device, dtype=_DTYPE).eval().requires_grad_(False)


def random_spd(d: int, generator: torch.Generator, low: float = 0.1, high: float = 1.0,
               device: str = "cpu") -> torch.Tensor:
    """Random rotation of a diagonal with log-uniform entries in [low, high], scaled so that
    its trace is d (unit variance on average)."""
    q = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=_DTYPE))[0]
    e = torch.exp(math.log(low) + (math.log(high) - math.log(low))
                  * torch.rand(d, generator=generator, dtype=_DTYPE))
    e = e * d / e.sum()
    return ((q * e) @ q.T).to(device)


def jacobians(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Jacobian of net at every row of x: shape (n, out_dim, in_dim)."""
    return torch.func.vmap(torch.func.jacrev(lambda v: net(v[None])[0]))(x)


def gaussian_mi(cov_x: torch.Tensor, aug_std: float) -> float:
    r"""Exact :math:`I(Z; Z')` for :math:`Z = X + s\epsilon`, :math:`Z' = X + s\epsilon'` with
    :math:`X \sim N(0, \Sigma_X)` and independent standard normal noises: with
    :math:`\Sigma_Z = \Sigma_X + s^2 I`,
    :math:`I = \log\det\Sigma_Z - \tfrac12 \log\det \begin{pmatrix}\Sigma_Z & \Sigma_X \\
    \Sigma_X & \Sigma_Z\end{pmatrix}`."""
    d = cov_x.shape[0]
    cov_z = cov_x + aug_std**2 * torch.eye(d, dtype=cov_x.dtype, device=cov_x.device)
    joint = torch.cat([torch.cat([cov_z, cov_x], 1), torch.cat([cov_x, cov_z], 1)], 0)
    return float(torch.linalg.slogdet(cov_z)[1] - 0.5 * torch.linalg.slogdet(joint)[1])


def mi_lower_bound(entropy: float, mse: float, d: int, q_sigma: float | None = None) -> float:
    r"""The bound :math:`H(Z) - \mathrm{mse} / (2\sigma^2) - \tfrac d2 \log(2\pi\sigma^2)` with
    :math:`\mathrm{mse} = E\|Z - Z'\|^2`; ``q_sigma=None`` takes the best
    :math:`\sigma^2 = \mathrm{mse} / d`, where it becomes
    :math:`H(Z) - \tfrac d2 \log(2\pi e\, \mathrm{mse} / d)`."""
    var = mse / d if q_sigma is None else q_sigma**2
    return entropy - mse / (2.0 * var) - 0.5 * d * math.log(2.0 * math.pi * var)


# --------------------------------------------------------------------------- the three steps
def _piecewise_affine(net, x_star, cfg, gen, base) -> list[dict]:
    """(a) Neighbours at distances from 1e-4 to 3: Jacobians equal on the shared pattern."""
    dev = x_star.device
    rows = []
    j_star = jacobians(net, x_star[None])[0]
    radii = torch.logspace(-4, math.log10(3.0), cfg.neighbours, dtype=_DTYPE)
    u = torch.randn(cfg.neighbours, cfg.in_dim, generator=gen, dtype=_DTYPE)
    x = x_star + (radii[:, None] * u / u.norm(dim=1, keepdim=True)).to(dev)
    same = (activation_pattern(net, x) == activation_pattern(net, x_star[None])).all(1)
    with torch.no_grad():
        jac_diff = (jacobians(net, x) - j_star).flatten(1).norm(dim=1) / j_star.norm()
        step = net(x) - net(x_star[None])
        affine = (step - (x - x_star) @ j_star.T).norm(dim=1) / step.norm(dim=1).clamp_min(1e-300)
    values = {"same_region_neighbours": float(same.sum()),
              "other_region_neighbours": float((~same).sum())}
    if same.any():
        values["jacobian_diff_same_region_max"] = float(jac_diff[same].max())
        values["affine_residual_same_region_max"] = float(affine[same].max())
    if (~same).any():
        values["jacobian_diff_other_region_median"] = float(jac_diff[~same].median())
        values["affine_residual_other_region_median"] = float(affine[~same].median())
    rows += [{**base, "step": "piecewise_affine", "metric": k, "value": v}
             for k, v in values.items()]
    return rows


def _noise_scan(net, x_star, cfg, gen, base) -> list[dict]:
    """(b) z | x* against N(f(x*), A Sigma A^T) as the noise scale grows.

    One base noise draw is scaled by every sigma: regions are convex and contain x*, so a
    sample that leaves the region at sigma has left it at every larger sigma, and the
    same-region fraction is non-increasing in sigma by construction, not by luck."""
    dev = x_star.device
    shape = random_spd(cfg.in_dim, gen, device=dev)
    chol = torch.linalg.cholesky(shape)
    eps = (torch.randn(cfg.noise_samples, cfg.in_dim, generator=gen, dtype=_DTYPE).to(dev)
           @ chol.T)
    a = jacobians(net, x_star[None])[0]
    dof = cfg.out_dim * (cfg.out_dim + 1) * (cfg.out_dim + 2) / 6
    # The floor: the same statistics for the affine model's samples A eps, exact Gaussians.
    # Both are scale-invariant, so one evaluation holds for every sigma.
    z_lin = eps @ a.T
    predicted = a @ shape @ a.T
    mardia_lin = mardia_test(z_lin)
    floor = {"covariance_error_floor": float((torch.cov(z_lin.T) - predicted).norm()
                                             / predicted.norm()),
             "mardia_skewness_ratio_floor": mardia_lin["skewness_statistic"] / dof,
             "mardia_skewness_pvalue_floor": mardia_lin["skewness_pvalue"],
             "mardia_kurtosis_statistic_floor": mardia_lin["kurtosis_statistic"],
             "mardia_kurtosis_pvalue_floor": mardia_lin["kurtosis_pvalue"]}
    rows = []
    for sigma in cfg.noise_scales:
        noise = sigma * eps
        with torch.no_grad():
            z = net(x_star + noise)
        mardia = mardia_test(z)
        values = {
            # Each sample against its own copy of x*: one batched pass, not one per sample.
            "same_region_fraction": same_region_fraction(net, x_star.expand_as(noise),
                                                         x_star + noise),
            "covariance_error": float((torch.cov(z.T) / sigma**2 - predicted).norm()
                                      / predicted.norm()),
            "mardia_skewness_ratio": mardia["skewness_statistic"] / dof,
            "mardia_skewness_pvalue": mardia["skewness_pvalue"],
            "mardia_kurtosis_statistic": mardia["kurtosis_statistic"],
            "mardia_kurtosis_pvalue": mardia["kurtosis_pvalue"],
            **floor,
        }
        rows += [{**base, "step": "noise", "noise_scale": sigma, "metric": k, "value": v}
                 for k, v in values.items()]
    return rows


def _mi_bound(cfg, seed: int, device: str) -> list[dict]:
    """(c) Exact I(Z; Z') against the variational bound, exact and from samples."""
    rows = []
    gen = torch.Generator().manual_seed(10_000 + seed)
    for d in cfg.mi_dims:
        # Spread of the clean embeddings X: anisotropic, variances in [0.25, 4] before scaling.
        cov_x = random_spd(d, gen, low=0.25, high=4.0, device=device)
        chol = torch.linalg.cholesky(cov_x)
        n = cfg.mi_samples
        x = torch.randn(n, d, generator=gen, dtype=_DTYPE).to(device) @ chol.T
        noise = torch.randn(2, n, d, generator=gen, dtype=_DTYPE).to(device)
        for s in cfg.aug_stds:
            z, z_pos = x + s * noise[0], x + s * noise[1]
            eye = torch.eye(d, dtype=_DTYPE, device=device)
            h_exact = 0.5 * (d * math.log(2 * math.pi * math.e)
                             + float(torch.linalg.slogdet(cov_x + s**2 * eye)[1]))
            mse_exact = 2.0 * d * s**2
            h_hat = gaussian_entropy(z)
            mse_hat = float((z - z_pos).pow(2).sum(1).mean())
            base = {"step": "mi_bound", "seed": seed, "dim": d, "aug_std": s}
            values = {
                "mi_exact": gaussian_mi(cov_x, s),
                "entropy_exact": h_exact,
                "entropy_logdet": h_hat,
                # Asymptotic sd of the half log-det of a sample covariance, sqrt(d / 2n).
                "entropy_logdet_se": math.sqrt(d / (2.0 * n)),
                "mse_exact": mse_exact,
                "mse_sample": mse_hat,
                "bound_exact": mi_lower_bound(h_exact, mse_exact, d),
                "bound_sample": mi_lower_bound(h_hat, mse_hat, d),
            }
            rows += [{**base, "metric": k, "value": v} for k, v in values.items()]
            for q in cfg.q_sigmas:
                rows += [{**base, "q_sigma": q, "metric": "bound_exact_fixed_sigma",
                          "value": mi_lower_bound(h_exact, mse_exact, d, q)},
                         {**base, "q_sigma": q, "metric": "bound_sample_fixed_sigma",
                          "value": mi_lower_bound(h_hat, mse_hat, d, q)}]
    return rows


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Check each step of the derivation on random ReLU networks: shared activation patterns,
    normality and covariance match of the outputs against the noise scale, and the mutual-
    information bound (``metrics``; no ``curves``)."""
    rows = []
    for seed in range(cfg.seeds):
        net = make_network(seed, cfg.in_dim, cfg.hidden, cfg.out_dim, device)
        gen = torch.Generator().manual_seed(seed)
        anchors = torch.randn(cfg.points, cfg.in_dim, generator=gen, dtype=_DTYPE).to(device)
        for p, x_star in enumerate(anchors):
            base = {"seed": seed, "point": p}
            rows += _piecewise_affine(net, x_star, cfg, gen, base)
            rows += _noise_scan(net, x_star, cfg, gen, base)
        rows += _mi_bound(cfg, seed, device)
    metrics = pd.DataFrame(rows)
    return {"metrics": metrics[["step", "seed", "point", "noise_scale", "dim", "aug_std",
                                "q_sigma", "metric", "value"]], "curves": None}


# --------------------------------------------------------------------------- tables and figures
_JACOBIAN_ROWS = {
    "same_region_neighbours": "same pattern: neighbours",
    "jacobian_diff_same_region_max": "same pattern: largest Jacobian difference",
    "affine_residual_same_region_max": "same pattern: largest affine residual",
    "other_region_neighbours": "other pattern: neighbours",
    "jacobian_diff_other_region_median": "other pattern: median Jacobian difference",
    "affine_residual_other_region_median": "other pattern: median affine residual",
}


def jacobian_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Step (a): each per-anchor quantity (rows: neighbour counts, Jacobian differences and
    affine residuals) summarised over all (network, anchor) pairs by its min, median and max."""
    m = metrics[(metrics.step == "piecewise_affine") & metrics.metric.isin(_JACOBIAN_ROWS)]
    table = m.groupby("metric").value.agg(["min", "median", "max"])
    table = table.reindex([k for k in _JACOBIAN_ROWS if k in table.index])
    anchors = m.groupby(["seed", "point"]).ngroups
    table.columns = [f"{c} over {anchors} anchors" for c in table.columns]
    # Counts as integers, residuals in scientific notation: they span 1e-16 to 1.
    return table.rename(index=_JACOBIAN_ROWS).rename_axis(index=None).map(
        lambda v: f"{v:.0f}" if float(v).is_integer() else f"{v:.1e}")


def rejection_table(metrics: pd.DataFrame, level: float = 0.01) -> pd.DataFrame:
    """Step (b): how often Mardia's tests reject normality at ``level`` (percentage of cells),
    over (network, anchor, noise scale) cells grouped by their same-region fraction, beside the
    rate for exact Gaussian samples of the affine model in the same cells (the test's false
    alarms)."""
    v = metrics[metrics.step == "noise"].pivot_table(
        index=["seed", "point", "noise_scale"], columns="metric", values="value")
    bins = pd.cut(v.same_region_fraction, [-0.01, 0.5, 0.9, 0.999999, 1.0],
                  labels=["< 0.5", "0.5 - 0.9", "0.9 - 1", "all in the region"])
    def share(flags):  # percentage of the cells in each bin
        return 100 * flags.groupby(bins, observed=False).mean()

    table = pd.DataFrame({
        "cells": v.groupby(bins, observed=False).size(),
        "skewness rejects (%)": share(v.mardia_skewness_pvalue < level),
        "kurtosis rejects (%)": share(v.mardia_kurtosis_pvalue < level),
        "Gaussian reference rejects (%)": share(
            (v.mardia_skewness_pvalue_floor < level) | (v.mardia_kurtosis_pvalue_floor < level)),
    })
    table.index.name = "same-region fraction"
    return table.iloc[::-1].round(1)


def plot_regions(seed: int = 0, hidden: tuple[int, ...] = (16, 16), extent: float = 3.0,
                 resolution: int = 400, noise_scales: tuple[float, ...] = (0.5, 0.03),
                 n_noise: int = 300, ax=None):
    """Linear regions of a random 2-D-input ReLU MLP (one colour per activation pattern), with
    Gaussian noise clouds around an anchor at two scales. Drawn on the fly (no training)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 5.0))
    net = make_network(seed, 2, hidden, 2)
    grid = torch.linspace(-extent, extent, resolution, dtype=_DTYPE)
    xy = torch.cartesian_prod(grid, grid)
    pattern = activation_pattern(net, xy).to(torch.int64)
    # A random projection of the bit pattern makes distinct regions distinct colours.
    code = pattern @ torch.randint(0, 2**31, (pattern.shape[1],),
                                   generator=torch.Generator().manual_seed(seed))
    ids = torch.unique(code, return_inverse=True)[1]
    colours = (ids * 0.618034) % 1.0  # golden-ratio hashing spreads neighbouring ids
    ax.imshow(colours.reshape(resolution, resolution).T.numpy(), origin="lower",
              extent=(-extent, extent, -extent, extent), cmap="tab20", interpolation="nearest",
              alpha=0.55)
    gen = torch.Generator().manual_seed(seed + 1)
    x_star = torch.tensor([0.3, -0.2], dtype=_DTYPE)
    eps = torch.randn(n_noise, 2, generator=gen, dtype=_DTYPE)
    ax.plot(*x_star.numpy(), marker="+", color="black", ms=16, ls="", label="$x^*$")
    for sigma, colour in zip(noise_scales, ("crimson", "black", "navy"), strict=False):
        cloud = (x_star + sigma * eps).numpy()
        ax.scatter(*cloud.T, s=3, color=colour, label=rf"$\sigma = {sigma:g}$")
    ax.set(xlim=(-extent, extent), ylim=(-extent, extent), xlabel="$x_1$", ylabel="$x_2$",
           aspect="equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(False)
    ax.set_title(f"{int(ids.max()) + 1} regions visible", fontsize=9)
    return ax


def plot_noise_scan(metrics: pd.DataFrame, axes=None):
    """Step (b): same-region fraction, Mardia skewness (statistic / degrees of freedom) and
    covariance error against the noise scale; mean and 10-90 % band over networks and anchors,
    dashed: the same statistics for exact Gaussian samples of the affine model (the floor)."""
    import matplotlib.pyplot as plt

    if axes is None:  # stacked: side by side, the text shrinks out of reach at page width
        _, axes = plt.subplots(3, 1, figsize=(7.2, 7.8), sharex=True)
    m = metrics[metrics.step == "noise"]
    panels = [("same_region_fraction", None, "fraction in the region of $x^*$", "linear"),
              ("mardia_skewness_ratio", "mardia_skewness_ratio_floor",
               "Mardia skewness / d.o.f.", "log"),
              ("covariance_error", "covariance_error_floor",
               r"$\|\hat C_z - A\Sigma A^\top\|_F / \|A\Sigma A^\top\|_F$", "log")]
    for ax, (metric, floor, label, yscale) in zip(axes, panels, strict=True):
        for name, style in ((metric, "-"), (floor, "--")):
            if name is None:
                continue
            g = m[m.metric == name].groupby("noise_scale").value
            lo, mid, hi = g.quantile(0.1), g.mean(), g.quantile(0.9)
            colour = "C0" if style == "-" else "0.4"
            ax.plot(mid.index, mid.values, style, color=colour, ms=3,
                    marker="o" if style == "-" else None,
                    label="network output" if style == "-" else "Gaussian reference")
            ax.fill_between(mid.index, lo.values, hi.values, color=colour, alpha=0.2, lw=0)
        ax.set(xscale="log", yscale=yscale, ylabel=label)
        spec = ax.get_subplotspec()
        if spec is None or spec.is_last_row():  # a caller's side-by-side axes: each one
            ax.set_xlabel(r"noise scale $\sigma$")
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].legend(fontsize=9)
    axes[0].figure.tight_layout()
    return axes


def plot_mi_bound(metrics: pd.DataFrame, q_sigma: float = 1.0, axes=None):
    """Step (c), a pair of panels per dimension, two dimensions a row (``axes``: a (2 x rows,
    columns) grid). Upper panel: exact I(Z; Z') per dimension against the bound (best sigma,
    exact and from samples with the log-det entropy, and a fixed sigma). Lower panel: the gap
    I - bound per dimension (symmetric-log axis; below zero the sample bound would exceed I).
    Bands: min-max over seeds (random covariances of X)."""
    import matplotlib.pyplot as plt

    m = metrics[metrics.step == "mi_bound"].copy()
    dims = sorted(m.dim.dropna().unique())

    if axes is None:  # two dimensions a row: more shrink to unreadable text at page width
        per_row = min(2, len(dims))
        blocks = -(-len(dims) // per_row)
        _, axes = plt.subplots(2 * blocks, per_row, figsize=(3.5 * per_row + 0.2, 5.2 * blocks),
                               squeeze=False, sharex=True, height_ratios=(3, 2) * blocks,
                               constrained_layout=True)
        for col in range(len(dims) % per_row or per_row, per_row):  # an odd last block
            axes[-2][col].set_visible(False)
            axes[-1][col].set_visible(False)
    per_row = len(axes[0])  # a (values, gap) pair of rows for every per_row dimensions
    m["per_dim"] = m.value / m.dim
    fixed = m.q_sigma.isna() | np.isclose(m.q_sigma.fillna(-1.0), q_sigma)
    # The two best-sigma bounds nearly coincide: the exact one black and dashed without markers,
    # the one from samples red, dotted, with open circles on top of it.
    curves = [("mi_exact", "exact $I(Z;Z')$", "-", "C0", dict(marker=".")),
              ("bound_exact", r"bound, best $\sigma$ (exact)", "--", "black", dict(lw=1.6)),
              ("bound_sample", r"bound, best $\sigma$ (samples, log-det $H$)", ":", "C3",
               dict(marker="o", ms=5, mfc="none", mew=1.2, lw=1.6, zorder=3)),
              ("bound_exact_fixed_sigma", rf"bound, $\sigma = {q_sigma:g}$", "-.", "C2",
               dict(marker="."))]

    def band(ax, frame, label, style, colour, kw):
        g = frame.groupby("aug_std").y
        mid, lo, hi = g.mean(), g.min(), g.max()
        ax.plot(mid.index, mid.values, style, color=colour, label=label, **kw)
        ax.fill_between(mid.index, lo.values, hi.values, color=colour, alpha=0.15, lw=0)

    for k, d in enumerate(dims):
        block, col = divmod(k, per_row)
        top, bottom = axes[2 * block][col], axes[2 * block + 1][col]
        cell = m[(m.dim == d) & fixed]
        wide = cell.pivot_table(index=["seed", "aug_std"], columns="metric",
                                values="per_dim").reset_index()
        for metric, label, style, colour, kw in curves:
            if metric in wide:
                band(top, wide.assign(y=wide[metric]), label, style, colour, kw)
            if metric != "mi_exact" and metric in wide:
                band(bottom, wide.assign(y=wide.mi_exact - wide[metric]), label, style, colour,
                     kw)
        top.set(xscale="log", title=f"d = {int(d)}", ylim=(-1.5, wide.mi_exact.max() + 0.3))
        bottom.set_yscale("symlog", linthresh=1e-3)
        lowest = float((wide.mi_exact - wide.bound_sample).min())
        bottom.set_ylim(bottom=min(-2e-3, 2 * lowest))
        bottom.axhline(0.0, color="0.3", lw=0.6)
        bottom.set(xscale="log")
        # Every other decade: a tick per decade crowds the short symlog axis.
        low, high = bottom.get_ylim()
        ticks = ([-1e-3] if low <= -1e-3 else []) + [0.0] + [
            10.0 ** e for e in range(-3, int(np.floor(np.log10(max(high, 1e-3)))) + 1, 2)]
        bottom.set_yticks(ticks)
    # The x label on the last row only: a row's titles would run into the labels above them.
    label_bottom_row([ax for row in axes for ax in row], "augmentation std $s$")
    for block in range(len(axes) // 2):
        axes[2 * block][0].set_ylabel("nats per dimension")
        axes[2 * block + 1][0].set_ylabel("gap $I$ - bound (nats / dim)")
    # Axes from a caller: beside the last top panel, off the data.
    legend_below([ax for row in axes for ax in row], ncol=2, beside=axes[0][-1])
    return axes


def mi_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Step (c) per (dim, augmentation std), 'mean±sd' over seeds: exact I, the bounds and the
    gaps (nats)."""
    m = metrics[(metrics.step == "mi_bound") & metrics.q_sigma.isna()]
    t = m.pivot_table(index=["dim", "aug_std", "seed"], columns="metric", values="value")
    per_seed = pd.DataFrame({
        "I exact": t.mi_exact,
        "bound (exact)": t.bound_exact,
        "bound (samples)": t.bound_sample,
        "gap (exact)": t.mi_exact - t.bound_exact,
        "gap (samples)": t.mi_exact - t.bound_sample,
    })
    long = per_seed.stack().rename_axis(["dim", "aug_std", "seed", "column"])
    agg = long.groupby(["dim", "aug_std", "column"], sort=False).agg(["mean", "std"])
    out = of_agg(agg).unstack("column")[list(per_seed.columns)]
    out.index = out.index.set_levels([out.index.levels[0].astype(int), out.index.levels[1]])
    return out.rename_axis(index=["d", "augmentation std s"], columns=None)
