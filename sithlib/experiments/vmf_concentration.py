"""Foundations chapter: the von Mises-Fisher conditional, sampled exactly.

For each dimension d and concentration kappa we draw n samples x ~ vMF(mu, kappa) with our
sampler and compare the mean cosine E[mu^T x] with its closed form A_d(kappa), and the
spread of mu^T x with the closed-form variance 1 - A_d/kappa * (d - 1) - A_d^2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from sithlib.dgp import mean_resultant_length, sample_vmf

NAME = "vmf_concentration"
VERSION = 3
TITLE = "The von Mises-Fisher conditional"
CHAPTER = "chapters/00_foundations/01_vmf"


@dataclass(frozen=True)
class Config:
    DOMAINS: ClassVar[dict[str, str]] = {"dims": "[2, inf)"}  # the sphere S^(d-1) needs d >= 2
    dims: tuple[int, ...] = (3, 10, 64)
    kappas: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0, 1e4, 1e5)
    n: int = 20_000
    seeds: int = 3


PROFILES = {
    "quick": Config(),
    "paper": Config(dims=(3, 10, 64, 256), n=1_000_000, seeds=5),
}


def cosine_variance(kappa: np.ndarray, d: int) -> np.ndarray:
    """Var[mu^T x] under vMF: 1 - (d - 1) A_d(kappa) / kappa - A_d(kappa)^2 (limit 1/d at 0)."""
    a = mean_resultant_length(kappa, d)
    safe = np.where(kappa > 0, kappa, 1.0)
    return np.where(kappa > 0, 1 - (d - 1) * a / safe - a**2, 1.0 / d)


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Sample the vMF conditional for every (dimension, kappa) and seed; the mean cosine to
    the anchor and its spread against the closed form (``metrics``; no ``curves``)."""
    rows = []
    for seed in range(cfg.seeds):
        # One stream per seed, so every (d, kappa) cell gets independent draws.
        gen = torch.Generator(device=device).manual_seed(seed)
        for d in cfg.dims:
            # float64 so that the check at kappa = 1e5 tests the sampler, not float32 rounding.
            mu = torch.zeros(d, dtype=torch.float64, device=device)
            mu[0] = 1.0
            for kappa in cfg.kappas:
                rows += _cell(sample_vmf(mu.expand(cfg.n, d), kappa, generator=gen), mu,
                              d, kappa, seed)
    return {"metrics": pd.DataFrame(rows), "curves": None}


def _cell(x: torch.Tensor, mu: torch.Tensor, d: int, kappa: float, seed: int) -> list[dict]:
    cos = x @ mu
    n = x.shape[0]
    theory_mean = float(mean_resultant_length(kappa, d))
    theory_var = float(cosine_variance(np.asarray(kappa), d))
    # Standardized error: how many standard errors our estimate is from the closed form.
    z = (cos.mean().item() - theory_mean) / np.sqrt(theory_var / n)
    base = {"d": d, "kappa": kappa, "seed": seed}
    values = {
        "mean_cos": cos.mean().item(),
        "mean_cos_theory": theory_mean,
        "var_cos": cos.var().item(),
        "var_cos_theory": theory_var,
        "z_score": z,
        "max_norm_error": (x.norm(dim=-1) - 1).abs().max().item(),
    }
    return [{**base, "metric": k, "value": v} for k, v in values.items()]


def plot_mean_cosine(metrics: pd.DataFrame, ax=None):
    """Mean cosine to mu against kappa: our samples (points, over seeds) vs A_d(kappa) (lines)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.0))
    ours = metrics[(metrics.metric == "mean_cos") & (metrics.kappa > 0)]
    palette = sns.color_palette("viridis", n_colors=ours.d.nunique())
    sns.scatterplot(data=ours, x="kappa", y="value", hue="d", palette=palette, ax=ax,
                    s=28, alpha=0.8, edgecolor="none")
    grid = np.logspace(np.log10(ours.kappa.min()), np.log10(ours.kappa.max()), 200)
    for color, d in zip(palette, sorted(ours.d.unique()), strict=True):
        ax.plot(grid, mean_resultant_length(grid, int(d)), color=color, lw=1.2)
    ax.set(xscale="log", xlabel=r"concentration $\kappa$", ylabel=r"$E[\mu^\top \tilde z]$")
    ax.legend(title="d (points: samples, lines: $A_d(\\kappa)$)", fontsize=8, title_fontsize=8)
    return ax


def plot_sphere_samples(kappas=(1.0, 10.0, 100.0), n: int = 600, seed: int = 0):
    """Samples on S^2 around the north pole for a few kappas (3-D scatter panels)."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(3.2 * len(kappas), 3.2))
    mu = torch.tensor([0.0, 0.0, 1.0])
    gen = torch.Generator().manual_seed(seed)
    for i, kappa in enumerate(kappas):
        x = sample_vmf(mu.expand(n, 3), kappa, generator=gen).numpy()
        ax = fig.add_subplot(1, len(kappas), i + 1, projection="3d")
        u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 25), np.linspace(0, np.pi, 13))
        ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v),
                          color="0.8", linewidth=0.4)
        ax.scatter(*x.T, s=4, c=x[:, 2], cmap="viridis", vmin=-1, vmax=1, depthshade=False)
        ax.view_init(elev=20, azim=35)
        ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1), title=rf"$\kappa = {kappa:g}$")
        ax.set_box_aspect((1, 1, 1))
        ax.set_axis_off()
    fig.tight_layout()
    return fig
