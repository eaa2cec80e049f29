r"""Stability chapter: the simplified objective (Jha, Blaschko, Asano and Tuytelaars, 2024).

If every method keeps the per-sample means :math:`\mu_x` long while shrinking the center
vector s, the two terms should suffice on their own:

.. math::

    L_\lambda(f) = -\frac{1}{n}\sum_i \langle u_{a,i}, u_{b,i} \rangle + \lambda \|\hat s\|^2,

with u the L2-normalised encoder outputs of two views and :math:`\hat s` their batch mean
(``sithlib.losses.stability``, no projector). We sweep :math:`\lambda` on the vector DGP of
the induced-collapse experiment and train SimCLR, BYOL and VICReg (and any other method of
``sithlib.methods``) with the same encoder, data, steps and optimiser. Every model is scored on
held-out data: linear :math:`R^2` of the encoder output to the latents z, weighted kNN
accuracy on labels read off the latent (the signed coordinate axis nearest to z, 2 n
classes), :math:`\|s\|` of the embedding the loss sees, and effective ranks. The raw
observations and an untrained encoder are the baselines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch

from sithlib.experiments._tables import number_word, of_agg, readable
from sithlib.experiments.collapse_ablations import held_out, make_dgp, model_factory, monitors
from sithlib.methods import method_label
from sithlib.metrics import knn_accuracy, r2_linear
from sithlib.train import TrainConfig, train

NAME = "simplified_objective"
VERSION = 3  # 2: bias-free BYOL heads; 3: unbiased mean ||mu_x|| (collapse_ablations.monitors)
TITLE = "The simplified objective"
CHAPTER = "chapters/03_stability/04_simplified"

STABILITY = "stability"


@dataclass(frozen=True)
class Config:
    lambdas: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)
    methods: tuple[str, ...] = ("simclr", "byol", "vicreg")
    dim: int = 5
    kappa: float = 10.0
    mixing_layers: int = 3
    hidden: tuple[int, ...] = (64, 64)
    feature_dim: int = 10
    head_hidden: int = 64
    head_dim: int = 32
    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    seeds: int = 2
    eval_every: int = 100
    n_eval: int = 2000
    views: int = 4
    knn_k: int = 20
    dgp_seed: int = 0
    checkpoint_every: int = 0

    def __post_init__(self):
        if any(not (math.isfinite(v) and v >= 0) for v in self.lambdas):
            raise ValueError(f"lambdas must be finite and >= 0, got {self.lambdas!r}")
        allowed = ("simclr", "byol", "simsiam", "swav", "dino", "barlow_twins", "vicreg")
        if any(m not in allowed for m in self.methods):
            raise ValueError(f"methods must be drawn from {allowed}, got {self.methods!r}")
        if self.views < 2:
            raise ValueError(f"views must be >= 2, got {self.views}")


PROFILES = {
    "quick": Config(),
    # The quick profile's lambda sweep on wider networks, a larger batch, three seeds, 3x the steps
    # and two more full methods: 33 runs one after the other, about 6 minutes on one H100
    # (launch-bound small networks, 2.5 ms a step without heads, 5 ms with).
    "paper": Config(methods=("simclr", "byol", "vicreg", "simsiam", "barlow_twins"),
                    hidden=(256, 256, 256), feature_dim=32, head_hidden=512, head_dim=128,
                    steps=3000, batch_size=1024, seeds=3, eval_every=250, n_eval=8000,
                    views=8, checkpoint_every=1000),
}


def axis_labels(z: torch.Tensor) -> torch.Tensor:
    """Class of each latent: the signed coordinate axis nearest to it (2 dim classes).

    For z on the sphere, :math:`\\arg\\max_j |z_j|` with its sign partitions the sphere into
    2n congruent cells, so the classes are balanced under the uniform marginal.
    """
    j = z.abs().argmax(1)
    negative = z.gather(1, j[:, None]).squeeze(1) < 0
    return 2 * j + negative.long()


def _knn(h: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    half = h.shape[0] // 2  # the held-out set is i.i.d.: first half bank, second half queries
    return knn_accuracy(h[:half], labels[:half], h[half:], labels[half:], k=k,
                        num_classes=int(labels.max()) + 1)


def _model_name(method: str, lambd: float | None) -> str:
    return method if lambd is None else f"{STABILITY} λ={lambd:g}"


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train the simplified objective for each lambda of the grid and the full methods beside
    it; held-out scores (``metrics``) and the monitors over training (``curves``)."""
    from sithlib.results import checkpoint_for  # results imports experiments: import late

    dgp = make_dgp(cfg, device)
    z, x, x_views = held_out(dgp, cfg.n_eval, cfg.views, device)
    labels = axis_labels(z)

    def scores(model) -> dict:
        values = monitors(model, z, x, x_views)
        values["knn_accuracy"] = _knn(model.embed(x).float(), labels, cfg.knn_k)
        return values

    def sample(generator, n):
        pairs = dgp.sample_pairs(n, generator)
        return pairs.x, pairs.x_pos

    def loss_fn(model, batch):
        x_a, x_b = batch
        loss, logs = model(x_a, x_b)
        return loss, model.embed(x_a), {"batch_center_norm": logs["center_norm"]}

    runs = [(STABILITY, lambd) for lambd in cfg.lambdas] + [(m, None) for m in cfg.methods]
    rows, curves = [], []
    for method, lambd in runs:
        model_name = _model_name(method, lambd)
        switches = {} if lambd is None else {"lambd": float(lambd)}
        keys = {"model": model_name, "method": method,
                "lambd": math.nan if lambd is None else float(lambd)}
        part = model_name.replace(" ", "_").replace("λ=", "lambda")
        checkpoint = checkpoint_for(NAME, cfg, part=part) if cfg.checkpoint_every else None
        tcfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                           seeds=cfg.seeds, eval_every=cfg.eval_every,
                           checkpoint_every=cfg.checkpoint_every)
        result = train(model_factory(method, switches, cfg), sample, loss_fn, tcfg,
                       device=device, evaluate=lambda model, seed: scores(model),
                       checkpoint=checkpoint, name=f"{NAME}:{model_name}")
        curve = pd.DataFrame(result.curves)
        for i, (k, v) in enumerate(keys.items()):
            curve.insert(i, k, v)
        curves.append(curve)
        with torch.no_grad():
            for seed, model in result.finished():
                rows += [{**keys, "seed": seed, "metric": k, "value": float(v)}
                         for k, v in scores(model.eval()).items()]
        for failure in result.failures:
            rows.append({**keys, "seed": failure["seed"], "metric": "failure_step",
                         "value": float(failure["step"])})
        if checkpoint is not None:
            checkpoint.clear()
    # Baselines: the raw observations and the untrained encoder (no heads needed).
    base = {"method": "baseline", "lambd": math.nan}
    rows += [{**base, "model": "raw x", "seed": 0, "metric": k, "value": v}
             for k, v in (("r2_linear", r2_linear(x, z)),
                          ("knn_accuracy", _knn(x, labels, cfg.knn_k)))]
    make_untrained = model_factory(STABILITY, {}, cfg)
    with torch.no_grad():
        for seed in range(cfg.seeds):
            encoder = make_untrained(seed).to(device).eval()
            h = encoder.embed(x).float()
            rows += [{**base, "model": "untrained encoder", "seed": seed, "metric": k,
                      "value": v} for k, v in (("r2_linear", r2_linear(h, z)),
                                               ("knn_accuracy", _knn(h, labels, cfg.knn_k)))]
    metrics = pd.DataFrame(rows)
    metrics = metrics[metrics.value.notna()].reset_index(drop=True)
    return {"metrics": metrics, "curves": pd.concat(curves, ignore_index=True)}


