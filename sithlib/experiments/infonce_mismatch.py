r"""SITh chapter: when the contrastive model does not match the data (Zimmermann et al. 2021).

The theorem of ``sithlib.experiments.infonce_sphere`` asks for a model conditional
:math:`q_h(\tilde z \mid z) \propto \exp(\phi(h(z), h(\tilde z)) / \tau)` that equals the data's
:math:`p(\tilde z \mid z)`. Zimmermann et al. (2021, Table 1) trained InfoNCE where it does and
where it does not, and found the latents recovered "even if these assumptions are severely
violated". This experiment reruns rows of that kind on one mixing g:

* the sphere with a vMF(:math:`\kappa`) conditional and the dot-product model at the matched
  :math:`\tau = 1/\kappa` (the reference), and at unmatched temperatures;
* the sphere with Laplace and Normal noise of per-coordinate variance :math:`1/\kappa` (the
  large-:math:`\kappa` limit of the vMF's tangent variance :math:`A_d(\kappa)/\kappa`, 0.063 at
  :math:`d = \kappa = 10`), re-projected onto the sphere (which leaves the positives closer to
  their anchors than the vMF's: shape and spread both differ), under the same vMF-shaped model;
* the box :math:`[0, 1]^n` with a uniform marginal and a Laplace conditional of scale
  :math:`\lambda`, with the matching L1 model :math:`\phi = -\lVert \cdot \rVert_1`,
  :math:`\tau = \lambda` (identifiable up to permutation, sign and scale: read MCC), with the
  mismatched L2 model, and a Normal conditional with the matching L2 model at
  :math:`\tau = 2\sigma^2` (the theorem's :math:`p = 2` case: affine, no permutation);
* a supervised reference, the same encoder regressed on z with the same data and budget (the
  ceiling of the architecture and budget), and the raw observations x (the floor).

Every row is scored on held-out pairs with linear and nonlinear :math:`R^2` and MCC.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from sithlib.dgp import DGP, DGPConfig
from sithlib.experiments._tables import of_agg
from sithlib.losses import info_nce
from sithlib.metrics import mcc, r2_linear, r2_nonlinear
from sithlib.models.mlp import MLP
from sithlib.models.views import both_views
from sithlib.train import TrainConfig, train

NAME = "infonce_mismatch"
VERSION = 1
TITLE = "InfoNCE when the model does not match the data"
CHAPTER = "chapters/01_sith/02_contrastive_inverts"


@dataclass(frozen=True)
class Row:
    """One setting: the data (space, conditional) and the model (similarity, temperature)."""

    label: str
    space: str  # "sphere" or "box"
    conditional: str  # "vmf", "laplace" or "normal"
    model: str  # "dot", "l1", "l2" or "supervised"
    matches: bool  # does the model conditional equal the data's (the theorem's assumption)?


ROWS = {
    "vmf_matched": Row("vMF, τ = 1/κ", "sphere", "vmf", "dot", True),
    "vmf_tau_high": Row("vMF, τ too high", "sphere", "vmf", "dot", False),
    "vmf_tau_low": Row("vMF, τ too low", "sphere", "vmf", "dot", False),
    "laplace_sphere": Row("Laplace on the sphere", "sphere", "laplace", "dot", False),
    "normal_sphere": Row("Normal on the sphere", "sphere", "normal", "dot", False),
    "box_laplace_l1": Row("box, Laplace, L1 model", "box", "laplace", "l1", True),
    "box_laplace_l2": Row("box, Laplace, L2 model", "box", "laplace", "l2", False),
    # Matched: tau = 2 Var makes the L2 model the Normal density (the theorem's p = 2 case,
    # affine identifiability without the permutation).
    "box_normal_l2": Row("box, Normal, L2 model", "box", "normal", "l2", True),
    "supervised": Row("supervised regression on z", "sphere", "vmf", "supervised", True),
}
RAW = {"sphere": "raw x (sphere data)", "box": "raw x (box data)"}
#: One colour per row, shared by both figures (tab10 without its grey, which marks raw x).
ROW_COLORS = {"vmf_matched": "C0", "vmf_tau_high": "C1", "vmf_tau_low": "C5",
              "laplace_sphere": "C3", "normal_sphere": "C4", "box_laplace_l1": "C9",
              "box_laplace_l2": "C6", "box_normal_l2": "C8", "supervised": "C2"}
#: Line style and colour of the raw observations' reference lines.
RAW_STYLE = {"sphere": ("--", "0.4"), "box": (":", "black")}
SCORES = ("r2_linear", "r2_nonlinear", "mcc")


@dataclass(frozen=True)
class Config:
    rows: tuple[str, ...] = ("vmf_matched", "vmf_tau_high", "laplace_sphere", "normal_sphere",
                             "box_laplace_l1", "supervised")
    dim: int = 10
    kappa: float = 10.0
    tau_high: float = 10.0  # unmatched rows: tau = factor / kappa
    tau_low: float = 0.2
    box_scale: float = 0.05  # Laplace lambda / Normal sigma of the box conditional (cl-ica 0.05)
    hidden: tuple[int, ...] = (128, 128)
    mixing_layers: int = 3
    steps: int = 1000
    batch_size: int = 256
    lr: float = 3e-3
    seeds: int = 2
    eval_every: int = 250
    n_eval: int = 2000
    n_nonlinear: int = 1000  # kernel ridge on the first held-out pairs (O(n^3))
    precision: str = "fp32"
    cache_cells: bool = False  # paper runs: one resumable cell per row
    dgp_seed: int = 0


PROFILES = {
    # Small encoder, a thousand steps: the code path and the ordering of the rows, not the
    # paper's numbers.
    "quick": Config(),
    # cl-ica's encoder (n -> 10n -> 50n x4 -> 10n -> n; Zimmermann et al. 2021); its batch
    # 6144 and 300k steps do not fit 8 GPU minutes for nine rows, so: a third of the batch,
    # 1/30 of the steps, a larger learning rate, TF32 matmuls.
    "paper": Config(rows=tuple(ROWS), hidden=(100, 500, 500, 500, 500, 100), steps=10_000,
                    batch_size=2048, lr=3e-4, seeds=3, eval_every=1000, n_eval=10_000,
                    n_nonlinear=4000, precision="tf32", cache_cells=True),
}


def row_settings(name: str, cfg: Config) -> dict:
    """The DGP config and the loss settings (similarity, p, temperature) of one row.

    Sphere noise conditionals get the vMF's per-coordinate variance in the large-:math:`\\kappa`
    limit, :math:`1/\\kappa` (at finite :math:`\\kappa` the vMF's is
    :math:`A_d(\\kappa)/\\kappa`, smaller): Laplace scale :math:`1/\\sqrt{2\\kappa}`, Normal
    standard deviation :math:`1/\\sqrt{\\kappa}`. Box rows
    use ``box_scale``; the L1 model at :math:`\\tau = \\lambda` matches the Laplace density
    :math:`\\exp(-\\lVert \\tilde z - z \\rVert_1 / \\lambda)`, the L2 model's
    :math:`\\tau = 2\\,\\mathrm{Var}` matches a Normal of the same variance.
    """
    if name not in ROWS:
        raise ValueError(f"row must be one of {list(ROWS)}, got {name!r}")
    row = ROWS[name]
    kw = {"dim": cfg.dim, "space": row.space, "conditional": row.conditional,
          "mixing_layers": cfg.mixing_layers, "seed": cfg.dgp_seed}
    tau = 1.0 / cfg.kappa
    if row.space == "sphere":
        kw["kappa"] = cfg.kappa
        if row.conditional == "laplace":
            kw["conditional_scale"] = 1.0 / math.sqrt(2.0 * cfg.kappa)
        elif row.conditional == "normal":
            kw["conditional_scale"] = 1.0 / math.sqrt(cfg.kappa)
        tau *= {"vmf_tau_high": cfg.tau_high, "vmf_tau_low": cfg.tau_low}.get(name, 1.0)
    else:
        kw["conditional_scale"] = cfg.box_scale
        var = (2.0 if row.conditional == "laplace" else 1.0) * cfg.box_scale**2
        tau = cfg.box_scale if row.model == "l1" else 2.0 * var
    similarity = {"dot": ("dot", 2.0), "l1": ("lp", 1.0), "l2": ("lp", 2.0)}.get(row.model)
    return {"dgp": DGPConfig(**kw), "tau": tau, "similarity": similarity}


def _scores(h: torch.Tensor, z: torch.Tensor, n_nonlinear: int) -> dict[str, float]:
    m = min(n_nonlinear, len(h))
    return {"r2_linear": r2_linear(h, z), "mcc": mcc(h, z),
            "r2_nonlinear": r2_nonlinear(h[:m], z[:m], method="kernel_ridge")}


def run_cell(cell: dict, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Train and score one row (``cell`` is the config as a dict plus ``"row"``)."""
    name = cell["row"]
    cfg = Config(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in cell.items()
                    if k != "row"})
    row, s = ROWS[name], row_settings(name, cfg)
    dgp = DGP(s["dgp"], device=device)
    test = dgp.sample_pairs(cfg.n_eval, torch.Generator(device=device).manual_seed(2**31 - 1))
    supervised = row.model == "supervised"

    def make_model(seed: int):
        gen = torch.Generator().manual_seed(seed)
        # The sphere rows' encoder ends on the sphere, as the dot-product model needs.
        norm = "sphere" if row.model == "dot" else None
        return MLP([cfg.dim, *cfg.hidden, cfg.dim], output_norm=norm, generator=gen)

    def sample(generator, n):
        pairs = dgp.sample_pairs(n, generator)
        return pairs.x, pairs.x_pos, pairs.z

    def loss_fn(f, batch):
        x, x_pos, z = batch
        if supervised:
            h = f(x)
            return (h - z).pow(2).sum(1).mean(), h
        h, h_pos = both_views(f, x, x_pos)
        similarity, p = s["similarity"]
        return info_nce(h, h_pos, temperature=s["tau"], similarity=similarity, p=p,
                        distributed=True), h

    def evaluate(f, seed):
        h = f(test.x)
        return {"r2_linear": r2_linear(h, test.z), "mcc": mcc(h, test.z)}

    result = train(make_model, sample, loss_fn,
                   TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                               seeds=cfg.seeds, eval_every=cfg.eval_every,
                               precision=cfg.precision),
                   device=device, evaluate=evaluate, name=f"{NAME}:{name}")
    rows = []
    with torch.no_grad():
        for seed, f in result.finished():
            values = _scores(f.eval()(test.x), test.z, cfg.n_nonlinear)
            rows += [{"seed": seed, "metric": k, "value": v} for k, v in values.items()]
    for failure in result.failures:
        rows.append({"seed": failure["seed"], "metric": "failure_step",
                     "value": float(failure["step"])})
    keys = {"row": name, "tau": s["tau"]}
    return {"metrics": pd.DataFrame(rows).assign(**keys),
            "curves": pd.DataFrame(result.curves).assign(**keys)}


