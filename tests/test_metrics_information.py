"""Information metrics: SciPy / naive-formula references, the bounds bracketing the Monte-Carlo
mixture entropy, linear regions of ReLU networks, Mardia's statistics, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from torch import nn

from sithlib.metrics import (
    activation_pattern,
    gaussian_entropy,
    information,
    logdet_entropy,
    mardia_test,
    mixture_entropy_mc,
    mixture_entropy_pairwise,
    same_region_fraction,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64)


def spd(m, d, seed, low=0.2, high=2.0):
    """m random symmetric positive-definite d x d matrices with eigenvalues in [low, high]."""
    g = gen(seed)
    q = torch.linalg.qr(torch.randn(m, d, d, generator=g, dtype=torch.float64))[0]
    e = low + (high - low) * torch.rand(m, d, generator=g, dtype=torch.float64)
    return q @ torch.diag_embed(e) @ q.mT


# --------------------------------------------------------------------------- from samples
def test_gaussian_entropy_matches_scipy():
    z = randn(300, 4, seed=1) @ randn(4, 4, seed=2) + 3.0
    want = scipy.stats.multivariate_normal(cov=np.cov(z.numpy().T)).entropy()
    assert gaussian_entropy(z) == pytest.approx(want, abs=1e-9)
    # Singular covariance: fewer samples than dimensions, or a collapsed direction.
    assert gaussian_entropy(randn(3, 5)) == -math.inf
    assert gaussian_entropy(torch.cat([z, z[:, :1]], 1)) == -math.inf


def test_logdet_entropy_matches_numpy():
    z = randn(50, 6, seed=3)
    cov = np.cov(z.numpy().T)
    for beta in (0.1, 1.0, 10.0):
        want = 0.5 * np.linalg.slogdet(np.eye(6) + beta * cov)[1]
        assert logdet_entropy(z, beta=beta) == pytest.approx(want, abs=1e-9)
    # Finite where the Gaussian entropy is not; zero for a collapsed representation.
    assert math.isfinite(logdet_entropy(randn(3, 5)))
    assert logdet_entropy(torch.ones(10, 4, dtype=torch.float64)) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- mixtures
def reference_pairwise(means, covs, weights, divergence):
    """Kolchinsky & Tracey's estimator with each divergence written out per pair."""
    mu, cov, c = means.numpy(), covs.numpy(), weights.numpy() / weights.numpy().sum()
    m, d = mu.shape
    ent = [scipy.stats.multivariate_normal(cov=s).entropy() for s in cov]
    div = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            delta = mu[i] - mu[j]
            if divergence == "kl":
                prec = np.linalg.inv(cov[j])
                div[i, j] = 0.5 * (
                    np.trace(prec @ cov[i])
                    + delta @ prec @ delta
                    - d
                    + np.log(np.linalg.det(cov[j]) / np.linalg.det(cov[i]))
                )
            else:
                avg = (cov[i] + cov[j]) / 2
                div[i, j] = delta @ np.linalg.inv(avg) @ delta / 8 + 0.5 * np.log(
                    np.linalg.det(avg) / np.sqrt(np.linalg.det(cov[i]) * np.linalg.det(cov[j]))
                )
    inner = np.log((c[None, :] * np.exp(-div)).sum(1))
    return float((c * ent).sum() - (c * inner).sum())


@pytest.mark.parametrize("divergence", ["kl", "bhattacharyya"])
def test_pairwise_estimator_matches_reference_for_every_covariance_form(divergence):
    m, d = 6, 3
    means = 1.5 * randn(m, d, seed=4)
    weights = torch.arange(1.0, m + 1, dtype=torch.float64)
    covs = spd(m, d, seed=5)
    got = mixture_entropy_pairwise(means, covs, weights, divergence=divergence)
    assert got == pytest.approx(reference_pairwise(means, covs, weights, divergence), abs=1e-9)
    eye = torch.eye(d, dtype=torch.float64)
    variances = torch.linspace(0.3, 2.0, m, dtype=torch.float64)
    forms = [
        (0.7, 0.7 * eye.expand(m, d, d)),
        (variances, variances[:, None, None] * eye),
        (covs[0], covs[0].expand(m, d, d)),
    ]
    for compact, full in forms:
        want = reference_pairwise(means, full, weights, divergence)
        got = mixture_entropy_pairwise(means, compact, weights, divergence=divergence)
        assert got == pytest.approx(want, abs=1e-9)


