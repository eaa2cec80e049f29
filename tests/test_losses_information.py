"""Entropy estimators and the VICReg entropy variants against float64 loops, closed forms and a
Monte-Carlo ground truth for Gaussian mixtures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sithlib.losses import logdet_entropy, pairwise_entropy, vicreg_entropy

TOL = 1e-6


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- references (loops, float64)


def ref_logdet(z, eps):
    z = z.numpy()
    n, d = z.shape
    mean = [sum(z[:, j]) / n for j in range(d)]
    cov = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            cov[i, j] = sum((z[k, i] - mean[i]) * (z[k, j] - mean[j]) for k in range(n)) / (n - 1)
    sign, logdet = np.linalg.slogdet(2 * math.pi * math.e * (cov + eps * np.eye(d)))
    assert sign > 0
    return 0.5 * logdet


def ref_pairwise(z, sigma, kind):
    z = z.numpy()
    n, d = z.shape
    denom = 2 * sigma**2 if kind == "kl" else 8 * sigma**2
    h = 0.5 * d * math.log(2 * math.pi * math.e * sigma**2)
    for i in range(n):
        inner = sum(math.exp(-np.sum((z[i] - z[j]) ** 2) / denom) for j in range(n)) / n
        h -= math.log(inner) / n
    return h


# ---------------------------------------------------------------- log-det


@pytest.mark.parametrize(("n", "d"), [(9, 3), (4, 7), (5, 5)])
@pytest.mark.parametrize("eps", [1e-4, 0.3])
def test_logdet_entropy_matches_loop(n, d, eps):
    """(4, 7) goes through the Gram-matrix path (n < d)."""
    z = rand(n, d, seed=n + d)
    assert abs(logdet_entropy(z, eps=eps).item() - ref_logdet(z, eps)) < TOL


def test_logdet_entropy_known_values_and_invariances():
    x = rand(10, 4, seed=1)
    x = x - x.mean(0)
    q, _ = torch.linalg.qr(x)
    white = q * 3.0  # covariance (unbiased) exactly I
    want = 2 * math.log(2 * math.pi * math.e * (1 + 1e-4))
    assert abs(logdet_entropy(white).item() - want) < 1e-12
    z = rand(12, 3, seed=2)
    base = logdet_entropy(z, eps=1e-12).item()
    assert abs(logdet_entropy(z + 5.0, eps=1e-12).item() - base) < 1e-9
    # scaling by c adds d log c (the ridge is negligible at eps = 1e-12)
    assert abs(logdet_entropy(2 * z, eps=1e-12).item() - base - 3 * math.log(2)) < 1e-9


def test_logdet_entropy_of_gaussian_samples():
    """With many samples it approaches the true Gaussian entropy (4 standard errors)."""
    n, d = 4000, 3
    a = torch.tensor([[1.0, 0.0, 0.0], [0.5, 2.0, 0.0], [0.1, -0.3, 0.5]], dtype=torch.float64)
    z = rand(n, d, seed=3) @ a.T
    true = 0.5 * math.log(np.linalg.det(2 * math.pi * math.e * (a @ a.T).numpy()))
    se = 0.5 * math.sqrt(2 * d / n)  # sd of log det of a sample covariance ~ sqrt(2 d / n)
    assert abs(logdet_entropy(z, eps=1e-12).item() - true) < 4 * se


def test_logdet_entropy_collapsed_is_finite():
    z = torch.ones(6, 4, requires_grad=True)
    h = logdet_entropy(z)
    (g,) = torch.autograd.grad(h, z)
    assert abs(h.item() - 2 * math.log(2 * math.pi * math.e * 1e-4)) < 1e-4
    assert torch.isfinite(g).all()


def test_logdet_entropy_sync_free_path_equals_the_cholesky_path():
    """Under vmap (and on a GPU) the log-det comes from slogdet, with no branch on values: the
    same value and gradient as the CPU's Cholesky path, including a collapsed batch."""
    collapsed = torch.ones(9, 3, dtype=torch.float64)
    batches = torch.stack([rand(9, 3, seed=5), rand(9, 3, seed=6), collapsed])
    for n_rows in (9, 2):  # covariance path and Gram path (n < d)
        z = batches[:, :n_rows].clone().requires_grad_(True)
        looped = torch.stack([logdet_entropy(b) for b in z])
        (g_loop,) = torch.autograd.grad(looped.sum(), z)
        vmapped = torch.vmap(logdet_entropy)(z)
        (g_vmap,) = torch.autograd.grad(vmapped.sum(), z)
        torch.testing.assert_close(vmapped, looped, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(g_vmap, g_loop, rtol=1e-7, atol=1e-7)


def _force_cholesky_failure(monkeypatch):
    """Make torch.linalg.cholesky_ex report failure; return the list of eigvalsh calls."""
    real_chol, real_eig = torch.linalg.cholesky_ex, torch.linalg.eigvalsh
    calls = []

    def failing(m, *args, **kwargs):
        chol, info = real_chol(m, *args, **kwargs)
        return chol, torch.ones_like(info)

    def counted(m, *args, **kwargs):
        calls.append(tuple(m.shape))
        return real_eig(m, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", failing)
    monkeypatch.setattr(torch.linalg, "eigvalsh", counted)
    return calls


@pytest.mark.parametrize(("n", "d"), [(9, 3), (4, 7)])
def test_logdet_eigenvalue_fallback_value_and_gradient(monkeypatch, n, d):
    """The eigenvalue path taken when Cholesky fails gives the log-det of the loop reference
    and the closed-form gradient dH/dz = (z - mean) (S + eps I)^-1 / (n - 1)."""
    eps = 0.3
    z = rand(n, d, seed=10 + n).requires_grad_(True)
    calls = _force_cholesky_failure(monkeypatch)
    h = logdet_entropy(z, eps=eps)
    (g,) = torch.autograd.grad(h, z)
    assert calls == [(min(n, d), min(n, d))]  # the fallback ran (on the Gram matrix for n < d)
    assert abs(h.item() - ref_logdet(z.detach(), eps)) < TOL
    zc = (z.detach() - z.detach().mean(0)).numpy()
    want = zc @ np.linalg.inv(zc.T @ zc / (n - 1) + eps * np.eye(d)) / (n - 1)
    np.testing.assert_allclose(g.numpy(), want, atol=1e-10, rtol=0)


def test_logdet_fallback_on_a_numerically_indefinite_covariance():
    """Duplicated columns and a ridge below rounding: the covariance is singular, rounding makes
    it indefinite and Cholesky fails for real. Its two null eigenvalues come out as rounding
    noise in [-1e-15, 1e-15], so their logs are clamped or huge negatives; the rest must be
    the log-det over numpy's three nonzero eigenvalues."""
    x = rand(30, 3, seed=11)
    z = torch.cat([x, x[:, :1], x[:, :1]], 1).requires_grad_(True)
    eps = 1e-20
    zc = z.detach() - z.detach().mean(0)
    cov = zc.T @ zc / 29 + eps * torch.eye(5, dtype=torch.float64)
    assert torch.linalg.cholesky_ex(cov).info != 0  # the premise: Cholesky really fails
    eig = np.linalg.eigvalsh(cov.numpy())
    assert np.all(np.abs(eig[:2]) < 1e-12) and eig[2] > 0.1
    h = logdet_entropy(z, eps=eps)
    (g,) = torch.autograd.grad(h, z)
    nonzero = 2.5 * math.log(2 * math.pi * math.e) + 0.5 * np.log(eig[2:]).sum()
    tiny = torch.finfo(torch.float64).tiny
    # Each null eigenvalue adds 0.5 log(lambda) with lambda clamped to [tiny, 1e-12].
    assert nonzero + math.log(tiny) <= h.item() <= nonzero + math.log(1e-12)
    assert torch.isfinite(g).all()


# ---------------------------------------------------------------- pairwise-distance bounds


@pytest.mark.parametrize("kind", ["kl", "bhattacharyya"])
@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_pairwise_entropy_matches_loop(kind, sigma):
    z = rand(7, 3, seed=4)
    got = pairwise_entropy(z, sigma=sigma, kind=kind).item()
    assert abs(got - ref_pairwise(z, sigma, kind)) < TOL


@pytest.mark.parametrize("kind", ["kl", "bhattacharyya"])
def test_pairwise_entropy_limits(kind):
    d, sigma = 3, 0.5
    component = 0.5 * d * math.log(2 * math.pi * math.e * sigma**2)
    same = torch.zeros(5, d, dtype=torch.float64)
    assert abs(pairwise_entropy(same, sigma=sigma, kind=kind).item() - component) < 1e-12
    far = 100.0 * torch.arange(6, dtype=torch.float64)[:, None].repeat(1, d)
    h = pairwise_entropy(far, sigma=sigma, kind=kind).item()
    assert abs(h - (component + math.log(6))) < 1e-9  # disjoint components: log N more


def test_pairwise_default_bandwidth_is_sqrt_d_and_keeps_a_gradient_in_wide_embeddings():
    z = rand(9, 4, seed=5)
    assert pairwise_entropy(z).item() == pytest.approx(ref_pairwise(z, 2.0, "kl"), abs=TOL)
    assert vicreg_entropy(z, z, estimator="pairwise").item() == pytest.approx(
        -ref_pairwise(z, 2.0, "kl"), abs=TOL)
    # Unit variance per dimension in d = 2048 (a VICReg expander): sigma = 1 saturates the
    # bound (every off-diagonal term underflows, no gradient); sigma = sqrt(d) does not.
    gen = torch.Generator().manual_seed(6)
    wide = torch.randn(128, 2048, generator=gen).requires_grad_(True)
    grads = {}
    for sigma in (1.0, None):
        (grad,) = torch.autograd.grad(pairwise_entropy(wide, sigma=sigma), wide)
        grads[sigma] = grad.abs().max().item()
    assert grads[1.0] == 0.0 and grads[None] > 1e-6
    ceiling = 0.5 * 2048 * math.log(2 * math.pi * math.e) + math.log(128)
    assert pairwise_entropy(wide, sigma=1.0).item() == pytest.approx(ceiling, rel=1e-6)


def test_pairwise_bounds_sandwich_monte_carlo_entropy():
    """Bhattacharyya <= H(mixture) <= KL for an equal-weight isotropic Gaussian mixture."""
    rng = np.random.default_rng(0)
    n, d, sigma = 6, 2, 0.6
    means = rng.normal(size=(n, d))
    m = 40_000
    x = means[rng.integers(0, n, size=m)] + sigma * rng.normal(size=(m, d))
    sq = ((x[:, None, :] - means[None, :, :]) ** 2).sum(-1)
    log_comp = -sq / (2 * sigma**2) - 0.5 * d * math.log(2 * math.pi * sigma**2)
    log_p = np.logaddexp.reduce(log_comp, axis=1) - math.log(n)
    h_mc, se = -log_p.mean(), log_p.std() / math.sqrt(m)
    z = torch.from_numpy(means)
    lower = pairwise_entropy(z, sigma=sigma, kind="bhattacharyya").item()
    upper = pairwise_entropy(z, sigma=sigma, kind="kl").item()
    assert lower < upper
    assert lower - 4 * se <= h_mc <= upper + 4 * se


# ---------------------------------------------------------------- VICReg variants


@pytest.mark.parametrize("estimator", ["logdet", "pairwise"])
def test_vicreg_entropy_is_invariance_minus_entropy(estimator):
    za, zb = rand(8, 3, seed=5), rand(8, 3, seed=6)
    kw = dict(estimator=estimator, sim_coeff=2.0, entropy_coeff=0.5, sigma=0.7)
    got = vicreg_entropy(za, zb, **kw)
    if estimator == "logdet":
        h = ref_logdet(za, 1e-4) + ref_logdet(zb, 1e-4)
    else:
        h = ref_pairwise(za, 0.7, "kl") + ref_pairwise(zb, 0.7, "kl")
    mse = float(((za - zb) ** 2).mean())
    assert abs(got.item() - (2.0 * mse - 0.5 * 0.5 * h)) < TOL
    assert abs(got.item() - vicreg_entropy(zb, za, **kw).item()) < 1e-12


def test_vicreg_entropy_gradient_spreads_collapsed_embeddings():
    """One gradient step on the entropy term alone increases the entropy of near-collapsed z."""
    z = (0.01 * rand(16, 4, seed=7)).requires_grad_()
    loss = vicreg_entropy(z, z, sim_coeff=0.0)
    (g,) = torch.autograd.grad(loss, z)
    before = logdet_entropy(z.detach()).item()
    after = logdet_entropy(z.detach() - 1e-3 * F.normalize(g.flatten(), dim=0).view_as(g)).item()
    assert after > before


def test_information_bad_input():
    z = rand(5, 3)
    with pytest.raises(ValueError, match="eps"):
        logdet_entropy(z, eps=0)
    with pytest.raises(ValueError, match="at least 2"):
        logdet_entropy(z[:1])
    with pytest.raises(ValueError, match="sigma"):
        pairwise_entropy(z, sigma=-1)
    with pytest.raises(ValueError, match="sigma"):
        vicreg_entropy(z, z, estimator="pairwise", sigma=0)
    with pytest.raises(ValueError, match="kind"):
        pairwise_entropy(z, kind="renyi")
    with pytest.raises(ValueError, match="estimator"):
        vicreg_entropy(z, z, estimator="knn")
    with pytest.raises(ValueError, match="same shape"):
        vicreg_entropy(z, rand(5, 2))
    with pytest.raises(TypeError, match="z must"):
        logdet_entropy(torch.ones(5, 3, dtype=torch.int64))