# -- tables and figures ---------------------------------------------------------------------------

COLUMNS = {
    "r2_linear": "R² (encoder)",
    "knn_accuracy": "kNN accuracy",
    "center_norm": "‖s‖",
    "spread": "E‖μₓ − s‖²",
    "effective_rank": "eff. rank",
    "encoder_effective_rank": "encoder eff. rank",
}


def model_label(model: str) -> str:
    """A model's display name: ``"stability λ=0.3"`` -> ``"simplified, λ = 0.3"``, ``"simclr"``
    -> ``"SimCLR"``; baselines keep their names."""
    prefix = f"{STABILITY} λ="
    if model.startswith(prefix):
        return f"simplified, λ = {model[len(prefix):]}"
    return method_label(model)


def comparison_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Final held-out scores per model (each lambda, each full method, the baselines) as
    'mean ± sd over seeds' strings, in run order. An effective rank reads "one point" where
    every seed's embedding is a single point (recorded as 0 by convention; RankMe itself is at
    least 1), and "–" where it is not measured (the baselines)."""
    m = metrics[metrics.metric.isin(COLUMNS)]
    agg = m.groupby(["model", "metric"], sort=False).value.agg(["mean", "std"])
    text = of_agg(agg)
    ranks = m[m.metric.isin(["effective_rank", "encoder_effective_rank"])]
    point = ranks.groupby(["model", "metric"], sort=False).value.agg(lambda v: (v == 0).all())
    text[point[point].index] = "one point"
    table = text.unstack("metric").reindex(columns=list(COLUMNS)).fillna("–")
    table = table.reindex(list(dict.fromkeys(m.model)))
    return readable(table.rename(index=model_label, columns=COLUMNS).rename_axis(index=None))


def plot_lambda_sweep(metrics: pd.DataFrame, axes=None):
    """Four panels (2 x 2) against lambda: encoder R2, kNN accuracy, ||s|| of the embedding the
    loss sees and the encoder's effective rank; points are means with one-sd error bars over
    seeds, horizontal lines and bands the full methods and the baselines (mean ± sd)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    panels = ["r2_linear", "knn_accuracy", "center_norm", "encoder_effective_rank"]
    if axes is None:  # page width (~7.3 in): the book shrinks wider figures and their text
        _, axes = plt.subplots(2, 2, figsize=(7.2, 5.8), constrained_layout=True)
    axes = list(getattr(axes, "flat", axes))
    sweep = metrics[metrics.method == STABILITY].copy()
    lambdas = sorted(sweep.lambd.unique())
    sweep["λ"] = pd.Categorical(sweep.lambd.map("{:g}".format),
                                categories=[f"{v:g}" for v in lambdas], ordered=True)
    others = metrics[metrics.method != STABILITY]
    # Full methods: dashed, in colour; the baselines (raw x, the untrained encoder): grey and
    # black, dotted and dash-dotted, so that no baseline reads as a method.
    methods = list(dict.fromkeys(others[others.method != "baseline"].model))
    baselines = list(dict.fromkeys(others[others.method == "baseline"].model))
    colours = dict(zip(methods, sns.color_palette("tab10", len(methods)), strict=True))
    styles = dict.fromkeys(methods, (1.3, "--"))
    for model, colour, style in zip(baselines, ("black", "0.45", "0.65"),
                                    ((1.8, ":"), (1.5, "-."), (1.5, ":")), strict=False):
        colours[model], styles[model] = colour, style
    for ax, metric in zip(axes, panels, strict=True):
        part = sweep[sweep.metric == metric]
        if metric.endswith("effective_rank"):  # 0 stands for "a single point": not a rank
            part = part[part.value > 0]
        sns.pointplot(data=part, x="λ", y="value", errorbar="sd", color="black", ax=ax,
                      markersize=4, linewidth=1.2, label="simplified objective")
        for model, g in others[others.metric == metric].groupby("model", sort=False):
            mean, sd = g.value.mean(), (g.value.std() if len(g) > 1 else 0.0)
            lw, ls = styles[model]
            ax.axhline(mean, color=colours[model], lw=lw, ls=ls, label=method_label(model))
            ax.axhspan(mean - sd, mean + sd, color=colours[model], alpha=0.12, lw=0)
        ax.set(xlabel="λ", ylabel="")
        ax.set_title(COLUMNS.get(metric, metric), fontsize=11)
        ax.tick_params(labelsize=10)
    # One legend for the figure, below the panels: every line of every panel, once.
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig = axes[0].figure
    if fig.get_layout_engine() is not None:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncol=3,
                   fontsize=10, frameon=False)
    else:
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=3,
                   fontsize=10, frameon=False)
    return axes


