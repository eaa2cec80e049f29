r"""SITh chapter: identifiability classes, their metrics, and the Platonic prediction.

An encoder that identifies the latents up to a class :math:`\mathcal{H}` of maps gives
:math:`h = f \circ g = T(z)` with :math:`T \in \mathcal{H}`. This experiment needs no training:
it draws latents z from the sphere DGP of Zimmermann et al. (2021), builds h = T(z) for random
maps T of each class, and measures

* which identifiability metric (linear, Procrustes and nonlinear R², MCC, orthogonality,
  mutual kNN and CKA against z) is blind to which class, and
* the argument "identifiable implies convergent" (Reizinger et al. 2025, position paper; Huh
  et al. 2024, Platonic Representation Hypothesis): two encoders identified up to orthogonal
  maps, :math:`h_1 = Q_1 z` and :math:`h_2 = Q_2 z`, induce the same inner products and
  therefore mutual-kNN alignment 1; two encoders identified only up to linear maps,
  :math:`h_i = A_i z`, agree less, the more so the worse :math:`A_i` are conditioned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from sithlib.dgp import DGP, DGPConfig, make_mixing, random_matrix
from sithlib.dgp._random import generator_for
from sithlib.experiments._tables import of_agg, readable
from sithlib.metrics import (
    cka_linear,
    mcc,
    mutual_knn,
    orthogonality_score,
    procrustes_r2,
    r2_linear,
    r2_nonlinear,
)

NAME = "identifiability_classes"
VERSION = 1
TITLE = "Identifiability classes and the Platonic prediction"
CHAPTER = "chapters/01_sith/01_identifiability"

CLASSES = ("identity", "orthogonal", "affine", "linear", "permutation", "elementwise", "block",
           "mixing")
# Value each metric takes when h determines z exactly in the way the metric asks for.
IDEAL = {"r2_linear": 1.0, "procrustes_r2": 1.0, "r2_nonlinear": 1.0, "mcc": 1.0,
         "mcc_spearman": 1.0, "orthogonality": 0.0, "mutual_knn": 1.0, "cka_linear": 1.0}
#: Display names of the classes whose key does not say what is built: "affine" is an orthogonal
#: map plus a shift (the general linear map is the "linear" class).
CLASS_LABELS = {"affine": "orthogonal + shift"}
PAIR_METRICS = ("pair_mutual_knn", "pair_mutual_knn_clamped", "pair_cka_linear")
PAIR_LABELS = {"pair_mutual_knn": "mutual kNN", "pair_mutual_knn_clamped": "mutual kNN (clamped)",
               "pair_cka_linear": "linear CKA"}


@dataclass(frozen=True)
class Config:
    # Intervals for --set values beyond the sign rule of results.field_domain.
    DOMAINS: ClassVar[dict[str, str]] = {
        "clamp_quantile": "(0, 1]",
        "linear_cond": "[1, inf)",
        "conds": "[1, inf)",
        "max_scale": "[1, inf)",
        "offset": "[0, inf)",
        "mixing_cond": "[1, inf)",
    }
    dim: int = 10
    n: int = 1000
    n_nonlinear: int = 1000  # kernel ridge is O(n^3): scored on the first rows only
    k: int = 10  # Huh et al. (2024)
    clamp_quantile: float = 0.95  # the Platonic preprocessing, shown beside the plain metric
    seeds: int = 4
    classes: tuple[str, ...] = CLASSES
    linear_cond: float = 10.0
    conds: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0)
    max_scale: float = 2.0  # permutation class: scales log-uniform in [1 / max_scale, max_scale]
    slopes: tuple[float, float] = (1.0, 3.0)  # elementwise class: exp(a z) with a in this range
    block: int = 5  # block class: blocks of this many latents (content / style)
    offset: float = 1.0  # affine class: norm of the translation
    mixing_layers: int = 3
    mixing_cond: float = 4.0
    # Another draw of the latents and of every map (the uniform sphere itself has nothing to
    # draw); 0 keeps each seed's own generator.
    dgp_seed: int = 0


PROFILES = {
    "quick": Config(),
    # More samples (sharper kNN sets), more seeds and a finer condition-number grid.
    "paper": Config(n=10_000, n_nonlinear=4000, seeds=20,
                    conds=(1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0, 15.0, 20.0, 30.0, 50.0,
                           100.0, 300.0, 1000.0)),
}


# ---------------------------------------------------------------------------------- the maps
def _orthogonal(d: int, gen: torch.Generator) -> torch.Tensor:
    return random_matrix(d, 1.0, generator=gen)  # condition number 1: Haar U times Haar V^T


def _permutation(d: int, gen: torch.Generator) -> torch.Tensor:
    return torch.eye(d, dtype=torch.float64)[torch.randperm(d, generator=gen)]


def _signs(d: int, gen: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(d, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)


def make_transform(name: str, cfg: Config, gen: torch.Generator) -> Callable:
    r"""A random map T of the class ``name``, drawn from ``gen`` (CPU, float64).

    Classes (d = ``cfg.dim``):

    * ``"identity"``: :math:`T(z) = z`;
    * ``"orthogonal"``: :math:`T(z) = Q z` with Q Haar-random orthogonal;
    * ``"affine"``: :math:`T(z) = Q z + b`, b a random direction of norm ``cfg.offset``;
    * ``"linear"``: :math:`T(z) = A z` with A of condition number ``cfg.linear_cond``;
    * ``"permutation"``: :math:`T(z) = P D z`, P a permutation and D diagonal with random signs
      and log-uniform scales in [1 / ``max_scale``, ``max_scale``];
    * ``"elementwise"``: :math:`T(z)_i = \exp(a_i z_{\pi(i)})` with :math:`a_i` uniform in
      ``cfg.slopes``, strictly monotone per coordinate;
    * ``"block"``: each block of ``cfg.block`` latents through its own invertible leaky-ReLU MLP,
      which mixes within the block and never across (block identifiability);
    * ``"mixing"``: a fresh invertible MLP on all latents, like the DGP's g (the raw x).
    """
    d = cfg.dim
    if name == "identity":
        return lambda z: z
    if name == "orthogonal":
        q = _orthogonal(d, gen)
        return lambda z: z @ q.T
    if name == "affine":
        q = _orthogonal(d, gen)
        b = torch.randn(d, generator=gen, dtype=torch.float64)
        b = cfg.offset * b / b.norm()
        return lambda z: z @ q.T + b
    if name == "linear":
        a = random_matrix(d, cfg.linear_cond, generator=gen)
        return lambda z: z @ a.T
    if name == "permutation":
        u = 2 * torch.rand(d, generator=gen, dtype=torch.float64) - 1
        m = _permutation(d, gen) * (_signs(d, gen) * cfg.max_scale**u)
        return lambda z: z @ m.T
    if name == "elementwise":
        lo, hi = cfg.slopes
        slope = lo + (hi - lo) * torch.rand(d, generator=gen, dtype=torch.float64)
        perm = torch.randperm(d, generator=gen)
        return lambda z: torch.exp(slope * z[:, perm])
    if name == "block":
        starts = range(0, d, cfg.block)
        maps = [make_mixing("mlp", min(cfg.block, d - s), n_layers=cfg.mixing_layers,
                            cond=cfg.mixing_cond if min(cfg.block, d - s) > 1 else 1.0,
                            generator=gen) for s in starts]
        return lambda z: torch.cat([g(z[:, s:s + cfg.block]) for g, s in
                                    zip(maps, starts, strict=True)], dim=1)
    if name == "mixing":
        g = make_mixing("mlp", d, n_layers=cfg.mixing_layers, cond=cfg.mixing_cond, generator=gen)
        return g
    raise ValueError(f"class must be one of {list(CLASSES)}, got {name!r}")


# ----------------------------------------------------------------------------------- scores
def _against_latents(h: torch.Tensor, z: torch.Tensor, cfg: Config) -> dict[str, float]:
    m = cfg.n_nonlinear
    return {
        "r2_linear": r2_linear(h, z),
        "procrustes_r2": procrustes_r2(h, z),
        "r2_nonlinear": r2_nonlinear(h[:m], z[:m], method="kernel_ridge"),
        "mcc": mcc(h, z),
        "mcc_spearman": mcc(h, z, method="spearman"),
        "orthogonality": orthogonality_score(h, z),
        "mutual_knn": mutual_knn(h, z, k=cfg.k),
        "cka_linear": cka_linear(h, z),
    }


def _between(h1: torch.Tensor, h2: torch.Tensor, cfg: Config) -> dict[str, float]:
    return {
        "pair_mutual_knn": mutual_knn(h1, h2, k=cfg.k),
        "pair_mutual_knn_clamped": mutual_knn(h1, h2, k=cfg.k, clamp_quantile=cfg.clamp_quantile),
        "pair_cka_linear": cka_linear(h1, h2),
    }


def _check(cfg: Config) -> None:
    unknown = [c for c in cfg.classes if c not in CLASSES]
    if unknown:
        raise ValueError(f"classes must be drawn from {list(CLASSES)}, got {unknown}")
    if not 1 <= cfg.block <= cfg.dim:
        raise ValueError(f"block must be in [1, dim] = [1, {cfg.dim}], got {cfg.block}")
    if any(c < 1 for c in (*cfg.conds, cfg.linear_cond)):
        raise ValueError("conds and linear_cond must be >= 1 (condition numbers)")
    if not cfg.k < cfg.n:
        raise ValueError(f"k must be < n, got k = {cfg.k}, n = {cfg.n}")


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Score every class against z and against a second draw of the same class, and sweep the
    condition number of two linear encoders (rows of class ``"sweep"`` with their ``cond``)."""
    _check(cfg)
    dgp = DGP(DGPConfig(dim=cfg.dim, seed=cfg.dgp_seed), dtype=torch.float64)
    rows = []
    for seed in range(cfg.seeds):
        # (torch's CPU generator keeps only the low 32 bits of a seed: hash the pair instead)
        gen = (torch.Generator().manual_seed(seed) if cfg.dgp_seed == 0
               else generator_for(cfg.dgp_seed, f"identifiability_classes-{seed}"))
        z = dgp.sample_latents(cfg.n, gen)
        on = z.to(device)
        for name in cfg.classes:
            h1 = make_transform(name, cfg, gen)(z)
            values = _against_latents(h1.to(device), on, cfg)
            if name != "identity":  # a second identity draw is the same map: nothing to compare
                h2 = make_transform(name, cfg, gen)(z)
                values |= _between(h1.to(device), h2.to(device), cfg)
            rows += [{"class": name, "seed": seed, "metric": k, "value": float(v)}
                     for k, v in values.items()]
        for cond in cfg.conds:
            a1, a2 = (random_matrix(cfg.dim, cond, generator=gen) for _ in range(2))
            h1, h2 = (z @ a.T for a in (a1, a2))
            h1, h2 = h1.to(device), h2.to(device)
            values = _between(h1, h2, cfg) | {"mutual_knn": mutual_knn(h1, on, k=cfg.k),
                                               "cka_linear": cka_linear(h1, on)}
            rows += [{"class": "sweep", "cond": float(cond), "seed": seed, "metric": k,
                      "value": float(v)} for k, v in values.items()]
    return {"metrics": pd.DataFrame(rows), "curves": None}


