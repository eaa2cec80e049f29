"""vicreg_information: information terms, labels, a short training run and the figures."""

from __future__ import annotations

import dataclasses
import math

import matplotlib
import pytest
import torch

from sithlib.experiments import vicreg_information as exp
from sithlib.losses import vicreg_entropy
from sithlib.metrics.information import gaussian_entropy

matplotlib.use("Agg")

TINY = {
    "vicreg_information": dataclasses.replace(
        exp.PROFILES["quick"], seeds=2, hidden=(16,), feature_dim=8, vec_proj_dims=(16, 16, 16),
        vec_steps=20, vec_batch_size=64, vec_eval_every=10, vec_n_eval=200, image_size=8,
        width=4, img_proj_dims=(16, 16, 16), img_steps=2, img_batch_size=16, img_eval_every=1,
        img_n_eval=64),
}


def _z(n=500, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(
        d, d, generator=g, dtype=torch.float64)


def test_identical_views_have_zero_invariance_and_the_gaussian_entropy():
    z = _z()
    terms = exp.information_terms(z, z)
    assert terms["invariance"] == 0.0
    assert terms["bound"] == terms["entropy"]
    # The ridge 1e-4 is far below the covariance's eigenvalues here.
    assert terms["entropy"] == pytest.approx(gaussian_entropy(z), abs=1e-2)


def test_bound_is_minus_the_logdet_loss():
    z_a = _z()
    z_b = z_a.roll(1, dims=0)  # the same rows, so the same entropy, in another pairing
    terms = exp.information_terms(z_a, z_b, sim_coeff=25.0)
    loss = float(vicreg_entropy(z_a, z_b, estimator="logdet", sim_coeff=25.0))
    assert terms["bound"] == pytest.approx(-loss, rel=1e-6)


def test_sector_labels_are_balanced_classes_of_the_largest_signed_coordinate():
    z = torch.nn.functional.normalize(torch.randn(20_000, 5, generator=torch.Generator()
                                                  .manual_seed(1)), dim=1)
    y = exp.sector_labels(z)
    assert y.min() == 0 and y.max() == 9
    counts = torch.bincount(y, minlength=10).float() / len(y)
    assert torch.allclose(counts, torch.full((10,), 0.1), atol=0.01)
    assert exp.sector_labels(torch.tensor([[0.1, -0.9, 0.2]])).item() == 4  # -z_1 is largest


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="methods"):
        exp.Config(methods=("vicreg", "barlow"))
    with pytest.raises(ValueError, match="dgps"):
        exp.Config(dgps=())


@pytest.fixture(scope="module")
def tiny_result():
    return exp.run(TINY["vicreg_information"])


def test_tables_have_every_method_dgp_and_baseline(tiny_result):
    m, c = tiny_result["metrics"], tiny_result["curves"]
    assert m.value.map(math.isfinite).all()
    methods = set(exp.METHODS.values())
    assert set(m[m.dgp == "image"].method) == methods | {"raw input"}
    assert set(m[m.dgp == "vector"].method) == methods | {"raw input", "true latents z"}
    assert set(c.step[c.dgp == "vector"]) == {10, 20}
    assert {"entropy", "invariance", "bound", "knn", "r2_linear", "train_entropy"} <= set(c)
    table = exp.summary_table(m)
    assert len(table) == 9 and {"kNN", "linear R²", "relative invariance"} <= set(table.columns)
    track = exp.tracking_table(c)
    assert len(track) == 6 and ("kNN accuracy", "bound") in track.columns
    # The number of (step, seed) points behind each correlation.
    assert (track[("", "points")] == c.groupby(["dgp", "method"], sort=False).size()).all()
    vic = c[(c.dgp == "vector") & (c.method == "VICReg")]
    assert track.loc[("vector", "VICReg"), ("linear R²", "entropy")] == round(
        vic.entropy.corr(vic.r2_linear, method="spearman"), 2)


def test_figures(tiny_result):
    axes = exp.plot_curves(tiny_result["curves"], "image")
    assert len(axes) == 6 and axes[0].get_title()
    assert len(exp.plot_comparison(tiny_result["metrics"])) == 3
    with pytest.raises(ValueError, match="dgp"):
        exp.plot_curves(tiny_result["curves"], "audio")


def test_logdet_objective_raises_the_bound_it_maximizes():
    cfg = dataclasses.replace(TINY["vicreg_information"], dgps=("vector",), methods=("logdet",),
                              seeds=1, vec_steps=150, vec_eval_every=10, vec_n_eval=400,
                              hidden=(32,), vec_batch_size=128)
    curves = exp.run(cfg)["curves"]
    assert curves.bound.iloc[-1] > curves.bound.iloc[0]
    assert curves.entropy.iloc[-1] > curves.entropy.iloc[0]


def test_pairwise_bandwidth_is_the_conditional_width_and_sets_the_balance():
    cfg = exp.PROFILES["quick"]
    assert exp.bandwidth(cfg, 64) == pytest.approx(math.sqrt(64 / (2 * cfg.sim_coeff)))
    assert exp.bandwidth(dataclasses.replace(cfg, sigma_scale=2.0), 64) == pytest.approx(
        2 * math.sqrt(64 / 50))
    for methods in (("pairwise",), ("vicreg", "logdet")):  # every run logs the pairwise term
        with pytest.raises(ValueError, match="sim_coeff must be > 0"):
            dataclasses.replace(cfg, sim_coeff=0.0, methods=methods)
    # Small embeddings: the loss is about (sim_coeff / d)(E|Z - Z'|^2 - 2 tr Sigma) times the
    # squared scale c, so it falls as c grows (the loss spreads them) exactly when the views
    # are closer than two inputs: a relative invariance below 1.
    d = 8
    z = _z(400, d, seed=1)
    noise = torch.randn(400, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sigma = exp.bandwidth(cfg, d)
    # Views near each other, and views farther apart than two inputs (anti-correlated).
    for spread, sign in ((True, 1.0), (False, -1.0)):
        z_b = sign * z + 0.3 * noise
        # tr Sigma: the mean over the two views, as the loss averages their entropies.
        tr = 0.5 * sum(torch.cov(v.T, correction=0).trace() for v in (z, z_b))
        want = cfg.sim_coeff / d * (((z - z_b) ** 2).sum(1).mean() - 2 * tr)
        assert (want < 0) == spread
        losses = [float(vicreg_entropy(c * z, c * z_b, estimator="pairwise", sigma=sigma))
                  for c in (1e-3, 2e-3)]
        assert (losses[1] < losses[0]) == spread
        assert (losses[1] - losses[0]) / (2e-3 ** 2 - 1e-3 ** 2) == pytest.approx(
            float(want), rel=1e-3)
