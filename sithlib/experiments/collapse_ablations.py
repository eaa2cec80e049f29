r"""Stability chapter: induced collapse (Jha, Blaschko, Asano and Tuytelaars, 2024).

Every method keeps collapse away with one device: a predictor and a stop-gradient (SimSiam),
a predictor and a slow EMA target (BYOL), centering and sharpening (DINO), Sinkhorn
equipartition (SwAV), decorrelation (Barlow Twins), a variance hinge (VICReg). We remove each
device in turn (the switches of ``sithlib.methods``), train the ablation and its intact method
on the same vector DGP (latents uniform on the sphere, vMF positives, an invertible
leaky-ReLU mixing x = g(z)) with the same MLP encoder, and measure on held-out data, with
K positive samples of each held-out latent standing for its augmentations:

- the center vector :math:`s = E_x E_\omega[u]` of the L2-normalised embedding u that the loss
  acts on (the projector or head output) and its norm,
- the per-sample means :math:`\mu_x = E_\omega[u]` (mean norm, and the spread
  :math:`E_x\|\mu_x - s\|^2` that vanishes when every :math:`\mu_x` equals s),
- the embedding's per-dimension std relative to its isotropic value :math:`1/\sqrt{d}` and its
  effective rank (RankMe of the centred normalised embedding),
- the encoder's held-out linear :math:`R^2` to z and effective rank, beside an untrained
  encoder.

Collapse is decided by thresholds on measured quantities (``Config``): complete when the std
ratio falls below ``complete_std``, dimensional when it does not but the effective rank of the
embedding or of the encoder output falls below ``rank_fraction`` times the latent dimension.
Two failures do not show in the normalised embedding, and have rules of their own. A
collapse of scale: the encoder output f(x) shrinks to nearly one point, while the
normalisations after it (the head's batch norms, then u) blow what is left back up to unit
scale; shrunk when the per-dimension std of f(x) on held-out data falls below
``collapse_std``, the threshold of the training engine's collapse guard. And DINO's two
failures (Caron et al. 2021): one output dominating, dominant when one of the M outputs holds
at least ``dominant_mass`` of the student's mean output distribution over x; and a uniform
output, uniform when the mean entropy of that distribution reaches ``uniform_entropy``
times its maximum, :math:`\log M`.
The paper's prediction is tested on time: does :math:`\|s\|` early in training (at
``early_fraction`` of the steps) exceed ``s_threshold`` exactly for the runs that end in
complete collapse? And does the final :math:`\|s\|` do so?
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from sithlib.dgp import DGP, DGPConfig
from sithlib.experiments._tables import (
    METHOD_LABELS,
    count_of,
    number_word,
    of_values,
    tex_sci,
)
from sithlib.experiments.stability_monitor import embedding
from sithlib.methods import build_method, method_label
from sithlib.metrics import (
    center_vector_norm,
    effective_rank,
    embedding_std,
    mean_norm_decomposition,
    r2_linear,
    sample_mean_norm,
)
from sithlib.models import calibrate_batchnorm
from sithlib.models import calibration_batches as _batches  # this module's own wraps it
from sithlib.models.mlp import MLP
from sithlib.train import TrainConfig, train

NAME = "collapse_ablations"
# 2: bias-free BYOL heads; 3: DINO's bottleneck, unbiased mean ||mu_x||; 4: the untrained
# networks' batch norms hold statistics of training batches (calibrate_untrained); 5: the
# outcomes "shrunk" (encoder_std) and "dominant" (DINO's dominant_mass).
VERSION = 5
TITLE = "Induced collapse"
CHAPTER = "chapters/03_stability/03_collapse"

# variant -> (method, switches that remove one anti-collapse device); {} is the intact method.
VARIANTS: dict[str, tuple[str, dict]] = {
    "simsiam": ("simsiam", {}),
    "simsiam_no_predictor": ("simsiam", {"predictor": False}),
    "simsiam_no_stop_gradient": ("simsiam", {"stop_gradient": False}),
    "byol": ("byol", {}),
    "byol_no_predictor": ("byol", {"predictor": False}),
    "byol_ema_0": ("byol", {"tau0": 0.0, "tau_end": 0.0}),
    "byol_ema_1": ("byol", {"tau0": 1.0, "tau_end": 1.0}),
    "dino": ("dino", {}),
    "dino_no_centering": ("dino", {"centering": False}),
    "dino_no_sharpening": ("dino", {"sharpening": False}),
    "swav": ("swav", {}),
    "swav_softmax": ("swav", {"targets": "softmax"}),
    "barlow_twins": ("barlow_twins", {}),
    "barlow_twins_no_off_diagonal": ("barlow_twins", {"lambd": 0.0}),
    "vicreg": ("vicreg", {}),
    "vicreg_no_variance": ("vicreg", {"std_coeff": 0.0}),
}
# The value of the "collapse" metric indexes it; "uniform" and "dominant" only for DINO's
# output distribution. A tuple so that the codes of stored results keep their meaning.
OUTCOMES = ("none", "dimensional", "complete", "uniform", "dominant", "shrunk")


@dataclass(frozen=True)
class Config:
    # Intervals for --set values beyond the sign rule of results.field_domain.
    DOMAINS: ClassVar[dict[str, str]] = {"kappa": "[0, inf)"}  # 0: uniform positives
    variants: tuple[str, ...] = tuple(VARIANTS)
    dim: int = 5
    kappa: float = 10.0
    mixing_layers: int = 3
    hidden: tuple[int, ...] = (64, 64)
    feature_dim: int = 10
    head_hidden: int = 64
    head_dim: int = 32
    steps: int = 600
    batch_size: int = 256
    lr: float = 1e-3
    seeds: int = 2
    eval_every: int = 60
    n_eval: int = 800
    views: int = 6
    early_fraction: float = 0.1
    complete_std: float = 0.25
    rank_fraction: float = 0.5
    # DINO's output is uniform at this fraction of the maximum entropy log M (intact DINO stays
    # far below it, about two thirds in the quick profile).
    uniform_entropy: float = 0.9
    # One DINO output holds this share of the mean output distribution (1/M when balanced).
    dominant_mass: float = 0.5
    # The encoder output's per-dimension std below it: the training engine's guard threshold.
    collapse_std: float = TrainConfig.collapse_std
    s_threshold: float = 0.9
    dgp_seed: int = 0
    checkpoint_every: int = 0

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ValueError(f"variants must be a non-empty tuple of {tuple(VARIANTS)}, "
                             f"got {self.variants!r}")
        if self.views < 2:
            raise ValueError(f"views must be >= 2 (K augmentations per sample), got {self.views}")
        for name in ("early_fraction", "complete_std", "rank_fraction", "uniform_entropy",
                     "dominant_mass", "s_threshold"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if not self.collapse_std > 0:
            raise ValueError(f"collapse_std must be > 0, got {self.collapse_std}")


PROFILES = {
    "quick": Config(),
    # Wider networks, a 4x larger batch, three seeds and 2.5x the steps. Sized for about 7
    # minutes on one H100: the 48 runs train one after the other (every method has state) and
    # small networks are launch-bound, about 5 ms a step.
    "paper": Config(hidden=(256, 256, 256), feature_dim=32, head_hidden=512, head_dim=128,
                    steps=1500, batch_size=1024, seeds=3, eval_every=75, n_eval=4000,
                    views=16, checkpoint_every=500),
}


def head_config(method: str, cfg) -> dict:
    """Small heads for the vector DGP, sized by ``cfg.head_hidden`` and ``cfg.head_dim``.

    Deviations from the official defaults, all for a short run on a small MLP: SimSiam uses
    its 2-layer CIFAR projector and a bottleneck of a quarter of the width (512 of 2048
    officially); BYOL and DINO start the EMA at 0.99 (BYOL's value for 100-300 epochs); DINO
    has BatchNorm in its head (``use_bn``; without it the intact method collapses to the
    uniform distribution here) and as many outputs as the head is wide; SwAV has as many
    prototypes and keeps them frozen for the first tenth of the steps.
    """
    h, d = cfg.head_hidden, cfg.head_dim
    return {
        "simsiam": {"proj_hidden_dim": h, "proj_dim": d, "proj_layers": 2,
                    "pred_hidden_dim": max(d // 4, 1)},
        "byol": {"proj_hidden_dim": h, "proj_dim": d, "pred_hidden_dim": h, "tau0": 0.99},
        "dino": {"out_dim": h, "hidden_dim": h, "bottleneck_dim": d, "use_bn": True,
                 "tau0": 0.99},
        "swav": {"proj_hidden_dim": h, "proj_dim": d, "num_prototypes": h,
                 "freeze_prototypes_steps": cfg.steps // 10},
        "barlow_twins": {"proj_dims": (h, h)},
        "vicreg": {"proj_dims": (h, h)},
        "simclr": {"proj_hidden_dim": h, "proj_dim": d},
        "stability": {},
    }[method]


def make_dgp(cfg, device="cpu") -> DGP:
    """The vector DGP: uniform latents on the sphere, vMF positives, an invertible MLP mixing."""
    return DGP(DGPConfig(dim=cfg.dim, kappa=cfg.kappa, mixing_layers=cfg.mixing_layers,
                         seed=cfg.dgp_seed), device=device)


def held_out(dgp: DGP, n: int, views: int, device="cpu", seed: int = 2**31 - 1):
    """Held-out latents z, their clean observations g(z) and K positive views g(z'), z' ~ p(.|z).

    Returns
    -------
    (z, x, x_views) with shapes (n, dim), (n, dim) and (K, n, dim).
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    z = dgp.sample_latents(n, gen)
    x_views = torch.stack([dgp.mixing(dgp.positive(z, gen)) for _ in range(views)])
    return z, dgp.mixing(z), x_views


def _rank(u: torch.Tensor) -> float:
    """RankMe of the centred rows; 0 when they are all equal (no direction left)."""
    centred = u - u.mean(0)
    # A residue this small is float32 rounding around a single point: its spectrum is noise.
    if not float(centred.double().pow(2).sum(1).mean()) > 1e-6:
        return 0.0
    return effective_rank(centred)


@torch.no_grad()
def monitors(method, z: torch.Tensor, x: torch.Tensor, x_views: torch.Tensor) -> dict:
    """The stability monitors of a method on held-out data (the method in eval mode).

    Parameters
    ----------
    method : sithlib.methods.Method
        A trained (or untrained) method.
    z, x, x_views : Tensor
        From :func:`held_out`.

    Returns
    -------
    scores : dict of str to float
        ``center_norm``, ``mean_mu_norm``, ``spread``, ``std_ratio`` and ``effective_rank``
        of the embedding the loss sees; ``encoder_center_norm``, ``encoder_effective_rank``,
        ``encoder_std`` (the per-dimension std of the raw encoder output, the quantity of the
        training engine's collapse guard) and ``r2_linear`` of the encoder output; for DINO
        also ``head_entropy``, the mean entropy of the student's output distribution p(x),
        divided by its maximum log M, and ``dominant_mass``, the largest entry of the mean
        distribution E_x p(x) (1/M when the outputs are used equally, 1 when one dominates).
    """
    k, n, dim = x_views.shape
    flat = x_views.reshape(k * n, dim)
    # The space the monitor chapter measures: projections, and DINO's bottleneck (not its
    # logits, whose normalised mean is no center: they are defined up to a common shift).
    proj = embedding(method, flat).float()
    u = torch.nn.functional.normalize(proj, dim=1)
    views = u.reshape(k, n, -1)
    decomposition = mean_norm_decomposition(views)
    h = method.embed(x).float()
    h_views = method.embed(flat).float()
    extra = {}
    if method.name == "dino":
        logp = torch.log_softmax(method.project(x).float() / method.config.student_temp, dim=1)
        entropy = -(logp.exp() * logp).sum(1).mean()
        extra["head_entropy"] = float(entropy) / math.log(logp.shape[1])
        extra["dominant_mass"] = float(logp.exp().mean(0).max())
    return {
        "center_norm": center_vector_norm(views),
        "mean_mu_norm": sample_mean_norm(views, unbiased=True),
        "spread": decomposition["spread"],
        "std_ratio": embedding_std(u) * math.sqrt(u.shape[1]),
        "effective_rank": _rank(u),
        "encoder_center_norm": center_vector_norm(h_views),
        "encoder_effective_rank": _rank(torch.nn.functional.normalize(h, dim=1)),
        "encoder_std": embedding_std(h, normalize=False),
        "r2_linear": r2_linear(h, z),
        **extra,
    }


def outcome(scores, cfg) -> int:
    """The collapse of one run from its :func:`monitors` ``scores`` (a mapping; DINO's two
    scores may be absent), as an index into ``OUTCOMES``; the first rule that holds decides.

    2 complete: the embedding's std ratio is below ``cfg.complete_std``. 5 shrunk: the
    per-dimension std of the raw encoder output is below ``cfg.collapse_std``, a collapse of
    scale that the normalised embedding cannot show. 4 dominant (DINO): one output holds at
    least ``cfg.dominant_mass`` of the mean output distribution. 3 uniform (DINO): the
    student's output entropy is at least ``cfg.uniform_entropy`` of its maximum.
    1 dimensional: the effective rank of the embedding or of the encoder output is below
    ``cfg.rank_fraction`` times the latent dimension. 0 none otherwise.
    """
    if scores["std_ratio"] < cfg.complete_std:
        return 2
    if scores.get("encoder_std", math.inf) < cfg.collapse_std:
        return 5
    if scores.get("dominant_mass", math.nan) >= cfg.dominant_mass:
        return 4
    if scores.get("head_entropy", math.nan) >= cfg.uniform_entropy:
        return 3
    if min(scores["effective_rank"], scores["encoder_effective_rank"]) < (cfg.rank_fraction
                                                                           * cfg.dim):
        return 1
    return 0


def model_factory(method: str, switches: dict, cfg):
    """``make_model(seed)`` for the engine: an MLP encoder f (widths from ``cfg``) inside
    ``method`` with the heads of :func:`head_config` and the given switches."""

    def make_model(seed: int):
        gen = torch.Generator().manual_seed(seed)
        encoder = MLP([cfg.dim, *cfg.hidden, cfg.feature_dim], generator=gen)
        return build_method(method, encoder, {**head_config(method, cfg), **switches},
                            generator=gen)

    return make_model


def calibration_batches(dgp: DGP, cfg, device="cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches (pairs of views, ``cfg.batch_size`` each) for
    :func:`calibrate_untrained`, from a stream of their own."""
    def pairs(generator, n):
        p = dgp.sample_pairs(n, generator)
        return p.x, p.x_pos

    return _batches(pairs, cfg.batch_size, device=device)


def calibrate_untrained(method, batches) -> int:
    """Give an untrained method's batch norms the statistics of training batches.

    Built, its batch norms hold mean 0 and variance 1, and in eval mode it would compute a
    function it never computes (its first training step normalises with batch statistics);
    see :func:`sithlib.models.batchnorm.calibrate_batchnorm`. Only the networks run (the
    encoder, then the projector, predictor or head), with the batching of training: both views
    in one batch for the methods that concatenate them (SwAV, DINO), each view on its own for
    the others; the loss never runs, so DINO's center, SwAV's queue and the EMA teachers stay
    as built. Returns the number of batch norms calibrated.
    """
    nets = [method.encoder] + [net for name in ("projector", "predictor", "head")
                               if isinstance(net := getattr(method, name, None), torch.nn.Module)]

    def forward(batch):
        x_a, x_b = batch
        for x in ([torch.cat([x_a, x_b])] if method.concat_views else [x_a, x_b]):
            for net in nets:
                x = net(x)

    return calibrate_batchnorm(nets, batches, forward)


def train_variant(variant: str, method: str, switches: dict, cfg, dgp, test, *, device="cpu",
                  checkpoint=None, name: str = NAME):
    """Train ``cfg.seeds`` copies of one method variant; returns the engine's result.

    The curves hold the held-out :func:`monitors` every ``eval_every`` steps and the center
    norm of the training batch (``batch_center_norm``, the method's own log).
    """
    z, x, x_views = test

    def sample(generator, n):
        pairs = dgp.sample_pairs(n, generator)
        return pairs.x, pairs.x_pos

    def loss_fn(model, batch):
        x_a, x_b = batch
        loss, logs = model(x_a, x_b)
        return loss, model.embed(x_a), {"batch_center_norm": logs["center_norm"]}

    def evaluate(model, seed):
        return monitors(model, z, x, x_views)

    tcfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seeds=cfg.seeds,
                       eval_every=cfg.eval_every, checkpoint_every=cfg.checkpoint_every)
    return train(model_factory(method, switches, cfg), sample, loss_fn, tcfg, device=device,
                 evaluate=evaluate, checkpoint=checkpoint, name=f"{name}:{variant}")


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train every method and each of its ablations; whether it collapsed, with ||s|| and the
    other monitors at the end (``metrics``) and over training (``curves``)."""
    from sithlib.results import checkpoint_for  # results imports experiments: import late

    dgp = make_dgp(cfg, device)
    test = held_out(dgp, cfg.n_eval, cfg.views, device)
    early_step = max(cfg.eval_every, int(cfg.early_fraction * cfg.steps) // cfg.eval_every
                     * cfg.eval_every)
    rows, curves = [], []
    for variant in cfg.variants:
        method, switches = VARIANTS[variant]
        ablated = bool(switches)
        checkpoint = (checkpoint_for(NAME, cfg, part=variant) if cfg.checkpoint_every
                      else None)
        result = train_variant(variant, method, switches, cfg, dgp, test, device=device,
                               checkpoint=checkpoint)
        curve = pd.DataFrame(result.curves)
        curve.insert(0, "variant", variant)
        curve.insert(1, "method", method)
        curves.append(curve)
        keys = {"variant": variant, "method": method, "ablation": ablated}
        for seed, model in result.finished():
            values = monitors(model.eval(), *test)
            mine = curve[curve.seed == seed]
            early = mine[mine.step <= early_step].sort_values("step")
            values["center_norm_early"] = (float(early.center_norm.iloc[-1]) if len(early)
                                           else math.nan)
            values["collapse"] = outcome(values, cfg)
            complete = values["collapse"] == 2
            predicted = values["center_norm_early"] > cfg.s_threshold
            values["s_predicts"] = float(predicted == complete)
            values["s_agrees"] = float((values["center_norm"] > cfg.s_threshold) == complete)
            rows += [{**keys, "seed": seed, "metric": k, "value": float(v)}
                     for k, v in values.items()]
        for failure in result.failures:
            rows.append({**keys, "seed": failure["seed"], "metric": "failure_step",
                         "value": float(failure["step"])})
        if checkpoint is not None:
            checkpoint.clear()
    # The untrained encoder (and heads) of every method: what training has to beat. Its batch
    # norms get the statistics of training batches: with their defaults (mean 0, variance 1)
    # it would be scored as a function that no step of training computes.
    batches = calibration_batches(dgp, cfg, device)
    for method in dict.fromkeys(VARIANTS[v][0] for v in cfg.variants):
        make_model = model_factory(method, {}, cfg)
        for seed in range(cfg.seeds):
            model = make_model(seed).to(device)
            calibrate_untrained(model, batches)
            values = monitors(model.eval(), *test)
            rows += [{"variant": f"{method} (untrained)", "method": method, "ablation": False,
                      "seed": seed, "metric": k, "value": float(v)} for k, v in values.items()]
    metrics = pd.DataFrame(rows)
    metrics = metrics[metrics.value.notna()].reset_index(drop=True)
    return {"metrics": metrics, "curves": pd.concat(curves, ignore_index=True)}


# -- tables and figures ---------------------------------------------------------------------------


#: Compound terms that keep their hyphen in the variants' display names.
_HYPHENATED = {"off diagonal": "off-diagonal", "stop gradient": "stop-gradient"}


def variant_label(variant: str) -> str:
    """A variant's name for tables: ``"simsiam_no_predictor"`` -> ``"SimSiam: no predictor"``."""
    method = VARIANTS[variant][0]
    rest = variant[len(method):].strip("_").replace("_", " ").replace("ema", "EMA")
    for words, hyphenated in _HYPHENATED.items():
        rest = rest.replace(words, hyphenated)
    return METHOD_LABELS[method] + (f": {rest}" if rest else "")


def seed_outcome(codes: pd.Series) -> str:
    """The outcome over seeds: the most frequent one with its count, e.g. ``"none (2/2)"``, or
    ``"split (1 complete, 1 none)"`` when several outcomes are equally frequent (no rule picks
    one of them)."""
    codes = codes.round().astype(int)
    counts = codes.value_counts()
    n = len(codes)
    top = counts[counts == counts.max()]
    if len(top) == 1:
        code = int(top.index[0])
        return f"{OUTCOMES[code]} ({int(top.iloc[0])}/{n})"
    parts = ", ".join(f"{int(counts[c])} {OUTCOMES[int(c)]}"
                      for c in sorted(counts.index, reverse=True))
    return f"split ({parts})"


def _rank_text(values: pd.Series) -> str:
    """Effective rank 'mean±sd', or 'one point' when every seed's embedding is a single point
    (the rank is then recorded as 0 by convention: RankMe itself is at least 1)."""
    return "one point" if (values == 0).all() else of_values(values, "{:.1f}")


def collapse_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per trained variant: measured outcome (the most frequent over seeds with its
    count, or "split" on a tie, ``seed_outcome``), center norms early and final, the
    per-sample means, std ratio, effective ranks, encoder :math:`R^2`, and in how many seeds
    the center norm early (final) told the outcome right: above ``s_threshold`` in a run that
    ends in complete collapse, at most ``s_threshold`` in a run that does not."""
    m = metrics[~metrics.variant.str.endswith("(untrained)")]
    out = []
    for variant, g in m.groupby("variant", sort=False):
        by = {k: v.value for k, v in g.groupby("metric")}
        n = len(by["collapse"])
        out.append({
            "variant": variant,
            "method": g.method.iloc[0],
            "ablation": bool(g.ablation.iloc[0]),
            "outcome": seed_outcome(by["collapse"]),
            "‖s‖ early": of_values(by["center_norm_early"], "{:.2f}"),
            "‖s‖ final": of_values(by["center_norm"], "{:.2f}"),
            "mean ‖μₓ‖": of_values(by["mean_mu_norm"], "{:.2f}"),
            "E‖μₓ − s‖²": of_values(by["spread"], "{:.3f}"),
            "std ratio": of_values(by["std_ratio"], "{:.2f}"),
            "eff. rank": _rank_text(by["effective_rank"]),
            "encoder R²": of_values(by["r2_linear"], "{:.2f}"),
            "encoder eff. rank": _rank_text(by["encoder_effective_rank"]),
            "encoder std": of_values(by["encoder_std"], "{:.1e}"),
            "output entropy": (of_values(by["head_entropy"], "{:.2f}") if "head_entropy" in by
                               else "–"),
            "top output": (of_values(by["dominant_mass"], "{:.2f}") if "dominant_mass" in by
                           else "–"),
            "early ‖s‖ predicts": f"{int(by['s_predicts'].sum())}/{n}",
            "final ‖s‖ agrees": f"{int(by['s_agrees'].sum())}/{n}",
        })
    return pd.DataFrame(out).set_index("variant")


def _families(curves: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(curves.method))


def plot_center_norm(curves: pd.DataFrame, metric: str = "center_norm", axes=None):
    """One panel per method: ``metric`` over training for the intact method (black) and each
    ablation, mean over seeds with a band of one standard deviation. An ablation has the same
    colour in every panel (e.g. "no predictor"), and one legend below the panels names them."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    families = _families(curves)
    if axes is None:
        cols = min(3, len(families))
        rows = math.ceil(len(families) / cols)
        _, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.4 * rows + 0.8), sharex=True,
                               sharey=True, squeeze=False, layout="constrained")
    flat = list(getattr(axes, "flat", axes))
    # Short names ("no predictor"), and one colour per name across the panels.
    names = {}
    for family in families:
        for v in dict.fromkeys(curves[curves.method == family].variant):
            names[v] = "intact" if v == family else variant_label(v).split(": ", 1)[-1]
    kinds = list(dict.fromkeys(n for n in names.values() if n != "intact"))
    colours = [c for i, c in enumerate(sns.color_palette("tab10", 10)) if i != 7]  # no grey
    colours += sns.color_palette("husl", max(0, len(kinds) - len(colours)))
    colour = {"intact": "black", **dict(zip(kinds, colours, strict=False))}
    for ax, family in zip(flat, families, strict=False):
        part = curves[curves.method == family]
        order = list(dict.fromkeys(part.variant))
        sns.lineplot(data=part, x="step", y=metric, hue="variant", hue_order=order,
                     palette={v: colour[names[v]] for v in order}, errorbar="sd", ax=ax,
                     lw=1.4, legend=False)
        ax.set_title(method_label(family), fontsize=10)
        ax.set(xlabel="training step",
               ylabel={"center_norm": "‖s‖"}.get(metric, metric.replace("_", " ")))
    for ax in flat[len(families):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colour[n], lw=1.6, label=n) for n in ("intact", *kinds)]
    figure = flat[0].figure
    figure.legend(handles=handles, loc="outside lower center" if figure.get_layout_engine()
                  else "lower center", ncol=min(5, len(handles)), fontsize=9, frameon=False,
                  columnspacing=1.2, handlelength=1.6)
    return axes


def plot_prediction(metrics: pd.DataFrame, s_threshold: float = 0.9, ax=None):
    """Early center norm against the final std ratio, one point per (variant, seed), marked by
    the measured outcome; the dashed line is the prediction threshold."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.8))
    m = metrics[~metrics.variant.str.endswith("(untrained)")]
    wide = m.pivot_table(index=["variant", "seed"], columns="metric", values="value").reset_index()
    wide["outcome"] = wide.collapse.round().astype(int).map(dict(enumerate(OUTCOMES)))
    wide["kind"] = wide.variant.map(lambda v: "intact" if VARIANTS.get(v, ("", {}))[1] == {}
                                    else "ablation")
    seen = set(wide.outcome)
    sns.scatterplot(data=wide, x="center_norm_early", y="std_ratio", hue="outcome",
                    hue_order=[o for o in OUTCOMES if o in seen], style="kind",
                    style_order=["intact", "ablation"], s=45, ax=ax)
    ax.axvline(s_threshold, color="0.4", ls="--", lw=1)
    ax.set(xlabel="‖s‖ early in training", ylabel="final std ratio (1 = isotropic)",
           xlim=(0, 1.02), ylim=(0, None))
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return ax


def runs_text(n: int, verbs: tuple[str, str]) -> str:
    """``"no run ends"``, ``"one run ends"``, ``"three runs end"``."""
    if n == 0:
        return f"no run {verbs[0]}"
    return f"{number_word(n)} run{'' if n == 1 else 's'} {verbs[0] if n == 1 else verbs[1]}"


def collapse_share(metrics: pd.DataFrame) -> pd.Series:
    """Per ablation, the share of its seeds that collapse (any outcome but "none")."""
    m = metrics[(metrics.metric == "collapse") & metrics.variant.map(
        lambda v: v in VARIANTS and bool(VARIANTS[v][1]))]
    return m.groupby("variant", sort=False).value.agg(lambda c: float((c.round() > 0).mean()))


def claims_table(metrics: pd.DataFrame, s_threshold: float = 0.9) -> pd.DataFrame:
    """The paper's claims about induced collapse, each with what we measured and a verdict
    decided by a fixed rule from the measurement (per run: one variant and one seed)."""
    m = metrics[~metrics.variant.str.endswith("(untrained)")]
    wide = m.pivot_table(index=["variant", "seed"], columns="metric", values="value").reset_index()
    wide["ablated"] = wide.variant.map(lambda v: bool(VARIANTS[v][1]))
    wide["code"] = wide.collapse.round().astype(int)
    # More than half of the seeds counts as collapsing, exactly half as split between seeds.
    share = collapse_share(metrics)
    collapsed, split = int((share > 0.5).sum()), int((share == 0.5).sum())
    intact = wide[~wide.ablated]
    complete = wide[wide.code == 2]
    rows = [(
        "Removing one anti-collapse device makes the method collapse",
        count_of(collapsed, len(share), "ablation", ("collapses", "collapse")) + " in most seeds"
        + (f", {number_word(split)} in half of them" if split else "")
        + "; " + count_of(int((intact.code > 0).sum()), len(intact), "intact run",
                          ("collapses", "collapse")),
        "supported" if collapsed == len(share) else
        ("partly supported" if collapsed or split else "not supported"),
    )]
    if len(complete):
        lo, hi = complete.center_norm.min(), complete.spread.max()
        rows.append((
            "Complete collapse is ‖s‖ → 1 with μₓ → s",
            f"{runs_text(len(complete), ('collapses', 'collapse'))} completely; "
            f"{'its' if len(complete) == 1 else 'their'} final ‖s‖ ≥ {lo:.3f} and "
            f"E‖μₓ − s‖² ≤ {hi:.4f}",
            "supported" if lo > s_threshold else "not supported",
        ))
    else:
        rows.append(("Complete collapse is ‖s‖ → 1 with μₓ → s",
                     "no run collapses completely within the budget", "not tested"))
    early = wide.s_predicts.mean()
    rows.append((
        f"‖s‖ early in training (above {s_threshold:g}) predicts complete collapse",
        f"right in {int(wide.s_predicts.sum())} of {len(wide)} runs",
        "supported" if early == 1 else ("partly supported" if early >= 0.75 else
                                        "not supported"),
    ))
    high = wide[(wide.center_norm > s_threshold) & (wide.code != 2)]
    rows.append((
        f"A final ‖s‖ above {s_threshold:g} means complete collapse",
        f"{runs_text(len(high), ('ends', 'end'))} above it without complete collapse; the "
        f"final value agrees with the outcome in {int(wide.s_agrees.sum())} of {len(wide)} runs",
        "supported" if wide.s_agrees.all() else "partly supported" if wide.s_agrees.mean()
        >= 0.75 else "not supported",
    ))
    for code, claim, how in (
            (1, "Dimensional collapse shows in ‖s‖", "dimensionally"),
            (3, "DINO's collapse to a uniform output shows in ‖s‖", "to a uniform output"),
            (4, "DINO's collapse to one dominant output shows in ‖s‖", "to one dominant output"),
            (5, "A collapse of the encoder's scale shows in ‖s‖", "in scale")):
        runs = wide[wide.code == code]
        if not len(runs):
            continue
        seen = int((runs.center_norm > s_threshold).sum())
        lo, hi = (f"{v:.2f}" for v in (runs.center_norm.min(), runs.center_norm.max()))
        rows.append((
            claim,
            f"{runs_text(len(runs), ('collapses', 'collapse'))} {how}; "
            + count_of(seen, len(runs), "run", ("ends", "end"))
            + f" with ‖s‖ above {s_threshold:g} (final ‖s‖ {lo}"
            + ("" if lo == hi else f" to {hi}") + ")",
            "supported" if seen == len(runs) else "not supported",
        ))
    return pd.DataFrame(rows, columns=["claim", "measured", "verdict"])


def _seeds_text(k: int, n: int) -> str:
    if k == n:
        return "both of its seeds" if n == 2 else f"all {number_word(n)} of its seeds"
    return f"{number_word(k)} of its {number_word(n)} seeds"


def missed_collapses(metrics: pd.DataFrame, curves: pd.DataFrame, cfg: dict) -> list[str]:
    """Ablations that :func:`outcome` calls "none" (over seeds) although the training engine's
    collapse guard flagged them, one Markdown sentence each: a cross-check of the rules.

    The guard watches the per-dimension std of the encoder output on the training batch, the
    rule for "shrunk" the same quantity on held-out data at the end, both against
    ``cfg["collapse_std"]`` (``cfg`` is the result's config, ``result.config["config"]``). A
    run the guard flagged that ends "none" has recovered, or shrinks on training batches only.
    """
    collapse_std = cfg["collapse_std"]
    table = collapse_table(metrics)
    m = metrics[~metrics.variant.str.endswith("(untrained)")]
    wide = m.pivot_table(index=["variant", "seed"], columns="metric", values="value")
    final = curves[curves.step == curves.step.max()].groupby("variant").embedding_std.mean()
    flagged = m[m.metric == "failure_step"].groupby("variant", sort=False).value
    sentences = []
    for variant in table.index[table.ablation & table.outcome.str.startswith("none")]:
        if variant not in flagged.groups:
            continue
        steps = flagged.get_group(variant)
        method = table.loc[variant, "method"]
        intact = table.index[(table.method == method) & ~table.ablation][0]
        sentences.append(
            f"**{variant_label(variant)}** ends as \"none\" by these rules, yet the training "
            f"engine's collapse guard flagged it in "
            f"{_seeds_text(len(steps), len(wide.loc[variant]))} (first at step "
            f"{steps.min():,.0f}): the per-dimension standard deviation of its encoder output "
            f"$f(x)$ on the training batch fell below ${tex_sci(collapse_std)}$; it ends at "
            f"${tex_sci(final[variant])}$ there, against ${tex_sci(final[intact])}$ for the "
            f"intact {METHOD_LABELS[method]}, and at {table.loc[variant, 'encoder std']} on "
            "held-out data.")
    return sentences
