"""sithlib.dgp against closed forms and scipy references for what the main tests check only
through moments or one fixed anchor (the full spectrum and Haar factors of random_matrix,
joint uniformity of negatives, truncated box laws around varying anchors and non-default
bounds, the S^2 sampler with per-row kappa, cluster negatives, reflected latent steps)."""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats

from sithlib.dgp import (
    DGP,
    PRESETS,
    Box,
    ContentStyle,
    DGPConfig,
    make_space,
    mean_resultant_length,
    negative_indices,
    random_matrix,
    sample_conditional,
    sample_marginal,
    sample_vmf,
)
from sithlib.dgp import images as I
from tests.test_dgp_sampling import _gen


# ---- mixing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dim,cond", ((2, 3.0), (7, 9.0), (12, 100.0)))
def test_random_matrix_has_the_stated_geometric_spectrum(dim, cond):
    # Not only the end points: s_i = c cond^{-(i-1)/(d-1)} with c fixed by sum s_i^2 = d.
    s = torch.linalg.svdvals(random_matrix(dim, cond, generator=_gen(dim))).numpy()
    ref = cond ** (-np.arange(dim) / (dim - 1))
    ref *= math.sqrt(dim) / np.linalg.norm(ref)
    np.testing.assert_allclose(s, ref, rtol=1e-10)


def test_random_matrix_factors_are_haar():
    """cond = 1 is a Haar orthogonal matrix on O(3): each entry is uniform on [-1, 1]
    (Archimedes), det = +-1 with probability 1/2, E tr Q = 0 and E (tr Q)^2 = 1. QR without
    the sign fix fails the first check (LAPACK's Q_11 is never positive)."""
    k = 3000
    qs = torch.stack([random_matrix(3, 1.0, generator=_gen(100 + i)) for i in range(k)])
    for i, j in ((0, 0), (1, 2), (2, 1)):
        assert stats.kstest(qs[:, i, j].numpy(), stats.uniform(-1, 2).cdf).pvalue > 1e-3
    det = torch.linalg.det(qs)
    assert torch.allclose(det.abs(), torch.ones(k, dtype=torch.float64), atol=1e-12)
    assert stats.binomtest(int((det > 0).sum()), k, 0.5).pvalue > 1e-3
    tr = qs.diagonal(dim1=1, dim2=2).sum(1)
    assert abs(tr.mean().item()) < 4 * (1 / k) ** 0.5
    assert abs((tr**2).mean().item() - 1) < 4 * (tr**2).std().item() / k**0.5
    # With cond > 1 the left factor is still Haar, so each column's direction is uniform on
    # S^4: (1 + u_j) / 2 ~ Beta(2, 2) for a coordinate u_j of the unit column.
    ws = torch.stack([random_matrix(5, 4.0, generator=_gen(9000 + i)) for i in range(k)])
    col = ws[:, :, 0] / ws[:, :, 0].norm(dim=1, keepdim=True)
    assert stats.kstest((1 + col[:, 1].numpy()) / 2, stats.beta(2, 2).cdf).pvalue > 1e-3


# ---- negatives -------------------------------------------------------------------------------
def test_negatives_without_replacement_are_uniform_subsets():
    pool, m, n, anchor = 6, 2, 15_000, 2
    neg = negative_indices(torch.full((n,), anchor), pool, m, replacement=False,
                           generator=_gen(1))
    subsets = list(itertools.combinations([i for i in range(pool) if i != anchor], m))
    key = {s: i for i, s in enumerate(subsets)}
    counts = np.bincount([key[tuple(sorted(r))] for r in neg.tolist()], minlength=len(subsets))
    assert counts.sum() == n
    assert stats.chisquare(counts).pvalue > 1e-3


def test_negatives_with_replacement_are_independent_uniform_draws():
    pool, n, anchor = 5, 20_000, 4
    neg = negative_indices(torch.full((n,), anchor), pool, 2, generator=_gen(2)).numpy()
    # Ordered pairs over the 4 x 4 others (repeats included) are uniform.
    counts = np.bincount(neg[:, 0] * pool + neg[:, 1], minlength=pool * pool)
    counts = counts.reshape(pool, pool)[:anchor, :anchor].ravel()
    assert counts.sum() == n
    assert stats.chisquare(counts).pvalue > 1e-3


# ---- box laws --------------------------------------------------------------------------------
def _truncated_cdf(dist, low, high):
    return lambda v: (dist.cdf(v) - dist.cdf(low)) / (dist.cdf(high) - dist.cdf(low))


