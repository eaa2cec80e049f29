r"""SITh direction 2: finite samples, batch size and data diversity, for InfoNCE on the sphere.

The identifiability theorem of Zimmermann et al. (2021) is a statement about the population
loss with infinitely many negatives. Here each factor that the theorem idealises is made finite
in turn, one at a time around a base setting, and the held-out linear :math:`R^2` of z from
:math:`h = f(x)` is measured (on fresh latents from the anchors' distribution):

- dataset size N: anchors come from a fixed set :math:`\{z_1, \dots, z_N\}` drawn once per
  seed (``dataset="anchors"``: positives :math:`\tilde z \sim \mathrm{vMF}(z_i, \kappa)` stay
  fresh, like augmentations of a fixed image set; ``dataset="pairs"``: N pairs drawn once,
  nothing fresh). N = 0 means fresh anchors at every step (the theorem's setting);
- batch size B: the number of negatives is B - 1;
- concentration :math:`\kappa` of the positive conditional (matched temperature
  :math:`\tau = 1/\kappa`): how much the two views differ;
- diversity of the anchors: :math:`|C|` clusters, :math:`z \sim \mathrm{vMF}(v_c, \kappa_C)`
  with c uniform (:class:`sithlib.dgp.ClusterInstance`), instead of the uniform marginal that
  the theorem assumes. :math:`|C| = 0` means uniform.

Every cell trains ``seeds`` encoders at once (the engine's vmapped ensemble); seed s draws its
own dataset, so the spread over seeds includes the draw of the data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import torch

from sithlib.dgp import DGP, ClusterInstance, DGPConfig, Sphere, sample_marginal, sample_vmf
from sithlib.experiments._figures import label_first_column, panel_grid
from sithlib.experiments._tables import mean_sd
from sithlib.losses import info_nce
from sithlib.metrics import r2_linear
from sithlib.models.mlp import MLP
from sithlib.models.views import both_views
from sithlib.train import TrainConfig, train

NAME = "finite_samples"
VERSION = 1
TITLE = "Direction 2: finite samples, batch size and data diversity"
CHAPTER = "chapters/04_directions/02_finite_samples"

DATASETS = ("anchors", "pairs")
#: The engine seeds the data stream of seed s with this offset plus s (sithlib.train).
_DATA_SEED_OFFSET = 10_000


@dataclass(frozen=True)
class Config:
    """One-factor sweeps (the tuples) around a base point (the ``base_*`` fields)."""

    n_samples: tuple[int, ...] = (1000, 10_000, 0)
    batch_sizes: tuple[int, ...] = (64, 256, 1024)
    kappas: tuple[float, ...] = (2.0, 10.0, 50.0)
    n_clusters: tuple[int, ...] = (1, 10, 0)
    base_n: int = 0
    base_batch: int = 256
    base_kappa: float = 10.0
    base_clusters: int = 0
    dataset: str = "anchors"
    cluster_kappa: float = 10.0
    dim: int = 10
    hidden: tuple[int, ...] = (128, 128)
    steps: int = 1000
    lr: float = 1e-3
    seeds: int = 2
    eval_every: int = 250
    n_eval: int = 2000
    dgp_seed: int = 0

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        for name in ("n_samples", "n_clusters"):
            if any(v < 0 for v in getattr(self, name)):
                raise ValueError(f"{name} must hold ints >= 0 (0: fresh / uniform)")
        if any(b < 2 for b in self.batch_sizes) or self.base_batch < 2:
            raise ValueError("batch sizes must be >= 2 (InfoNCE needs a negative)")
        if any(k <= 0 for k in self.kappas) or self.base_kappa <= 0:
            raise ValueError("kappas must be > 0 (tau = 1 / kappa)")


PROFILES = {
    "quick": Config(),
    # The ranges: N from 1e3 to 1e5 and fresh, batch 64 to 6144 (cl-ica's), kappa over
    # two decades and clusters over three; a 256-wide, 3-layer encoder, 3 seeds.
    "paper": Config(n_samples=(1000, 3000, 10_000, 30_000, 100_000, 0),
                    batch_sizes=(64, 256, 1024, 6144), kappas=(1.0, 3.0, 10.0, 30.0, 100.0),
                    n_clusters=(1, 3, 10, 100, 1000, 0), base_batch=1024,
                    hidden=(256, 256, 256), steps=10_000, lr=1e-3, seeds=3, eval_every=1000,
                    n_eval=10_000),
}


def cells(cfg: Config) -> list[dict]:
    """The union of the four one-factor sweeps, each point once, in a fixed order."""
    shared = {k: v for k, v in dataclasses.asdict(cfg).items()
              if k not in ("n_samples", "batch_sizes", "kappas", "n_clusters")
              and not k.startswith("base_")}
    base = {"n": cfg.base_n, "batch_size": cfg.base_batch, "kappa": float(cfg.base_kappa),
            "clusters": cfg.base_clusters}
    out, seen = [], set()
    for key, values in (("n", cfg.n_samples), ("batch_size", cfg.batch_sizes),
                        ("kappa", cfg.kappas), ("clusters", cfg.n_clusters)):
        for v in values:
            point = {**base, key: float(v) if key == "kappa" else int(v)}
            ident = tuple(sorted(point.items()))
            if ident not in seen:
                seen.add(ident)
                out.append({**shared, **point})
    return out


class _Source:
    """Anchor latents (uniform or clustered) and, for N > 0, the per-seed finite datasets."""

    def __init__(self, cell: dict, device: str):
        self.cell, self.device = cell, device
        self.space = Sphere(cell["dim"])
        self.clusters = None
        if cell["clusters"]:
            gen = torch.Generator().manual_seed(cell["dgp_seed"] * 7919 + 1)
            vectors = sample_marginal(self.space, "uniform", cell["clusters"], generator=gen,
                                      dtype=torch.float64)
            self.clusters = ClusterInstance(vectors.to(device), cell["clusters"],
                                            kappa=cell["cluster_kappa"])
        self.datasets: dict[int, tuple[torch.Tensor, ...]] = {}

    def anchors(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n fresh anchors from the population (uniform, or the cluster mixture)."""
        if self.clusters is None:
            return sample_marginal(self.space, "uniform", n, generator=generator,
                                   device=self.device)
        index = torch.randint(0, self.clusters.n_instances, (n,), generator=generator,
                              device=self.device)
        return self.clusters.sample(index, generator=generator)

    def pairs(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n latent pairs for training: fresh, or from the finite dataset of this seed."""
        cell = self.cell
        if not cell["n"]:
            z = self.anchors(n, generator)
            return z, sample_vmf(z, cell["kappa"], generator=generator)
        data = self._dataset(generator.initial_seed())
        index = torch.randint(0, cell["n"], (n,), generator=generator, device=self.device)
        z = data[0][index]
        if cell["dataset"] == "pairs":
            return z, data[1][index]
        return z, sample_vmf(z, cell["kappa"], generator=generator)

    def _dataset(self, stream: int) -> tuple[torch.Tensor, ...]:
        # One dataset per seed: the engine seeds seed s's stream with offset + s.
        if stream not in self.datasets:
            seed = stream - _DATA_SEED_OFFSET
            gen = torch.Generator(device=self.device).manual_seed(
                1_000_003 * (self.cell["dgp_seed"] + 1) + seed)
            z = self.anchors(self.cell["n"], gen)
            self.datasets[stream] = (z, sample_vmf(z, self.cell["kappa"], generator=gen))
        return self.datasets[stream]


def run_cell(cell: dict, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train ``seeds`` InfoNCE encoders on one grid point; held-out and training-set R^2."""
    dgp = DGP(DGPConfig(dim=cell["dim"], kappa=cell["kappa"], seed=cell["dgp_seed"]),
              device=device)
    g = dgp.mixing
    source = _Source(cell, device)
    held_out = source.anchors(cell["n_eval"],
                              torch.Generator(device=device).manual_seed(2**31 - 1))
    uniform = sample_marginal(source.space, "uniform", cell["n_eval"],
                              generator=torch.Generator(device=device).manual_seed(2**31 - 2),
                              device=device)
    x_held_out, x_uniform = g(held_out), g(uniform)

    def make_model(seed: int):
        gen = torch.Generator().manual_seed(seed)
        return MLP([cell["dim"], *cell["hidden"], cell["dim"]], output_norm="sphere",
                   generator=gen)

    def sample(generator, n):
        z, z_pos = source.pairs(n, generator)
        return g(z), g(z_pos)

    def loss_fn(f, batch):
        h, h_pos = both_views(f, *batch)
        return info_nce(h, h_pos, temperature=1.0 / cell["kappa"], distributed=True), h

    def evaluate(f, seed):
        return {"r2_linear": r2_linear(f(x_held_out), held_out)}

    result = train(make_model, sample, loss_fn,
                   TrainConfig(steps=cell["steps"], batch_size=cell["batch_size"], lr=cell["lr"],
                               seeds=cell["seeds"], eval_every=cell["eval_every"]),
                   device=device, evaluate=evaluate, name=NAME,
                   data_seed_offset=_DATA_SEED_OFFSET)
    keys = {"n": cell["n"], "batch_size": cell["batch_size"], "kappa": cell["kappa"],
            "clusters": cell["clusters"], "dataset": cell["dataset"]}
    rows = []
    with torch.no_grad():
        for seed, f in result.finished():
            f.eval()
            values = {"r2_linear": r2_linear(f(x_held_out), held_out),
                      "r2_uniform": r2_linear(f(x_uniform), uniform)}
            if cell["n"]:
                z_train = source._dataset(_DATA_SEED_OFFSET + seed)[0][: cell["n_eval"]]
                values["r2_train"] = r2_linear(f(g(z_train)), z_train)
            rows += [{**keys, "seed": seed, "metric": k, "value": v} for k, v in values.items()]
    for failure in result.failures:
        rows.append({**keys, "seed": failure["seed"], "metric": "failure_step",
                     "value": float(failure["step"]), "failure": failure["kind"]})
    return {"metrics": pd.DataFrame(rows), "curves": pd.DataFrame(result.curves).assign(**keys)}


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    from sithlib.results import run_grid  # results imports experiments: import late

    return run_grid(NAME, cells(cfg), lambda cell: run_cell(cell, device))


# ----------------------------------------------------------------------------- figures, tables

_FACTORS = {
    "n": ("n_samples", "dataset size N (fresh: right)"),
    "batch_size": ("batch_sizes", "batch size B"),
    "kappa": ("kappas", r"concentration $\kappa$ ($\tau = 1/\kappa$)"),
    "clusters": ("n_clusters", "number of clusters |C| (uniform: right)"),
}


def sweep(metrics: pd.DataFrame, factor: str, config: dict) -> pd.DataFrame:
    """The rows of one one-factor sweep: the other factors at their base values."""
    if factor not in _FACTORS:
        raise ValueError(f"factor must be one of {list(_FACTORS)}, got {factor!r}")
    base = {"n": config["base_n"], "batch_size": config["base_batch"],
            "kappa": config["base_kappa"], "clusters": config["base_clusters"]}
    mask = pd.Series(True, index=metrics.index)
    for key, value in base.items():
        if key != factor:
            mask &= metrics[key] == value
    return metrics[mask & metrics[factor].isin(config[_FACTORS[factor][0]])]


def _positions(values: pd.Series) -> tuple[pd.Series, list, list]:
    """Log-spaced x positions; 0 (fresh / uniform) is placed one decade right of the largest."""
    finite = sorted(v for v in values.unique() if v > 0)
    top = max(finite) * 10 if finite else 1.0
    x = values.where(values > 0, top).astype(float)
    ticks = finite + ([top] if (values == 0).any() else [])
    labels = [f"{v:g}" for v in finite] + (["∞"] if (values == 0).any() else [])
    return x, ticks, labels


#: Display names of the held-out scores: on the anchors' own distribution and on uniform z.
SCORES = {"r2_linear": "held-out R², anchors' distribution",
          "r2_uniform": "held-out R², uniform z"}


def plot_sweeps(metrics: pd.DataFrame, config: dict, metric=("r2_linear", "r2_uniform"),
                axes=None):
    """Held-out R^2 against each factor: one panel per factor, a point per seed, mean ± sd.

    ``metric`` is one score or several (default: on the anchors' distribution and on uniform
    latents; the two differ only on the clustered points), drawn side by side."""

    names = (metric,) if isinstance(metric, str) else tuple(metric)
    if axes is None:  # two a row: four in one row shrink to unreadable text at page width
        axes = panel_grid(len(_FACTORS), 2, 4.5, 3.05, sharey=True)
    handles = {}
    for ax, factor in zip(axes, _FACTORS, strict=True):
        any_data = False
        for i, name in enumerate(names):
            part = sweep(metrics[metrics.metric == name], factor, config)
            if part.empty:
                continue
            any_data = True
            x, ticks, labels = _positions(part[factor])
            shift = 10 ** (0.05 * (i - (len(names) - 1) / 2))  # side by side on the log axis
            part = part.assign(x=x * shift)
            color = f"C{i}"
            seeds = ax.plot(part.x, part.value, "o", color=color, mfc="white", ms=4, mew=1,
                            alpha=0.9)[0]
            stats = part.groupby("x").value.agg(["mean", "std"]).fillna(0.0)
            mean = ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="s",
                               ms=5, capsize=3, color=color)
            handles[f"{SCORES.get(name, name)}: mean ± sd"] = mean
            handles[f"{SCORES.get(name, name)}: seeds"] = seeds
            ax.set_xscale("log")
            ax.set_xticks(ticks, labels)
            ax.minorticks_off()
        ax.set_visible(any_data)
        ax.set(xlabel=_FACTORS[factor][1])
    label_first_column(axes, "held-out linear $R^2$")
    fig = axes[0].figure
    order = sorted(handles, key=lambda k: (k.endswith("seeds"), k))
    fig.legend([handles[k] for k in order], order, loc="lower center", ncol=2, fontsize=10,
               frameon=False, bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return axes


def plot_generalization(metrics: pd.DataFrame, config: dict, ax=None):
    """Along the N sweep: R^2 on the training anchors vs on held-out anchors (gap = overfit)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.4))
    part = sweep(metrics[metrics.metric.isin(["r2_linear", "r2_train"])], "n", config)
    part = part[part.n > 0]
    names = {"r2_linear": "held-out anchors", "r2_train": "training anchors"}
    sns.lineplot(data=part.assign(on=part.metric.map(names)), x="n", y="value", hue="on",
                 marker="o", markersize=6, errorbar="sd", ax=ax)
    ax.set(xscale="log", xlabel="dataset size N", ylabel="linear $R^2$")
    # A tick at each N that was run (a profile may run only a few), not at the decades.
    sizes = sorted(part.n.unique())
    ax.set_xticks(sizes, [f"{int(n):,}" for n in sizes])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.legend(title=None)
    return ax


#: The factors as the chapter writes them.
_SYMBOLS = {"n": "dataset size N", "batch_size": "batch size B", "kappa": "concentration κ",
            "clusters": "clusters |C|"}


def breakdown_table(metrics: pd.DataFrame, config: dict, threshold: float = 0.9) -> pd.DataFrame:
    """Per factor and value: held-out R^2 'mean ± sd' on the anchors' distribution and on
    uniform latents (they differ only with clusters, where only the uniform one compares with
    the other rows), and whether the first is below ``threshold``."""
    rows = []
    scored = metrics[metrics.metric.isin(list(SCORES))]
    for factor in _FACTORS:
        part = sweep(scored, factor, config)
        groups = sorted(part.groupby(factor), key=lambda kv: (kv[0] == 0, kv[0]))
        for value, group in groups:
            row = {"factor": _SYMBOLS[factor],
                   "value": "∞ (fresh)" if value == 0 and factor == "n" else
                   "uniform" if value == 0 and factor == "clusters" else f"{value:g}"}
            for name, label in SCORES.items():
                v = group[group.metric == name].value
                row[label] = mean_sd(v.mean(), v.std()) if len(v) else "–"
            mean = group[group.metric == "r2_linear"].value.mean()
            row[f"below {threshold:g}"] = "yes" if mean < threshold else "no"
            row["seeds"] = group.seed.nunique()
            rows.append(row)
    return pd.DataFrame(rows).set_index(["factor", "value"]).rename_axis(index=[None, None])
