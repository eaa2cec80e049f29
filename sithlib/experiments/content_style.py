r"""SITh chapter: contrastive learning isolates content from style (von Kügelgen et al. 2021).

Latents :math:`z = (c, s)` with content :math:`c \in \mathbb{R}^{5}` and style
:math:`s \in \mathbb{R}^{5}`, observed as :math:`x = g(z)` through an invertible leaky-ReLU MLP.
A positive pair keeps the content, :math:`\tilde c = c`, and each style coordinate changes
with probability :math:`p_{chg}`; style may depend on content statistically (one correlated
Gaussian over all coordinates) and causally (:math:`s \leftarrow s + Bc + a`); see
:mod:`sithlib.dgp.content_style`.

An encoder with as many outputs as content dimensions is trained with the Euclidean InfoNCE of
the paper's code (squared distances, :math:`\tau = 1`). Theorem 4.4 of the paper: the encoder
block-identifies the content, :math:`f(g(z)) = \varphi(c)` with :math:`\varphi` invertible, so
a nonlinear regression from the representation recovers c (:math:`R^2 \to 1`) while style is
only predictable through its dependence on content. Scores: held-out linear and kernel-ridge
:math:`R^2` of the content and style blocks (``sithlib.metrics.block_r2``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from sithlib.dgp import DGP, DGPConfig
from sithlib.experiments._figures import (
    label_bottom_row,
    label_first_column,
    legend_below,
    means_and_seeds,
    panel_grid,
)
from sithlib.experiments._tables import of_values
from sithlib.losses import info_nce
from sithlib.metrics import block_r2
from sithlib.models.mlp import MLP
from sithlib.models.views import both_views
from sithlib.train import TrainConfig, train

NAME = "content_style"
VERSION = 2  # 2: Wishart draws exactly symmetric (last-bit changes)
TITLE = "Content and style: block identifiability"
CHAPTER = "chapters/01_sith/03_content_style"

DEPENDENCES = {  # name -> (statistical, causal)
    "none": (False, False),
    "statistical": (True, False),
    "causal": (False, True),
    "both": (True, True),
}


@dataclass(frozen=True)
class Config:
    # Intervals for --set values beyond the sign rule of results.field_domain.
    DOMAINS: ClassVar[dict[str, str]] = {"change_probs": "(0, 1]", "mixing_cond": "[1, inf)"}
    change_probs: tuple[float, ...] = (1.0, 0.75)
    dependences: tuple[str, ...] = ("none", "statistical", "causal")
    dim: int = 10
    n_content: int = 5
    hidden: tuple[int, ...] = (64, 64)
    mixing_layers: int = 3
    mixing_cond: float = 5.3  # cl-ica's 0.1% threshold used by the paper, for n = 10
    tau: float = 1.0
    steps: int = 1200
    batch_size: int = 256
    lr: float = 3e-3
    seeds: int = 2
    eval_every: int = 300
    n_eval: int = 1000  # held-out samples: half fit the regressions, half score them
    precision: str = "fp32"  # of the encoder's matmuls ("tf32" on a GPU); see TrainConfig
    dgp_seed: int = 0

    def __post_init__(self):
        bad = [d for d in self.dependences if d not in DEPENDENCES]
        if bad or not self.dependences:
            raise ValueError(f"dependences must be a non-empty subset of {list(DEPENDENCES)}, "
                             f"got {list(self.dependences)}")
        if not self.change_probs or any(not 0.0 < p <= 1.0 for p in self.change_probs):
            raise ValueError(f"change_probs must hold values in (0, 1], got {self.change_probs}")


PROFILES = {
    "quick": Config(),
    # The paper's encoder (10-100-500-500-500-500-100-5) and batch; fewer steps at a larger
    # learning rate so that the eight settings fit one GPU session (paper: 100 001 at 1e-4),
    # and kernel ridge fitted on 2048 held-out samples (paper: 5 x 4096).
    "paper": Config(dependences=tuple(DEPENDENCES), hidden=(100, 500, 500, 500, 500, 100),
                    steps=6000, batch_size=6144,
                    lr=5e-4, seeds=5, eval_every=1000, n_eval=4096, precision="tf32"),
}


def settings(cfg: Config) -> list[tuple[float, str]]:
    """The grid (change probability, dependence) in reading order."""
    return list(itertools.product(cfg.change_probs, cfg.dependences))


def _dgp(cfg: Config, change_prob: float, dependence: str, device: str) -> DGP:
    stat, cause = DEPENDENCES[dependence]
    return DGP(DGPConfig(kind="content_style", dim=cfg.dim, n_content=cfg.n_content,
                         space="euclidean", marginal="normal", conditional="normal",
                         style_change_prob=change_prob, statistical_dependence=stat,
                         causal_dependence=cause, mixing_layers=cfg.mixing_layers,
                         mixing_cond=cfg.mixing_cond, seed=cfg.dgp_seed), device=device)


def _block_scores(h: torch.Tensor, z: torch.Tensor, n_content: int) -> dict[str, float]:
    blocks = {"content": slice(0, n_content), "style": slice(n_content, z.shape[1])}
    out = {}
    for regression, nonlinear in (("linear", False), ("nonlinear", True)):
        for block, value in block_r2(h, z, blocks, nonlinear=nonlinear).items():
            out[f"r2_{block}_{regression}"] = value
    return out


def _rows(values: dict, **labels) -> list[dict]:
    return [{**labels, "metric": k, "block": k.split("_")[1], "regression": k.split("_")[2],
             "value": v} for k, v in values.items()]


def run_setting(cfg: Config, change_prob: float, dependence: str,
                device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train the seeds on one (change probability, dependence) setting and score them."""
    dgp = _dgp(cfg, change_prob, dependence, device)
    # Held-out latents from their own stream, never seen in training.
    z_test = dgp.sample_latents(cfg.n_eval, torch.Generator(device=device).manual_seed(2**31 - 1))
    x_test = dgp.mixing(z_test)
    labels = {"change_prob": change_prob, "dependence": dependence}

    def make_model(seed: int):
        gen = torch.Generator().manual_seed(seed)
        return MLP([cfg.dim, *cfg.hidden, cfg.n_content], generator=gen)

    def sample(generator, n):
        pairs = dgp.sample_pairs(n, generator)
        return pairs.x, pairs.x_pos

    def loss_fn(f, batch):
        h, h_pos = both_views(f, *batch)
        # The other anchors are independent draws from the marginal: the paper's negatives.
        loss = info_nce(h, h_pos, temperature=cfg.tau, similarity="lp", p=2.0,
                        negatives="anchors", distributed=True)
        return loss, h

    def evaluate(f, seed):
        blocks = {"content": slice(0, cfg.n_content), "style": slice(cfg.n_content, cfg.dim)}
        scores = block_r2(f(x_test), z_test, blocks, nonlinear=False)
        return {f"r2_{k}_linear": v for k, v in scores.items()}

    result = train(make_model, sample, loss_fn,
                   TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                               seeds=cfg.seeds, eval_every=cfg.eval_every,
                               precision=cfg.precision),
                   device=device, evaluate=evaluate,
                   name=f"{NAME}:p={change_prob:g}:{dependence}")
    rows = []
    with torch.no_grad():
        for seed, f in result.finished():
            values = _block_scores(f.eval()(x_test), z_test, cfg.n_content)
            rows += _rows(values, model="encoder", seed=seed, **labels)
        # Reference: the observations themselves hold all of z (g is invertible).
        rows += _rows(_block_scores(x_test, z_test, cfg.n_content), model="raw x", seed=0,
                      **labels)
    for failure in result.failures:
        rows.append({**labels, "model": "encoder", "seed": failure["seed"],
                     "metric": "failure_step", "value": float(failure["step"])})
    curves = pd.DataFrame(result.curves).assign(**labels)
    return {"metrics": pd.DataFrame(rows), "curves": curves}


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train and score every (change probability, dependence) setting of ``cfg``; linear and
    kernel-ridge R^2 of content and style (``metrics``) and R^2 over training (``curves``)."""
    parts = [run_setting(cfg, p, dep, device) for p, dep in settings(cfg)]
    return {k: pd.concat([part[k] for part in parts], ignore_index=True)
            for k in ("metrics", "curves")}


# --------------------------------------------------------------------------- tables and plots
def setting_label(change_prob: float, dependence: str) -> str:
    """'p=0.75, statistical' style labels."""
    return f"p={change_prob:g}, {dependence}"


def _scores(metrics: pd.DataFrame, model: str = "encoder") -> pd.DataFrame:
    m = metrics[(metrics.model == model) & metrics.metric.str.startswith("r2_")].copy()
    m["setting"] = [setting_label(p, d) for p, d in zip(m.change_prob, m.dependence, strict=True)]
    return m


def plot_r2(metrics: pd.DataFrame, ax=None):
    """Held-out R^2 of content and style per setting, linear and nonlinear regression:
    mean ± sd over seeds (bars) and each seed (dots)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    m = _scores(metrics)
    order = list(dict.fromkeys(m.setting))
    if ax is None:  # page width (~7.3 in): the book shrinks wider figures and their text with them
        _, ax = plt.subplots(1, 2, figsize=(7.2, 0.42 * len(order) + 2.2), sharey=True,
                             constrained_layout=True)
    palette = dict(zip(["content", "style"], sns.color_palette("deep", 2), strict=True))
    for a, regression in zip(ax, ("linear", "nonlinear"), strict=True):
        part = m[m.regression == regression]
        means_and_seeds(a, part, y="setting", x="value", hue="block", order=order,
                        hue_order=["content", "style"], palette=palette)
        a.set(title=f"{regression} regression", xlabel="held-out R²", ylabel="",
              xlim=(min(-0.05, float(part.value.min()) - 0.05), 1.05))
        a.axvline(0.0, color="0.6", lw=0.8)
    ax[0].set_ylabel("$p_{\\mathrm{chg}}$, dependence")
    legend_below(ax, ncol=2, title="block")
    return ax