@pytest.mark.parametrize("name,low,high,ref", (
    ("laplace", 0.5, 2.0, stats.laplace(scale=0.7)),  # the origin is outside the box
    ("gennormal", -1.0, 1.0, stats.gennorm(3.0, scale=0.7)),  # two-sided
    ("normal", -0.3, 0.8, stats.norm(scale=0.5)),
))
def test_box_marginal_with_other_bounds_is_the_truncated_noise(name, low, high, ref):
    box = make_space("box", 2, low=low, high=high)
    assert isinstance(box, Box) and (box.low, box.high) == (low, high)
    z = sample_marginal(box, name, 20_000, 0.7 if name != "normal" else 0.5, 3.0,
                        generator=_gen(3), dtype=torch.float64)
    assert box.contains(z).all()
    cdf = _truncated_cdf(ref, low, high)
    for j in range(2):
        assert stats.kstest(z[:, j].numpy(), cdf).pvalue > 1e-3


def _pit(dist_of_anchor, x, a, low, high):
    """Probability integral transform of x under the noise law around anchor a, truncated."""
    d = dist_of_anchor(a)
    return (d.cdf(x) - d.cdf(low)) / (d.cdf(high) - d.cdf(low))


@pytest.mark.parametrize("name,scale,law", (
    ("normal", 0.2, lambda a: stats.norm(loc=a, scale=0.2)),
    ("laplace", 0.15, lambda a: stats.laplace(loc=a, scale=0.15)),
    ("gennormal", 0.3, lambda a: stats.gennorm(0.8, loc=a, scale=0.3)),
))
def test_box_conditional_is_truncated_around_every_anchor(name, scale, law):
    # Anchors spread over the box: F(z~ | z) of each coordinate must be U(0, 1).
    box = Box(3, 0.0, 1.0)
    z = box.uniform(8000, generator=_gen(4), dtype=torch.float64)
    zt = sample_conditional(box, z, name, scale=scale, p=0.8, generator=_gen(5))
    assert box.contains(zt).all()
    u = _pit(law, zt.numpy().ravel(), z.numpy().ravel(), 0.0, 1.0)
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_zimmermann_box_preset_pairs_follow_the_truncated_normal():
    dgp = DGP(PRESETS["zimmermann_box"], dtype=torch.float64)
    p = dgp.sample_pairs(5000, _gen(6))
    assert Box(10).contains(p.z).all() and Box(10).contains(p.z_pos).all()
    assert stats.kstest(p.z.numpy().ravel(), "uniform").pvalue > 1e-3
    u = _pit(lambda a: stats.norm(loc=a, scale=0.05), p.z_pos.numpy().ravel(),
             p.z.numpy().ravel(), 0.0, 1.0)
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert torch.allclose(dgp.mixing.inverse(p.x_pos), p.z_pos, atol=1e-10)


# ---- vMF on S^2 with per-row kappa -----------------------------------------------------------
def test_s2_sampler_with_per_row_kappa_matches_the_exact_cdf():
    """On S^2, w = mu^T x has density kappa e^{kappa w} / (2 sinh kappa) on [-1, 1]; kappa = 0
    is uniform. Per-row kappa (0, 2, 40) and per-row means in one call."""
    n = 30_000
    mu = torch.nn.functional.normalize(torch.randn(n, 3, generator=_gen(7),
                                                   dtype=torch.float64), dim=1)
    levels = torch.tensor([0.0, 2.0, 40.0], dtype=torch.float64)
    kappa = levels[torch.arange(n) % 3]
    x = sample_vmf(mu, kappa, generator=_gen(8))
    w = (x * mu).sum(1).numpy()
    for i, k in enumerate(levels.tolist()):
        wk = w[i::3]
        if k == 0:
            cdf = stats.uniform(-1, 2).cdf
        else:
            # F(t) = (e^{k(t+1)} - 1) / (e^{2k} - 1), written without overflow.
            cdf = lambda t, k=k: (np.exp(k * (t - 1)) * -np.expm1(-k * (t + 1))  # noqa: E731
                                  / -np.expm1(-2 * k))
        assert stats.kstest(wk, cdf).pvalue > 1e-3, k
        se = wk.std() / len(wk) ** 0.5
        assert abs(wk.mean() - float(mean_resultant_length(k, 3))) < 4 * se


