"""Entropy estimators against ground truth: the bounds bracket the Monte-Carlo entropy."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from sithlib.experiments import entropy_estimators as exp
from sithlib.metrics import logdet_entropy as logdet_metric

TINY = {
    "entropy_estimators": dataclasses.replace(
        exp.PROFILES["quick"], components=4, separations=(0.0, 3.0), dims=(1, 4), seeds=2,
        mc_samples=2000, n_samples=2000, batch_size=64),
}


@pytest.fixture(scope="module")
def wide():
    cfg = dataclasses.replace(exp.PROFILES["quick"], separations=(0.0, 1.0, 3.0, 8.0, 30.0),
                              dims=(1, 3, 16), seeds=2, mc_samples=8000, n_samples=8000)
    return exp.wide(exp.run(cfg)["metrics"]), cfg


def test_bounds_bracket_the_monte_carlo_entropy(wide):
    w, _ = wide
    tol = 4 * w.mc_se  # as in the chapter: exact bounds meet the truth within MC noise
    assert (w.bhattacharyya_lower <= w.mc + tol).all()
    assert (w.mc <= w.kl_upper + tol).all()
    assert (w.mc <= w.gaussian_bound + tol).all()
    assert (w.bhattacharyya_lower <= w.kl_upper + 1e-12).all()
    # Kolchinsky and Tracey: both estimators lie in [H(x | c), H(x | c) + log m].
    for col in ("bhattacharyya_lower", "kl_upper"):
        assert (w[col] >= w.component_entropy - 1e-9).all()
        assert (w[col] <= w.component_entropy + w.log_components + 1e-9).all()


def test_limits(wide):
    w, cfg = wide
    # In one dimension random means can land close together at any scale, so d >= 3.
    far = w[(w.separation == 30.0) & (w.dim >= 3)]
    # Separated components: every pairwise estimate and the truth reach H(x | c) + log m.
    for col in ("mc", "kl_upper", "bhattacharyya_lower"):
        np.testing.assert_allclose(far[col], far.component_entropy + far.log_components,
                                   atol=3 * far.mc_se.max() + 0.02)
    # ... where the Gaussian bound is far too high: the means' spread counts as volume.
    assert (far.gaussian_bound - far.mc > 1.0).all()
    # Gaussian bound from samples converges to its closed form.
    np.testing.assert_allclose(w.gaussian_samples, w.gaussian_bound, atol=0.1)


def test_logdet_on_a_small_batch_underestimates_in_high_dimension(wide):
    w, cfg = wide
    hi = w[w.dim == 16]
    # 256 samples in 16 dimensions: log det of a sample covariance is biased low.
    assert (hi.logdet_batch < hi.gaussian_bound).mean() >= 0.8


def test_closed_forms_against_independent_references():
    gen = torch.Generator().manual_seed(0)
    u, covs = exp.random_mixture(3, 2, gen)
    means = 2.0 * u
    x = exp.sample_mixture(means, covs, 200_000, torch.Generator().manual_seed(1))
    np.testing.assert_allclose(exp.mixture_covariance(means, covs).numpy(),
                               np.cov(x.numpy().T), atol=0.03)
    want = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * np.cov(x.numpy().T))[1]
    assert exp.gaussian_bound(means, covs) == pytest.approx(want, abs=0.02)
    # Component entropy: scipy's Gaussian entropy, averaged.
    import scipy.stats

    want = np.mean([scipy.stats.multivariate_normal(cov=c.numpy()).entropy() for c in covs])
    assert exp.component_entropy(covs) == pytest.approx(want, rel=1e-12)
    # The spread of the means: E ||mu_i - mu_j||^2 = s^2 in every dimension.
    u, _ = exp.random_mixture(400, 50, torch.Generator().manual_seed(2))
    sq = torch.cdist(u, u).pow(2)
    assert float(sq.sum() / (400 * 399)) == pytest.approx(1.0, rel=0.05)


def test_logdet_objective_is_the_shifted_logdet_metric():
    z = torch.randn(100, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    eps = 1e-2
    from sithlib.losses import logdet_entropy as logdet_objective

    want = logdet_metric(z, beta=1 / eps) + 0.5 * 5 * math.log(2 * math.pi * math.e * eps)
    assert float(logdet_objective(z, eps=eps)) == pytest.approx(want, rel=1e-6)


def test_run_rejects_a_single_component():
    with pytest.raises(ValueError, match="components"):
        exp.run(dataclasses.replace(TINY["entropy_estimators"], components=1))


def test_tables_and_plots(wide):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = TINY["entropy_estimators"]
    metrics = exp.run(cfg)["metrics"]
    table = exp.bracket_table(metrics)
    assert list(table.index) == [1, 4] and (table["cells"] == 4).all()
    # Percentages of cells, labelled as such.
    shares = table.drop(columns="cells")
    assert all("% of cells" in col for col in shares.columns)
    assert shares.stack().between(0, 100).all()
    err = exp.error_table(metrics, separation=3.0)
    assert list(err.index) == [1, 4] and "MC s.e." in err.columns
    w = exp.wide(metrics)
    cell = w[np.isclose(w.separation, 3.0) & (w.dim == 4)]
    kl = cell.kl_upper - cell.mc  # 'mean±sd' over seeds of each seed's error
    assert err.loc[4, exp.ESTIMATORS["kl_upper"]] == f"{kl.mean():.3f}±{kl.std():.3f}"
    assert len(exp.plot_vs_separation(metrics, dims=(1, 4))) == 2
    ax = exp.plot_vs_dimension(metrics, separation=3.0)
    assert len(ax.lines) >= 5
    plt.close("all")
