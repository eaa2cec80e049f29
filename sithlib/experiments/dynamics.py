r"""SITh direction 1: training dynamics, for InfoNCE and non-contrastive methods.

Data as in the InfoNCE chapter: latents :math:`z \sim \mathcal{U}(\mathbb{S}^{n-1})`, positives
:math:`\tilde z \sim \mathrm{vMF}(z, \kappa)`, observations :math:`x = g(z)` through the
invertible leaky-ReLU mixing. Every method trains the same MLP encoder f (through
:func:`sithlib.methods.build_method`, with small heads); the representation is the encoder
output :math:`h = f(x)` (on the sphere for InfoNCE, whose theory needs it there).

Every ``eval_every`` steps, on held-out pairs, the engine's evaluate hook records: the linear
:math:`R^2` of z from h (overall and per latent :math:`z_j`), MCC, the effective rank (RankMe
of the centred h) and the sorted eigenvalues :math:`\lambda_1 \ge \dots \ge \lambda_d` of
the covariance of h. Stepwise learning (Simon et al., 2023, "On the Stepwise Nature of
Self-Supervised Learning") would show as eigenvalues that rise one after the other. The
stored ``eig_onset`` and ``latent_onset`` metrics (:func:`rise_onsets`) mark, per direction,
the first step at which a quantity has covered half of its change from the initial to the
final value; a threshold at half the final value would fire at the first evaluation for
quantities (such as per-latent R^2) that start well above zero.

Sweep: one cell per (method, init_scale, seed), run by :func:`sithlib.results.run_grid`, so
adding a method or seeds reruns nothing that is finished.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from sithlib.dgp import DGP, DGPConfig
from sithlib.experiments._tables import of_values
from sithlib.methods import build_method, method_label
from sithlib.metrics import effective_rank, mcc, r2_linear
from sithlib.models.mlp import MLP
from sithlib.train import TrainConfig, train

NAME = "dynamics"
VERSION = 4  # 2: curves start at step 0; 3: onsets half-way from initial to final; 4: BYOL heads
TITLE = "Direction 1: training dynamics"
CHAPTER = "chapters/04_directions/01_dynamics"

RAW = "raw x (no encoder)"
#: Methods this experiment can build with small heads (the official heads are 2048-8192 wide).
METHODS = ("infonce", "simclr", "vicreg", "barlow_twins", "byol", "simsiam")


@dataclass(frozen=True)
class Config:
    """The grid (``methods``, ``init_scales``, ``seeds``) and the settings every cell shares."""
    # Intervals for --set values beyond the sign rule of results.field_domain.
    DOMAINS: ClassVar[dict[str, str]] = {"byol_tau0": "[0, 1]", "r2_targets": "(0, 1]"}

    methods: tuple[str, ...] = ("infonce", "vicreg", "barlow_twins", "byol")
    init_scales: tuple[float, ...] = (1.0,)
    dim: int = 10
    kappa: float = 10.0
    hidden: tuple[int, ...] = (128, 128)
    head_dims: tuple[int, ...] = (64, 64)  # projector / predictor widths of the SSL heads
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    byol_tau0: float = 0.99  # BYOL's base EMA for short runs (0.996 is for 1000 epochs)
    seeds: int = 2
    eval_every: int = 50
    n_eval: int = 2000
    r2_targets: tuple[float, ...] = (0.7, 0.8, 0.9)
    dgp_seed: int = 0

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"methods must be among {', '.join(METHODS)}, got {unknown[0]!r}")


PROFILES = {
    "quick": Config(),
    # cl-ica's encoder widths (Zimmermann et al. 2021), heads 512 wide, a small initial scale too;
    # 30 sequential runs of 5000 steps fit the 8-minute budget (see the chapter).
    "paper": Config(methods=("infonce", "vicreg", "barlow_twins", "byol", "simsiam"),
                    init_scales=(1.0, 0.1), hidden=(100, 500, 500, 500, 500, 100),
                    head_dims=(512, 512), steps=5000, batch_size=2048, lr=1e-3, seeds=3,
                    eval_every=100, n_eval=10_000),
}


def method_config(method: str, cell: dict) -> dict:
    """The method's config for a cell: small heads, temperature matched to kappa."""
    heads = list(cell["head_dims"])
    wide, out = heads[0], heads[-1]
    configs = {
        "infonce": {"temperature": 1.0 / cell["kappa"]},
        "simclr": {"temperature": 1.0 / cell["kappa"], "proj_hidden_dim": wide, "proj_dim": out},
        "vicreg": {"proj_dims": tuple(heads)},
        "barlow_twins": {"proj_dims": tuple(heads)},
        "byol": {"proj_hidden_dim": wide, "proj_dim": out, "pred_hidden_dim": wide,
                 "tau0": cell["byol_tau0"]},
        "simsiam": {"proj_hidden_dim": wide, "proj_dim": out, "pred_hidden_dim": wide},
    }
    if method not in configs:
        raise ValueError(f"methods must be among {', '.join(METHODS)}, got {method!r}")
    return configs[method]