def _raw_baselines(cfg: Config, device: str) -> pd.DataFrame:
    """The observations x themselves, scored like an encoder, for each space in the table."""
    rows = []
    spaces = sorted({ROWS[r].space for r in cfg.rows})
    for space in spaces:
        kw = {"conditional": "laplace", "conditional_scale": cfg.box_scale} if space == "box" \
            else {"kappa": cfg.kappa}
        dgp = DGP(DGPConfig(dim=cfg.dim, space=space, mixing_layers=cfg.mixing_layers,
                            seed=cfg.dgp_seed, **kw), device=device)
        test = dgp.sample_pairs(cfg.n_eval, torch.Generator(device=device).manual_seed(2**31 - 1))
        values = _scores(test.x, test.z, cfg.n_nonlinear)
        rows += [{"seed": 0, "metric": k, "value": v, "row": f"raw_{space}"}
                 for k, v in values.items()]
    return pd.DataFrame(rows)


def run(cfg: Config, device: str = "cpu") -> dict[str, pd.DataFrame]:
    unknown = [r for r in cfg.rows if r not in ROWS]
    if unknown:
        raise ValueError(f"rows must be drawn from {list(ROWS)}, got {unknown}")
    shared = asdict(cfg)
    cells = [{**shared, "row": r} for r in cfg.rows]
    from sithlib.results import run_grid  # results imports experiments: import late

    tables = run_grid(NAME, cells, lambda cell: run_cell(cell, device), cache=cfg.cache_cells)
    metrics = pd.concat([tables["metrics"], _raw_baselines(cfg, device)], ignore_index=True)
    return {"metrics": metrics, "curves": tables["curves"]}


