r"""Stability chapter: the mechanism, derivation by derivation, checked on real batches.

Jha et al. (2024) read every SSL method as keeping the center vector :math:`s = E_x \mu_x`
small while each sample's mean embedding over augmentations :math:`\mu_x = E_\omega u(\omega(x))`
stays large (:math:`u = f(x) / \|f(x)\|`). This experiment trains the seven methods of
:mod:`sithlib.experiments.stability_monitor` briefly on the vector DGP and measures, on real
batches of their embeddings:

1. the variance decomposition :math:`E_x\|\mu_x\|^2 = \|s\|^2 + E_x\|\mu_x - s\|^2` (exact for
   empirical means) and the finite-K relation
   :math:`\|\hat\mu_x\|^2 = \frac{1}{K} + \frac{K-1}{K} \langle u_k, u_{k'} \rangle_{k \ne k'}`;
2. the linearised contrastive repulsion: the mean over distinct pairs
   :math:`\frac{1}{N(N-1)} \sum_{i \ne j} u_i^\top u_j = \frac{N \|\hat s\|^2 - 1}{N - 1}`
   (exact), which :math:`\tau \cdot` (InfoNCE's log-mean-exp denominator) and the rescaled
   uniformity loss approach as :math:`\tau \to \infty`;
3. the gradient of each method's loss with respect to the embeddings the loss sees, compared
   with the gradient of :math:`\|\hat s\|^2` (cosine > 0: a descent step on the loss shrinks the
   center), for the full loss, the bare invariance term and, where the device is a clean
   switch inside the loss, the loss without it (SwAV with softmax codes, DINO without
   centering, VICReg without its variance term);
4. the devices' own identities: DINO's center is the EMA of the teacher's batch means, SwAV's
   Sinkhorn codes have (almost) uniform prototype totals, and the batch standardisation of
   Barlow Twins and VICReg makes the loss blind to a common translation of the batch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch
import torch.nn.functional as F

from sithlib import losses
from sithlib.experiments._figures import legend_below
from sithlib.experiments._tables import mean_sd
from sithlib.experiments.collapse_ablations import calibrate_untrained
from sithlib.experiments.stability_monitor import (
    METHODS,
    ImageSource,
    VectorSource,
    batched,
    embedding,
    make_method,
    train_method,
)
from sithlib.methods import method_label
from sithlib.metrics import mean_norm_decomposition
from sithlib.models import ResNet18, calibrate_batchnorm, calibration_batches

NAME = "stability_mechanism"
VERSION = 5  # 2: bias-free BYOL heads; 3: the shift check calls the losses;
# 4: no kNN bank drawn before the image probe; 5: untrained networks' batch norms calibrated
TITLE = "The common stability mechanism, checked on real batches"
CHAPTER = "chapters/03_stability/01_mechanism"

VARIANTS = ("full loss", "invariance only", "device removed")


@dataclass(frozen=True)
class Config:
    # Intervals for --set values beyond the sign rule of results.field_domain.
    DOMAINS: ClassVar[dict[str, str]] = {"ema_tau0": "[0, 1]"}
    methods: tuple[str, ...] = METHODS
    seeds: int = 2
    taus: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 100.0)
    # vector DGP and encoder (as in stability_monitor)
    dim: int = 10
    kappa: float = 10.0
    mixing_layers: int = 3
    hidden: tuple[int, ...] = (128, 128)
    feature_dim: int = 32
    steps: int = 200
    batch_size: int = 256
    # heads and optimiser
    head_hidden: int = 64
    head_out: int = 32
    prototypes: int = 30
    dino_out: int = 256
    ema_tau0: float = 0.99
    lr: float = 1e-3
    # probe set: N samples under K views
    k_views: int = 8
    n_probe: int = 256
    # the identity on the image DGP, with an untrained ResNet-18
    image_size: int = 16
    resnet_width: int = 4
    augment: str = "simclr_cifar"
    dgp_seed: int = 0
    checkpoint_every: int = 0

    def __post_init__(self):
        if isinstance(self.methods, str) or not self.methods or any(
                m not in METHODS for m in self.methods):
            raise ValueError(f"methods must be a non-empty tuple from {METHODS}, "
                             f"got {self.methods!r}")
        if self.k_views < 2:
            raise ValueError(f"k_views must be >= 2, got {self.k_views}")
        if not self.taus or any(t <= 0 for t in self.taus):
            raise ValueError(f"taus must be a non-empty tuple of numbers > 0, got {self.taus!r}")


PROFILES = {
    "quick": Config(),
    # A few seconds per method on a GPU: longer training, wider heads, larger batches.
    "paper": Config(seeds=3, hidden=(512, 512), feature_dim=128, steps=2000, batch_size=1024,
                    head_hidden=1024, head_out=128, prototypes=300, dino_out=4096, k_views=16,
                    n_probe=2048, image_size=32, resnet_width=32),
}


# ---------------------------------------------------------------------------------------------
# 1. the decomposition


def identity_rows(views: torch.Tensor) -> dict[str, float]:
    r"""Terms of the decomposition and the residuals of the two exact relations."""
    k = views.shape[0]
    t = mean_norm_decomposition(views)
    return {**t,
            "identity_residual": t["mean_sq_norm"] - t["center_sq_norm"] - t["spread"],
            "finite_k_residual": t["mean_sq_norm"] - (1 / k + (k - 1) / k * t["view_alignment"])}


# ---------------------------------------------------------------------------------------------
# 2. the linearised repulsion


def pair_mean(u: torch.Tensor) -> float:
    """Mean inner product over distinct pairs of rows (u normalised), by a double loop in
    matrix form: the sum of the Gram matrix minus its diagonal."""
    gram = u @ u.T
    n = u.shape[0]
    return float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))


def repulsion(u: torch.Tensor, tau: float) -> torch.Tensor:
    r"""InfoNCE's repulsion term :math:`\frac1N \sum_i \log \frac{1}{N-1} \sum_{j \ne i}
    e^{u_i^\top u_j / \tau}` (the log-partition over the other samples)."""
    n = u.shape[0]
    logits = (u @ u.T / tau).masked_fill(torch.eye(n, dtype=torch.bool, device=u.device),
                                         -math.inf)
    return (torch.logsumexp(logits, dim=1) - math.log(n - 1)).mean()


def linearisation_rows(z: torch.Tensor, taus) -> list[dict]:
    """tau * repulsion(tau), the rescaled uniformity and the gradient cosine with the center
    penalty, against the exact linearised value, for every tau."""
    u0 = F.normalize(z.detach().double(), dim=1)
    n = u0.shape[0]
    exact = pair_mean(u0)
    center_sq = float(u0.mean(0).pow(2).sum())
    rows = [{"metric": "pair_mean", "value": exact, "tau": math.nan},
            {"metric": "pair_mean_from_center", "value": (n * center_sq - 1) / (n - 1),
             "tau": math.nan}]
    for tau in taus:
        u = u0.clone().requires_grad_(True)
        r = repulsion(u, tau)
        (g_r,) = torch.autograd.grad(r, u)
        r = r.detach()
        (g_s,) = torch.autograd.grad(u.mean(0).pow(2).sum(), u)
        # Uniformity at t = 1 / (2 tau): log mean exp(-t |u_i - u_j|^2) = -1/tau + log mean
        # exp(u_i.u_j / tau), so tau * (U + 1/tau) is the same linearisation over pairs i < j.
        uni = float(losses.uniformity(u0, t=1 / (2 * tau))) * tau + 1.0
        rows += [{"metric": "tau_repulsion", "value": tau * float(r), "tau": tau},
                 {"metric": "tau_uniformity", "value": uni, "tau": tau},
                 {"metric": "repulsion_grad_cos", "value": _cos(g_r, g_s), "tau": tau}]
    return rows


# ---------------------------------------------------------------------------------------------
# 3. gradients of each method's loss with respect to its embeddings


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def _embed_pair(method, x_a, x_b):
    """The loss-space embeddings of both views as the method computes them (BatchNorm over
    the concatenated batch for SimCLR, SwAV and DINO), detached."""
    with torch.no_grad():
        if method.concat_views:
            z = embedding(method, torch.cat([x_a, x_b]))
            return z[: x_a.shape[0]], z[x_a.shape[0]:]
        return embedding(method, x_a), embedding(method, x_b)


def _teacher_pair(method, x_a, x_b):
    with torch.no_grad():
        if method.concat_views:
            t = method.teacher(torch.cat([x_a, x_b]))
            return t[: x_a.shape[0]], t[x_a.shape[0]:]
        return method.teacher(x_a), method.teacher(x_b)


def _swapped(s_a, s_b, q_a, q_b, tau):
    return -0.5 * ((q_a * F.log_softmax(s_b / tau, 1)).sum(1).mean()
                   + (q_b * F.log_softmax(s_a / tau, 1)).sum(1).mean())


def device_losses(method, z_a, z_b, x_a, x_b) -> dict[str, torch.Tensor]:
    """The method's loss as a function of its embeddings, and its variants.

    ``"full loss"`` is the method's objective on (z_a, z_b) with its heads and state;
    ``"invariance only"`` is :math:`-\\cos(z_a, z_b)` with gradients to both views (no
    negatives, no predictor, no stop-gradient, no centering, no standardisation);
    ``"device removed"`` exists for SwAV (softmax codes instead of Sinkhorn), DINO (no
    centering) and VICReg (no variance term).
    """
    name, cfg = method.name, method.config
    out = {"invariance only": -F.cosine_similarity(z_a, z_b, dim=1).mean()}
    if name == "simclr":
        out["full loss"] = losses.nt_xent(z_a, z_b, temperature=cfg.temperature)
    elif name == "byol":
        t_a, t_b = _teacher_pair(method, x_a, x_b)
        out["full loss"] = (losses.byol(method.predictor(z_a), t_b)
                            + losses.byol(method.predictor(z_b), t_a))
    elif name == "simsiam":
        out["full loss"] = 0.5 * (losses.simsiam(method.predictor(z_a), z_b)
                                  + losses.simsiam(method.predictor(z_b), z_a))
    elif name == "swav":
        s_a, s_b = method.prototypes(z_a), method.prototypes(z_b)
        out["full loss"] = losses.swav(s_a, s_b, temperature=cfg.temperature,
                                       epsilon=cfg.epsilon, iterations=cfg.sinkhorn_iterations)
        q_a, q_b = (F.softmax(s.detach() / cfg.epsilon, 1) for s in (s_a, s_b))
        out["device removed"] = _swapped(s_a, s_b, q_a, q_b, cfg.temperature)
    elif name == "dino":
        t_a, t_b = _teacher_pair(method, x_a, x_b)
        head = method.head
        s_a, s_b = (head.last_layer(head.norm(z)) for z in (z_a, z_b))
        args = (torch.stack([s_a, s_b]), torch.stack([t_a, t_b]))
        temps = {"student_temp": cfg.student_temp, "teacher_temp": method.teacher_temp()}
        out["full loss"] = losses.dino(*args, method.center, **temps)
        out["device removed"] = losses.dino(*args, torch.zeros_like(method.center), **temps)
    elif name == "barlow_twins":
        out["full loss"] = losses.barlow_twins(z_a, z_b, lambd=cfg.lambd)
    elif name == "vicreg":
        kw = {"sim_coeff": cfg.sim_coeff, "cov_coeff": cfg.cov_coeff}
        out["full loss"] = losses.vicreg(z_a, z_b, std_coeff=cfg.std_coeff, **kw)
        out["device removed"] = losses.vicreg(z_a, z_b, std_coeff=0.0, **kw)
    return out


def gradient_rows(method, x_a, x_b) -> list[dict]:
    r"""Cosine between :math:`\nabla_Z L` and :math:`\nabla_Z \|\hat s\|^2` (Z: both views'
    embeddings) for every variant, and the relative norm of the batch-summed gradient
    :math:`\|\sum_i \nabla_{z_i} L\| / \|\nabla_Z L\|` (0 when L ignores a common shift)."""
    m = copy.deepcopy(method).train()  # BatchNorm as in training; the copy keeps state intact
    z_a, z_b = (z.clone().requires_grad_(True) for z in _embed_pair(m, x_a, x_b))
    zs = torch.cat([z_a, z_b])
    center = F.normalize(zs, dim=1).mean(0).pow(2).sum()
    g_center = torch.cat(torch.autograd.grad(center, [z_a, z_b]))
    rows = []
    for variant, loss in device_losses(m, z_a, z_b, x_a, x_b).items():
        g = torch.cat(torch.autograd.grad(loss, [z_a, z_b], retain_graph=True))
        shift = float(g.sum(0).norm() / g.norm())
        rows += [{"variant": variant, "metric": "grad_center_cos", "value": _cos(g, g_center)},
                 {"variant": variant, "metric": "grad_shift_norm", "value": shift}]
    return rows


# ---------------------------------------------------------------------------------------------
# 4. the devices' own identities


def device_rows(method, x_a, x_b) -> list[dict]:
    """Exact properties of DINO's centering, SwAV's Sinkhorn codes and batch standardisation."""
    m = copy.deepcopy(method).train()
    name, cfg, rows = m.name, m.config, []
    if name == "dino":
        t_a, t_b = _teacher_pair(m, x_a, x_b)
        t = torch.cat([t_a, t_b])
        before = m.center.clone()
        with torch.no_grad():
            m(x_a, x_b)  # the training forward updates the center in place
        ema = cfg.center_momentum * before + (1 - cfg.center_momentum) * t.mean(0)
        batch_mean = t.mean(0)
        rows += [
            {"metric": "dino_center_ema_error", "value": float((m.center - ema).abs().max())},
            {"metric": "dino_center_vs_batch_mean",
             "value": float((before.squeeze(0) - batch_mean).norm() / batch_mean.norm())},
        ]
        k = t.shape[1]
        for label, c in (("centered", before), ("uncentered", torch.zeros_like(before))):
            p = F.softmax((t - c) / m.teacher_temp(), dim=1).mean(0)
            entropy = float(-(p * p.clamp_min(1e-30).log()).sum() / math.log(k))
            rows.append({"metric": f"dino_mean_prob_entropy_{label}", "value": entropy})
    elif name == "swav":
        z_a, _ = _embed_pair(m, x_a, x_b)
        with torch.no_grad():
            scores = m.prototypes(z_a)
        n, k = scores.shape
        q = losses.sinkhorn(scores, epsilon=cfg.epsilon, iterations=cfg.sinkhorn_iterations)
        soft = F.softmax(scores / cfg.epsilon, dim=1)
        rows += [
            {"metric": "sinkhorn_marginal_error",
             "value": float((q.sum(0) / (n / k) - 1).abs().max())},
            {"metric": "code_center_sq_norm_sinkhorn", "value": float(q.mean(0).pow(2).sum())},
            {"metric": "code_center_sq_norm_softmax", "value": float(soft.mean(0).pow(2).sum())},
            {"metric": "code_center_sq_norm_uniform", "value": 1.0 / k},
        ]
    elif name in ("barlow_twins", "vicreg"):
        # The loss itself, not our own standardisation: moving both views' embeddings by one
        # vector, here ten times their batch mean, must leave it unchanged.
        with torch.no_grad():
            z_a, z_b = _embed_pair(m, x_a, x_b)
            shift = 10 * z_a.mean(0)
            base = device_losses(m, z_a, z_b, x_a, x_b)["full loss"]
            moved = device_losses(m, z_a + shift, z_b + shift, x_a, x_b)["full loss"]
        rows.append({"metric": "shift_loss_change", "value": float((moved - base).abs()
                                                                     / base.abs())})
        rows.append({"metric": "raw_mean_norm", "value": float(z_a.double().mean(0).norm())})
    return rows


# ---------------------------------------------------------------------------------------------
# the run


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train the seven methods briefly, then check the center-vector identity, the linearised
    contrastive repulsion and each method's gradient on real batches of their embeddings
    (``metrics``; no ``curves``)."""
    from sithlib.results import checkpoint_for  # results imports experiments: import late

    source = VectorSource(cfg, device)
    k, n = source.probe.shape[:2]
    flat = source.probe.reshape(k * n, -1)
    x_a, x_b = source.sample(torch.Generator(device=device).manual_seed(2**30), cfg.batch_size)
    rows = []

    def add(new, **keys):
        rows.extend({**keys, **r} for r in new)

    calibration = calibration_batches(source.sample, cfg.batch_size, device=device)
    for name in cfg.methods:
        fresh = [make_method(name, source, cfg, s).to(device) for s in range(cfg.seeds)]
        for model in fresh:  # untrained: batch norms with the statistics of training batches
            calibrate_untrained(model, calibration)
        checkpoint = checkpoint_for(NAME, cfg, part=name) if cfg.checkpoint_every else None
        trained = train_method(name, source, cfg, steps=cfg.steps, batch_size=cfg.batch_size,
                               evals=1, device=device, evaluate=False,
                               checkpoint=checkpoint).finished()
        if checkpoint is not None:  # deleted once the result is written (run_experiment)
            checkpoint.clear()
        for state, models in (("init", list(enumerate(fresh))), ("trained", trained)):
            for seed, model in models:
                keys = {"data": "vector", "method": name, "state": state, "seed": seed}
                model.eval()
                with torch.no_grad():
                    views = embedding(model, flat).reshape(k, n, -1)
                ident = identity_rows(views)
                add([{"metric": key, "value": v} for key, v in ident.items()], **keys)
                add(gradient_rows(model, x_a, x_b), **keys)
                add(device_rows(model, x_a, x_b), **keys)
                if name == "simclr":
                    add(linearisation_rows(views[0], cfg.taus), **keys)
    # The decomposition on the image DGP, with untrained ResNet-18 representations.
    images = ImageSource(cfg, device)
    ki, ni = images.probe.shape[:2]
    image_batches = calibration_batches(images.sample, cfg.batch_size, device=device)
    for seed in range(cfg.seeds):
        net = ResNet18(width=cfg.resnet_width,
                       generator=torch.Generator().manual_seed(seed)).to(device)
        # Each view normalised as its own batch, as the methods' training does.
        calibrate_batchnorm(net, image_batches, lambda views, net=net: [net(v) for v in views])
        net.eval()
        with torch.no_grad():
            views = batched(net, images.probe.flatten(0, 1)).reshape(ki, ni, -1)
        add([{"metric": key, "value": v} for key, v in identity_rows(views).items()],
            data="image", method="resnet18", state="init", seed=seed)
    table = pd.DataFrame(rows)
    for col, fill in (("variant", ""), ("tau", math.nan)):
        if col not in table:
            table[col] = fill
    table["variant"] = table["variant"].fillna("")
    return {"metrics": table, "curves": None}


# ---------------------------------------------------------------------------------------------
# figures and tables

TERMS = {"center_sq_norm": r"$\|s\|^2$", "spread": r"$E\|\mu_x - s\|^2$",
         "mean_sq_norm": r"$E\|\mu_x\|^2$"}


def plot_decomposition(metrics: pd.DataFrame, state: str = "trained", ax=None):
    """The three terms of the decomposition per method (loss space), mean and sd over seeds."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(7.2, 3.4), constrained_layout=True)
    m = metrics[(metrics.data == "vector") & (metrics.state == state)
                & metrics.metric.isin(TERMS)].copy()
    m["term"] = m.metric.map(TERMS)
    m["method"] = m.method.map(method_label)
    sns.barplot(data=m, x="method", y="value", hue="term", errorbar="sd", ax=ax,
                hue_order=list(TERMS.values()))
    # All three terms are squared norms of unit-norm embeddings' means: at most 1.
    ax.set(xlabel="", ylabel="squared norm", ylim=(0, 1.05))
    ax.tick_params(axis="x", labelrotation=20)
    # Above the axes in one row: beside them it takes width from the bars.
    sns.move_legend(ax, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(TERMS),
                    title=None, fontsize=10, frameon=False)
    return ax


def plot_linearisation(metrics: pd.DataFrame, axes=None):
    """Left: tau times the repulsion (and the rescaled uniformity) divided by the linearised
    value; right: the cosine of its gradient with the center penalty's; bands: sd over seeds."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    if axes is None:  # page width (~7.3 in): the book shrinks wider figures and their text
        _, axes = plt.subplots(1, 2, figsize=(7.2, 3.0), constrained_layout=True)
    m = metrics[(metrics.method == "simclr") & (metrics.data == "vector")]
    ref = m[m.metric == "pair_mean"].set_index(["state", "seed"]).value
    ratio = m[m.metric.isin(["tau_repulsion", "tau_uniformity"])].copy()
    ratio["ratio"] = ratio.value.to_numpy() / ref.loc[list(zip(ratio.state, ratio.seed,
                                                              strict=True))].to_numpy()
    # tau R(tau), the decoupled repulsion (the log of the mean over the negatives) that the
    # chapter defines, and the uniformity rescaled the same way, with t = 1 / (2 tau).
    estimates = {"tau_repulsion": r"$\tau R(\tau)$", "tau_uniformity": "rescaled uniformity"}
    ratio["estimate"] = ratio.metric.map(estimates)
    # One colour per state in both panels (blue: untrained, orange: trained); the line style
    # tells the two estimates apart.
    names = {"init": "untrained", "trained": "trained"}
    ratio["state"] = ratio.state.map(names)
    states = [names[s] for s in names if s in set(m.state)]
    palette = dict(zip(names.values(), sns.color_palette(n_colors=2), strict=True))
    markers = dict(zip(estimates.values(), ("o", "X"), strict=True))
    dashes = dict(zip(estimates.values(), ("", (4, 1.5)), strict=True))
    sns.lineplot(data=ratio, x="tau", y="ratio", hue="state", hue_order=states,
                 palette=palette, style="estimate", style_order=list(estimates.values()),
                 errorbar="sd", markers=markers, dashes=dashes, legend=False, ax=axes[0])
    axes[0].axhline(1.0, color="0.5", ls="--", lw=1)  # the exact linearisation
    axes[0].set(xscale="log", xlabel=r"temperature $\tau$", ylabel="ratio to linearised")
    cos = m[m.metric == "repulsion_grad_cos"].assign(state=lambda d: d.state.map(names))
    sns.lineplot(data=cos, x="tau", y="value", hue="state", hue_order=states,
                 palette=palette, errorbar="sd", marker="o", legend=False, ax=axes[1])
    axes[1].set(xscale="log", xlabel=r"temperature $\tau$",
                ylabel=r"cos$(\nabla R, \nabla \|\hat s\|^2)$", ylim=(None, 1.02))
    # One legend for both panels: colour is the state, line style the estimate (left panel).
    handles = [Line2D([], [], color=palette[s], lw=2) for s in states] + [
        Line2D([], [], color="0.3", marker=markers[e], ls="-" if not dashes[e] else "--")
        for e in estimates.values()]
    labels = states + list(estimates.values())
    legend_below(axes, handles, labels, ncol=len(labels))
    return axes


def plot_gradient_cosines(metrics: pd.DataFrame, state: str = "trained", axes=None):
    """Cosine between each loss variant's gradient and the center penalty's gradient.

    Top: the three variants; bottom: the full loss and the loss without its device alone, on
    their own scale (the bare invariance term dwarfs them). Bars: mean, ticks: sd over seeds.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if axes is None:
        _, axes = plt.subplots(2, 1, figsize=(7.2, 5.8), sharex=True)
    m = metrics[(metrics.metric == "grad_center_cos") & (metrics.state == state)].copy()
    order = [method_label(v) for v in dict.fromkeys(m.method)]
    m["method"] = m.method.map(method_label)
    variants = [v for v in VARIANTS if v in set(m.variant)]
    palette = dict(zip(VARIANTS, sns.color_palette(n_colors=len(VARIANTS)), strict=True))
    zoom = [v for v in variants if v != "invariance only"]
    for ax, shown in zip(axes, (variants, zoom), strict=True):
        part = m[m.variant.isin(shown)]
        sns.barplot(data=part, x="method", y="value", hue="variant", errorbar="sd", ax=ax,
                    order=order, hue_order=shown, palette=palette)
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set(xlabel="", ylabel=r"cos($\nabla L$, $\nabla \|s\|^2$)")
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1, 1), title=None, fontsize=8)
    axes[0].set_title("all variants", fontsize=10)
    axes[1].set_title("full loss and device removed, own scale", fontsize=10)
    axes[1].tick_params(axis="x", labelrotation=30)
    plt.gcf().tight_layout()
    return axes


#: The exact checks: metric, what it measures, tolerance on its absolute value.
CHECKS = (
    ("identity_residual", "E‖μₓ‖² − ‖s‖² − E‖μₓ − s‖²", 1e-12),
    ("finite_k_residual", "‖μₓ‖² − 1/K − (K − 1)/K × mean ⟨uₖ, uₖ′⟩ over k ≠ k′ (K views)",
     1e-12),
    ("pair_gap", "mean ⟨uᵢ, uⱼ⟩ over i ≠ j − (N‖s‖² − 1)/(N − 1)", 1e-12),
    ("dino_center_ema_error", "DINO center − EMA of the teacher batch means", 1e-5),
    ("shift_loss_change", "relative change of the loss when both views move by 10 × their "
     "batch mean (Barlow Twins, VICReg)", 1e-4),
    ("grad_shift_norm", "‖batch-summed gradient‖ / ‖gradient‖ (Barlow Twins, VICReg)", 1e-4),
)


def checks_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Largest absolute value of every exact check over methods, states and seeds."""
    m = metrics
    pairs = m[m.metric.isin(["pair_mean", "pair_mean_from_center"])]
    wide = pairs.pivot_table(index=["method", "state", "seed"], columns="metric", values="value")
    gaps = (wide["pair_mean"] - wide["pair_mean_from_center"]).abs() if len(wide) else pd.Series()
    rows = []
    for metric, meaning, tol in CHECKS:
        if metric == "pair_gap":
            values = gaps
        else:
            sel = m[m.metric == metric]
            if metric == "grad_shift_norm":
                sel = sel[sel.method.isin(["barlow_twins", "vicreg"])
                          & (sel.variant == "full loss")]
            values = sel.value.abs()
        if len(values):
            worst = float(values.max())
            rows.append({"check": meaning, "largest |value|": f"{worst:.1e}",
                         "tolerance": f"{tol:.0e}", "holds": "yes" if worst <= tol else "no",
                         "cases": len(values)})
    return pd.DataFrame(rows).set_index("check")


#: Device quantities of the summary table: metric, method, description.
DEVICE_QUANTITIES = (
    ("code_center_sq_norm_sinkhorn", "swav", "SwAV: ‖q̄‖², mean Sinkhorn code"),
    ("code_center_sq_norm_softmax", "swav", "SwAV: ‖q̄‖², mean softmax code"),
    ("code_center_sq_norm_uniform", "swav", "SwAV: 1/P, the smallest ‖q̄‖² (uniform q̄)"),
    ("sinkhorn_marginal_error", "swav",
     "SwAV: largest relative error of the Sinkhorn prototype totals from N/P"),
    ("dino_center_vs_batch_mean", "dino", "DINO: ‖c − t̄‖ / ‖t̄‖ (t̄: batch mean of teacher logits)"),
    ("dino_mean_prob_entropy_centered", "dino",
     "DINO: entropy of the mean teacher probability / log M, centred"),
    ("dino_mean_prob_entropy_uncentered", "dino", "DINO: the same without centering"),
)


def device_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The devices' quantities at initialisation and after training, 'mean ± sd' over seeds,
    all with four decimals (P: SwAV's prototypes, M: DINO's outputs, N: the batch)."""
    rows = []
    for metric, method, label in DEVICE_QUANTITIES:
        sel = metrics[(metrics.metric == metric) & (metrics.method == method)]
        if not len(sel):
            continue
        agg = sel.groupby("state").value.agg(["mean", "std"])
        rows.append({"quantity": label, **{
            {"init": "untrained", "trained": "trained"}.get(state, state):
            mean_sd(agg.loc[state, "mean"], agg.loc[state, "std"], "{:.4f}")
            for state in agg.index}})
    table = pd.DataFrame(rows).set_index("quantity")
    table.index.name = None
    return table