def plot_center_norm_curves(curves: pd.DataFrame, ax=None):
    """Held-out ||s|| over training for each lambda and each full method (mean ± sd)."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns
    from matplotlib.colors import to_rgb

    if ax is None:  # page width (~7.3 in), the legend below the axes
        _, ax = plt.subplots(figsize=(7.2, 4.4), constrained_layout=True)
    sweep_names = {model_label(v) for v in curves[curves.method == STABILITY].model}
    curves = curves.assign(model=curves.model.map(model_label))
    order = list(dict.fromkeys(curves.model))
    sweep = [m for m in order if m in sweep_names]
    # The sweep in a qualitative palette (neighbouring lambdas in distinct hues, not shades of
    # one) with large markers, so that lines that coincide stay visible; the full methods in
    # black and greys outside it, dashed.
    qualitative = sns.color_palette("tab10", 10)
    sweep_colours = [qualitative[i] for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]
    palette = {m: sweep_colours[i % len(sweep_colours)] for i, m in enumerate(sweep)}
    rest = [m for m in order if m not in palette]
    greys = ["black", "0.45", "0.7", "tab:olive"]
    palette.update(zip(rest, (greys * len(rest))[: len(rest)], strict=True))
    shapes = ["o", "s", "^", "D", "v", "P", "X", "*"]
    markers = {m: shapes[i % len(shapes)] for i, m in enumerate(sweep)}
    part = curves[curves.model.isin(sweep)]
    sns.lineplot(data=part, x="step", y="center_norm", hue="model", hue_order=sweep,
                 palette=palette, style="model", style_order=sweep, markers=markers,
                 dashes=False, markersize=7, errorbar="sd", ax=ax, lw=1.5,
                 err_kws={"alpha": 0.12})
    # Open markers: where two lambdas coincide (both collapsed, say), both shapes show.
    for line in ax.lines:  # the lines and their legend entries
        for m in sweep:
            if line.get_marker() == markers[m] and np.allclose(
                    to_rgb(line.get_color()), to_rgb(palette[m])):
                line.set(markerfacecolor="none", markeredgecolor=palette[m],
                         markeredgewidth=1.4)
    if rest:
        sns.lineplot(data=curves[curves.model.isin(rest)], x="step", y="center_norm",
                     hue="model", hue_order=rest, palette=palette, errorbar="sd", ax=ax,
                     lw=1.5, ls="--", err_kws={"alpha": 0.12})
    ax.set(xlabel="training step", ylabel="‖s‖ (held-out)", ylim=(0, 1.04))
    if ax.figure.get_layout_engine() is not None:  # below the axes: the page is narrow
        sns.move_legend(ax, "upper center", bbox_to_anchor=(0.5, -0.17), ncol=3, fontsize=10,
                        title=None, frameon=False)
    else:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize=10, title=None)
    return ax


def tied_with_best(metrics: pd.DataFrame, metric: str = "knn_accuracy") -> list[float]:
    """The lambdas whose mean ``metric`` is within one standard deviation over seeds (the
    larger of the two) of the best lambda's, the best included, in increasing order."""
    sweep = metrics[(metrics.method == STABILITY) & (metrics.metric == metric)]
    agg = sweep.groupby("lambd").value.agg(["mean", "std"]).fillna(0.0).sort_index()
    best = agg["mean"].idxmax()
    spread = agg["std"].clip(lower=agg.loc[best, "std"])
    return [float(v) for v in agg.index
            if agg.loc[best, "mean"] - agg.loc[v, "mean"] <= spread.loc[v]]


