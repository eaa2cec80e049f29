"""Induced collapse: monitors, collapse criteria, a small run, the table and the figures."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch

from sithlib.experiments import collapse_ablations as exp

TINY = {
    "collapse_ablations": dataclasses.replace(
        exp.PROFILES["quick"], variants=("simsiam", "simsiam_no_stop_gradient"), steps=40,
        eval_every=20, n_eval=200, views=2, hidden=(16,), feature_dim=6, head_hidden=16,
        head_dim=8, batch_size=64,
    ),
}


class _Fixed(torch.nn.Module):
    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, x):
        return self.v.expand(x.shape[0], -1)


class _Constant(torch.nn.Module):
    """A stand-in method whose embedding is one fixed vector: complete collapse."""

    name = "stand-in"

    def __init__(self, dim):
        super().__init__()
        self.encoder = self.projector = _Fixed(torch.arange(1.0, dim + 1))

    def project(self, x):
        return self.projector(self.encoder(x))

    def embed(self, x):
        return self.encoder(x)


class _Identity(_Constant):
    """Embedding = input: no collapse."""

    def __init__(self, dim):
        super().__init__(dim)
        self.encoder = self.projector = torch.nn.Identity()


def _test_set(n=400, k=4):
    cfg = TINY["collapse_ablations"]
    return exp.held_out(exp.make_dgp(cfg), n, k)


def test_held_out_views_are_positives_of_the_same_latents():
    cfg = TINY["collapse_ablations"]
    dgp = exp.make_dgp(cfg)
    z, x, x_views = exp.held_out(dgp, 300, 3)
    assert x_views.shape == (3, 300, cfg.dim) and x.shape == z.shape == (300, cfg.dim)
    torch.testing.assert_close(x, dgp.mixing(z))
    z_views = dgp.mixing.inverse(x_views.reshape(-1, cfg.dim)).reshape(3, 300, -1)
    cos = (z_views * z).sum(-1)
    # vMF(kappa = 10) positives in 5 dimensions: mean cosine A_5(10) ~ 0.8, never independent.
    assert 0.6 < float(cos.mean()) < 0.95
    z2, _, _ = exp.held_out(dgp, 300, 3)
    assert torch.equal(z, z2)  # fixed stream


def test_monitors_of_a_collapsed_and_an_identity_embedding():
    z, x, x_views = _test_set()
    dead = exp.monitors(_Constant(7), z, x, x_views)
    assert dead["center_norm"] == pytest.approx(1.0, abs=1e-9)
    assert dead["mean_mu_norm"] == pytest.approx(1.0, abs=1e-9)
    assert dead["spread"] == pytest.approx(0.0, abs=1e-12)
    assert dead["std_ratio"] == pytest.approx(0.0, abs=1e-6)
    assert dead["effective_rank"] == 0.0 and dead["encoder_effective_rank"] == 0.0
    assert dead["r2_linear"] < 0.05
    cfg = TINY["collapse_ablations"]
    assert dead["encoder_std"] == pytest.approx(0.0, abs=1e-6)
    assert exp.OUTCOMES[exp.outcome(dead, cfg)] == "complete"
    alive = exp.monitors(_Identity(5), z, x, x_views)
    assert alive["r2_linear"] > 0.5 and alive["std_ratio"] > 0.5
    assert alive["effective_rank"] > cfg.rank_fraction * cfg.dim
    assert alive["encoder_std"] == pytest.approx(float(x.std(0).mean()), rel=1e-5)
    assert exp.outcome({**alive, "encoder_effective_rank": 5.0}, cfg) == 0
    # The identity behind the monitors: E||mu_x||^2 = ||s||^2 + E||mu_x - s||^2 (with the
    # mean norm a lower bound on the root mean square norm).
    assert alive["mean_mu_norm"] ** 2 <= alive["center_norm"] ** 2 + alive["spread"] + 1e-9


def _scores(std_ratio=0.5, rank=4.0, encoder_rank=4.0, **dino):
    return {"std_ratio": std_ratio, "effective_rank": rank, "encoder_effective_rank": encoder_rank,
            "encoder_std": 1e-2, **dino}


def test_outcome_thresholds():
    cfg = TINY["collapse_ablations"]
    assert exp.outcome(_scores(0.05), cfg) == 2
    assert exp.outcome(_scores(0.5, 1.2, 4.0), cfg) == 1
    assert exp.outcome(_scores(0.5, 4.0, 1.2), cfg) == 1
    assert exp.outcome(_scores(), cfg) == 0
    # A collapse of scale: the raw encoder output below the engine guard's threshold, however
    # healthy the normalised embedding looks.
    assert exp.OUTCOMES[exp.outcome({**_scores(), "encoder_std": 8e-5}, cfg)] == "shrunk"
    assert exp.outcome({**_scores(), "encoder_std": 2 * cfg.collapse_std}, cfg) == 0
    assert exp.outcome({**_scores(0.05), "encoder_std": 8e-5}, cfg) == 2  # complete first
    assert exp.outcome({k: v for k, v in _scores().items() if k != "encoder_std"}, cfg) == 0


def test_dino_output_entropy_dominant_mass_and_their_outcomes():
    cfg = TINY["collapse_ablations"]
    assert exp.OUTCOMES[exp.outcome(_scores(head_entropy=0.95), cfg)] == "uniform"
    assert exp.outcome(_scores(head_entropy=0.5), cfg) == 0
    assert exp.outcome(_scores(0.05, head_entropy=0.95), cfg) == 2  # complete comes first
    assert exp.OUTCOMES[exp.outcome(_scores(head_entropy=0.05, dominant_mass=0.8), cfg)] == (
        "dominant")
    # Sharp outputs spread over the prototypes are what DINO wants: no collapse.
    assert exp.outcome(_scores(head_entropy=0.05, dominant_mass=0.1), cfg) == 0
    z, x, x_views = _test_set()
    dino = exp.model_factory("dino", {}, cfg)(0).eval()
    scores = exp.monitors(dino, z, x, x_views)
    with torch.no_grad():
        p = torch.softmax(dino.project(x).double() / dino.config.student_temp, dim=1)
    want = float(-(p * p.log()).sum(1).mean()) / math.log(p.shape[1])
    assert scores["head_entropy"] == pytest.approx(want, abs=1e-5) and 0 < want <= 1
    # The largest entry of the mean distribution, from a plain loop over the outputs.
    mean = [sum(float(p[i, k]) for i in range(len(p))) / len(p) for k in range(p.shape[1])]
    assert scores["dominant_mass"] == pytest.approx(max(mean), abs=1e-5)
    assert 1 / p.shape[1] <= scores["dominant_mass"] <= 1
    others = exp.monitors(exp.model_factory("byol", {}, cfg)(0).eval(), z, x, x_views)
    assert "head_entropy" not in others and "dominant_mass" not in others


def test_claims_name_uniform_collapse_and_whether_s_shows_it():
    rows = []
    for variant, code, s in (("dino", 0, 0.6), ("dino_no_sharpening", 3, 0.7),
                             ("dino_no_centering", 4, 0.95), ("vicreg_no_variance", 5, 0.03)):
        for seed in (0, 1):
            values = {"collapse": code, "center_norm": s, "spread": 0.2, "s_predicts": 1.0,
                      "s_agrees": 1.0, "center_norm_early": s}
            rows += [{"variant": variant, "method": "dino", "ablation": code > 0, "seed": seed,
                      "metric": k, "value": v} for k, v in values.items()]
    claims = exp.claims_table(pd.DataFrame(rows)).set_index("claim")
    row = claims.loc["DINO's collapse to a uniform output shows in ‖s‖"]
    assert row.verdict == "not supported"
    assert "two runs collapse to a uniform output" in row.measured
    row = claims.loc["DINO's collapse to one dominant output shows in ‖s‖"]
    assert row.verdict == "supported" and "with ‖s‖ above 0.9 (final ‖s‖ 0.95)" in row.measured
    row = claims.loc["A collapse of the encoder's scale shows in ‖s‖"]
    assert row.verdict == "not supported" and "collapse in scale" in row.measured
    # A dominant output with a long s is counted against "a final ‖s‖ above 0.9 means
    # complete collapse": that claim is about complete collapse only.
    assert claims.loc["A final ‖s‖ above 0.9 means complete collapse", "measured"].startswith(
        "two runs end above it without complete collapse")
    assert claims.loc["Removing one anti-collapse device makes the method collapse",
                      "verdict"] == "supported"


def _frames(runs):
    """metrics and last-step curves from {variant: (method, ablated, values, embedding_std)}."""
    rows, curves = [], []
    for variant, (method, ablated, values, std) in runs.items():
        for seed in (0, 1):
            rows += [{"variant": variant, "method": method, "ablation": ablated, "seed": seed,
                      "metric": k, "value": v} for k, v in values.items()]
            curves.append({"variant": variant, "method": method, "step": 100, "seed": seed,
                           "embedding_std": std})
    return pd.DataFrame(rows), pd.DataFrame(curves)


def test_missed_collapses_are_guard_flags_the_rules_call_none():
    healthy = {"collapse": 0, "center_norm": 0.5, "center_norm_early": 0.5, "spread": 0.4,
               "mean_mu_norm": 0.8, "std_ratio": 0.8, "effective_rank": 9.0,
               "encoder_effective_rank": 5.0, "encoder_std": 1e-2, "r2_linear": 0.9,
               "s_predicts": 1.0, "s_agrees": 1.0}
    recovered = {**healthy, "encoder_std": 3e-3}
    metrics, curves = _frames({
        "vicreg": ("vicreg", False, healthy, 1e-2),
        "vicreg_no_variance": ("vicreg", True, recovered, 8e-5),
        "dino": ("dino", False, healthy, 1e-2),
        "dino_no_centering": ("dino", True, {**healthy, "collapse": 4}, 1e-2)})
    cfg = {"collapse_std": 1e-4}
    assert exp.missed_collapses(metrics, curves, cfg) == []  # no guard flag: nothing missed
    flags = pd.DataFrame([{"variant": v, "method": v.split("_")[0], "ablation": True,
                           "seed": seed, "metric": "failure_step", "value": step}
                          for v in ("vicreg_no_variance", "dino_no_centering")
                          for seed, step in ((0, 300.0), (1, 525.0))])
    # Flagged: VICReg ends "none" and is reported; DINO's rule already counts it, not repeated.
    [text] = exp.missed_collapses(pd.concat([metrics, flags]), curves, cfg)
    assert text.startswith("**VICReg: no variance**")
    assert "in both of its seeds (first at step 300)" in text
    assert "fell below $1 \\times 10^{-4}$" in text
    assert "ends at $8 \\times 10^{-5}$ there, against $1 \\times 10^{-2}$" in text
    assert "and at 3.0e-03±0.0e+00 on held-out data" in text


def test_bad_configs():
    base = TINY["collapse_ablations"]
    with pytest.raises(ValueError, match="variants"):
        dataclasses.replace(base, variants=("simsiam_no_momentum",))
    with pytest.raises(ValueError, match="views"):
        dataclasses.replace(base, views=1)
    with pytest.raises(ValueError, match="s_threshold"):
        dataclasses.replace(base, s_threshold=1.5)
    with pytest.raises(ValueError, match="dominant_mass"):
        dataclasses.replace(base, dominant_mass=1.0)
    with pytest.raises(ValueError, match="collapse_std"):
        dataclasses.replace(base, collapse_std=0.0)


def test_every_ablation_of_the_issue_is_a_variant_with_its_switch():
    from sithlib.methods import method_config

    assert len([v for v, (_, sw) in exp.VARIANTS.items() if sw]) == 10
    for variant, (method, switches) in exp.VARIANTS.items():
        cfg = method_config(method, {**exp.head_config(method, exp.PROFILES["quick"]),
                                     **switches})
        for key, value in switches.items():
            assert getattr(cfg, key) == value, variant


@pytest.fixture(scope="module")
def small_run():
    cfg = dataclasses.replace(
        TINY["collapse_ablations"], variants=("swav", "swav_softmax"), steps=150,
        eval_every=15, n_eval=400, views=4, hidden=(32,), head_hidden=32, head_dim=16,
        batch_size=128, seeds=2,
    )
    return cfg, exp.run(cfg)


def test_softmax_codes_push_s_to_one_and_mu_x_to_s(small_run):
    _, tables = small_run
    m = tables["metrics"]

    def value(variant, metric):
        return m[(m.variant == variant) & (m.metric == metric)].value.to_numpy()

    # Without the equipartition every seed of the ablation ends closer to a point than every
    # seed of SwAV: longer center vector, per-sample means closer to it, smaller spread.
    assert value("swav_softmax", "center_norm").min() > value("swav", "center_norm").max() + 0.1
    assert value("swav_softmax", "center_norm").min() > 0.9
    assert value("swav_softmax", "spread").max() < value("swav", "spread").min() / 2
    assert value("swav_softmax", "std_ratio").max() < value("swav", "std_ratio").min()
    mu, s = value("swav_softmax", "mean_mu_norm"), value("swav_softmax", "center_norm")
    assert (mu - s < 0.1).all()


def test_tables_and_curves_have_every_variant_and_seed(small_run):
    cfg, tables = small_run
    m, curves = tables["metrics"], tables["curves"]
    assert set(curves.variant) == set(cfg.variants)
    assert sorted(curves.step.unique()) == list(range(15, 151, 15))
    assert {"center_norm", "mean_mu_norm", "spread", "std_ratio", "effective_rank",
            "r2_linear", "batch_center_norm"} <= set(curves.columns)
    assert set(m.variant) == set(cfg.variants) | {"swav (untrained)"}
    # The untrained networks are scored with batch norm calibrated on training batches, not
    # its default statistics (which put every embedding near one point, std ratio ~0.05).
    untrained = m[(m.variant == "swav (untrained)") & (m.metric == "std_ratio")].value
    assert len(untrained) == 2 and (untrained > 0.5).all()
    runs = m[m.variant.isin(cfg.variants)].pivot_table(index=["variant", "seed"],
                                                       columns="metric", values="value")
    assert len(runs) == 4 and runs.collapse.isin(range(len(exp.OUTCOMES))).all()
    # The recorded outcome is the rule applied to the recorded monitors.
    for (_, _), r in runs.iterrows():
        assert r.collapse == exp.outcome(r, cfg)
    table = exp.collapse_table(m)
    assert list(table.index) == list(cfg.variants)
    assert all((o.split(" ")[0] in exp.OUTCOMES and o.endswith("/2)"))
               or (o.startswith("split (") and o.endswith(")")) for o in table.outcome)
    assert all(v.endswith("/2") for v in table["early ‖s‖ predicts"])
    claims = exp.claims_table(m, s_threshold=cfg.s_threshold)
    assert claims.verdict.isin(["supported", "partly supported", "not supported",
                                "not tested"]).all()
    assert len(claims) >= 4
    assert all(math.isfinite(v) for v in m.value)


def test_plots_return_axes(small_run):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, tables = small_run
    axes = exp.plot_center_norm(tables["curves"])
    visible = [ax for ax in axes.flat if ax.get_visible()]
    assert len(visible) == 1  # one method family
    assert visible[0].get_title() == "SwAV" and len(visible[0].get_lines()) >= 2
    ax = exp.plot_prediction(tables["metrics"], s_threshold=cfg.s_threshold)
    assert len(ax.collections) >= 1
    plt.close("all")


def test_variant_labels_are_readable_and_distinct():
    labels = [exp.variant_label(v) for v in exp.VARIANTS]
    assert len(set(labels)) == len(labels)
    assert exp.variant_label("simsiam") == "SimSiam"
    assert exp.variant_label("barlow_twins_no_off_diagonal") == "Barlow Twins: no off-diagonal"
    assert exp.variant_label("simsiam_no_stop_gradient") == "SimSiam: no stop-gradient"
    assert exp.variant_label("byol_ema_0") == "BYOL: EMA 0"


def test_seed_outcome_reports_ties():
    assert exp.seed_outcome(pd.Series([2.0, 2.0])) == "complete (2/2)"
    assert exp.seed_outcome(pd.Series([0.0, 2.0, 0.0])) == "none (2/3)"
    assert exp.seed_outcome(pd.Series([2.0, 0.0])) == "split (1 complete, 1 none)"


@pytest.mark.parametrize("method", ["simsiam", "byol", "dino", "swav"])
def test_untrained_networks_are_scored_with_the_statistics_of_training_batches(method):
    """Built, batch norm holds mean 0 and variance 1: in eval mode the untrained network
    computes a function no training step computes, near a single point (std ratio about 0.1,
    ||s|| about 1). With the statistics of training batches it is spread out; only the
    networks' batch norms change, not DINO's center, SwAV's queue or the EMA teacher."""
    cfg = TINY["collapse_ablations"]
    dgp = exp.make_dgp(cfg)
    test = exp.held_out(dgp, 400, 4)
    model = exp.model_factory(method, {}, cfg)(0)
    before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    flags = [m.training for m in model.modules()]
    assert exp.calibrate_untrained(model, exp.calibration_batches(dgp, cfg)) > 0
    assert [m.training for m in model.modules()] == flags
    changed = {k for k, v in model.state_dict().items()
               if torch.is_tensor(v) and not torch.equal(v, before[k])}
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked"))
                           and not k.startswith("teacher.") for k in changed)
    values = exp.monitors(model.eval(), *test)
    assert values["std_ratio"] > 0.5 and values["center_norm"] < cfg.s_threshold
    # The batches come from their own fixed stream.
    a, b = exp.calibration_batches(dgp, cfg), exp.calibration_batches(dgp, cfg)
    assert len(a) == 4 and all(torch.equal(x, y) for p, q in zip(a, b, strict=True)
                               for x, y in zip(p, q, strict=True))
    assert a[0][0].shape == (cfg.batch_size, cfg.dim)