# ------------------------------------------------------------------------ tables and figures
def summary_table(metrics: pd.DataFrame, pairs: bool = False) -> pd.DataFrame:
    """'mean±sd' over seeds per class (rows) and metric (columns); ``pairs`` picks the
    comparison of two draws of the same class instead of the comparison with z."""
    wanted = list(PAIR_METRICS) if pairs else [m for m in IDEAL if m in set(metrics.metric)]
    m = metrics[metrics.metric.isin(wanted)]
    table = of_agg(m.groupby(["class", "metric"]).value.agg(["mean", "std"])).unstack("metric")
    order = [c for c in CLASSES if c in table.index]
    table = table.loc[order, [c for c in wanted if c in table.columns]]
    table = table.rename(index=CLASS_LABELS, columns=PAIR_LABELS)
    return readable(table.rename_axis(index=None))


def invariance_table(metrics: pd.DataFrame, tol: float = 1e-3) -> pd.DataFrame:
    """Whether each metric (columns) sits at its ideal value (1, or 0 for orthogonality) for
    every seed of a class (rows), i.e. is blind to that class: a check mark or a dot."""
    m = metrics[metrics.metric.isin(IDEAL)].copy()
    m["ok"] = (m.value - m.metric.map(IDEAL)).abs() <= tol
    table = m.groupby(["class", "metric"]).ok.all().unstack("metric")
    order = [c for c in CLASSES if c in table.index]
    table = table.loc[order, [c for c in IDEAL if c in table.columns]]
    table = table.replace({True: "✓", False: "·"}).rename(index=CLASS_LABELS)
    return readable(table.rename_axis(index=None))


