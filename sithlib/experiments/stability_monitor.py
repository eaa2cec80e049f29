r"""Stability chapter: the center-vector monitor during training (Jha et al., 2024).

Seven SSL methods (SimCLR, BYOL, SwAV, SimSiam, Barlow Twins, DINO, VICReg, built by
``sithlib.methods.build_method``) are trained on a vector DGP (MLP encoder) and on the
rendered-image DGP (ResNet-18, CIFAR stem, per-sample image augmentations). At every eval step
a fixed probe set of N samples, each seen under the same K augmentations, is embedded and the
monitor records, for the normalised embeddings :math:`u = f(x) / \|f(x)\|`,

.. math::

    \|s\| = \Big\| \frac{1}{NK} \sum_{x,k} u_k(x) \Big\|, \qquad
    \overline{\|\mu\|} = \frac{1}{N} \sum_x \Big\| \frac{1}{K} \sum_k u_k(x) \Big\|,

their gap :math:`\overline{\|\mu\|} - \|s\|`, the per-dimension standard deviation times
:math:`\sqrt d` (1 for isotropic embeddings, 0 under collapse) and the effective rank
(RankMe), both in the encoder's representation space and in the space where the loss acts
(projector output, DINO's head bottleneck). Beside them: weighted kNN accuracy on a labelled
bank (vector DGP: the octant of the first three latents; images: the shape) and the
held-out linear :math:`R^2` from the representation to the ground-truth latents. The
paper's claim: every method keeps :math:`\|s\|` small while :math:`\|\mu_x\|` stays large,
and collapse is :math:`\mu_x = s` with :math:`\|s\| = 1`.

``datasets`` also accepts ``"cifar10"`` (and ``"cifar100"``, ``"stl10"``): the same monitor on
a real dataset read by ``sithlib.dgp.load_dataset`` from ``data_root`` (never downloaded
here; labels are the classes and there is no ground-truth :math:`R^2`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from sithlib.dgp import DGP, DGPConfig, load_dataset, recipe, render, sample_latents, to_tensors
from sithlib.dgp.augment import augment
from sithlib.experiments._tables import METHOD_LABELS, of_agg, readable
from sithlib.methods import build_method, method_label
from sithlib.metrics import (
    RIDGE_GRID,
    center_vector_norm,
    effective_rank,
    embedding_std,
    knn_accuracy,
    r2_linear,
    sample_mean_norm,
)
from sithlib.models import MLP, ResNet18
from sithlib.train import TrainConfig, TrainingFailure, train

NAME = "stability_monitor"
VERSION = 5  # 2: bias-free BYOL heads; 3: mean ||mu_x|| from distinct view pairs;
# 4: the image probe's views are drawn before the kNN bank and test set; 5: linear R^2 with a
# ridge chosen on the fitting half (raw pixels)
TITLE = "The center-vector monitor in training"
CHAPTER = "chapters/03_stability/02_monitor"

#: The seven methods of the paper's comparison (the six of Jha et al. plus VICReg).
METHODS = ("simclr", "byol", "swav", "simsiam", "barlow_twins", "dino", "vicreg")
#: Data sources: the two DGPs and the real datasets of ``sithlib.dgp.load_dataset``.
DATA = ("vector", "image", "cifar10", "cifar100", "stl10")
REAL = ("cifar10", "cifar100", "stl10")
#: Monitor quantities, in the order of the figures and tables.
MONITOR = ("center_norm", "mean_norm", "gap", "std_sqrt_d", "rank")
# Plain Unicode, not TeX: the same labels head the figures and the HTML tables.
LABELS = {
    "center_norm": "‖s‖", "mean_norm": "mean ‖μₓ‖", "gap": "mean ‖μₓ‖ − ‖s‖",
    "std_sqrt_d": "std × √d", "rank": "effective rank", "knn_acc": "kNN accuracy",
    "r2_linear": "linear R²", "train_center_norm": "‖s‖ of the training batch",
}


def method_colors() -> dict[str, tuple]:
    """One fixed colour per method (display name), the same in every figure of the chapter."""
    import seaborn as sns

    names = [METHOD_LABELS[m] for m in METHODS]
    return dict(zip(names, sns.color_palette("tab10", len(names)), strict=True))


@dataclass(frozen=True)
class Config:
    # Intervals for --set values beyond the sign rule of results.field_domain.
    DOMAINS: ClassVar[dict[str, str]] = {"ema_tau0": "[0, 1]", "kappa": "[0, inf)"}
    datasets: tuple[str, ...] = ("vector", "image")
    methods: tuple[str, ...] = METHODS
    seeds: int = 2
    # vector DGP (Zimmermann et al., 2021): z ~ U(S^9), views g(z~) with z~ ~ vMF(z, kappa)
    dim: int = 10
    kappa: float = 10.0
    mixing_layers: int = 3
    hidden: tuple[int, ...] = (128, 128)
    feature_dim: int = 32
    vector_steps: int = 300
    vector_batch: int = 256
    vector_evals: int = 4
    # image DGP and real datasets: ResNet-18 of first-stage width resnet_width
    image_size: int = 16
    resnet_width: int = 4
    augment: str = "simclr_cifar"
    image_steps: int = 30
    image_batch: int = 32
    image_evals: int = 2
    # heads (narrower than the official ones, same for every method)
    head_hidden: int = 64
    head_out: int = 32
    prototypes: int = 30
    dino_out: int = 256
    ema_tau0: float = 0.99
    lr: float = 1e-3
    # monitor
    k_views: int = 4
    n_probe: int = 128
    n_bank: int = 512
    n_test: int = 256
    knn_k: int = 20
    # real datasets (read only)
    data_root: str = "data"
    checksums: bool = True
    checkpoint_every: int = 0
    dgp_seed: int = 0

    def __post_init__(self):
        for name, allowed in (("datasets", DATA), ("methods", METHODS)):
            values = getattr(self, name)
            if isinstance(values, str) or not values or any(v not in allowed for v in values):
                raise ValueError(f"{name} must be a non-empty tuple of values from {allowed}, "
                                 f"got {values!r}")
        for name in ("seeds", "vector_steps", "vector_batch", "vector_evals", "image_steps",
                     "image_batch", "image_evals", "k_views", "n_probe", "n_bank", "n_test",
                     "knn_k", "head_hidden", "head_out", "prototypes", "dino_out", "feature_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.k_views < 2:
            raise ValueError(f"k_views must be >= 2 (a mean over augmentations), got "
                             f"{self.k_views}")


PROFILES = {
    # Tiny on purpose: the image part only shows that the code runs on a CPU.
    "quick": Config(),
    # One H100, about 8 minutes: 3 seeds, 32-pixel images, a half-width ResNet-18 and heads
    # of width 1024 (the official heads are 2048 to 8192 wide, DINO has 65536 outputs).
    "paper": Config(seeds=3, hidden=(512, 512), feature_dim=128, vector_steps=1500,
                    vector_batch=512, vector_evals=10, image_size=32, resnet_width=32,
                    image_steps=1000, image_batch=256, image_evals=6, head_hidden=1024,
                    head_out=128, prototypes=300, dino_out=4096, ema_tau0=0.99, k_views=8,
                    n_probe=512, n_bank=5000, n_test=2000, checkpoint_every=200),
}


def method_config(name: str, cfg) -> dict:
    """The config of method ``name`` with the experiment's head widths and EMA start."""
    h, o = cfg.head_hidden, cfg.head_out
    return {
        "simclr": {"proj_hidden_dim": h, "proj_dim": o},
        "byol": {"proj_hidden_dim": h, "proj_dim": o, "pred_hidden_dim": h,
                 "tau0": cfg.ema_tau0},
        "swav": {"proj_hidden_dim": h, "proj_dim": o, "num_prototypes": cfg.prototypes,
                 "freeze_prototypes_steps": 0},
        # SimSiam's bottleneck predictor: hidden = output / 4 (2048 -> 512 -> 2048).
        "simsiam": {"proj_hidden_dim": h, "proj_dim": h, "proj_layers": 2,
                    "pred_hidden_dim": max(1, h // 4)},
        "barlow_twins": {"proj_dims": (h, h, h)},
        "dino": {"out_dim": cfg.dino_out, "hidden_dim": h, "bottleneck_dim": o,
                 "tau0": cfg.ema_tau0},
        "vicreg": {"proj_dims": (h, h, h)},
    }[name]


def embedding(method, x: torch.Tensor) -> torch.Tensor:
    """The embedding the method's loss acts on: the projector output; for DINO the head's
    bottleneck, which its weight-normalised last layer turns into logits (as SwAV's normalised
    projection is scored against prototypes). DINO's logits themselves are only defined up to
    a common shift, which the softmax ignores, so their normalised mean is not a center."""
    f = method.encoder(x)
    return method.head.mlp(f) if method.name == "dino" else method.projector(f)


# ---------------------------------------------------------------------------------------------
# data sources: training pairs, a probe set with K fixed views, a labelled bank and test set


class Source:
    """Training views, the monitor's probe views and a labelled bank / test set.

    Attributes
    ----------
    probe : Tensor, shape (K, N, ...)
        K augmented views of N fixed samples, drawn once.
    bank_x, bank_y, test_x, test_y : Tensor
        Clean inputs and integer labels for the kNN probe.
    test_z : Tensor or None
        Ground-truth latents of the test inputs (None for real datasets).
    """

    kind = ""

    def sample(self, generator: torch.Generator, n: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def make_encoder(self, cfg, generator: torch.Generator):  # pragma: no cover - abstract
        raise NotImplementedError

    def _views(self, x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        return torch.stack([self.view(x, generator) for _ in range(k)])


class VectorSource(Source):
    r"""The sphere DGP: both views are :math:`g(\tilde z)`, :math:`\tilde z \sim \mathrm{vMF}(z,
    \kappa)` around a common anchor z, so the two views play the same role, like two
    augmentations of one image. Labels: the octant of :math:`(z_1, z_2, z_3)` (8 classes)."""

    kind = "vector"

    def __init__(self, cfg, device="cpu"):
        self.dgp = DGP(DGPConfig(dim=cfg.dim, kappa=cfg.kappa, mixing_layers=cfg.mixing_layers,
                                 seed=cfg.dgp_seed), device=device)
        gen = torch.Generator(device=device).manual_seed(2**31 - 1)
        z = self.dgp.sample_latents(cfg.n_probe, gen)
        self.probe = self._views(z, cfg.k_views, gen)
        if not hasattr(cfg, "n_bank"):  # a probe only (stability_mechanism)
            return
        zb, zt = self.dgp.sample_latents(cfg.n_bank, gen), self.dgp.sample_latents(cfg.n_test, gen)
        self.bank_x, self.bank_y = self.dgp.mixing(zb), self.label(zb)
        self.test_x, self.test_y, self.test_z = self.dgp.mixing(zt), self.label(zt), zt

    @staticmethod
    def label(z: torch.Tensor) -> torch.Tensor:
        """Octant of the first three latent coordinates, 0..7."""
        return ((z[:, :3] > 0).long() * torch.tensor([4, 2, 1], device=z.device)).sum(1)

    def view(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.dgp.mixing(self.dgp.positive(z, generator))

    def sample(self, generator, n):
        z = self.dgp.sample_latents(n, generator)
        return self.view(z, generator), self.view(z, generator)

    def make_encoder(self, cfg, generator):
        return MLP([cfg.dim, *cfg.hidden, cfg.feature_dim], generator=generator)


class ImageSource(Source):
    """Rendered images (:mod:`sithlib.dgp.images`) under per-sample image augmentations.

    Labels: the shape (6 classes); latents for :math:`R^2`: the six continuous ones."""

    kind = "image"

    def __init__(self, cfg, device="cpu"):
        self.size, self.augment = cfg.image_size, recipe(cfg.augment)
        gen = torch.Generator(device=device).manual_seed(2**31 - 1)
        # The probe and its views first, as in VectorSource: the bank and test sizes then do
        # not shift the probe's random stream (stability_mechanism draws no bank at all).
        probe = render(sample_latents(cfg.n_probe, generator=gen, device=device), self.size)
        self.probe = self._views(probe, cfg.k_views, gen)
        if not hasattr(cfg, "n_bank"):
            return
        zb, zt = (sample_latents(n, generator=gen, device=device) for n in (cfg.n_bank, cfg.n_test))
        self.bank_x, self.bank_y = render(zb, self.size), zb[:, 6].long()
        self.test_x, self.test_y, self.test_z = render(zt, self.size), zt[:, 6].long(), zt[:, :6]

    def view(self, x, generator):
        return augment(x, self.augment, generator=generator)[0]

    def sample(self, generator, n):
        x = render(sample_latents(n, generator=generator, device=generator.device), self.size)
        return self.view(x, generator), self.view(x, generator)

    def make_encoder(self, cfg, generator):
        return ResNet18(width=cfg.resnet_width, generator=generator)


class DatasetSource(ImageSource):
    """A real dataset from ``data_root`` (CIFAR-10/100, STL-10), never downloaded here."""

    def __init__(self, cfg, kind: str, device="cpu"):
        self.kind, self.augment = kind, recipe(cfg.augment)
        train_split = "train"
        train = to_tensors(load_dataset(kind, cfg.data_root, split=train_split,
                                        checksums=cfg.checksums), device=device)
        test = to_tensors(load_dataset(kind, cfg.data_root, split="test",
                                       checksums=cfg.checksums), device=device,
                          limit=cfg.n_test)
        self.train_x = train.x
        gen = torch.Generator(device=device).manual_seed(2**31 - 1)
        self.probe = self._views(train.x[: cfg.n_probe], cfg.k_views, gen)
        self.bank_x, self.bank_y = train.x[: cfg.n_bank], train.y[: cfg.n_bank]
        self.test_x, self.test_y, self.test_z = test.x, test.y, None

    def sample(self, generator, n):
        idx = torch.randint(self.train_x.shape[0], (n,), generator=generator,
                            device=generator.device)
        x = self.train_x[idx]
        return self.view(x, generator), self.view(x, generator)


def make_source(kind: str, cfg, device="cpu") -> Source:
    """The data source ``kind`` (one of the names in ``DATA``)."""
    if kind == "vector":
        return VectorSource(cfg, device)
    if kind == "image":
        return ImageSource(cfg, device)
    if kind in REAL:
        return DatasetSource(cfg, kind, device)
    raise ValueError(f"data must be one of {DATA}, got {kind!r}")


# ---------------------------------------------------------------------------------------------
# the monitor


def batched(fn, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``fn`` applied to ``x`` in chunks of ``chunk`` rows (bounds the memory of large sets)."""
    return torch.cat([fn(part) for part in x.split(chunk)])


def space_scores(views: torch.Tensor) -> dict[str, float]:
    """The monitor quantities of K views (K, N, d) of N samples (normalised inside)."""
    d = views.shape[-1]
    center = center_vector_norm(views)
    mean = sample_mean_norm(views, unbiased=True)  # the K-view average's norm reads high
    return {"center_norm": center, "mean_norm": mean, "gap": mean - center,
            "std_sqrt_d": embedding_std(views[0]) * math.sqrt(d),
            "rank": effective_rank(views[0].float())}


def monitor(method, source: Source, cfg) -> dict[str, float]:
    """Every monitor quantity of a method (in eval mode) on the source's probe and test sets."""
    k, n = source.probe.shape[:2]
    flat = source.probe.reshape(k * n, *source.probe.shape[2:])
    out = {}
    for space, fn in (("rep", method.embed), ("emb", lambda x: embedding(method, x))):
        views = batched(fn, flat).reshape(k, n, -1)
        out.update({f"{space}_{key}": v for key, v in space_scores(views).items()})
    bank, test = batched(method.embed, source.bank_x), batched(method.embed, source.test_x)
    out.update(_probes(bank, source.bank_y, test, source, cfg))
    return out


def _probes(bank, bank_y, test, source, cfg) -> dict[str, float]:
    k = min(cfg.knn_k, bank.shape[0])
    out = {"knn_acc": knn_accuracy(bank, bank_y, test, source.test_y, k=k)}
    if source.test_z is not None:
        split = torch.Generator(device=test.device).manual_seed(0)
        # Ridge chosen on the fitting half: least squares overfits raw pixels, which have
        # about as many dimensions as there are fitting rows.
        out["r2_linear"] = r2_linear(test, source.test_z, generator=split, ridge=RIDGE_GRID)
    return out


def make_method(name: str, source: Source, cfg, seed: int):
    """Method ``name`` around a fresh encoder for ``source``, initialised from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    encoder = source.make_encoder(cfg, gen)
    encoder.register_forward_hook(_capture)
    return build_method(name, encoder, method_config(name, cfg), generator=gen)


def train_method(name: str, source: Source, cfg, *, steps: int, batch_size: int, evals: int,
                 device="cpu", evaluate=True, checkpoint=None):
    """Train ``cfg.seeds`` copies of method ``name`` on ``source``; returns the engine's result.

    The collapse guard watches the encoder output of each training step (captured by a forward
    hook, so no extra forward pass); ``evaluate`` adds the monitor at every eval step.
    """
    def loss_fn(model, batch):
        loss, logs = model(*batch)
        return loss, model.encoder.last_output, {"train_center_norm": logs["center_norm"]}

    hook = (lambda model, seed: monitor(model, source, cfg)) if evaluate else None
    return train(lambda seed: make_method(name, source, cfg, seed), source.sample, loss_fn,
                 TrainConfig(steps=steps, batch_size=batch_size, lr=cfg.lr, seeds=cfg.seeds,
                             eval_every=max(1, steps // evals), ensemble=False,
                             checkpoint_every=cfg.checkpoint_every),
                 device=device, evaluate=hook, checkpoint=checkpoint,
                 name=f"{source.kind}/{name}")


def _capture(module, inputs, output):
    module.last_output = output.detach()


def _budget(kind: str, cfg) -> tuple[int, int, int]:
    if kind == "vector":
        return cfg.vector_steps, cfg.vector_batch, cfg.vector_evals
    return cfg.image_steps, cfg.image_batch, cfg.image_evals


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train every method with the center-vector monitor; the final scores (``metrics``) and
    ||s||, mean ||mu_x||, embedding std, effective rank, kNN and R^2 over training
    (``curves``)."""
    from sithlib.results import checkpoint_for  # results imports experiments: import late

    rows, curves = [], []
    for kind in cfg.datasets:
        source = make_source(kind, cfg, device)
        steps, batch, evals = _budget(kind, cfg)
        with torch.no_grad():  # the raw input as a baseline representation
            raw = _probes(source.bank_x.flatten(1), source.bank_y, source.test_x.flatten(1),
                          source, cfg)
        rows += [{"data": kind, "method": "raw input", "seed": 0, "space": "rep", "metric": k,
                  "value": v} for k, v in raw.items()]
        for name in cfg.methods:
            checkpoint = (checkpoint_for(NAME, cfg, part=f"{kind}-{name}")
                          if cfg.checkpoint_every else None)
            try:
                result = train_method(name, source, cfg, steps=steps, batch_size=batch,
                                      evals=evals, device=device, checkpoint=checkpoint)
            except TrainingFailure:  # every seed diverged: record it and go on
                result = None
                rows += [{"data": kind, "method": name, "seed": s, "space": "", "metric":
                          "diverged", "value": 1.0} for s in range(cfg.seeds)]
            if checkpoint is not None:  # deleted once the result is written (run_experiment)
                checkpoint.clear()
            if result is None:
                continue
            table = pd.DataFrame(result.curves).assign(data=kind, method=name)
            curves.append(table)
            for _, last in table[table.step == table.step.max()].iterrows():
                for col, value in last.items():
                    if col in ("step", "seed", "data", "method") or pd.isna(value):
                        continue
                    space, metric = (col.split("_", 1) if col[:4] in ("rep_", "emb_")
                                     else ("", col))
                    rows.append({"data": kind, "method": name, "seed": int(last.seed),
                                 "space": space, "metric": metric, "value": float(value)})
            rows += [{"data": kind, "method": name, "seed": f["seed"], "space": "",
                      "metric": "failure_step", "value": float(f["step"])}
                     for f in result.failures]
    return {"metrics": pd.DataFrame(rows),
            "curves": pd.concat(curves, ignore_index=True) if curves else None}


# ---------------------------------------------------------------------------------------------
# figures and tables


def plot_curves(curves: pd.DataFrame, data: str = "vector",
                metrics=("emb_center_norm", "emb_mean_norm", "emb_gap", "emb_std_sqrt_d",
                         "rep_rank", "knn_acc", "r2_linear"), axes=None):
    """Monitor curves of every method on one data source: mean and sd band over seeds. Returns
    the panels, one per metric; the legend sits in a spare cell of the grid, else below."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    sub = curves[curves.data == data]
    sub = sub.assign(method=sub.method.map(method_label))
    metrics = [m for m in metrics if m in sub and sub[m].notna().any()]
    palette = method_colors()
    order = [m for m in palette if m in set(sub.method)]
    spare = []
    if axes is None:
        # Two panels a row at page width (~7.3 in), so that the text stays readable; a spare
        # cell of the grid holds the legend.
        cols = 2
        rows = math.ceil(len(metrics) / cols)
        _, grid = plt.subplots(rows, cols, figsize=(7.2, 2.5 * rows + 0.3), squeeze=False,
                               constrained_layout=True)
        flat = list(grid.ravel())
        axes, spare = flat, flat[len(metrics):]
        for ax in spare:
            ax.axis("off")
    axes = list(pd.Series(list(axes.flat) if hasattr(axes, "flat") else axes))
    for ax, metric in zip(axes, metrics, strict=False):
        sns.lineplot(data=sub, x="step", y=metric, hue="method", hue_order=order,
                     palette=palette, errorbar="sd", ax=ax, legend=ax is axes[0], marker="o",
                     markersize=5)
        space = {"rep": " (representation)", "emb": " (loss space)"}.get(metric[:3], "")
        ax.set_title(LABELS.get(metric.split("_", 1)[1] if space else metric, metric) + space,
                     fontsize=10.5)
        ax.set(ylabel="", xlabel="training step")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))  # whole steps
        ax.tick_params(labelsize=10)
    for ax in axes[len(metrics):]:
        if ax not in spare:
            ax.set_visible(False)
    fig = axes[0].figure
    if metrics and axes[0].get_legend() is not None:
        handles, labels = axes[0].get_legend_handles_labels()
        axes[0].get_legend().remove()
        if spare:  # the grid's empty cell: no data under it, and no space taken below
            spare[0].legend(handles, labels, loc="center", ncol=2, fontsize=10,
                            frameon=False, title="method", title_fontsize=10)
        elif fig.get_layout_engine() is not None:
            fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=10,
                       frameon=False)
        else:
            fig.tight_layout(rect=(0, 0.07, 1, 1))
            fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=10,
                       frameon=False)
    elif fig.get_layout_engine() is None:
        fig.tight_layout()
    return axes[:len(metrics)] if spare else axes


def final_table(metrics: pd.DataFrame, data: str = "vector", space: str = "emb") -> pd.DataFrame:
    """Method x metric table of the final values, 'mean ± sd' over seeds."""
    m = metrics[(metrics.data == data)
                & (((metrics.space == space) & metrics.metric.isin(MONITOR))
                   | metrics.metric.isin(["knn_acc", "r2_linear"]))]
    agg = m.groupby(["method", "metric"]).value.agg(["mean", "std"])
    text = of_agg(agg, fmts={"rank": "{:.2f}"})  # a rank of 24.09 needs no third decimal
    table = text.unstack("metric")
    order = [c for c in (*MONITOR, "knn_acc", "r2_linear") if c in table]
    table = table[order]
    # The effective rank of both spaces: the loss space (``space``) and the representation,
    # which downstream tasks and the chapter's figure use.
    other = "rep" if space == "emb" else "emb"
    names = {"emb": "loss space", "rep": "representation"}
    ranks = metrics[(metrics.data == data) & (metrics.space == other) & (metrics.metric == "rank")]
    if "rank" in table and len(ranks):
        extra = of_agg(ranks.assign(metric="rank").groupby(["method", "metric"]).value
                       .agg(["mean", "std"]), fmt="{:.2f}").unstack("metric")["rank"]
        at = list(table.columns).index("rank") + 1
        table.insert(at, "other rank", extra.reindex(table.index))
        table = table.rename(columns={"other rank": f"eff. rank ({names[other]})"})
    table = table.rename(columns={"rank": f"eff. rank ({names.get(space, space)})"})
    table = table.rename(columns=LABELS).fillna("–")
    rows = [r for r in (*METHODS, "raw input") if r in table.index]
    return readable(table.loc[rows].rename_axis(index=None))


def final_values(metrics: pd.DataFrame, data: str, space: str = "emb") -> pd.DataFrame:
    """Final values per (method, seed) as columns (monitor in ``space``, kNN, R^2)."""
    m = metrics[(metrics.data == data) & (metrics.method != "raw input")]
    keep = ((m.space == space) & m.metric.isin(MONITOR)) | m.metric.isin(["knn_acc",
                                                                          "r2_linear"])
    return m[keep].pivot_table(index=["method", "seed"], columns="metric", values="value")


def gap_accuracy_correlation(metrics: pd.DataFrame, data: str, score: str = "knn_acc",
                             space: str = "emb") -> float:
    """Spearman correlation, over every (method, seed), of the final gap with ``score``."""
    wide = final_values(metrics, data, space).dropna(subset=["gap", score])
    if len(wide) < 3:
        return math.nan
    return float(wide["gap"].rank().corr(wide[score].rank()))


def plot_gap_vs_score(metrics: pd.DataFrame, data: str = "vector", score: str = "knn_acc",
                      ax=None):
    """Final gap (loss space) against a downstream score, one point per method and seed."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.6))
    wide = final_values(metrics, data).reset_index()
    wide["method"] = wide.method.map(method_label)
    palette = method_colors()
    order = [m for m in palette if m in set(wide.method)]
    sns.scatterplot(data=wide, x="gap", y=score, hue="method", style="method", hue_order=order,
                    style_order=order, palette=palette, s=60, ax=ax)
    ax.set(xlabel=LABELS["gap"] + " (loss space)", ylabel=LABELS.get(score, score))
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1, 1), fontsize=8, title=None)
    return ax
