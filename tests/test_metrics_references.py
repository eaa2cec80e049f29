"""sithlib.metrics against independent references for paths the main tests leave to
properties (d_h < d_z Procrustes, rank-deficient least squares, block_r2 against
scikit-learn, the shared-covariance Monte-Carlo entropy, centred RankMe, the feature path of
the unbiased CKA)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats
import torch
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV

from sithlib.metrics import (
    block_r2,
    cka_linear,
    effective_rank,
    fit_linear_map,
    mixture_entropy_mc,
    mixture_entropy_pairwise,
    orthogonality_score,
    procrustes_r2,
)
from tests.test_metrics_identifiability import TOL, gen, orthogonal, randn


# --------------------------------------------------------------------------- identifiability
@pytest.mark.parametrize("d_h", [1, 3])
def test_procrustes_r2_narrower_h_matches_padded_scipy(d_h):
    """d_h < d_z: h padded with zero columns to d_z is a square Procrustes problem for scipy;
    the top d_h rows of its rotation are the map with orthonormal rows, then the least-squares
    scale of that map."""
    d_z, n, n_train = 5, 400, 200
    z = randn(n, d_z, seed=1)
    h = 2.0 * z @ orthogonal(d_z, 2)[:, :d_h] - 1.0 + 0.1 * randn(n, d_h, seed=3)
    a, b = h[:n_train].numpy(), z[:n_train].numpy()
    a_mean, b_mean = a.mean(0), b.mean(0)
    padded = np.hstack([a - a_mean, np.zeros((n_train, d_z - d_h))])
    r, _ = scipy.linalg.orthogonal_procrustes(padded, b - b_mean)
    q = r[:d_h]
    mapped = (a - a_mean) @ q
    c = (mapped * (b - b_mean)).sum() / (mapped**2).sum()
    pred = c * (h[n_train:].numpy() - a_mean) @ q + b_mean
    for multioutput in ("uniform_average", "raw_values", "variance_weighted"):
        want = r2_score(z[n_train:].numpy(), pred, multioutput=multioutput)
        got = procrustes_r2(h, z, multioutput=multioutput)
        np.testing.assert_allclose(np.asarray(got), want, atol=TOL, rtol=0)
    # Without the scale: the plain map.
    pred1 = (h[n_train:].numpy() - a_mean) @ q + b_mean
    assert procrustes_r2(h, z, scale=False) == pytest.approx(
        r2_score(z[n_train:].numpy(), pred1), abs=TOL
    )


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_fit_linear_map_rank_deficient_is_numpys_minimum_norm_solution(fit_intercept):
    h0 = randn(120, 4, seed=4)
    # Two redundant columns: a scaled copy and a sum (rank 4 out of 6).
    h = torch.cat([h0, 2.0 * h0[:, :1], h0[:, 1:2] + h0[:, 2:3]], 1)
    z = torch.tanh(h0 @ randn(4, 3, seed=5)) + 0.5
    hn, zn = h.numpy(), z.numpy()
    if fit_intercept:
        h_mean, z_mean = hn.mean(0), zn.mean(0)
    else:
        h_mean, z_mean = np.zeros(6), np.zeros(3)
    w_ref = np.linalg.lstsq(hn - h_mean, zn - z_mean, rcond=None)[0]  # LAPACK gelsd, min-norm
    b_ref = z_mean - h_mean @ w_ref
    w, b = fit_linear_map(h, z, fit_intercept=fit_intercept)
    np.testing.assert_allclose(w.numpy(), w_ref, atol=1e-9)
    np.testing.assert_allclose(b.numpy(), b_ref, atol=1e-9)
    if fit_intercept:  # scikit-learn's LinearRegression is the same minimum-norm solution
        model = LinearRegression().fit(hn, zn)
        np.testing.assert_allclose(w.numpy(), model.coef_.T, atol=1e-8)


@pytest.mark.parametrize("normalize_scale", [True, False])
def test_orthogonality_score_without_intercept_matches_numpy(normalize_scale):
    z = randn(300, 4, seed=6)
    h = z @ randn(4, 4, seed=7) + 0.3 * randn(300, 4, seed=8) + 2.0
    w = np.linalg.lstsq(h.numpy(), z.numpy(), rcond=None)[0]
    s = np.linalg.svd(w, compute_uv=False)
    c = s.mean() if normalize_scale else 1.0
    want = np.abs(s / c - 1).mean()
    got = orthogonality_score(h, z, fit_intercept=False, normalize_scale=normalize_scale)
    assert got == pytest.approx(want, abs=1e-9)


def test_block_r2_linear_matches_sklearn_on_the_shared_split():
    """Every block is scored on the same shuffled split: the permutation a fresh generator in
    the same state draws, fitted and scored per block by scikit-learn."""
    n = 300
    z = randn(n, 5, seed=9)
    h = torch.cat([z[:, :2] @ randn(2, 2, seed=10), torch.tanh(z[:, 2:4])], 1)
    h = h + 0.2 * randn(n, 4, seed=11)
    blocks = {"a": slice(0, 2), "b": [3, 2], "c": [4]}
    got = block_r2(h, z, blocks, nonlinear=False, generator=gen(12), test_fraction=0.3)
    perm = torch.randperm(n, generator=gen(12))
    n_test = int(round(0.3 * n))
    tr, te = perm[: n - n_test].numpy(), perm[n - n_test :].numpy()
    hn, zn = h.numpy(), z.numpy()
    for name, cols in (("a", [0, 1]), ("b", [3, 2]), ("c", [4])):
        model = LinearRegression().fit(hn[tr], zn[tr][:, cols])
        want = r2_score(zn[te][:, cols], model.predict(hn[te]))
        assert got[name] == pytest.approx(want, abs=TOL), name
    assert got["c"] < 0.05 < 0.8 < got["a"]


def test_block_r2_nonlinear_matches_sklearn_kernel_ridge_search():
    n, n_train = 180, 120
    z = randn(n, 3, seed=13)
    h = torch.tanh(z[:, :2] @ randn(2, 2, seed=14)) + 0.05 * randn(n, 2, seed=15)
    alphas, gammas = [1.0, 0.1, 0.01, 0.001], list(np.logspace(-2, 2, 4))
    hn, zn = h.numpy(), z.numpy()
    mean, std = hn[:n_train].mean(0), hn[:n_train].std(0)
    x_tr, x_te = (hn[:n_train] - mean) / std, (hn[n_train:] - mean) / std
    got = block_r2(h, z, {"content": [0, 1], "style": [2]}, method="kernel_ridge",
                   test_fraction=(n - n_train) / n)
    for name, cols in (("content", [0, 1]), ("style", [2])):
        y_tr = zn[:n_train][:, cols]
        y_mean = y_tr.mean(0)
        search = GridSearchCV(KernelRidge(kernel="rbf"), {"alpha": alphas, "gamma": gammas},
                              cv=3).fit(x_tr, y_tr - y_mean)
        want = r2_score(zn[n_train:][:, cols], search.predict(x_te) + y_mean)
        assert got[name] == pytest.approx(want, abs=TOL), name
    assert got["content"] > 0.9 and got["style"] < 0.1


# --------------------------------------------------------------------------- similarity
def hsic_u_statistic(k, l):
    """HSIC_1 of Song et al. (2012) as a U-statistic over ordered 4-tuples (O(n^4))."""
    n = k.shape[0]
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
    return total / (n * (n - 1) * (n - 2) * (n - 3))


def test_unbiased_cka_feature_path_equals_the_u_statistic():
    # n >= d_x + d_y takes the O(n d^2) feature path, which the main tests compare with the
    # closed form only; here with the definition itself.
    x = randn(8, 3, seed=16)
    y = torch.tanh(x[:, :2]) + 0.5 * randn(8, 2, seed=17)
    k, l = (x @ x.T).numpy(), (y @ y.T).numpy()
    want = hsic_u_statistic(k, l) / math.sqrt(hsic_u_statistic(k, k) * hsic_u_statistic(l, l))
    assert cka_linear(x, y, unbiased=True) == pytest.approx(want, abs=1e-9)


# --------------------------------------------------------------------------- stability
@pytest.mark.parametrize("eps", [0.0, 1e-7, 1e-3])
def test_effective_rank_centred_matches_the_formula(eps):
    z = randn(80, 6, seed=18) * torch.tensor([3.0, 2.0, 1.0, 0.5, 0.1, 0.0]).double() + 5.0
    zc = z.numpy() - z.numpy().mean(0)
    s = np.linalg.svd(zc, compute_uv=False)
    p = s / s.sum() + eps
    terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    assert effective_rank(z, eps=eps, center=True) == pytest.approx(
        np.exp(-terms.sum()), rel=1e-10
    )


# --------------------------------------------------------------------------- information
def test_monte_carlo_with_a_shared_covariance_matches_1d_quadrature():
    # covariances of shape (d, d) = (1, 1): the whitened path with its log-det offset.
    means = torch.tensor([[-1.0], [0.5], [3.0]], dtype=torch.float64)
    var = 0.45
    weights = torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)

    def density(x):
        return sum(w * scipy.stats.norm.pdf(x, m, math.sqrt(var))
                   for w, m in zip(weights.tolist(), means[:, 0].tolist(), strict=True))

    exact = scipy.integrate.quad(lambda x: -density(x) * math.log(density(x)), -15, 20)[0]
    h, se = mixture_entropy_mc(means, torch.tensor([[var]], dtype=torch.float64), weights,
                               n_samples=100_000, generator=gen(19), return_stderr=True)
    assert abs(h - exact) < 4 * se


def test_shared_full_covariance_closed_forms():
    """A shared anisotropic covariance S: coincident components are one Gaussian, far-apart
    ones have entropy H(N(0, S)) + H(weights)."""
    cov = torch.tensor([[2.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.2]], dtype=torch.float64)
    gauss = scipy.stats.multivariate_normal(cov=cov.numpy()).entropy()
    weights = torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)
    same = torch.zeros(3, 3, dtype=torch.float64)
    h, se = mixture_entropy_mc(same, cov, weights, n_samples=20_000, generator=gen(20),
                               return_stderr=True)
    assert abs(h - gauss) < 4 * se + 1e-9
    for divergence in ("kl", "bhattacharyya"):
        assert mixture_entropy_pairwise(same, cov, weights, divergence=divergence) == (
            pytest.approx(gauss, abs=1e-9))
    far = 1e3 * torch.eye(3, dtype=torch.float64)
    h_w = float(-(weights * weights.log()).sum())
    h, se = mixture_entropy_mc(far, cov, weights, n_samples=20_000, generator=gen(21),
                               return_stderr=True)
    assert abs(h - (gauss + h_w)) < 4 * se + 1e-9
    for divergence in ("kl", "bhattacharyya"):
        assert mixture_entropy_pairwise(far, cov, weights, divergence=divergence) == (
            pytest.approx(gauss + h_w, abs=1e-9))