def _optimum_claim(metrics, sweep, s_threshold):
    """The interior-optimum claim, judged against the spread over seeds: supported when the best
    lambda is interior and no other lambda is within one sd of it; partly supported when the
    lambdas tied with the best are all interior (an optimum inside the grid, its place not
    resolved); not supported when an end of the grid is among them."""
    best = sweep.knn_accuracy.idxmax()
    tied = tied_with_best(metrics)
    lo, hi = sweep.index.min(), sweep.index.max()
    inside = all(lo < v < hi for v in tied)
    text = (f"kNN accuracy is highest at λ = {best:g} ({sweep.knn_accuracy.max():.3f}; "
            f"{sweep.knn_accuracy.iloc[0]:.3f} at λ = {lo:g}, "
            f"{sweep.knn_accuracy.iloc[-1]:.3f} at λ = {hi:g}).")
    others = [v for v in tied if v != best]
    if others:
        listed = ", ".join(f"{v:g}" for v in others[:-1]) + (" and " if len(others) > 1 else "")
        text += (f" The mean at λ = {listed}{others[-1]:g} is within one standard deviation "
                 "over seeds of it." if len(others) == 1 else
                 f" The means at λ = {listed}{others[-1]:g} are within one standard deviation "
                 "over seeds of it.")
    alive = sweep.index[sweep.center_norm < s_threshold]
    if len(alive) and best == alive.min() and best > lo:
        text += (" The best λ is also the smallest without complete collapse "
                 f"(‖s‖ < {s_threshold:g}), so the rise towards it is the step out of collapse.")
    verdict = ("not supported" if not inside else
               "partly supported (the spread over seeds does not resolve where the optimum "
               "lies)" if others else "supported")
    return ("Accuracy has an interior optimum in λ (the U/inverted-U shape)", text, verdict)