def sweep(metrics: pd.DataFrame) -> pd.DataFrame:
    """The condition-number sweep's rows (columns cond, seed, metric, value)."""
    return metrics[metrics["class"] == "sweep"]


def plot_condition_sweep(metrics: pd.DataFrame, n: int | None = None, k: int = 10, ax=None):
    """Agreement of two linear encoders :math:`h_i = A_i z` against the condition number c of
    each :math:`A_i` (not of :math:`M = A_2 A_1^{-1}`, whose condition number lies in
    [1, c²]): mean and range over seeds; dotted, the chance level k / (n - 1) of mutual kNN."""
    import matplotlib.pyplot as plt

    curves = sweep(metrics)

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.8))
    labels = {"pair_mutual_knn": "mutual kNN, two encoders",
              "pair_mutual_knn_clamped": "mutual kNN, two encoders (clamped at q = 0.95)",
              "pair_cka_linear": "linear CKA, two encoders",
              "mutual_knn": "mutual kNN, encoder vs z"}
    for (metric, label), color in zip(labels.items(), ["C0", "C0", "C1", "C2"], strict=True):
        stats = curves[curves.metric == metric].groupby("cond").value.agg(["mean", "min", "max"])
        style = "--" if "clamped" in metric else "-"
        ax.plot(stats.index, stats["mean"], style, color=color, marker="o", ms=3, label=label)
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, lw=0)
    if n is not None:
        chance = k / (n - 1)
        ax.axhline(chance, color="0.2", ls=":", lw=1.5,
                   label=f"chance level of mutual kNN, k / (n − 1) = {chance:.2g}")
    # The lower limit below 0 keeps the chance line (near 0 for large n) off the axis.
    ax.set(xscale="log", xlabel="condition number c of each linear map $A_i$",
           ylabel="alignment", ylim=(-0.04, 1.03))
    # Below the axes: the curves fill the upper half at every condition number.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    return ax


def plot_pairs(metrics: pd.DataFrame, ax=None):
    """Mutual kNN and linear CKA between two independent draws of the same class, per class
    (points: seeds; bars: mean)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 3.6))
    m = metrics[metrics.metric.isin(["pair_mutual_knn", "pair_cka_linear"])
                & metrics["class"].isin(CLASSES)].copy()
    m["metric"] = m.metric.map({"pair_mutual_knn": "mutual kNN", "pair_cka_linear": "linear CKA"})
    order = [CLASS_LABELS.get(c, c) for c in CLASSES if c in set(m["class"])]
    m["class"] = m["class"].replace(CLASS_LABELS)
    sns.barplot(data=m, x="class", y="value", hue="metric", order=order, errorbar=None,
                alpha=0.5, ax=ax)
    sns.stripplot(data=m, x="class", y="value", hue="metric", order=order, dodge=True, size=3,
                  ax=ax, legend=False, palette="dark")
    ax.set(xlabel="identifiability class of both encoders", ylabel="agreement", ylim=(0, 1.03))
    plt.setp(ax.get_xticklabels(), rotation=25, ha="right", rotation_mode="anchor")
    ax.legend(fontsize=8, loc="upper right")
    return ax
