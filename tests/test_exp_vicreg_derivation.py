"""The VICReg derivation experiment: every numerical check of the chapter, asserted."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from sithlib.experiments import vicreg_derivation as exp

TINY = {
    "vicreg_derivation": dataclasses.replace(
        exp.PROFILES["quick"], in_dim=6, hidden=(16, 16), out_dim=3, seeds=2, points=1,
        neighbours=24, noise_scales=(1e-6, 1e-3, 3.0), noise_samples=300, mi_dims=(2, 4),
        aug_stds=(0.05, 1.0), mi_samples=2000),
}


@pytest.fixture(scope="module")
def metrics():
    cfg = dataclasses.replace(TINY["vicreg_derivation"], seeds=3, points=2, neighbours=48,
                              noise_scales=(1e-6, 1e-5, 1e-3, 0.1, 3.0), noise_samples=1000,
                              mi_dims=(2, 8), aug_stds=(0.02, 0.2, 1.0, 3.0), q_sigmas=(0.5, 2.0),
                              mi_samples=5000)
    return exp.run(cfg)["metrics"]


def by_anchor(metrics, step, metric):
    m = metrics[(metrics.step == step) & (metrics.metric == metric)]
    return m.set_index(["seed", "point"] + (["noise_scale"] if step == "noise" else [])).value


# --------------------------------------------------------------------------- (a) CPA
def test_jacobian_is_constant_on_a_region_and_not_across(metrics):
    same = by_anchor(metrics, "piecewise_affine", "same_region_neighbours")
    other = by_anchor(metrics, "piecewise_affine", "other_region_neighbours")
    assert (same > 0).all() and (other > 0).all(), "neighbours must reach both cases"
    assert by_anchor(metrics, "piecewise_affine", "jacobian_diff_same_region_max").max() < 1e-12
    assert by_anchor(metrics, "piecewise_affine", "affine_residual_same_region_max").max() < 1e-8
    # Across a region boundary the Jacobian changes by a visible fraction of its size.
    assert by_anchor(metrics, "piecewise_affine", "jacobian_diff_other_region_median").min() > 1e-2


def test_jacobians_match_finite_differences():
    net = exp.make_network(0, 3, (8,), 2)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    jac = exp.jacobians(net, x)
    h = 1e-7
    for k in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[k] = h
        fd = (net(x + step) - net(x - step)) / (2 * h)
        torch.testing.assert_close(jac[:, :, k], fd, atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------- (b) noise
def test_same_region_fraction_falls_with_the_noise(metrics):
    frac = by_anchor(metrics, "noise", "same_region_fraction").unstack("noise_scale")
    # Common noise draws and convex regions: non-increasing in sigma, exactly.
    assert (np.diff(frac.to_numpy(), axis=1) <= 0).all()
    assert (frac[1e-6] == 1.0).all()
    assert (frac[3.0] < 0.05).all()


def test_inside_one_region_the_output_is_the_affine_gaussian(metrics):
    noise = metrics[(metrics.step == "noise") & (metrics.noise_scale == 1e-6)]
    v = noise.pivot_table(index=["seed", "point"], columns="metric", values="value")
    # Every sample in the region: z = f(x*) + A eps, the same cloud as the Gaussian reference.
    np.testing.assert_allclose(v.covariance_error, v.covariance_error_floor, atol=1e-7)
    np.testing.assert_allclose(v.mardia_skewness_ratio, v.mardia_skewness_ratio_floor,
                               rtol=1e-5)
    np.testing.assert_allclose(v.mardia_kurtosis_statistic, v.mardia_kurtosis_statistic_floor,
                               atol=1e-5)
    # And that reference is close to A Sigma A^T: only sampling error (n = 1000, d = 3).
    assert v.covariance_error_floor.max() < 0.2


def test_large_noise_breaks_gaussianity_and_the_covariance(metrics):
    noise = metrics[(metrics.step == "noise") & (metrics.noise_scale == 3.0)]
    v = noise.pivot_table(index=["seed", "point"], columns="metric", values="value")
    assert (v.covariance_error > 3 * v.covariance_error_floor).all()
    assert (v.mardia_skewness_pvalue < 1e-3).all()
    rejected = exp.rejection_table(metrics)
    skew = rejected["skewness rejects (%)"]
    assert skew["< 0.5"] > skew["all in the region"]
    assert rejected.drop(columns="cells").stack().between(0, 100).all()
    assert rejected.cells.sum() == 3 * 2 * 5


# --------------------------------------------------------------------------- (c) MI bound
def test_gaussian_mi_closed_forms():
    # Isotropic X: I = d/2 log((l + s^2)^2 / (s^2 (2 l + s^2))).
    d, lam, s = 5, 1.7, 0.6
    cov = lam * torch.eye(d, dtype=torch.float64)
    want = 0.5 * d * math.log((lam + s**2) ** 2 / (s**2 * (2 * lam + s**2)))
    assert exp.gaussian_mi(cov, s) == pytest.approx(want, rel=1e-12)
    # Anisotropic: H(Z) - H(Z | Z') with the Schur complement, computed independently.
    gen = torch.Generator().manual_seed(3)
    cov = exp.random_spd(4, gen, low=0.25, high=4.0)
    cz = cov + s**2 * torch.eye(4, dtype=torch.float64)
    cond = cz - cov @ torch.linalg.solve(cz, cov)
    want = 0.5 * float(torch.logdet(cz) - torch.logdet(cond))
    assert exp.gaussian_mi(cov, s) == pytest.approx(want, rel=1e-10)


def test_best_sigma_maximises_the_bound():
    h, mse, d = 3.0, 2.5, 4
    best = exp.mi_lower_bound(h, mse, d)
    grid = [exp.mi_lower_bound(h, mse, d, q) for q in np.linspace(0.2, 3.0, 300)]
    assert best >= max(grid) - 1e-12
    assert best == pytest.approx(h - 0.5 * d * math.log(2 * math.pi * math.e * mse / d))


def test_bound_holds_everywhere_and_tightens_for_small_augmentations(metrics):
    m = metrics[metrics.step == "mi_bound"]
    v = m[m.q_sigma.isna()].pivot_table(index=["seed", "dim", "aug_std"], columns="metric",
                                        values="value")
    assert (v.bound_exact <= v.mi_exact + 1e-9).all()
    # From samples: the log-det entropy has sd sqrt(d / 2n); allow four of them.
    assert (v.bound_sample <= v.mi_exact + 4 * v.entropy_logdet_se).all()
    gap = (v.mi_exact - v.bound_exact) / v.index.get_level_values("dim")
    smallest = v.index.get_level_values("aug_std") == 0.02
    assert gap[smallest].max() < 0.01 and gap[~smallest].max() > 0.1
    fixed = m[m.metric == "bound_exact_fixed_sigma"].set_index(["seed", "dim", "aug_std"])
    assert (fixed.value <= v.bound_exact.reindex(fixed.index) + 1e-12).all()
    # The sample estimates track the exact quantities.
    np.testing.assert_allclose(v.mse_sample, v.mse_exact, rtol=0.1)
    np.testing.assert_allclose(v.entropy_logdet, v.entropy_exact, atol=0.2)


# --------------------------------------------------------------------------- tables and figures
def test_tables_and_plots(metrics):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jt = exp.jacobian_table(metrics)
    same = metrics[metrics.metric == "jacobian_diff_same_region_max"].value
    n = len(same)  # one value per (network, anchor)
    assert len(jt) == 6 and list(jt.columns) == [f"{c} over {n} anchors" for c in
                                                  ("min", "median", "max")]
    cell = jt.loc["same pattern: largest Jacobian difference", f"max over {n} anchors"]
    assert float(cell) == pytest.approx(same.max(), rel=0.05, abs=1e-300)
    mt = exp.mi_table(metrics)
    assert len(mt) == 8 and mt["gap (exact)"].str.contains("±").all()
    # Each cell is mean±sd over seeds of the per-seed value, and the exact gap is never negative.
    gaps = mt["gap (exact)"].map(lambda c: float(c.split("±")[0]))
    assert (gaps >= -5e-4).all()
    mi = metrics[(metrics.step == "mi_bound") & metrics.q_sigma.isna()]
    first = mi[(mi.dim == mi.dim.min()) & (mi.aug_std == mi.aug_std.min())]
    exact = first[first.metric == "mi_exact"].value
    assert mt["I exact"].iloc[0] == f"{exact.mean():.3f}±{exact.std():.3f}"
    assert len(exp.plot_noise_scan(metrics)) == 3
    assert len(exp.plot_mi_bound(metrics)) == 2
    ax = exp.plot_regions(resolution=60, n_noise=20)
    assert len(ax.images) == 1
    plt.close("all")
