"""SITh chapter: contrastive learning inverts the data-generating process (Zimmermann et al. 2021).

Latents z ~ U(S^{n-1}), positives z' ~ vMF(z, kappa), observations x = g(z) through an
invertible leaky-ReLU MLP; an encoder f with outputs on the sphere is trained with InfoNCE at the
matched temperature tau = 1 / kappa. Theory: every minimiser satisfies h = f . g = orthogonal map,
so a linear map from h recovers z (held-out R^2 -> 1) and its singular values are all equal.
Baseline: the raw observations x, which a linear map cannot unmix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from sithlib.dgp import DGP, DGPConfig
from sithlib.experiments._tables import METRIC_LABELS, of_agg, readable
from sithlib.losses import info_nce
from sithlib.metrics import fit_linear_map, mcc, orthogonality_score, r2_linear
from sithlib.models.mlp import MLP
from sithlib.models.views import both_views
from sithlib.train import TrainConfig, train

NAME = "infonce_sphere"
VERSION = 1
TITLE = "Contrastive learning inverts the data-generating process"
CHAPTER = "chapters/01_sith/02_contrastive_inverts"


@dataclass(frozen=True)
class Config:
    # Intervals for --set values beyond the sign rule of results.field_domain.
    # 0: uniform positives; a batch of one has no negatives
    DOMAINS: ClassVar[dict[str, str]] = {"kappa": "[0, inf)", "batch_size": "[2, inf)"}
    dim: int = 10
    kappa: float = 10.0
    tau: float = 0.1  # matched to kappa = 10; check() refuses a tau that is not 1 / kappa
    hidden: tuple[int, ...] = (256, 256, 256)
    mixing_layers: int = 3
    steps: int = 3000
    batch_size: int = 512
    lr: float = 1e-3
    seeds: int = 2
    eval_every: int = 250
    n_eval: int = 4000
    checkpoint_every: int = 0
    dgp_seed: int = 0
    precision: str = "fp32"  # of the encoder's matmuls ("tf32" on a GPU); see TrainConfig


PROFILES = {
    "quick": Config(),
    # cl-ica's encoder widths, batch and optimiser (Zimmermann et al. 2021) with a third of
    # its steps; TF32 matmuls: in full fp32 its 33 PFLOP of training (bench_cost) would run
    # without the tensor cores.
    "paper": Config(hidden=(100, 500, 500, 500, 500, 100), steps=100_000, batch_size=6144,
                    lr=1e-4, seeds=5, eval_every=2500, n_eval=20_000, checkpoint_every=10_000,
                    precision="tf32"),
}


def _scores(h: torch.Tensor, z: torch.Tensor) -> dict[str, float]:
    return {"r2_linear": r2_linear(h, z), "mcc": mcc(h, z)}


def check(cfg: Config) -> None:
    """This experiment is the theorem's matched setting, tau = 1 / kappa: a --set of one
    without the other would silently train a mismatched model (those are infonce_mismatch's
    rows). kappa = 0 (uniform positives) has no matched temperature and is let through."""
    if cfg.kappa > 0 and not math.isclose(cfg.tau * cfg.kappa, 1.0, rel_tol=1e-6):
        raise ValueError(f"tau must be 1 / kappa = {1 / cfg.kappa:g} (the matched setting), got "
                         f"tau={cfg.tau:g} with kappa={cfg.kappa:g}: set both, e.g. --set "
                         "kappa=50 --set tau=0.02; unmatched temperatures are rows of "
                         "infonce_mismatch")


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train the InfoNCE seeds (one vmapped ensemble) on the sphere DGP; held-out R^2, MCC
    and the fitted map's singular values, beside the raw observations (``metrics``), and the
    scores over training (``curves``)."""
    from sithlib.results import checkpoint_for  # results imports experiments: import late

    check(cfg)
    dgp = DGP(DGPConfig(dim=cfg.dim, kappa=cfg.kappa, mixing_layers=cfg.mixing_layers,
                        seed=cfg.dgp_seed), device=device)
    # Held-out pairs from their own stream, never seen in training.
    test = dgp.sample_pairs(cfg.n_eval, torch.Generator(device=device).manual_seed(2**31 - 1))

    def make_model(seed: int):
        gen = torch.Generator().manual_seed(seed)
        return MLP([cfg.dim, *cfg.hidden, cfg.dim], output_norm="sphere", generator=gen)

    def sample(generator, n):
        pairs = dgp.sample_pairs(n, generator)
        return pairs.x, pairs.x_pos

    def loss_fn(f, batch):
        h, h_pos = both_views(f, *batch)
        return info_nce(h, h_pos, temperature=cfg.tau, distributed=True), h

    def evaluate(f, seed):
        return _scores(f(test.x), test.z)

    checkpoint = checkpoint_for(NAME, cfg) if cfg.checkpoint_every else None
    result = train(make_model, sample, loss_fn,
                   TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                               seeds=cfg.seeds, eval_every=cfg.eval_every,
                               checkpoint_every=cfg.checkpoint_every, precision=cfg.precision),
                   device=device, evaluate=evaluate, checkpoint=checkpoint, name=NAME)
    rows = []
    with torch.no_grad():
        for seed, f in result.finished():
            h = f.eval()(test.x)
            values = {**_scores(h, test.z), "orthogonality": orthogonality_score(h, test.z)}
            rows += [{"model": "infonce", "seed": seed, "metric": k, "value": v, "index": -1}
                     for k, v in values.items()]
            weights, _ = fit_linear_map(h, test.z)
            for i, sv in enumerate(torch.linalg.svdvals(weights).tolist()):
                rows.append({"model": "infonce", "seed": seed, "metric": "singular_value",
                             "value": sv, "index": i})
        rows += [{"model": "raw x (no encoder)", "seed": 0, "metric": k, "value": v, "index": -1}
                 for k, v in _scores(test.x, test.z).items()]
    for failure in result.failures:
        rows.append({"model": "infonce", "seed": failure["seed"], "metric": "failure_step",
                     "value": failure["step"], "index": -1, "failure": failure["kind"]})
    if checkpoint is not None:
        checkpoint.clear()
    return {"metrics": pd.DataFrame(rows), "curves": pd.DataFrame(result.curves)}


