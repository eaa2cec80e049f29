r"""SITh direction 3: inductive biases of the encoder, the optimiser, the projector and the views.

Two studies with ground-truth latents.

Encoder, optimiser and projector (synthetic sphere data of the InfoNCE chapter): InfoNCE at
:math:`\tau = 1/\kappa` trains :math:`p \circ f` where f is an MLP of a given width and depth
whose initial weights are multiplied by ``init_scale``, and p is the projector (``"none"``,
``"linear"`` or a one-hidden-layer ``"mlp"``) whose output is put on the sphere. One factor
varies at a time around a base point. Scores: held-out linear :math:`R^2` of z from the
representation before the projector, :math:`h = f(x)`, and after it,
:math:`p(h) / \lVert p(h) \rVert` (the identifiability theory speaks about the latter; practice
uses the former). Optimisers: Adam, SGD with momentum and LARS (:class:`sithlib.optim.LARS`,
the large-batch optimiser of SimCLR, BYOL, Barlow Twins and VICReg).

Views (the image DGP of :mod:`sithlib.dgp.images`): a ResNet-18 with the CIFAR stem trained with
SimCLR's loss on three kinds of positive pairs, and an untrained network as the baseline (its
batch norms with statistics of renders, :func:`calibrate_untrained`, not their defaults):

- ``latent_small``: every continuous latent moves by a small Gaussian step (the setting of
  Zimmermann et al., 2021: every latent should be recovered);
- ``latent_content_style``: the style latents (position x, y, hue, background hue) are redrawn
  uniformly, the content (scale, rotation, shape) is shared (von Kuegelgen et al., 2021: the
  content block is identified, the style is discarded);
- ``augment``: image-space augmentations of the same image (SimCLR's CIFAR recipe: crops, flips,
  colour jitter, grayscale), the practice whose latent-space meaning is not designed.

Scores on clean held-out renders: linear :math:`R^2` of each continuous latent from the backbone
features, the linear-probe accuracy of the shape, and for the content and the style blocks the
mean of their latents' linear :math:`R^2` (``block_*``; a nonlinear block score is not measured).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from sithlib.dgp import DGP, DGPConfig, render, sample_image_pairs, sample_latents
from sithlib.dgp.augment import augment, recipe
from sithlib.dgp.images import CONTINUOUS, SHAPES
from sithlib.experiments._tables import of_agg, of_values
from sithlib.losses import info_nce
from sithlib.methods import build_method
from sithlib.metrics import block_r2, linear_probe, r2_linear
from sithlib.models import ResNet18, calibrate_batchnorm, calibration_batches
from sithlib.models.mlp import MLP, SphereNorm
from sithlib.models.views import both_views
from sithlib.train import TrainConfig, TrainingFailure, train

NAME = "inductive_biases"
# 2: the untrained network's batch norms hold statistics of training batches.
VERSION = 2
TITLE = "Direction 3: inductive biases"
CHAPTER = "chapters/04_directions/03_inductive_biases"

PROJECTORS = ("none", "linear", "mlp")
OPTIMIZERS = ("adam", "sgd", "lars")
PAIRS = ("latent_small", "latent_content_style", "augment")
#: Latents shared by the two views of ``latent_content_style`` (content) and redrawn (style).
CONTENT = ("scale", "rotation", "shape")
STYLE = ("x", "y", "hue", "bg_hue")


@dataclass(frozen=True)
class Config:
    """MLP sweeps (tuples, one factor at a time around the ``base_*`` point) and the image study."""

    widths: tuple[int, ...] = (32, 128, 256)
    depths: tuple[int, ...] = (1, 2, 4)
    init_scales: tuple[float, ...] = (0.3, 1.0, 3.0)
    optimizers: tuple[str, ...] = ("adam", "sgd", "lars")
    projectors: tuple[str, ...] = ("none", "linear", "mlp")
    base_width: int = 128
    base_depth: int = 2
    base_init_scale: float = 1.0
    base_optimizer: str = "adam"
    base_projector: str = "none"
    dim: int = 10
    kappa: float = 10.0
    rep_dim: int = 32  # output of f when a projector follows
    steps: int = 800
    batch_size: int = 256
    lr: float = 1e-3
    sgd_lr: float = 0.05
    # LARS rescales each weight matrix's update to lr * lars_eta * ||w|| (before momentum) and
    # leaves each bias's at lr * grad.
    # Picked on the quick base cell from lr in {0.03, 0.1, 0.3, 1, 3, 10} x eta in {0.001, 0.01,
    # 0.03, 0.1}: the recipes' eta = 0.001 barely moves these small layers in 800 steps without
    # their warmup and lr of about 5 at batch 4096.
    lars_lr: float = 0.3
    lars_eta: float = 0.02
    seeds: int = 2
    n_eval: int = 2000
    dgp_seed: int = 0
    # image study
    pairs: tuple[str, ...] = ("latent_small", "latent_content_style", "augment")
    image_size: int = 16
    image_width: int = 8  # ResNet-18 channels of the first stage (64 in the paper)
    image_steps: int = 120
    image_batch: int = 64
    image_lr: float = 1e-3
    image_tau: float = 0.5  # SimCLR's CIFAR temperature
    image_seeds: int = 2
    image_eval: int = 1000
    latent_scale: float = 0.05  # step of latent_small
    augment_recipe: str = "simclr_cifar"
    image_precision: str = "fp32"  # the engine's fp32 / tf32 / bf16 (bf16 for the GPU run)

    def __post_init__(self):
        for name, values, allowed in (("optimizers", self.optimizers, OPTIMIZERS),
                                      ("projectors", self.projectors, PROJECTORS),
                                      ("pairs", self.pairs, PAIRS)):
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ValueError(f"{name} must be among {allowed}, got {bad}")
        if self.base_optimizer not in OPTIMIZERS:
            raise ValueError(f"base_optimizer must be one of {OPTIMIZERS}")
        if self.base_projector not in PROJECTORS:
            raise ValueError(f"base_projector must be one of {PROJECTORS}")
        recipe(self.augment_recipe)  # raises with the allowed names


PROFILES = {
    "quick": Config(),
    # Full ResNet-18 (width 64, bf16) on 32 x 32 renders; MLP sweeps over wider ranges, 3 seeds.
    "paper": Config(widths=(32, 128, 512, 1024), depths=(1, 2, 4, 6),
                    init_scales=(0.1, 0.3, 1.0, 3.0), base_width=512, base_depth=4,
                    rep_dim=64, steps=5000, batch_size=1024, lr=1e-3, sgd_lr=0.05, seeds=3,
                    n_eval=10_000, image_size=32, image_width=64, image_steps=2000,
                    image_batch=256, image_seeds=3, image_eval=5000, image_precision="bf16"),
}

# ----------------------------------------------------------------------------- MLP study


class ProjectedEncoder(nn.Module):
    r"""f (an MLP) followed by a projector p and the sphere: :math:`x \mapsto p(f(x)) / \|\cdot\|`.

    Parameters
    ----------
    dim : int
        Input and output dimension (the latent dimension).
    width, depth : int
        Hidden width and number of hidden layers of f.
    projector : str
        ``"none"`` (f outputs ``dim`` features that go to the sphere), ``"linear"`` or
        ``"mlp"`` (f outputs ``rep_dim`` features; p maps them to ``dim``).
    rep_dim : int
        Output dimension of f when a projector follows.
    init_scale : float
        Factor applied to every initial weight and bias of f (PyTorch's default init times it).
    generator : torch.Generator, optional
        Source of the initial weights.
    """

    def __init__(self, dim: int, width: int, depth: int, projector: str = "none",
                 rep_dim: int = 32, init_scale: float = 1.0, generator=None):
        super().__init__()
        if projector not in PROJECTORS:
            raise ValueError(f"projector must be one of {PROJECTORS}, got {projector!r}")
        if depth < 1 or width < 1:
            raise ValueError(f"width and depth must be >= 1, got {width}, {depth}")
        out = dim if projector == "none" else rep_dim
        self.f = MLP([dim, *(width,) * depth, out], generator=generator)
        with torch.no_grad():
            for p in self.f.parameters():
                p.mul_(init_scale)
        heads = {"none": None, "linear": [rep_dim, dim], "mlp": [rep_dim, width, dim]}
        self.p = nn.Identity() if heads[projector] is None else MLP(heads[projector],
                                                                    generator=generator)
        self.sphere = SphereNorm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised projection that the loss sees."""
        return self.sphere(self.p(self.f(x)))


def mlp_cells(cfg: Config) -> list[dict]:
    """The union of the one-factor MLP sweeps, each point once."""
    shared = {k: getattr(cfg, k) for k in ("dim", "kappa", "rep_dim", "steps", "batch_size",
                                           "lr", "sgd_lr", "lars_lr", "lars_eta", "seeds",
                                           "n_eval", "dgp_seed")}
    base = {"width": cfg.base_width, "depth": cfg.base_depth,
            "init_scale": float(cfg.base_init_scale), "optimizer": cfg.base_optimizer,
            "projector": cfg.base_projector}
    out, seen = [], set()
    for key, values in (("width", cfg.widths), ("depth", cfg.depths),
                        ("init_scale", cfg.init_scales), ("optimizer", cfg.optimizers),
                        ("projector", cfg.projectors)):
        for v in values:
            point = {**base, key: float(v) if key == "init_scale" else v}
            ident = tuple(sorted(point.items()))
            if ident not in seen:
                seen.add(ident)
                out.append({"part": "mlp", **shared, **point})
    return out


def run_mlp_cell(cell: dict, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train ``seeds`` encoders (vmapped) for one MLP grid point; R^2 before/after p."""
    dgp = DGP(DGPConfig(dim=cell["dim"], kappa=cell["kappa"], seed=cell["dgp_seed"]),
              device=device)
    test = dgp.sample_pairs(cell["n_eval"], torch.Generator(device=device).manual_seed(2**31 - 1))

    def make_model(seed: int):
        return ProjectedEncoder(cell["dim"], cell["width"], cell["depth"], cell["projector"],
                                cell["rep_dim"], cell["init_scale"],
                                generator=torch.Generator().manual_seed(seed))

    def sample(generator, n):
        pairs = dgp.sample_pairs(n, generator)
        return pairs.x, pairs.x_pos

    def loss_fn(model, batch):
        u, u_pos = both_views(model, *batch)
        return info_nce(u, u_pos, temperature=1.0 / cell["kappa"], distributed=True), u

    def evaluate(model, seed):
        return {"r2_before": r2_linear(model.f(test.x), test.z),
                "r2_after": r2_linear(model(test.x), test.z)}

    lr = {"sgd": cell["sgd_lr"], "lars": cell["lars_lr"]}.get(cell["optimizer"], cell["lr"])
    result = train(make_model, sample, loss_fn,
                   TrainConfig(steps=cell["steps"], batch_size=cell["batch_size"], lr=lr,
                               optimizer=cell["optimizer"], eta=cell["lars_eta"],
                               seeds=cell["seeds"],
                               eval_every=max(1, cell["steps"] // 8)),
                   device=device, evaluate=evaluate, name=f"{NAME}-mlp")
    keys = {"part": "mlp", **{k: cell[k] for k in ("width", "depth", "init_scale", "optimizer",
                                                   "projector")}}
    rows = []
    with torch.no_grad():
        for seed, model in result.finished():
            for metric, value in evaluate(model.eval(), seed).items():
                rows.append({**keys, "seed": seed, "metric": metric, "value": value})
    for failure in result.failures:
        rows.append({**keys, "seed": failure["seed"], "metric": "failure_step",
                     "value": float(failure["step"]), "failure": failure["kind"]})
    return {"metrics": pd.DataFrame(rows), "curves": pd.DataFrame(result.curves).assign(**keys)}


# ----------------------------------------------------------------------------- image study


def image_cells(cfg: Config) -> list[dict]:
    """One cell per (kind of pairs, seed), plus the untrained network of each seed."""
    shared = {k: getattr(cfg, k) for k in ("image_size", "image_width", "image_steps",
                                           "image_batch", "image_lr", "image_tau", "image_eval",
                                           "latent_scale", "augment_recipe",
                                           "image_precision")}
    kinds = ("untrained", *cfg.pairs)
    return [{"part": "image", **shared, "pairs": kind, "seed": seed}
            for kind in kinds for seed in range(cfg.image_seeds)]


def image_sampler(cell: dict):
    """``sample(generator, n) -> (x_a, x_b)`` for the cell's kind of positive pairs."""
    size, kind = cell["image_size"], cell["pairs"]
    if kind == "augment":
        views = recipe(cell["augment_recipe"])

        def sample(generator, n):
            x = render(sample_latents(n, generator=generator, device=generator.device), size)
            return augment(x, views, generator=generator)[0], augment(x, views,
                                                                      generator=generator)[0]
        return sample
    if kind == "latent_small":
        options = {"change": CONTINUOUS, "conditional": "normal", "scale": cell["latent_scale"]}
    elif kind == "latent_content_style":
        options = {"change": STYLE, "conditional": "uniform"}
    else:
        raise ValueError(f"pairs must be one of {PAIRS}, got {kind!r}")

    def sample(generator, n):
        pairs = sample_image_pairs(n, size, generator=generator, device=generator.device,
                                   **options)
        return pairs.x1, pairs.x2
    return sample


def image_scores(features: torch.Tensor, z: torch.Tensor) -> dict[str, float]:
    """Per-latent linear R^2 of the continuous latents, shape probe accuracy, block R^2."""
    n_train = z.shape[0] // 2
    per_latent = r2_linear(features, z[:, :6], multioutput="raw_values")
    out = {f"r2_{name}": float(v) for name, v in zip(CONTINUOUS, per_latent.tolist(),
                                                      strict=True)}
    shape = z[:, 6].long()
    out["shape_accuracy"] = linear_probe(features[:n_train], shape[:n_train],
                                         features[n_train:], shape[n_train:],
                                         num_classes=len(SHAPES))
    blocks = {"content": [CONTINUOUS.index(n) for n in CONTENT if n in CONTINUOUS],
              "style": [CONTINUOUS.index(n) for n in STYLE]}
    out.update({f"block_{k}": v for k, v in block_r2(features, z[:, :6], blocks,
                                                     nonlinear=False).items()})
    return out


def _keep_output(module, inputs, output):
    # The engine watches the encoder output for collapse; keep it instead of a second forward.
    module.last_output = output


def calibrate_untrained(model, cell: dict, device: str = "cpu") -> int:
    """Give the untrained network's batch norms the statistics of training batches.

    Built, they hold mean 0 and variance 1, and in eval mode the network would compute a
    function that no training step computes (the first one normalises with batch statistics);
    see :func:`sithlib.models.batchnorm.calibrate_batchnorm`. It is the baseline of every kind
    of pairs, so its batches are renders of fresh latents (the images every kind of pairs is
    made of), each as many rows as one SimCLR step normalises together (both views of
    ``image_batch`` pairs), from a stream of their own. The encoder and the projector run;
    the loss does not.
    """
    batches = calibration_batches(
        lambda g, n: render(sample_latents(n, generator=g, device=device), cell["image_size"]),
        2 * cell["image_batch"], device=device)
    return calibrate_batchnorm([model.encoder, model.projector], batches,
                               lambda x: model.projector(model.encoder(x)))


def run_image_cell(cell: dict, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train (or, for ``untrained``, only build and calibrate) one ResNet-18 and score its
    features."""
    seed = cell["seed"]
    held_out = sample_latents(cell["image_eval"],
                              generator=torch.Generator(device=device).manual_seed(2**31 - 1),
                              device=device)
    x_eval = render(held_out, cell["image_size"])

    def make_model(s: int):
        gen = torch.Generator().manual_seed(s)
        encoder = ResNet18(width=cell["image_width"], generator=gen)
        encoder.register_forward_hook(_keep_output)
        return build_method("simclr", encoder, {"temperature": cell["image_tau"],
                                                "proj_dim": 64}, generator=gen)

    def features(model) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return torch.cat([model.embed(x) for x in x_eval.split(500)])

    curves = None
    if cell["pairs"] == "untrained":
        model = make_model(seed).to(device)
        calibrate_untrained(model, cell, device)
    else:
        def loss_fn(model, batch):
            loss, logs = model(*batch)
            return loss, model.encoder.last_output, logs

        try:
            result = train(make_model, image_sampler(cell), loss_fn,
                           TrainConfig(steps=cell["image_steps"], batch_size=cell["image_batch"],
                                       lr=cell["image_lr"], seeds=1, first_seed=seed,
                                       precision=cell["image_precision"],
                                       eval_every=max(1, cell["image_steps"] // 4)),
                           device=device, name=f"{NAME}-{cell['pairs']}")
        except TrainingFailure as err:  # its one seed's loss went non-finite: a row, no scores
            failure = next(f for f in err.failures if f["kind"] == "non-finite loss")
            return {"metrics": pd.DataFrame([{
                "part": "image", "pairs": cell["pairs"], "seed": seed, "metric": "failure_step",
                "value": float(failure["step"]), "failure": failure["kind"]}]), "curves": None}
        model = result.models[0]
        curves = pd.DataFrame(result.curves).assign(part="image", pairs=cell["pairs"])
    values = image_scores(features(model), held_out)
    rows = [{"part": "image", "pairs": cell["pairs"], "seed": seed, "metric": k, "value": v}
            for k, v in values.items()]
    return {"metrics": pd.DataFrame(rows), "curves": curves}


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    from sithlib.results import run_grid  # results imports experiments: import late

    def run_cell(cell):
        return (run_mlp_cell if cell["part"] == "mlp" else run_image_cell)(cell, device)

    return run_grid(NAME, mlp_cells(cfg) + image_cells(cfg), run_cell)


# ----------------------------------------------------------------------------- figures, tables

_FACTORS = {"width": ("widths", "hidden width of f"), "depth": ("depths", "hidden layers of f"),
            "init_scale": ("init_scales", "initial weight scale"),
            "optimizer": ("optimizers", "optimiser"), "projector": ("projectors", "projector")}
_BASE = {"width": "base_width", "depth": "base_depth", "init_scale": "base_init_scale",
         "optimizer": "base_optimizer", "projector": "base_projector"}


def _mlp_sweep(metrics: pd.DataFrame, factor: str, config: dict | None = None) -> pd.DataFrame:
    """Rows of one MLP sweep: the other factors at their base values (the most common value
    of each factor when no config is given)."""
    mlp = metrics[metrics.part == "mlp"]
    mask = pd.Series(True, index=mlp.index)
    for key in _FACTORS:
        if key == factor:
            continue
        base = config[_BASE[key]] if config else mlp[key].mode().iloc[0]
        mask &= mlp[key] == base
    return mlp[mask]


#: Display names of the categorical sweep values.
_VALUE_LABELS = {"adam": "Adam", "sgd": "SGD", "lars": "LARS", "none": "none", "linear": "linear",
                 "mlp": "MLP"}
_CANONICAL = {"optimizer": OPTIMIZERS, "projector": PROJECTORS}


def _order(values, factor: str) -> list:
    """Sweep values in display order: numbers ascending, optimisers and projectors in the
    order of :data:`OPTIMIZERS` and :data:`PROJECTORS` (unknown ones last, by name)."""
    values = list(dict.fromkeys(values))
    if factor in _CANONICAL:
        known = list(_CANONICAL[factor])
        return sorted(values, key=lambda v: (known.index(v) if v in known else len(known), v))
    return sorted(values, key=float)


def _value_label(value) -> str:
    """'32' rather than '32.0'; display names of optimisers and projectors."""
    if isinstance(value, str):
        return _VALUE_LABELS.get(value, value)
    return f"{value:g}"


def mlp_table(metrics: pd.DataFrame, config: dict | None = None) -> pd.DataFrame:
    """Held-out R^2 before and after the projector, 'mean ± sd' over seeds, per sweep point
    (rows in the order of the figures)."""
    rows = []
    for factor in _FACTORS:
        part = _mlp_sweep(metrics, factor, config)
        for value in _order(part[factor], factor):
            group = part[part[factor] == value]
            row = {"factor": _FACTORS[factor][1], "value": _value_label(value)}
            for metric, label in (("r2_before", "R² before p (h = f(x))"),
                                  ("r2_after", "R² after p (on the sphere)")):
                v = group[group.metric == metric].value
                row[label] = of_values(v)
            row["seeds"] = group.seed.nunique()
            rows.append(row)
    return pd.DataFrame(rows).set_index(["factor", "value"]).rename_axis(index=[None, None])


def plot_mlp_sweeps(metrics: pd.DataFrame, config: dict | None = None, axes=None):
    """R^2 after the projector against width, depth, init scale and optimiser (mean ± sd)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    factors = ("width", "depth", "init_scale", "optimizer")
    if axes is None:
        _, axes = plt.subplots(1, len(factors), figsize=(12, 3.2), sharey=True)
    for ax, factor in zip(axes, factors, strict=True):
        part = _mlp_sweep(metrics, factor, config)
        part = part[part.metric == "r2_after"]
        order = _order(part[factor], factor)
        sns.pointplot(data=part, x=factor, y="value", order=order, errorbar="sd", capsize=0.15,
                      ax=ax, linestyle="none" if factor == "optimizer" else "-")
        sns.stripplot(data=part, x=factor, y="value", order=order, color="0.35", size=3.5,
                      ax=ax)
        ax.set_xticks(range(len(order)), [_value_label(v) for v in order])
        ax.set(xlabel=_FACTORS[factor][1], ylabel="held-out linear $R^2$")
    axes[0].figure.tight_layout()
    return axes


def plot_projector(metrics: pd.DataFrame, config: dict | None = None, ax=None):
    """R^2 before and after the projector, per projector (bars: mean; lines: sd; dots: seeds)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    part = _mlp_sweep(metrics, "projector", config)
    names = {"r2_before": "before p", "r2_after": "after p"}
    part = part[part.metric.isin(names)].assign(where=lambda d: d.metric.map(names))
    order = _order(part.projector, "projector")
    sns.barplot(data=part, x="projector", y="value", hue="where", order=order, errorbar="sd",
                capsize=0.1, ax=ax, alpha=0.8)
    sns.stripplot(data=part, x="projector", y="value", hue="where", order=order, dodge=True,
                  palette="dark:0.2", size=3, ax=ax, legend=False)
    ax.set_xticks(range(len(order)), [_value_label(v) for v in order])
    ax.set(xlabel="projector p", ylabel="held-out linear $R^2$",
           ylim=(max(0.0, part.value.min() - 0.1), 1.0))
    ax.legend(title=None, loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


_IMAGE_METRICS = [f"r2_{n}" for n in CONTINUOUS] + ["shape_accuracy"]
#: Display names of the latents in tables and figures (the others keep their own name).
_LATENT_LABELS = {"x": "position x", "y": "position y", "bg_hue": "background hue"}


def _latent_label(metric: str) -> str:
    """'r2_bg_hue' -> 'background hue'; 'shape_accuracy' -> 'shape (acc.)'."""
    if metric == "shape_accuracy":
        return "shape (acc.)"
    name = metric.removeprefix("r2_")
    return _LATENT_LABELS.get(name, name)


def latent_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Each latent's R^2 (shape: probe accuracy) and, per block (content, style), the mean of
    its latents' linear R^2 (rows), per kind of pairs (columns). The block rows are the stored
    ``block_*`` metrics, ``block_r2(..., nonlinear=False)``, which is that mean: they are not a
    nonlinear (block-identifiability) score, which this experiment does not measure."""
    image = metrics[metrics.part == "image"]
    columns = _IMAGE_METRICS + ["block_content", "block_style"]
    agg = image.groupby(["pairs", "metric"], sort=False).value.agg(["mean", "std"])
    text = of_agg(agg, "{:.2f}")
    table = text.unstack("metric")[columns]
    blocks = {"block_content": "content block: mean linear R²",
              "block_style": "style block: mean linear R²", "shape_accuracy": "shape accuracy"}
    table.columns = [blocks.get(c) or "R² " + _latent_label(c) for c in columns]
    order = [k for k in ("untrained", *PAIRS) if k in table.index]
    return table.loc[order].T.rename_axis(index=None, columns=None)


def plot_latents(metrics: pd.DataFrame, ax=None):
    """Which latents each kind of pairs recovers: per-latent R^2 (shape: probe accuracy)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.6))
    image = metrics[(metrics.part == "image") & metrics.metric.isin(_IMAGE_METRICS)]
    # Two-line tick labels: "background hue" and "shape (acc.)" would run into each other.
    image = image.assign(latent=image.metric.map(lambda m: _latent_label(m).replace(" ", "\n")))
    order = [k for k in ("untrained", *PAIRS) if k in set(image.pairs)]
    sns.barplot(data=image, x="latent", y="value", hue="pairs", hue_order=order, errorbar="sd",
                capsize=0.05, ax=ax)
    ax.axhline(0, color="0.3", lw=0.8)
    content = {_latent_label(f"r2_{n}" if n in CONTINUOUS else "shape_accuracy").replace(" ", "\n")
               for n in CONTENT}
    for i, name in enumerate(dict.fromkeys(image.latent)):
        if name in content:
            ax.get_xticklabels()[i].set_fontweight("bold")
    ax.set(xlabel="latent (bold: content of latent_content_style)",
           ylabel="held-out $R^2$ / accuracy", ylim=(min(-0.2, image.value.min()), 1.0))
    ax.legend(title=None, fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, 1.18))
    return ax