# --------------------------------------------------------------------------- tables and plots
def _label(row: str) -> str:
    if row.startswith("raw_"):
        return RAW[row[4:]]
    return ROWS[row].label


def mismatch_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Zimmermann et al. (2021) Table 1 layout: one line per row (data, model, whether it
    matches the theory) and held-out scores as 'mean ± sd over seeds'. The paper's values are
    not reproduced; the comparison is with its qualitative claims."""
    m = metrics[metrics.metric.isin(SCORES)]
    agg = m.groupby(["row", "metric"]).value.agg(["mean", "std"])
    text = of_agg(agg)
    scores = text.unstack("metric")
    order = [r for r in (*ROWS, "raw_sphere", "raw_box") if r in scores.index]
    out = []
    for r in order:
        spec = ROWS.get(r)
        tau = metrics[metrics.row == r].tau.iloc[0]
        out.append({
            "setting": _label(r),
            # The space only where it is not the sphere: one column fewer to fit the page.
            "p(z̃|z)": (_CONDITIONALS[spec.conditional]
                        + ("" if spec.space == "sphere" else f", {spec.space}")) if spec else "–",
            "model": (spec.model if spec.model == "supervised" else
                      f"{spec.model}, τ = {tau:.3g}") if spec else "none",
            "matches theory": ("✓" if spec.matches else "✗") if spec else "–",
            "linear R²": scores.loc[r, "r2_linear"],
            "nonlinear R²": scores.loc[r, "r2_nonlinear"],
            "MCC": scores.loc[r, "mcc"],
            "seeds": int(metrics[(metrics.row == r) & (metrics.metric == "r2_linear")].seed
                         .nunique()),
        })
    return pd.DataFrame(out).set_index("setting").rename_axis(index=None)


_CONDITIONALS = {"vmf": "vMF", "laplace": "Laplace", "normal": "Normal"}


def plot_mismatch(metrics: pd.DataFrame, axes=None):
    """Held-out linear R² and MCC per row: one dot per seed, a bar at the mean, in the row's
    colour (``ROW_COLORS``, as in ``plot_mismatch_curves``); hatched bars, rows whose model
    does not match the data; dashed grey and dotted black, the raw observations of the sphere
    and of the box."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch

    scores = ("r2_linear", "mcc")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9.0, 3.8), sharey=True)
    order = [r for r in ROWS if r in set(metrics.row)]
    for ax, metric in zip(axes, scores, strict=True):
        m = metrics[metrics.metric == metric]
        for i, r in enumerate(order):
            v = m[m.row == r].value
            color = ROW_COLORS[r]
            # The hatch takes the edge colour: a dark edge and a translucent face keep it
            # visible (the row's own colour at the face's alpha was not).
            ax.barh(i, v.mean(), color=to_rgba(color, 0.35), edgecolor="0.3", lw=0,
                    hatch=None if ROWS[r].matches else "///")
            ax.plot(v, [i] * len(v), "o", color=color, ms=4)
        for space, (ls, color) in RAW_STYLE.items():
            raw = m[m.row == f"raw_{space}"].value
            if len(raw):
                ax.axvline(float(raw.iloc[0]), color=color, ls=ls, lw=1, label=RAW[space])
        ax.set(xlim=(0, 1.02), xlabel={"r2_linear": "held-out linear R²", "mcc": "MCC"}[metric])
    axes[0].set_yticks(range(len(order)), [ROWS[r].label for r in order])
    axes[0].invert_yaxis()
    handles, _ = axes[1].get_legend_handles_labels()
    if any(not ROWS[r].matches for r in order):
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="///",
                             label="model does not match the data"))
    # Below the right panel: inside, the legend would sit on a bar whatever the corner.
    axes[1].legend(handles=handles, fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                   ncol=1)
    return axes


def plot_mismatch_curves(curves: pd.DataFrame, metric: str = "r2_linear", ax=None):
    """Held-out score against training steps per row: mean line and min-max band over seeds, in
    the row's colour (``ROW_COLORS``); dashed, rows whose model does not match the data."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.8))
    for r in (r for r in ROWS if r in set(curves.row)):
        stats = curves[curves.row == r].groupby("step")[metric].agg(["mean", "min", "max"])
        ls = "-" if ROWS[r].matches else "--"
        color = ROW_COLORS[r]  # the same colour as in plot_mismatch
        ax.plot(stats.index, stats["mean"], ls, color=color, label=ROWS[r].label)
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, lw=0)
    ax.set(xlabel="training step", ylabel={"r2_linear": "held-out linear R²"}.get(metric, metric),
           ylim=(0, 1.02))
    # Below the axes, in two columns: one entry per row of the table, up to nine.
    ax.legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    return ax