def claims_table(metrics: pd.DataFrame, s_threshold: float = 0.9) -> pd.DataFrame:
    """The claims about the simplified objective, each with what we measured and a verdict
    decided by a fixed rule from the seed means."""
    means = metrics.groupby(["model", "metric"], sort=False).value.mean().unstack("metric")
    sweep = metrics[metrics.method == STABILITY].groupby(["lambd", "metric"]).value.mean()
    sweep = sweep.unstack("metric").sort_index()
    full = means.loc[[m for m in dict.fromkeys(metrics[~metrics.method.isin(
        [STABILITY, "baseline"])].model)]]
    rows = []
    if 0.0 in sweep.index:
        s0 = sweep.loc[0.0, "center_norm"]
        rows.append(("Invariance alone (λ = 0) collapses: ‖s‖ → 1",
                     f"final ‖s‖ = {s0:.3f} at λ = 0",
                     "supported" if s0 > s_threshold else "not supported"))
    positive = sweep[sweep.index > 0]
    if len(positive):
        kept = positive[positive.center_norm < s_threshold]
        rows.append((
            "The center penalty prevents complete collapse",
            f"‖s‖ < {s_threshold:g} for {number_word(len(kept))} of the "
            f"{number_word(len(positive))} values λ > 0"
            + (f" (from λ = {kept.index.min():g})" if len(kept) else ""),
            "supported" if len(kept) == len(positive) else
            ("partly supported" if len(kept) else "not supported"),
        ))
    if len(sweep) >= 3:
        rows.append(_optimum_claim(metrics, sweep, s_threshold))
    if len(full) and len(sweep):
        best_s = sweep.knn_accuracy.max()
        best_full = full.knn_accuracy.max()
        gap = best_full - best_s
        winner = full.knn_accuracy.idxmax()
        rows.append((
            "The simplified objective does as well as the full methods",
            f"best over λ, kNN accuracy {best_s:.3f} (λ = {sweep.knn_accuracy.idxmax():g}) "
            f"against {best_full:.3f} ({method_label(winner)}); linear R² "
            f"{sweep.r2_linear.max():.3f} (λ = {sweep.r2_linear.idxmax():g}) against "
            f"{full.r2_linear.max():.3f} ({method_label(full.r2_linear.idxmax())})",
            "supported" if gap <= 0.02 else "not supported",
        ))
    if "raw x" in means.index and len(sweep):
        raw = means.loc["raw x", "knn_accuracy"]
        rows.append((
            "The simplified objective learns beyond the raw observations",
            f"best kNN accuracy {sweep.knn_accuracy.max():.3f} against {raw:.3f} on raw x",
            "supported" if sweep.knn_accuracy.max() > raw else "not supported",
        ))
    return pd.DataFrame(rows, columns=["claim", "measured", "verdict"])