def plot_r2_curves(curves: pd.DataFrame, metrics: pd.DataFrame, ax=None):
    """Held-out linear R^2 and MCC against training steps (one line per seed)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.8))
    long = curves.melt(id_vars=["step", "seed"], value_vars=["r2_linear", "mcc"],
                       var_name="score", value_name="value")
    long["score"] = long.score.map(METRIC_LABELS)  # "linear R²", "MCC"
    sns.lineplot(data=long, x="step", y="value", hue="score", units="seed", estimator=None,
                 ax=ax, lw=1.2)
    raw = metrics[(metrics.model != "infonce") & (metrics.metric == "r2_linear")].value
    ax.axhline(float(raw.iloc[0]), color="0.4", ls="--", lw=1)
    ax.annotate("raw x, linear R²", (curves.step.max(), float(raw.iloc[0])), ha="right",
                va="bottom", fontsize=8, color="0.3")
    ax.set(xlabel="training step", ylabel="held-out score", ylim=(0, 1.02))
    ax.legend(title=None, loc="lower right")  # both scores stay well above the legend
    return ax


def plot_singular_values(metrics: pd.DataFrame, ax=None):
    """Singular values of the linear map from h to z, sorted, per seed (flat = orthogonal)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 3.4))
    sv = metrics[metrics.metric == "singular_value"].copy()
    sv["relative"] = sv.value / sv.groupby("seed").value.transform("mean")
    sns.lineplot(data=sv, x="index", y="relative", hue="seed", marker="o", ax=ax,
                 palette="viridis")
    ax.axhline(1.0, color="0.4", ls="--", lw=1)
    ax.set(xlabel="singular value (sorted)", ylabel="relative to their mean", ylim=(0, None))
    return ax


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Final held-out scores per model as 'mean ± sd over seeds' strings."""
    scores = metrics[metrics.metric.isin(["r2_linear", "mcc", "orthogonality"])]
    agg = scores.groupby(["model", "metric"]).value.agg(["mean", "std", "count"])
    text = of_agg(agg)
    table = text.unstack("metric").fillna("–")[["r2_linear", "mcc", "orthogonality"]]
    table["seeds"] = agg["count"].groupby("model").max()
    return readable(table.rename_axis(index=None))