def _vectorized_kl_iso(mu, var):
    """KL estimator for equal isotropic components, vectorised numpy (for many components)."""
    m, d = mu.shape
    sq = ((mu[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
    ent = 0.5 * d * np.log(2 * np.pi * np.e * var)
    inner = scipy.special.logsumexp(-sq / (2 * var), axis=1) - np.log(m)
    return ent - inner.mean()


def test_pairwise_estimator_in_blocks_for_many_components(monkeypatch):
    mu = randn(1500, 2, seed=6)
    got = mixture_entropy_pairwise(mu, 0.05)
    assert got == pytest.approx(_vectorized_kl_iso(mu.numpy(), 0.05), abs=1e-9)
    # Tiny blocks (one row at a time) give the same numbers as the reference.
    monkeypatch.setattr(information, "_BLOCK_ELEMENTS", 1)
    means, covs = randn(7, 3, seed=7), spd(7, 3, seed=8)
    weights = torch.rand(7, generator=gen(9), dtype=torch.float64)
    for divergence in ("kl", "bhattacharyya"):
        want = reference_pairwise(means, covs, weights, divergence)
        got = mixture_entropy_pairwise(means, covs, weights, divergence=divergence)
        assert got == pytest.approx(want, abs=1e-9)
    assert mixture_entropy_pairwise(mu[:50], 0.05) == pytest.approx(
        _vectorized_kl_iso(mu[:50].numpy(), 0.05), abs=1e-9
    )


def test_monte_carlo_does_not_depend_on_the_block_size(monkeypatch):
    means, covs = randn(4, 3, seed=10), spd(4, 3, seed=11)
    want = mixture_entropy_mc(means, covs, n_samples=500, generator=gen(6))
    monkeypatch.setattr(information, "_BLOCK_ELEMENTS", 50)
    assert mixture_entropy_mc(means, covs, n_samples=500, generator=gen(6)) == pytest.approx(
        want, abs=1e-12
    )


def test_single_component_is_exact():
    mean, cov = randn(1, 3, seed=9), spd(1, 3, seed=10)
    exact = scipy.stats.multivariate_normal(cov=cov[0].numpy()).entropy()
    for divergence in ("kl", "bhattacharyya"):
        assert mixture_entropy_pairwise(mean, cov, divergence=divergence) == pytest.approx(exact)
    h, se = mixture_entropy_mc(mean, cov, n_samples=50_000, generator=gen(1), return_stderr=True)
    assert abs(h - exact) < 4 * se


@pytest.mark.parametrize("separation", [0.0, 0.5, 1.5, 4.0, 20.0])
@pytest.mark.parametrize("full", [False, True])
def test_bounds_bracket_the_monte_carlo_entropy(separation, full):
    m, d = 5, 2
    means = separation * randn(m, d, seed=11)
    covs = spd(m, d, seed=12, low=0.3, high=1.5) if full else 0.5
    weights = torch.tensor([0.1, 0.3, 0.2, 0.25, 0.15], dtype=torch.float64)
    h, se = mixture_entropy_mc(
        means, covs, weights, n_samples=40_000, generator=gen(2), return_stderr=True
    )
    lower = mixture_entropy_pairwise(means, covs, weights, divergence="bhattacharyya")
    upper = mixture_entropy_pairwise(means, covs, weights, divergence="kl")
    assert lower - 4 * se <= h <= upper + 4 * se
    # Both estimates lie between the mean component entropy and that plus H(weights).
    cov_full = covs if full else 0.5 * torch.eye(d, dtype=torch.float64).expand(m, d, d)
    ent = torch.tensor([scipy.stats.multivariate_normal(cov=s).entropy() for s in cov_full])
    floor = float((weights * ent).sum())
    ceiling = floor - float((weights * weights.log()).sum())
    assert floor - 1e-9 <= lower <= upper <= ceiling + 1e-9
    if separation == 0.0 and not full:
        assert lower == pytest.approx(upper)
        assert abs(upper - h) < 4 * se
    if separation == 20.0:  # far-apart components: both bounds are tight
        assert upper - lower < 1e-3
    # The moment-matched Gaussian's entropy is an upper bound too (maximum entropy).
    c = torch.multinomial(weights, 20_000, replacement=True, generator=gen(3))
    chol = torch.linalg.cholesky(cov_full)
    x = means[c] + (chol[c] @ randn(20_000, d, 1, seed=4)).squeeze(-1)
    assert gaussian_entropy(x) >= h - 4 * se - 0.02


def test_monte_carlo_matches_numerical_integration_in_1d():
    means = torch.tensor([[-1.0], [0.5], [3.0]], dtype=torch.float64)
    variances = torch.tensor([0.3, 1.0, 0.6], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)

    params = list(zip(weights.tolist(), means[:, 0].tolist(), variances.tolist(), strict=True))

    def density(x):
        return sum(w * scipy.stats.norm.pdf(x, m, math.sqrt(v)) for w, m, v in params)

    exact = scipy.integrate.quad(lambda x: -density(x) * math.log(density(x)), -15, 20)[0]
    h, se = mixture_entropy_mc(
        means, variances, weights, n_samples=100_000, generator=gen(5), return_stderr=True
    )
    assert abs(h - exact) < 4 * se
    assert h == mixture_entropy_mc(means, variances, weights, n_samples=100_000, generator=gen(5))


# --------------------------------------------------------------------------- linear regions
def relu_net(seed=0, inplace=False, batchnorm=False):
    g = gen(seed)
    layers = [nn.Linear(2, 16), nn.ReLU(inplace=inplace)]
    if batchnorm:
        layers.insert(1, nn.BatchNorm1d(16))
    layers += [nn.Linear(16, 8), nn.LeakyReLU(0.1), nn.Linear(8, 3)]
    net = nn.Sequential(*layers).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return net


def reference_pattern(net, x):
    lin1, lin2 = net[0], net[2]
    p1 = x @ lin1.weight.T + lin1.bias
    p2 = torch.relu(p1) @ lin2.weight.T + lin2.bias
    return torch.cat([p1 > 0, p2 > 0], 1)


def test_activation_pattern_matches_manual_preactivations():
    net, x = relu_net(), randn(100, 2, seed=13)
    assert torch.equal(activation_pattern(net, x, batch_size=7), reference_pattern(net, x))
    # An in-place ReLU must not hide the signs of its input.
    assert torch.equal(activation_pattern(relu_net(inplace=True), x), reference_pattern(net, x))


def test_same_region_fraction_matches_reference_and_limits():
    net, x = relu_net(), randn(200, 2, seed=14)
    noise = randn(3, 200, 2, seed=15)
    ref = reference_pattern(net, x)
    for sigma in (0.01, 0.3):
        xp = x + sigma * noise
        want = np.mean([(reference_pattern(net, v) == ref).all(1).float().mean() for v in xp])
        assert same_region_fraction(net, x, xp) == pytest.approx(want)
    assert same_region_fraction(net, x, x.clone()) == 1.0
    small = same_region_fraction(net, x, x + 0.01 * noise)
    large = same_region_fraction(net, x, x + 3.0 * noise)
    assert small > 0.9 > 0.5 > large


def test_activation_pattern_uses_eval_mode_and_restores_it():
    net = relu_net(batchnorm=True)
    x = randn(64, 2, seed=16)
    net.train()
    whole = activation_pattern(net, x)
    one_by_one = activation_pattern(net, x, batch_size=1)  # BatchNorm in train mode would fail
    assert torch.equal(whole, one_by_one)
    assert net.training


# --------------------------------------------------------------------------- normality
def reference_mardia(z):
    z = z.numpy()
    n, d = z.shape
    zc = z - z.mean(0)
    prec = np.linalg.inv(zc.T @ zc / n)
    m = np.array([[zc[i] @ prec @ zc[j] for j in range(n)] for i in range(n)])
    return (m**3).sum() / n**2, (np.diag(m) ** 2).mean()


# Both ways of summing the cubes: the third-moment tensor (d^2 <= n) and the n x n blocks.
@pytest.mark.parametrize(("n", "d", "batch"), [(40, 3, 7), (20, 6, 7), (49, 7, 4096), (48, 7, 5)])
def test_mardia_matches_naive_loops(n, d, batch):
    z = randn(n, d, seed=17) ** 2
    b1, b2 = reference_mardia(z)
    out = mardia_test(z, batch_size=batch)
    assert out["skewness"] == pytest.approx(b1, rel=1e-10)
    assert out["kurtosis"] == pytest.approx(b2, rel=1e-10)
    assert out["skewness_statistic"] == pytest.approx(n * b1 / 6, rel=1e-10)
    dof = d * (d + 1) * (d + 2) / 6
    assert out["skewness_pvalue"] == pytest.approx(scipy.stats.chi2.sf(n * b1 / 6, dof))
    kurt = (b2 - d * (d + 2)) / math.sqrt(8 * d * (d + 2) / n)
    assert out["kurtosis_statistic"] == pytest.approx(kurt, rel=1e-10)
    assert out["kurtosis_pvalue"] == pytest.approx(2 * scipy.stats.norm.sf(abs(kurt)))


def test_mardia_accepts_gaussians_and_rejects_uniform_data():
    gauss = mardia_test(randn(2000, 3, seed=18) @ randn(3, 3, seed=19))
    assert gauss["skewness_pvalue"] > 1e-3 and gauss["kurtosis_pvalue"] > 1e-3
    assert gauss["kurtosis"] == pytest.approx(15, abs=1.0)  # d (d + 2)
    uniform = mardia_test(torch.rand(2000, 3, generator=gen(20), dtype=torch.float64))
    assert uniform["kurtosis_statistic"] < -5  # flatter than a Gaussian


# --------------------------------------------------------------------------- bad inputs
def test_bad_inputs_give_clear_errors():
    means = randn(4, 2)
    with pytest.raises(ValueError, match="covariances"):
        mixture_entropy_pairwise(means, torch.ones(3))
    with pytest.raises(ValueError, match="positive definite"):
        mixture_entropy_pairwise(means, -torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="covariances"):
        mixture_entropy_pairwise(means, torch.ones(4, 3, 3))
    with pytest.raises(ValueError, match="weights"):
        mixture_entropy_mc(means, 1.0, torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="divergence"):
        mixture_entropy_pairwise(means, 1.0, divergence="renyi")
    with pytest.raises(ValueError, match="means contains NaN"):
        mixture_entropy_pairwise(torch.full((2, 2), torch.nan), 1.0)
    with pytest.raises(ValueError, match="n_samples"):
        mixture_entropy_mc(means, 1.0, n_samples=1)
    with pytest.raises(ValueError, match="z contains NaN"):
        gaussian_entropy(torch.tensor([[1.0, torch.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="beta"):
        logdet_entropy(randn(5, 2), beta=0.0)
    with pytest.raises(ValueError, match="n > d"):
        mardia_test(randn(3, 3))
    with pytest.raises(ValueError, match="no nn.ReLU"):
        activation_pattern(nn.Linear(2, 2).double(), randn(5, 2))
    with pytest.raises(ValueError, match="x_perturbed must have shape"):
        same_region_fraction(relu_net(), randn(5, 2), randn(2, 4, 2))
    with pytest.raises(ValueError, match="x contains NaN"):
        same_region_fraction(relu_net(), torch.full((5, 2), torch.nan), randn(5, 2))
    with pytest.raises(ValueError, match="covariances contains NaN"):
        mixture_entropy_pairwise(means, torch.tensor(torch.nan))
    with pytest.raises(ValueError, match=r"shared covariance must have shape \(2, 2\)"):
        mixture_entropy_pairwise(means, torch.eye(3, dtype=torch.float64))
    indefinite = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)  # eigenvalue -1
    components = torch.stack([torch.eye(2, dtype=torch.float64)] * 3 + [indefinite])
    for mixture_entropy in (mixture_entropy_pairwise, mixture_entropy_mc):
        with pytest.raises(ValueError, match=r"every covariances\[i\] must be symmetric positive"):
            mixture_entropy(means, components)
    z = randn(20, 3, seed=1)
    # A constant column fails Cholesky; collinear ones leave a rounding-sized pivot instead.
    for singular in (torch.ones(20, 1, dtype=torch.float64), z[:, :1], z @ randn(3, 1, seed=2)):
        with pytest.raises(ValueError, match="covariance of z is singular"):
            mardia_test(torch.cat([z, 3.7 * singular], 1))
    with pytest.raises(TypeError, match="net must be a torch.nn.Module"):
        activation_pattern(lambda x: x, randn(5, 2))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        same_region_fraction(relu_net(), 3, randn(2, 5, 2))
    with pytest.raises(ValueError, match="means must have at least one feature"):
        mixture_entropy_pairwise(means[:, :0], 1.0)