def test_mean_resultant_length_mixed_array_against_mpmath():
    # One call whose entries take both the Bessel-ratio path and the recurrence (underflow).
    mpmath.mp.dps = 40
    for d in (3, 512):
        kappa = np.array([[0.05, 0.5], [7.0, 3e3]])
        got = mean_resultant_length(kappa, d)
        for k, g in zip(kappa.ravel(), got.ravel(), strict=True):
            exact = mpmath.besseli(d / 2, k) / mpmath.besseli(d / 2 - 1, k)
            assert g == pytest.approx(float(exact), rel=1e-10)


# ---- cluster kind and content/style ----------------------------------------------------------
def test_cluster_negatives_are_fresh_vmf_draws_around_their_own_clusters():
    cfg = DGPConfig(kind="cluster", dim=4, n_clusters=7, n_samples=50, kappa=20.0, seed=3)
    dgp = DGP(cfg, dtype=torch.float64)
    g = _gen(9)
    idx = dgp.sample_index(6000, g)
    # sample_index is uniform over the N instances.
    assert stats.chisquare(np.bincount(idx.numpy(), minlength=50)).pvalue > 1e-3
    neg = dgp.sample_negatives(m=2, index=idx, generator=g)
    v = dgp.clusters.cluster_vectors[dgp.cluster_of(neg.index.reshape(-1))]
    cos = (neg.z.reshape(-1, 4) * v).sum(1)
    se = cos.std().item() / len(cos) ** 0.5
    assert abs(cos.mean().item() - float(mean_resultant_length(20.0, 4))) < 4 * se
    assert torch.allclose(neg.x, dgp.mixing(neg.z))
    # Two draws of the same negative instance differ (fresh latents, not a fixed dataset).
    again = dgp.sample_latents(index=neg.index[:, 0], generator=g)
    assert not torch.equal(again, neg.z[:, 0])


def test_partial_style_change_under_statistical_dependence_has_the_marginal_variances():
    # change_prob < 1 with a drawn style covariance: a changed coordinate j moves by
    # N(0, sigma^2 Sigma_jj); the main tests cover each option alone.
    cs = ContentStyle(2, 3, change_prob=0.4, change_scale=0.5, statistical_dependence=True,
                      generator=_gen(10))
    z = cs.sample_marginal(30_000, generator=_gen(11), dtype=torch.float64)
    zp = cs.sample_positive(z, generator=_gen(12))
    assert torch.equal(zp[:, :2], z[:, :2])
    sd = 0.5 * (cs.change_chol @ cs.change_chol.T).diagonal().sqrt()
    delta = (zp - z)[:, 2:]
    changed = delta != 0
    rate = changed.double().mean().item()
    assert abs(rate - 0.4) < 4 * (0.24 / changed.numel()) ** 0.5
    for j in range(3):
        standard = (delta[changed[:, j], j] / sd[j]).numpy()
        assert stats.kstest(standard, "norm").pvalue > 1e-3


# ---- rendered-image latents ------------------------------------------------------------------
def _folded_normal_cdf(t, a, s, terms=4):
    """P(rho(a + e) <= t), e ~ N(0, s^2), rho the reflection at 0 and 1 (period 2): the
    preimages of [0, t] are [2k - t, 2k + t]."""
    ks = np.arange(-terms, terms + 1)[:, None]
    return (stats.norm.cdf((2 * ks + t - a) / s) - stats.norm.cdf((2 * ks - t - a) / s)).sum(0)


@pytest.mark.parametrize("anchor", (0.03, 0.97, 0.5))
def test_reflected_normal_step_has_the_folded_law(anchor):
    n, s = 8000, 0.1
    z = I.sample_latents(1, generator=_gen(13), dtype=torch.float64).repeat(n, 1)
    z[:, 0] = anchor
    zp = I.positive_latents(z, "x", conditional="normal", scale=s, generator=_gen(14))
    t = zp[:, 0].numpy()
    assert ((t >= 0) & (t <= 1)).all()
    assert stats.kstest(t, lambda v: _folded_normal_cdf(v, anchor, s)).pvalue > 1e-3


def test_uniform_latent_conditional_is_a_fresh_independent_draw():
    z = I.sample_latents(8000, generator=_gen(15), dtype=torch.float64)
    zp = I.positive_latents(z, ("x", "bg_hue"), conditional="uniform", generator=_gen(16))
    for j in (0, 5):
        assert stats.kstest(zp[:, j].numpy(), "uniform").pvalue > 1e-3
        assert stats.spearmanr(z[:, j].numpy(), zp[:, j].numpy()).pvalue > 1e-3
