r"""SITh chapter: do SSL methods converge to the same representation on an identifiable DGP?

The Platonic Representation Hypothesis (Huh et al. 2024) says representations of different
models converge; the SITh position paper (Reizinger et al. 2025) argues that identifiability
explains why. If two methods both satisfy :math:`f_A \circ g = O_A` and
:math:`f_B \circ g = O_B` with orthogonal :math:`O_A, O_B`, then
:math:`f_B = O_B O_A^\top f_A`: inner products, and hence every kNN set, agree exactly, so the
mutual-kNN alignment is 1. Identification only up to general invertible linear maps leaves the
inner products free and the alignment can be lower.

One DGP for every method: a finite dataset of N latents :math:`z_i \sim U(S^{n-1})`, positives
:math:`\tilde z \sim \mathrm{vMF}(z_i, \kappa)` drawn afresh at every step (the augmentation),
observations through the invertible leaky-ReLU mixing :math:`x = g(z)` of ``infonce_sphere``.
Every method trains the same MLP encoder family (output dimension n) on the same data stream,
with the same initialisation per seed; only the objective and its heads differ. DIET sees the
positive view with its anchor's index i, so that :math:`p(\tilde z \mid i) =
\mathrm{vMF}(z_i, \kappa)` is the cluster model of Reizinger et al. (2024) with one cluster
per instance. Scores are measured on the encoder output (the representation, before any
projector) on held-out inputs :math:`x = g(z)` with fresh :math:`z \sim U(S^{n-1})`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch
import torch.nn.functional as F

from sithlib.dgp import DGP, DGPConfig
from sithlib.experiments._figures import legend_below
from sithlib.experiments._tables import of_agg, readable
from sithlib.methods import METHODS as REGISTRY
from sithlib.methods import build_method, method_label
from sithlib.metrics import (
    cka_linear,
    effective_rank,
    mcc,
    orthogonality_score,
    procrustes_r2,
    r2_linear,
    r2_nonlinear,
)
from sithlib.metrics.similarity import _sorted_neighbours
from sithlib.models.mlp import MLP
from sithlib.train import TrainConfig, train

NAME = "platonic"
# 2: BYOL heads end in a bias-free Linear (official); 3: kNN ties to the lower index;
# 4: repeated rows tie exactly
VERSION = 4
TITLE = "The Platonic convergence on an identifiable DGP"
CHAPTER = "chapters/01_sith/05_platonic"

METHODS = ("infonce", "diet", "vicreg", "barlow_twins", "byol", "simsiam", "swav", "dino")
# Reference representations compared with every trained encoder.
REFERENCES = ("latent z", "raw x")


def allowed_methods() -> tuple[str, ...]:
    """Every method ``build_method`` knows, a reader's registered ones included, except those
    that need class labels (the DGP has none)."""
    return tuple(m for m, cls in REGISTRY.items() if cls.needs != "y")


# Display name of a method (its class's label) or of a reference (as it is).
label = method_label


def _ordered(models, references=()) -> list[str]:
    """The methods in ``models``: the chapter's eight in their order, then any others as they
    come, then the ``references``."""
    models = list(dict.fromkeys(models))
    return ([m for m in METHODS if m in models]
            + [m for m in models if m not in METHODS and m not in REFERENCES]
            + [r for r in references if r in models])
SCORES = ("r2_linear", "r2_nonlinear", "mcc", "procrustes_r2", "orthogonality", "effective_rank",
          "knn_to_z")


@dataclass(frozen=True)
class Config:
    """Settings of one run: the DGP, the methods and their heads, training and evaluation."""
    # Intervals for --set values beyond the sign rule of results.field_domain.
    DOMAINS: ClassVar[dict[str, str]] = {"ema_tau0": "[0, 1]"}

    dim: int = 10
    kappa: float = 10.0
    mixing_layers: int = 3
    n_samples: int = 1000  # training anchors (DIET instances); Reizinger et al. Table 2: 10^3
    methods: tuple[str, ...] = METHODS
    hidden: tuple[int, ...] = (64, 64, 64)
    head_width: int = 64
    proj_dim: int = 32
    prototypes: int = 100  # SwAV prototypes
    dino_out_dim: int = 256
    ema_tau0: float = 0.99  # base momentum of the official BYOL code's 100-epoch preset
    steps: int = 1500
    batch_size: int = 256
    lr: float = 3e-3
    # Per-method learning rates "method:lr"; DIET's one-row-per-instance head learns slowly.
    lrs: tuple[str, ...] = ("diet:1e-2",)
    seeds: int = 2
    eval_every: int = 500
    n_eval: int = 2000
    n_nonlinear: int = 1000  # held-out samples for the kernel-ridge R^2 (half train, half test)
    knn_k: int = 10  # Huh et al. (2024)
    checkpoint_every: int = 0
    dgp_seed: int = 0


PROFILES = {
    "quick": Config(),
    # Wider encoder and heads, larger batch, 4x the steps and 3 seeds (sized for ~7 min on one
    # H100; the small steps are launch-bound there, see the chapter).
    "paper": Config(hidden=(256, 256, 256), head_width=512, proj_dim=128, prototypes=300,
                    dino_out_dim=4096, steps=6000, batch_size=1024, seeds=3, eval_every=600,
                    n_eval=5000, n_nonlinear=3000, checkpoint_every=2000),
}


def method_lrs(cfg: Config) -> dict[str, float]:
    """The learning rate of every method: ``cfg.lr`` unless ``cfg.lrs`` names the method."""
    out = {m: cfg.lr for m in cfg.methods}
    allowed = allowed_methods()
    for item in cfg.lrs:
        name, sep, value = str(item).partition(":")
        if not sep or name not in allowed:
            raise ValueError(f"lrs entries must be 'method:lr' with method in {allowed}, "
                             f"got {item!r}")
        if float(value) <= 0:
            raise ValueError(f"learning rate of {name} must be > 0, got {value}")
        if name in out:
            out[name] = float(value)
    return out


def method_config(cfg: Config, name: str) -> dict:
    """Heads sized for a 10-dimensional vector DGP; losses keep their papers' defaults.

    Any other allowed method (SimCLR, the stability objective, a registered one) gets its
    config's defaults."""
    w, p = cfg.head_width, cfg.proj_dim
    configs = {
        "infonce": {"temperature": 1.0 / cfg.kappa},  # matched to the vMF conditional
        "diet": {"num_instances": cfg.n_samples},
        "vicreg": {"proj_dims": (w, w, w)},
        "barlow_twins": {"proj_dims": (w, w, w)},
        "byol": {"proj_hidden_dim": w, "proj_dim": p, "pred_hidden_dim": w,
                 "tau0": cfg.ema_tau0},
        # Two projector layers as in the paper's CIFAR recipe.
        "simsiam": {"proj_hidden_dim": w, "proj_dim": p, "proj_layers": 2, "pred_hidden_dim": p},
        "swav": {"proj_hidden_dim": w, "proj_dim": p, "num_prototypes": cfg.prototypes,
                 "freeze_prototypes_steps": max(1, cfg.steps // 15)},
        "dino": {"out_dim": cfg.dino_out_dim, "hidden_dim": w, "bottleneck_dim": p,
                 "tau0": cfg.ema_tau0},
    }
    if name not in allowed_methods():
        raise ValueError(f"method must be one of {allowed_methods()}, got {name!r}")
    return configs.get(name, {})


def check(cfg: Config) -> None:
    """The methods must be registered when the run starts (``resolve_config`` calls this
    before any work), so a reader's own ones are not checked when ``Config`` is built."""
    allowed = allowed_methods()
    unknown = [m for m in cfg.methods if m not in allowed]
    if unknown or not cfg.methods or len(set(cfg.methods)) < len(cfg.methods):
        raise ValueError(f"methods must be distinct names from {allowed}, got {cfg.methods} "
                         "(add your own with sithlib.methods.register_method, from the "
                         "command line with --import FILE)")
    if cfg.n_nonlinear > cfg.n_eval or cfg.knn_k >= cfg.n_eval:
        raise ValueError("n_nonlinear must be <= n_eval and knn_k < n_eval")


def _scores(h: torch.Tensor, z: torch.Tensor, cfg: Config) -> dict[str, float]:
    n = cfg.n_nonlinear
    return {
        "r2_linear": r2_linear(h, z),
        "r2_nonlinear": r2_nonlinear(h[:n], z[:n], method="kernel_ridge"),
        "mcc": mcc(h, z),
        "procrustes_r2": procrustes_r2(h, z),
        "orthogonality": orthogonality_score(h, z),
        "effective_rank": effective_rank(h, center=True),
    }


def neighbours(h: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (n, k) of each row's k nearest cosine neighbours, self excluded.

    The neighbourhoods of ``sithlib.metrics.mutual_knn`` (L2-normalised rows, no clamping),
    computed once per representation so that all pairs of models reuse them.
    """
    # One block of all rows; ties (a collapsed method's identical rows) go to the lower index,
    # on the CPU and on a GPU alike.
    return _sorted_neighbours(F.normalize(h, dim=1), k, batch_size=h.shape[0])


def knn_overlap(knn_a: torch.Tensor, knn_b: torch.Tensor) -> float:
    r"""Mutual kNN alignment from two neighbour index sets (rows of ``neighbours``).

    :math:`\frac{1}{n} \sum_i |N_A(i) \cap N_B(i)| / k`, as in Huh et al. (2024).
    """
    n, k = knn_a.shape
    member = torch.zeros(n, n, dtype=torch.bool, device=knn_a.device)
    member.scatter_(1, knn_a, True)
    return float(member.gather(1, knn_b).sum()) / (n * k)


def _train_method(name: str, cfg: Config, dgp: DGP, test, lr: float, device: str):
    from sithlib.results import checkpoint_for  # results imports experiments: import late

    def make_model(seed: int):
        gen = torch.Generator().manual_seed(seed)  # same encoder init for every method
        # InfoNCE's model class in the theorem maps onto the sphere (cl-ica's fixed_sphere).
        encoder = MLP([cfg.dim, *cfg.hidden, cfg.dim], generator=gen,
                      output_norm="sphere" if name == "infonce" else None)
        return build_method(name, encoder, method_config(cfg, name), generator=gen)

    def sample(generator, n):
        index = dgp.sample_index(n, generator)
        pairs = dgp.sample_pairs(index=index, generator=generator)
        return pairs.x, pairs.x_pos, index

    def loss_fn(method, batch):
        x, x_pos, index = batch
        if name == "diet":  # one view: the fresh vMF draw around instance i's latent
            loss, logs = method(x_pos, None, index=index)
        else:
            loss, logs = method(x, x_pos, index=index)
        # A slice is enough to watch the representation's spread for collapse.
        return loss, method.embed(x[:64]), {"center_norm": logs["center_norm"]}

    def evaluate(method, seed):
        return {"r2_linear": r2_linear(method.embed(test.x), test.z)}

    checkpoint = (checkpoint_for(NAME, cfg, part=name) if cfg.checkpoint_every else None)
    result = train(make_model, sample, loss_fn,
                   TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=lr,
                               seeds=cfg.seeds, eval_every=cfg.eval_every,
                               checkpoint_every=cfg.checkpoint_every),
                   device=device, evaluate=evaluate, checkpoint=checkpoint, name=f"{NAME}:{name}")
    if checkpoint is not None:  # deleted once the result is written (run_experiment)
        checkpoint.clear()
    return result


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train every method on the DGP, score its encoder output and compare all pairs."""
    check(cfg)
    lrs = method_lrs(cfg)
    dgp = DGP(DGPConfig(dim=cfg.dim, kappa=cfg.kappa, mixing_layers=cfg.mixing_layers,
                        n_samples=cfg.n_samples, seed=cfg.dgp_seed), device=device)
    # Same seed, no finite dataset: the same mixing g, with fresh held-out latents.
    fresh = DGP(DGPConfig(dim=cfg.dim, kappa=cfg.kappa, mixing_layers=cfg.mixing_layers,
                          seed=cfg.dgp_seed), device=device)
    test = fresh.sample_pairs(cfg.n_eval, torch.Generator(device=device).manual_seed(2**31 - 1))

    reps: dict[tuple[str, int], torch.Tensor] = {}
    rows, curves = [], []
    for name in cfg.methods:
        result = _train_method(name, cfg, dgp, test, lrs[name], device)
        curves += [{"model": name, **row} for row in result.curves]
        for failure in result.failures:
            rows.append({"model": name, "seed": failure["seed"], "metric": "failure_step",
                         "value": float(failure["step"]), "failure": failure["kind"]})
        for seed, method in result.finished():
            with torch.no_grad():
                h = method.eval().embed(test.x).double()
            reps[(name, seed)] = h
            rows += [{"model": name, "seed": seed, "metric": k, "value": float(v)}
                     for k, v in _scores(h, test.z.double(), cfg).items()]
    reps[("latent z", 0)] = test.z.double()
    reps[("raw x", 0)] = test.x.double()
    rows += [{"model": "raw x", "seed": 0, "metric": k, "value": float(v)}
             for k, v in _scores(test.x.double(), test.z.double(), cfg).items()]
    knn = {key: neighbours(h, cfg.knn_k) for key, h in reps.items()}
    rows += [{"model": key[0], "seed": key[1], "metric": "knn_to_z",
              "value": knn_overlap(knn[key], knn[("latent z", 0)])}
             for key in reps if key != ("latent z", 0)]
    # What identification up to a general linear map can cost: z against A z, A Gaussian.
    a = torch.randn(cfg.dim, cfg.dim, generator=torch.Generator().manual_seed(cfg.dgp_seed),
                    dtype=torch.float64).to(device)
    rows.append({"model": "latent z", "seed": 0, "metric": "knn_random_linear",
                 "value": knn_overlap(neighbours(test.z.double() @ a, cfg.knn_k),
                                      knn[("latent z", 0)])})
    for ka, kb in itertools.combinations(reps, 2):
        for metric, value in (("mutual_knn", knn_overlap(knn[ka], knn[kb])),
                              ("cka_linear", cka_linear(reps[ka], reps[kb]))):
            rows.append({"model": ka[0], "seed": ka[1], "metric": metric, "value": value,
                         "model_b": kb[0], "seed_b": kb[1]})
    metrics = pd.DataFrame(rows)
    metrics["seed_b"] = metrics["seed_b"].astype("Int64") if "seed_b" in metrics else pd.NA
    return {"metrics": metrics, "curves": pd.DataFrame(curves)}


# ------------------------------------------------------------------------------ tables


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Held-out scores of the encoder output per method, 'mean ± sd over seeds'."""
    scores = metrics[metrics.metric.isin(SCORES) & (metrics.model != "latent z")]
    agg = scores.groupby(["model", "metric"], sort=False).value.agg(["mean", "std"])
    # An effective rank of 9.13 needs no third decimal; the scores in [0, 1] do.
    table = of_agg(agg, fmts={"effective_rank": "{:.2f}"}).unstack("metric")
    table = table[[s for s in SCORES if s in table.columns]]
    table["seeds"] = scores.groupby("model", sort=False).seed.nunique()
    order = _ordered(table.index, ("raw x",))
    return readable(table.loc[order].rename(index=label).rename_axis(index=None))


def method_means(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of every per-method score (rows: methods, columns: scores)."""
    scores = metrics[metrics.metric.isin(SCORES)]
    return scores.groupby(["model", "metric"]).value.mean().unstack("metric")


def similarity_matrix(metrics: pd.DataFrame, metric: str = "mutual_knn",
                      reduce: str = "mean") -> pd.DataFrame:
    """Symmetric model x model matrix of a pairwise similarity, reduced over seed pairs.

    Only pairs of different seeds enter (every method starts from the same initialisation for a
    given seed, so same-seed pairs would flatter the off-diagonal cells); the diagonal of a
    trained method is its between-seed agreement, that of a reference (z, x) is left empty.
    """
    if metric not in ("mutual_knn", "cka_linear"):
        raise ValueError(f"metric must be 'mutual_knn' or 'cka_linear', got {metric!r}")
    pairs = metrics[metrics.metric == metric]
    pairs = pairs[(pairs.seed != pairs.seed_b) | pairs.model.isin(REFERENCES)
                  | pairs.model_b.isin(REFERENCES)]
    if not (~pairs.model.isin(REFERENCES) & ~pairs.model_b.isin(REFERENCES)).any():
        seeds = sorted({int(s) for s in metrics.seed.dropna()})
        raise ValueError("similarity_matrix compares trained encoders of different seeds; "
                         f"these results have seeds {seeds}: run with seeds >= 2")
    # Each unordered pair is stored once; mirror the cross-model ones to fill both triangles.
    mirror = pairs[pairs.model != pairs.model_b].rename(
        columns={"model": "model_b", "model_b": "model", "seed": "seed_b", "seed_b": "seed"})
    both = pd.concat([pairs, mirror])
    mat = both.groupby(["model", "model_b"]).value.agg(reduce).unstack("model_b")
    order = _ordered([*mat.index, *mat.columns], REFERENCES)
    return mat.reindex(index=order, columns=order)


def pair_table(metrics: pd.DataFrame, score: str = "procrustes_r2") -> pd.DataFrame:
    """One row per pair of methods (and per method with itself, across seeds): mean and sd of
    mutual kNN and CKA over seed pairs, and the lower of the two methods' mean ``score`` with
    that method's sd over seeds."""
    means = method_means(metrics)
    sds = metrics[metrics.metric == score].groupby("model").value.std()
    out = []
    for metric in ("mutual_knn", "cka_linear"):
        mean = similarity_matrix(metrics, metric, "mean")
        sd = similarity_matrix(metrics, metric, "std")
        for a, b in itertools.combinations_with_replacement(_ordered(mean.index), 2):
            if pd.isna(mean.loc[a, b]):
                continue
            lower = min((a, b), key=lambda k: means.loc[k, score])
            out.append({"a": a, "b": b, "metric": metric, "mean": mean.loc[a, b],
                        "sd": sd.loc[a, b], "within": a == b,
                        "min_score": means.loc[lower, score],
                        "min_score_sd": sds.get(lower, float("nan"))})
    return pd.DataFrame(out)


def prediction_correlation(metrics: pd.DataFrame, score: str = "procrustes_r2",
                           metric: str = "mutual_knn") -> float:
    """Spearman correlation over method pairs between the pair's min ``score`` and alignment."""
    table = pair_table(metrics, score)
    table = table[table.metric == metric]
    if len(table) < 3:
        return float("nan")
    return float(table["min_score"].rank().corr(table["mean"].rank()))


# ------------------------------------------------------------------------------ figures


def plot_curves(curves: pd.DataFrame, metrics: pd.DataFrame, ax=None):
    """Held-out linear R^2 of the encoder output against steps, per method (band: seeds); the
    dashed line is the raw observations x. The legend sits beside the axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(7.6, 4.0), constrained_layout=True)
    data = curves.assign(method=curves.model.map(label))
    sns.lineplot(data=data, x="step", y="r2_linear", hue="method", errorbar=("sd", 1),
                 marker="o", ax=ax)
    raw = metrics[(metrics.model == "raw x") & (metrics.metric == "r2_linear")].value
    ax.axhline(float(raw.iloc[0]), color="0.3", ls="--", lw=1, label="raw observations x")
    ax.set(xlabel="training step", ylabel="held-out linear R² (h → z)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax


def plot_similarity(metrics: pd.DataFrame, axes=None):
    """Heatmaps of mean mutual kNN and linear CKA between methods (diagonal: across seeds)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if axes is None:  # one above the other: side by side, the numbers shrink out of reach
        _, axes = plt.subplots(2, 1, figsize=(7.0, 12.5), constrained_layout=True)
    for ax, metric, title in zip(axes, ("mutual_knn", "cka_linear"),
                                 ("mutual kNN (k = 10)", "linear CKA"), strict=True):
        mat = similarity_matrix(metrics, metric)
        labels = [label(m) for m in mat.index]
        sns.heatmap(mat.to_numpy(dtype=float), annot=True, fmt=".2f", vmin=0, vmax=1,
                    cmap="viridis", xticklabels=labels, yticklabels=labels, square=True,
                    cbar=False, annot_kws={"fontsize": 9}, ax=ax)
        ax.set_title(title)
        ax.tick_params(labelsize=9)
        ax.grid(False)  # the empty cells (no seed pair) show no grid lines
    return axes


def plot_alignment_vs_identifiability(metrics: pd.DataFrame, axes=None):
    """Pairwise mutual kNN against the pair's lower linear and orthogonal (Procrustes) R^2."""
    import matplotlib.pyplot as plt

    if axes is None:  # page width (~7.3 in): the book shrinks wider figures and their text
        _, axes = plt.subplots(1, 2, figsize=(7.2, 3.4), sharey=True, constrained_layout=True)
    for ax, score, xlabel in zip(axes, ("r2_linear", "procrustes_r2"),
                                 ("min linear R² of the pair", "min orthogonal (Procrustes) R²"),
                                 strict=True):
        table = pair_table(metrics, score)
        table = table[table.metric == "mutual_knn"]
        for within, style in ((False, dict(marker="o", color="C0", label="two methods")),
                              (True, dict(marker="s", color="C3", label="one method, two seeds"))):
            part = table[table.within == within]
            # A spread of one seed (pair) is NaN, and matplotlib draws no bar for it.
            ax.errorbar(part.min_score, part["mean"], xerr=part.min_score_sd, yerr=part.sd,
                        ls="none", capsize=2, ms=5, **style)
        ax.set(xlabel=xlabel)
        ax.grid(True, alpha=0.4)
    axes[0].set_ylabel("mutual kNN alignment (k = 10)")
    legend_below(axes, ncol=2)  # one legend for both panels
    return axes
