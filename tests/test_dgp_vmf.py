"""sithlib.dgp.vmf: Wood's sampler against theory (A_d), scipy's sampler (two-sample KS) and
mpmath's Bessel functions; the Gamma primitive against scipy; properties and bad inputs."""

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats

from sithlib.dgp import mean_resultant_length, sample_vmf
from sithlib.dgp._random import standard_gamma

DIMS = (2, 3, 10, 64, 512)
KAPPAS = (0.1, 1.0, 10.0, 100.0, 1e4)


def _n(d: int) -> tuple[int, int]:
    """(ours, scipy's) sample sizes: 1e5 where it is cheap; both sides draw full d-vectors."""
    return {2: (100_000, 20_000), 3: (100_000, 20_000), 10: (100_000, 20_000),
            64: (20_000, 10_000), 512: (5_000, 3_000)}[d]


def _north(d, dtype=torch.float64):
    mu = torch.zeros(d, dtype=dtype)
    mu[-1] = 1.0
    return mu


def _cos_variance(kappa, d):
    a = float(mean_resultant_length(kappa, d))
    return 1 - (d - 1) * a / kappa - a**2


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_vmf_matches_theory_and_scipy(d, kappa):
    n, n_ref = _n(d)
    seed = 1000 + 100 * DIMS.index(d) + KAPPAS.index(kappa)
    mu = _north(d)
    x = sample_vmf(mu.expand(n, d), kappa, generator=torch.Generator().manual_seed(seed))
    assert x.shape == (n, d) and x.dtype == torch.float64
    assert torch.allclose(x.norm(dim=1), torch.ones(n, dtype=torch.float64), atol=1e-12)
    w = (x @ mu).numpy()
    # Mean resultant length within 3 standard errors of A_d(kappa).
    se = np.sqrt(_cos_variance(kappa, d) / n)
    assert abs(w.mean() - mean_resultant_length(kappa, d)) < 3 * se
    # Two-sample KS tests against scipy's independent implementation: mu^T x, and one tangent
    # coordinate (mu = e_d, so x_1 carries the direction part, which mu^T x never sees).
    ref = stats.vonmises_fisher(mu.numpy(), kappa).rvs(n_ref, random_state=seed)
    assert stats.ks_2samp(w, ref @ mu.numpy()).pvalue > 0.01
    assert stats.ks_2samp(x[:, 0].numpy(), ref[:, 0]).pvalue > 0.01