def _keep_output(module, inputs, output):
    # The engine watches the encoder output for collapse; keep it instead of a second forward.
    module.last_output = output


def _spectrum(h: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the covariance of h, largest first (float64)."""
    h = h.double() - h.double().mean(0)
    return torch.linalg.eigvalsh(h.T @ h / (h.shape[0] - 1)).flip(0).clamp_min(0.0)


def scores(h: torch.Tensor, z: torch.Tensor) -> dict[str, float]:
    """Held-out linear R^2 (overall and per latent), MCC, effective rank and the spectrum."""
    per_latent = r2_linear(h, z, multioutput="raw_values")
    out = {"r2_linear": float(per_latent.mean()), "mcc": mcc(h, z),
           "effective_rank": effective_rank(h, center=True)}
    out.update({f"r2_z{j}": float(v) for j, v in enumerate(per_latent.tolist())})
    out.update({f"eig_{k}": float(v) for k, v in enumerate(_spectrum(h).tolist())})
    return out


def run_cell(cell: dict, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train one method from one seed and one init scale; curves and final scores."""
    method, seed, scale = cell["method"], cell["seed"], cell["init_scale"]
    dgp = DGP(DGPConfig(dim=cell["dim"], kappa=cell["kappa"], seed=cell["dgp_seed"]),
              device=device)
    test = dgp.sample_pairs(cell["n_eval"], torch.Generator(device=device).manual_seed(2**31 - 1))
    config = method_config(method, cell)

    def make_model(s: int):
        gen = torch.Generator().manual_seed(s)
        encoder = MLP([cell["dim"], *cell["hidden"], cell["dim"]],
                      output_norm="sphere" if method == "infonce" else None, generator=gen)
        with torch.no_grad():
            for p in encoder.parameters():
                p.mul_(scale)
        encoder.register_forward_hook(_keep_output)
        return build_method(method, encoder, config, generator=gen)

    def sample(generator, n):
        pairs = dgp.sample_pairs(n, generator)
        return pairs.x, pairs.x_pos

    def loss_fn(model, batch):
        loss, logs = model(*batch)
        return loss, model.encoder.last_output, logs

    def evaluate(model, s):
        return scores(model.embed(test.x), test.z)

    result = train(make_model, sample, loss_fn,
                   TrainConfig(steps=cell["steps"], batch_size=cell["batch_size"], lr=cell["lr"],
                               seeds=1, first_seed=seed, eval_every=cell["eval_every"],
                               eval_at_start=True),
                   device=device, evaluate=evaluate, name=f"{NAME}-{method}")
    keys = {"method": method, "init_scale": scale, "seed": seed}
    curves = pd.DataFrame(result.curves).assign(**keys)
    rows = []
    if curves.empty:  # every eval step after a failure is skipped: report the failure only
        final = {}
    else:
        final = curves.iloc[-1]
        for metric in ("r2_linear", "mcc", "effective_rank", "loss"):
            rows.append({**keys, "metric": metric, "value": float(final[metric]), "index": -1})
        per_latent = [c for c in curves.columns if c.startswith("r2_z")]
        rows += [{**keys, "metric": "r2_latent", "value": float(final[c]), "index": int(c[4:])}
                 for c in per_latent]
    for failure in result.failures:
        rows.append({**keys, "metric": "failure_step", "value": float(failure["step"]),
                     "index": -1, "failure": failure["kind"]})
    return {"metrics": pd.DataFrame(rows), "curves": curves}


def cells(cfg: Config) -> list[dict]:
    """One JSON-serialisable dict per grid point, with every setting that fixes its numbers."""
    shared = dataclasses.asdict(cfg)
    for key in ("methods", "init_scales", "seeds", "r2_targets"):
        shared.pop(key)
    for method in cfg.methods:
        method_config(method, {**shared})  # fail before training anything
    return [{**shared, "method": m, "init_scale": float(s), "seed": seed}
            for m in cfg.methods for s in cfg.init_scales for seed in range(cfg.seeds)]


def time_to_target(curves: pd.DataFrame, targets) -> pd.DataFrame:
    """First eval step at which each run's held-out R^2 reaches each target (NaN if never)."""
    rows = []
    for (method, scale, seed), run in curves.groupby(["method", "init_scale", "seed"]):
        run = run.sort_values("step")
        for target in targets:
            hit = run.step[run.r2_linear >= target]
            rows.append({"method": method, "init_scale": scale, "seed": seed, "target": target,
                         "step": float(hit.iloc[0]) if len(hit) else math.nan})
    return pd.DataFrame(rows)


def rise_onsets(curves: pd.DataFrame, prefix: str = "eig_", min_rise: float = 0.1) -> pd.DataFrame:
    """Per run and direction: the first step at which a quantity has covered half of its change
    from its initial value (first evaluation) to its final value (last evaluation), i.e. crossed
    the midpoint ``(initial + final) / 2``, upwards if it rises and downwards if it falls.

    A direction whose change is smaller than ``min_rise`` times the largest change among the
    directions of the same run does not move: its onset is NaN and ``moves`` is False.
    Directions are numbered from 1 (eigenvalue rank k, latent j), as in the figures.
    """
    rows = []
    columns = [c for c in curves.columns if c.startswith(prefix)]
    for (method, scale, seed), run in curves.groupby(["method", "init_scale", "seed"]):
        run = run.sort_values("step")
        changes = {c: run[c].iloc[-1] - run[c].iloc[0] for c in columns}
        largest = max((abs(v) for v in changes.values()), default=0.0)
        for c in columns:
            first, change = run[c].iloc[0], changes[c]
            moves = largest > 0 and abs(change) >= min_rise * largest
            onset = math.nan
            if moves:
                midpoint = first + 0.5 * change
                crossed = run[c] >= midpoint if change > 0 else run[c] <= midpoint
                onset = float(run.step[crossed].iloc[0])
            rows.append({"method": method, "init_scale": scale, "seed": seed,
                         "direction": int(c[len(prefix):]) + 1, "initial": float(first),
                         "final": float(run[c].iloc[-1]), "moves": bool(moves),
                         "onset": onset})
    return pd.DataFrame(rows)


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    from sithlib.results import run_grid  # results imports experiments: import late

    tables = run_grid(NAME, cells(cfg), lambda cell: run_cell(cell, device))
    metrics, curves = tables["metrics"], tables["curves"]
    extra = []
    for row in time_to_target(curves, cfg.r2_targets).itertuples():
        keys = {"method": row.method, "init_scale": row.init_scale, "seed": row.seed,
                "index": -1, "target": row.target}
        extra.append({**keys, "metric": "reached_r2", "value": float(not math.isnan(row.step))})
        if not math.isnan(row.step):
            extra.append({**keys, "metric": "steps_to_r2", "value": row.step})
    for prefix, metric in (("eig_", "eig_onset"), ("r2_z", "latent_onset")):
        for row in rise_onsets(curves, prefix).itertuples():
            if math.isnan(row.onset):  # the direction stays put: it has no onset
                continue
            extra.append({"method": row.method, "init_scale": row.init_scale, "seed": row.seed,
                          "metric": metric, "value": row.onset, "index": row.direction})
    # Baseline: how much of z a linear map reads from the raw observations x = g(z).
    dgp = DGP(DGPConfig(dim=cfg.dim, kappa=cfg.kappa, seed=cfg.dgp_seed), device=device)
    test = dgp.sample_pairs(cfg.n_eval, torch.Generator(device=device).manual_seed(2**31 - 1))
    extra.append({"method": RAW, "init_scale": 1.0, "seed": 0, "metric": "r2_linear",
                  "value": r2_linear(test.x, test.z), "index": -1})
    metrics = pd.concat([metrics, pd.DataFrame(extra)], ignore_index=True)
    return {"metrics": metrics, "curves": curves}


# ----------------------------------------------------------------------------- figures, tables


def _label(frame: pd.DataFrame) -> pd.Series:
    """'Method' or 'Method (init x s)' when several init scales are present (display names)."""
    method = frame.method.map(method_label)
    if frame.init_scale.nunique() == 1:
        return method
    return method + " (init ×" + frame.init_scale.map("{:g}".format) + ")"


def plot_scores(curves: pd.DataFrame, metrics: pd.DataFrame | None = None, axes=None):
    """Held-out R^2, MCC and effective rank over steps: mean and sd band over seeds; dashed:
    the linear R^2 of the raw observations (from ``metrics``)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if axes is None:  # stacked: side by side, the text shrinks out of reach at page width
        _, axes = plt.subplots(3, 1, figsize=(7.2, 7.8), sharex=True)
    data = curves.assign(run=_label(curves))
    for ax, (col, label) in zip(axes, (("r2_linear", "held-out linear $R^2$"), ("mcc", "MCC"),
                                       ("effective_rank", "effective rank of $h$")), strict=True):
        sns.lineplot(data=data, x="step", y=col, hue="run", errorbar="sd", ax=ax,
                     legend=ax is axes[0])
        ax.set(xlabel="training step", ylabel=label)
    if metrics is not None and (metrics.method == RAW).any():
        raw = float(metrics[metrics.method == RAW].value.iloc[0])
        axes[0].axhline(raw, color="0.4", ls="--", lw=1)
        axes[0].annotate("raw x", (curves.step.max(), raw), ha="right", va="bottom", fontsize=9,
                         color="0.3")
    if axes[0].get_legend() is not None:
        sns.move_legend(axes[0], "upper left", bbox_to_anchor=(1.02, 1), title=None)
    axes[-1].figure.tight_layout()
    return axes


# Two panels a row: four in one row shrink to unreadable text at the book's page width.
PANELS_PER_ROW = 2


def plot_loss(curves: pd.DataFrame):
    """Training loss per method (own y-axis each: the losses have different scales)."""
    import seaborn as sns

    data = curves.assign(run=_label(curves))
    grid = sns.relplot(data=data, x="step", y="loss", col="run", kind="line", errorbar="sd",
                       col_wrap=min(PANELS_PER_ROW, data.run.nunique()), height=3.0, aspect=1.4,
                       facet_kws={"sharey": False})
    grid.set_titles("{col_name}")
    grid.set_axis_labels("training step", "training loss")
    return grid


def plot_spectrum(curves: pd.DataFrame, relative: bool = True):
    """Sorted eigenvalues of the covariance of h over steps, one panel per method.

    With ``relative`` each eigenvalue is divided by the trace at that step, so the panels
    compare shapes of the spectrum. The y-axis is logarithmic, so lines are geometric means
    over seeds and bands one geometric standard deviation (mean ± sd of the logarithm): an
    arithmetic band would reach zero, the bottom of the axis, wherever the seeds disagree by
    more than their mean. Zero eigenvalues (collapsed directions) count as the smallest
    positive value in the figure.
    """
    import numpy as np
    import seaborn as sns

    cols = sorted((c for c in curves.columns if c.startswith("eig_")), key=lambda c: int(c[4:]))
    data = curves.assign(run=_label(curves))
    long = data.melt(id_vars=["run", "seed", "step"], value_vars=cols, var_name="k",
                     value_name="eigenvalue")
    long["k"] = long.k.str[4:].astype(int) + 1
    if relative:
        total = long.groupby(["run", "seed", "step"]).eigenvalue.transform("sum")
        long["eigenvalue"] = long.eigenvalue / total
    positive = long.eigenvalue[long.eigenvalue > 0]
    floor = float(positive.min()) if len(positive) else 1e-12
    long = long.dropna(subset=["eigenvalue"]).assign(eigenvalue=lambda d: d.eigenvalue.clip(
        lower=floor))

    def geometric_mean(values):
        return float(np.exp(np.mean(np.log(values))))

    def geometric_sd_band(values):
        logs = np.log(values)
        sd = float(np.std(logs, ddof=1)) if len(logs) > 1 else 0.0
        return float(np.exp(logs.mean() - sd)), float(np.exp(logs.mean() + sd))

    grid = sns.relplot(data=long, x="step", y="eigenvalue", hue="k", col="run", kind="line",
                       estimator=geometric_mean, errorbar=geometric_sd_band, palette="viridis",
                       col_wrap=min(PANELS_PER_ROW, data.run.nunique()),
                       height=3.0, aspect=1.4, facet_kws={"sharey": False}, legend="full")
    grid.legend.set_title("rank $k$")
    grid.set(yscale="log")
    grid.set_titles("{col_name}")
    grid.set_axis_labels("training step", "eigenvalue / trace" if relative else "eigenvalue")
    return grid


def plot_latent_r2(curves: pd.DataFrame):
    """Held-out R^2 of each latent z_j (j from 1) over steps, one panel per method (sd band
    over seeds)."""
    import seaborn as sns

    cols = sorted((c for c in curves.columns if c.startswith("r2_z")), key=lambda c: int(c[4:]))
    data = curves.assign(run=_label(curves))
    long = data.melt(id_vars=["run", "seed", "step"], value_vars=cols, var_name="latent",
                     value_name="r2")
    long["latent"] = long.latent.str[4:].astype(int) + 1  # z_1, ..., z_n as in the chapter
    palette = "tab10" if len(cols) <= 10 else "viridis"
    grid = sns.relplot(data=long, x="step", y="r2", hue="latent", col="run", kind="line",
                       errorbar="sd", palette=palette,
                       col_wrap=min(PANELS_PER_ROW, data.run.nunique()),
                       height=3.0, aspect=1.4, legend="full")
    grid.legend.set_title("latent $j$")
    grid.set_titles("{col_name}")
    grid.set_axis_labels("training step", "held-out $R^2$ of $z_j$")
    return grid


def _mean_sd(values: pd.Series, digits: int = 0) -> str:
    if values.empty:
        return "not reached"
    return of_values(values, f"{{:.{digits}f}}")


def time_to_r2_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Steps to reach each R^2 target, 'mean ± sd (reached/seeds)' per method and target."""
    reached = metrics[metrics.metric == "reached_r2"].assign(run=lambda m: _label(m))
    steps = metrics[metrics.metric == "steps_to_r2"].assign(run=lambda m: _label(m))
    rows = {}
    for (run_name, target), group in reached.groupby(["run", "target"]):
        hit = steps[(steps.run == run_name) & (steps.target == target)].value
        rows.setdefault(run_name, {})[f"R² ≥ {target:g}"] = (
            f"{_mean_sd(hit)} ({int(group.value.sum())}/{len(group)})")
    return pd.DataFrame.from_dict(rows, orient="index")


def onset_table(metrics: pd.DataFrame, curves: pd.DataFrame, min_rise: float = 0.1
                ) -> pd.DataFrame:
    """How spread out in time the directions are learned, from the stored curves: per method,
    the steps between the first and the last onset (:func:`rise_onsets`: half-way from the
    initial to the final value) of the eigenvalues of cov(h) and of the per-latent R^2, mean ±
    sd over seeds; how many directions move (out of n, mean over seeds); and the final R^2."""
    table = {}
    for prefix, name, moving_name in (("eig_", "eigenvalue", "eigenvalues"),
                                      ("r2_z", "per-latent R²", "latents")):
        part = rise_onsets(curves, prefix, min_rise).assign(run=lambda d: _label(d))
        runs = part.groupby(["run", "seed"])
        spread = runs.onset.agg(lambda v: v.max() - v.min() if v.notna().any() else math.nan)
        moving = runs.moves.sum().groupby("run").mean()
        total = part.groupby(["run", "seed"]).size().groupby("run").max()
        table[f"{name} onsets: last − first"] = spread.groupby("run").agg(
            lambda v: _mean_sd(v.dropna()))
        table[f"{moving_name} that move"] = (moving.map("{:g}".format) + " of "
                                       + total.map("{:d}".format))
    data = metrics.assign(run=_label(metrics))
    final = data[(data.metric == "r2_linear") & (data.method != RAW)].groupby("run").value
    table["final R²"] = final.agg(lambda v: _mean_sd(v, 3))
    return pd.DataFrame(table).rename_axis(index=None)


def lowest_latent(metrics: pd.DataFrame) -> pd.Series:
    """Per method (display name): the latent j (from 1) with the lowest final R^2, mean over
    seeds."""
    data = metrics[metrics.metric == "r2_latent"].assign(run=lambda d: _label(d))
    mean = data.groupby(["run", "index"]).value.mean()
    return mean.groupby("run").idxmin().map(lambda key: int(key[1]) + 1)