def plot_curves(curves: pd.DataFrame, axes=None):
    """Held-out linear R^2 of content and style against training steps: one panel per setting,
    one line per seed. Returns the axes, one per setting."""
    import numpy as np
    import seaborn as sns

    c = curves.melt(id_vars=["step", "seed", "change_prob", "dependence"],
                    value_vars=["r2_content_linear", "r2_style_linear"], var_name="block",
                    value_name="R²")
    c["block"] = c.block.str.split("_").str[1]
    c["setting"] = [setting_label(p, d) for p, d in zip(c.change_prob, c.dependence,
                                                        strict=True)]
    settings = list(dict.fromkeys(c.setting))
    if axes is None:
        # Two panels to a row at page width (~7.3 in), so the text keeps its size.
        axes = panel_grid(len(settings), 2, 3.6, 2.4, sharex=True, sharey=True,
                          constrained_layout=True)
    flat = np.ravel(axes)
    for i, (ax, setting) in enumerate(zip(flat, settings, strict=False)):
        sns.lineplot(data=c[c.setting == setting], x="step", y="R²", hue="block",
                     hue_order=["content", "style"], units="seed", estimator=None, lw=1.0,
                     ax=ax, legend=i == 0)
        ax.set_title(setting, fontsize=11)
        ax.set(xlabel="", ylabel="")
    for ax in flat[len(settings):]:
        ax.set_visible(False)
    label_bottom_row(flat[:len(settings)], "training step")
    label_first_column(flat[:len(settings)], "held-out linear R²")
    flat[0].legend(title="block", fontsize=10, title_fontsize=10)
    return axes


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per setting: the encoder's content and style R^2 (linear, nonlinear) as 'mean ± sd over
    seeds', and the nonlinear R^2 of the same regressions from the raw observations x, which
    hold all of z: the most the nonlinear probe reaches with this many samples."""
    m = _scores(metrics)
    order = list(dict.fromkeys(m.setting))
    table = m.groupby(["setting", "block", "regression"]).value.agg(of_values).unstack(
        ["block", "regression"])
    table = table[[(b, r) for b in ("content", "style") for r in ("linear", "nonlinear")]]
    table.columns = pd.MultiIndex.from_tuples(
        [(f"encoder: {b}", f"{r} R²") for b, r in table.columns])
    raw = _scores(metrics, "raw x")
    raw = raw[raw.regression == "nonlinear"].groupby(["setting", "block"]).value.agg(
        of_values).unstack("block")
    for block in ("content", "style"):
        table[(f"raw x: {block}", "nonlinear R²")] = raw[block]
    table[("", "seeds")] = m.groupby("setting").seed.nunique()
    return table.loc[order].rename_axis(index="setting")