@pytest.mark.parametrize("d", DIMS)
def test_vmf_finite_at_huge_kappa(d):
    g = torch.randn(200, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
    mu = torch.nn.functional.normalize(g, dim=1)
    for dtype in (torch.float32, torch.float64):
        x = sample_vmf(mu.to(dtype), 1e5, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(x).all()
        assert torch.allclose(x.norm(dim=1).double(), torch.ones(200, dtype=torch.float64),
                              atol=1e-6)
        # 1 - mu^T x concentrates at (d - 1) / (2 kappa) for large kappa.
        gap = (1 - (x.double() * mu).sum(1)).mean().item()
        assert gap == pytest.approx((d - 1) / 2e5, rel=0.3 if d > 3 else 0.5, abs=2e-7)


@pytest.mark.parametrize("d", (2, 3, 5, 40))
def test_vmf_kappa_zero_is_uniform(d):
    # Under the uniform distribution (1 + mu^T x) / 2 ~ Beta((d-1)/2, (d-1)/2) exactly.
    x = sample_vmf(_north(d).expand(20_000, d), 0.0, generator=torch.Generator().manual_seed(3))
    t = ((1 + x[:, -1]) / 2).numpy()
    assert stats.kstest(t, stats.beta((d - 1) / 2, (d - 1) / 2).cdf).pvalue > 0.01


def test_vmf_per_row_means_and_kappas():
    gen = torch.Generator().manual_seed(0)
    n, d = 30_000, 5
    mu = torch.nn.functional.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1)
    kappa = torch.where(torch.arange(n) % 2 == 0, 2.0, 50.0).double()
    x = sample_vmf(mu, kappa, generator=gen)
    w = (x * mu).sum(1)
    for k, rows in ((2.0, slice(0, None, 2)), (50.0, slice(1, None, 2))):
        se = np.sqrt(_cos_variance(k, d) / (n // 2))
        assert abs(w[rows].mean().item() - mean_resultant_length(k, d)) < 4 * se
    tangent = x - w.unsqueeze(1) * mu
    assert (tangent * mu).sum(1).abs().max() < 1e-12
    # The tangent direction is uniform on the unit sphere S^{d-2} of mu's orthogonal complement.
    # The Householder reflection H (H mu = e_d) maps that complement onto the first d - 1 axes,
    # where a coordinate t of a uniform point has (1 + t) / 2 ~ Beta((d - 2) / 2, (d - 2) / 2).
    u = tangent / tangent.norm(dim=1, keepdim=True)
    v = mu - torch.eye(d, dtype=torch.float64)[-1]
    hu = u - 2 * (u * v).sum(1, keepdim=True) / (v * v).sum(1, keepdim=True) * v
    assert hu[:, -1].abs().max() < 1e-12
    beta = stats.beta((d - 2) / 2, (d - 2) / 2)
    for j in (0, d - 2):
        assert stats.kstest((1 + hu[:, j].numpy()) / 2, beta.cdf).pvalue > 0.01
    # Isotropic around each mean, so it averages to 0 in the global frame too.
    assert (u.mean(0).abs() < 4 * (u.var(0) / n).sqrt()).all()


def test_vmf_rotation_equivariance_in_distribution():
    # Samples around a rotated mean, rotated back, match samples around the north pole.
    d, n = 4, 20_000
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(1),
                                       dtype=torch.float64))
    mu = _north(d)
    a = sample_vmf(mu.expand(n, d), 3.0, generator=torch.Generator().manual_seed(2))
    b = sample_vmf((q @ mu).expand(n, d), 3.0, generator=torch.Generator().manual_seed(3)) @ q
    for j in range(d):
        assert stats.ks_2samp(a[:, j].numpy(), b[:, j].numpy()).pvalue > 0.001


def test_vmf_same_seed_same_bits_and_shapes():
    mu = torch.nn.functional.normalize(torch.randn(3, 7, 6), dim=-1)
    a = sample_vmf(mu, 5.0, generator=torch.Generator().manual_seed(9))
    b = sample_vmf(mu, 5.0, generator=torch.Generator().manual_seed(9))
    c = sample_vmf(mu, 5.0, generator=torch.Generator().manual_seed(10))
    assert a.shape == mu.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sample_vmf(mu[:0], 1.0).shape == (0, 7, 6)
    assert sample_vmf(torch.tensor([0.0, 1.0]), 10.0).shape == (2,)


@pytest.mark.parametrize("d", (2, 3, 16, 256, 512))
@pytest.mark.parametrize("kappa", (1e-3, 0.1, 1.0, 30.0, 1e3, 1e5))
def test_mean_resultant_length_against_mpmath(d, kappa):
    mpmath.mp.dps = 40
    exact = mpmath.besseli(d / 2, kappa) / mpmath.besseli(d / 2 - 1, kappa)
    assert float(mean_resultant_length(kappa, d)) == pytest.approx(float(exact), rel=1e-10)


def test_mean_resultant_length_limits_and_shape():
    assert mean_resultant_length(0.0, 3) == 0.0
    out = mean_resultant_length(np.array([[0.0, 1.0], [10.0, 1e5]]), 10)
    assert out.shape == (2, 2) and np.all(np.diff(out.ravel()) > 0)
    assert float(mean_resultant_length(1.0, 3)) == pytest.approx(1 / np.tanh(1.0) - 1.0)


@pytest.mark.parametrize("alpha", (0.5, 1.0, 4.5, 255.5))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_standard_gamma_against_scipy(alpha, dtype):
    g = standard_gamma(alpha, (20_000,), generator=torch.Generator().manual_seed(4), dtype=dtype)
    assert g.dtype == dtype and (g > 0).all()
    assert stats.kstest(g.double().numpy(), stats.gamma(alpha).cdf).pvalue > 0.01


def test_bad_inputs():
    mu = _north(3)
    with pytest.raises(TypeError, match="mu"):
        sample_vmf([0.0, 0.0, 1.0], 1.0)
    with pytest.raises(TypeError, match="floating"):
        sample_vmf(torch.tensor([0, 0, 1]), 1.0)
    with pytest.raises(ValueError, match="d >= 2"):
        sample_vmf(torch.ones(4, 1), 1.0)
    with pytest.raises(ValueError, match="unit vectors"):
        sample_vmf(2 * mu, 1.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="kappa"):
            sample_vmf(mu, bad)
    with pytest.raises(ValueError, match="broadcast"):
        sample_vmf(mu.expand(4, 3), torch.ones(5))
    with pytest.raises(ValueError, match="d must"):
        mean_resultant_length(1.0, 1)
    with pytest.raises(ValueError, match="kappa"):
        mean_resultant_length(-1.0, 3)
    with pytest.raises(ValueError, match="alpha"):
        standard_gamma(0.0, (3,))
