"""sithlib.dgp spaces, marginals, conditionals, content/style, clusters and negatives, against
scipy distributions, closed forms and properties."""

import numpy as np
import pytest
import torch
from scipy import stats

from sithlib.dgp import (
    Box,
    ClusterInstance,
    ContentStyle,
    Euclidean,
    Sphere,
    logit_scale,
    make_space,
    mean_resultant_length,
    negative_indices,
    sample_conditional,
    sample_marginal,
    sample_noise,
)
from sithlib.dgp._random import random_wishart


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- spaces and noise ----------------------------------------------------------------------
def test_spaces():
    s, b, e = Sphere(4), Box(3, -1.0, 1.0), Euclidean(2)
    z = s.uniform(5000, generator=_gen(), dtype=torch.float64)
    assert s.contains(z, atol=1e-12).all() and z.shape == (5000, 4)
    # Uniform on S^3: each coordinate has mean 0 and variance 1/4.
    assert z.mean(0).abs().max() < 4 * (0.25 / 5000) ** 0.5
    assert torch.allclose(z.var(0), torch.full((4,), 0.25, dtype=torch.float64), atol=0.02)
    # Moments miss a wrong shape; the exact law of a coordinate does not: uniform on S^{d-1}
    # gives (1 + z_j) / 2 ~ Beta((d - 1) / 2, (d - 1) / 2).
    zk = s.uniform(20_000, generator=_gen(41), dtype=torch.float64).numpy()
    for j in range(4):
        assert stats.kstest((1 + zk[:, j]) / 2, stats.beta(1.5, 1.5).cdf).pvalue > 0.01
    u = b.uniform(20_000, generator=_gen(1))
    assert b.contains(u).all()
    assert stats.kstest(u[:, 0].numpy(), stats.uniform(-1, 2).cdf).pvalue > 0.01
    clamped = b.project(torch.tensor([[2.0, -3.0, 0.5]]))
    assert torch.equal(clamped, torch.tensor([[1.0, -1.0, 0.5]]))
    x = z[:, :2]
    assert e.project(x) is x  # R^d needs no projection
    bad = torch.tensor([[1.0, 2.0], [1.0, float("nan")], [float("-inf"), 0.0]])
    assert e.contains(bad).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="no uniform"):
        e.uniform(3)
    with pytest.raises(ValueError, match="dim"):
        Sphere(1)
    with pytest.raises(ValueError, match="low < high"):
        Box(2, 1.0, 0.0)
    with pytest.raises(ValueError, match="space must be one of"):
        make_space("torus", 3)


@pytest.mark.parametrize("name,ref", (
    ("normal", stats.norm(scale=0.7)),
    ("laplace", stats.laplace(scale=0.7)),
    ("gennormal", stats.gennorm(3.0, scale=0.7)),
    ("gennormal_p05", stats.gennorm(0.5, scale=0.7)),
))
def test_noise_against_scipy(name, ref):
    p = 0.5 if name.endswith("p05") else 3.0
    x = sample_noise(name.split("_")[0], (20_000,), 0.7, p, generator=_gen(2), dtype=torch.float64)
    assert stats.kstest(x.numpy(), ref.cdf).pvalue > 0.01


def test_noise_bad_inputs():
    with pytest.raises(ValueError, match="noise must be one of"):
        sample_noise("cauchy", (3,))
    with pytest.raises(ValueError, match="scale"):
        sample_noise("normal", (3,), scale=0.0)
    with pytest.raises(ValueError, match="p must"):
        sample_noise("gennormal", (3,), p=-1.0)


# ---- marginals and conditionals -------------------------------------------------------------
def test_box_truncation_is_the_truncated_density():
    box = Box(2, 0.0, 1.0)
    z = sample_marginal(box, "normal", 20_000, 0.5, generator=_gen(3), dtype=torch.float64)
    assert box.contains(z).all()
    # Centred at the origin (a corner), truncated to [0, 1]: a half-normal cut at 1.
    ref = stats.truncnorm(0.0, 2.0, loc=0.0, scale=0.5)
    assert stats.kstest(z[:, 1].numpy(), ref.cdf).pvalue > 0.01
    anchor = torch.full((20_000, 2), 0.9, dtype=torch.float64)
    zt = sample_conditional(box, anchor, "laplace", scale=0.3, generator=_gen(4))
    # Laplace around 0.9 truncated to [0, 1], checked against its closed-form CDF.
    lap = stats.laplace(loc=0.9, scale=0.3)
    cdf = lambda v: (lap.cdf(v) - lap.cdf(0.0)) / (lap.cdf(1.0) - lap.cdf(0.0))  # noqa: E731
    assert box.contains(zt).all()
    assert stats.kstest(zt[:, 0].numpy(), cdf).pvalue > 0.01


def _scipy_noise(name, scale, p):
    return {"normal": stats.norm(scale=scale), "laplace": stats.laplace(scale=scale),
            "gennormal": stats.gennorm(p, scale=scale)}[name]


# (family, marginal scale, conditional scale, gennormal exponent)
_SPHERE_NOISES = (("normal", 0.5, 0.1, 2.0), ("laplace", 1.0, 0.2, 2.0),
                  ("gennormal", 0.7, 0.2, 3.0), ("gennormal", 0.7, 0.2, 0.5))


@pytest.mark.parametrize("name,scale,cond_scale,p", _SPHERE_NOISES)
def test_sphere_noise_marginal_and_conditional_match_scipy(name, scale, cond_scale, p):
    # The reference is the definition written with scipy's samplers: e_1 (or the anchor) plus
    # coordinate-wise noise, then radial projection. A wrong scale convention moves the whole
    # law of z_1 and of the cosine, which thresholds on their means do not see.
    n, d, rng = 20_000, 5, np.random.default_rng(5)
    s = Sphere(d)
    z = sample_marginal(s, name, n, scale, p, generator=_gen(5), dtype=torch.float64)
    assert s.contains(z, atol=1e-12).all()
    ref = np.eye(d)[0] + _scipy_noise(name, scale, p).rvs((n, d), random_state=rng)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    for j in (0, 1):
        assert stats.ks_2samp(z[:, j].numpy(), ref[:, j]).pvalue > 0.01
    zt = sample_conditional(s, z, name, scale=cond_scale, p=p, generator=_gen(6))
    assert s.contains(zt, atol=1e-12).all()
    ref_t = z.numpy() + _scipy_noise(name, cond_scale, p).rvs((n, d), random_state=rng)
    ref_t /= np.linalg.norm(ref_t, axis=1, keepdims=True)
    cos, ref_cos = (zt * z).sum(1).numpy(), (ref_t * z.numpy()).sum(1)
    assert stats.ks_2samp(cos, ref_cos).pvalue > 0.01


@pytest.mark.parametrize("name,p", (("normal", 2.0), ("laplace", 2.0), ("gennormal", 3.0),
                                    ("gennormal", 0.5)))
def test_euclidean_marginal_is_the_noise_around_the_origin(name, p):
    z = sample_marginal(Euclidean(3), name, 8000, 0.7, p, generator=_gen(40),
                        dtype=torch.float64)
    assert z.shape == (8000, 3)
    # Coordinates are i.i.d., so all 24 000 entries are one sample of the noise law.
    assert stats.kstest(z.ravel().numpy(), _scipy_noise(name, 0.7, p).cdf).pvalue > 0.01


def test_vmf_conditional_and_euclidean_noise():
    s = Sphere(8)
    z = s.uniform(20_000, generator=_gen(7), dtype=torch.float64)
    zt = sample_conditional(s, z, "vmf", kappa=20.0, generator=_gen(8))
    cos = (zt * z).sum(1)
    a = mean_resultant_length(20.0, 8)
    assert abs(cos.mean().item() - a) < 4 * (cos.var().item() / 20_000) ** 0.5
    e = Euclidean(3)
    x = torch.zeros(20_000, 3, dtype=torch.float64)
    d = sample_conditional(e, x, "normal", scale=2.0, generator=_gen(9))
    assert stats.kstest(d[:, 2].numpy(), stats.norm(scale=2.0).cdf).pvalue > 0.01
    with pytest.raises(ValueError, match="needs the sphere"):
        sample_conditional(e, x, "vmf")
    with pytest.raises(ValueError, match="conditional must be one of"):
        sample_conditional(e, x, "uniform")
    with pytest.raises(ValueError, match="shape"):
        sample_conditional(e, torch.zeros(3, 4), "normal")
    with pytest.raises(ValueError, match="uniform|n must"):
        sample_marginal(e, "uniform", 3)
    with pytest.raises(ValueError, match="marginal must be one of"):
        sample_marginal(s, "cauchy", 3)


# ---- content / style --------------------------------------------------------------------------
def test_content_style_positive_pairs():
    cs = ContentStyle(3, 4, change_prob=0.75, change_scale=0.5, generator=_gen(10))
    z = cs.sample_marginal(40_000, generator=_gen(11), dtype=torch.float64)
    zp = cs.sample_positive(z, generator=_gen(12))
    assert torch.equal(zp[:, :3], z[:, :3])  # content is shared exactly
    changed = (zp[:, 3:] != z[:, 3:]).double()
    assert abs(changed.mean().item() - 0.75) < 4 * (0.75 * 0.25 / changed.numel()) ** 0.5
    delta = (zp[:, 3:] - z[:, 3:])[changed.bool()]
    assert stats.kstest(delta.numpy(), stats.norm(scale=0.5).cdf).pvalue > 0.01
    # Independent N(0, 1) marginal.
    assert torch.allclose(torch.cov(z.T), torch.eye(7, dtype=torch.float64), atol=0.03)


def test_content_style_dependence_is_drawn_once_and_realized():
    kw = dict(statistical_dependence=True, causal_dependence=True)
    a = ContentStyle(2, 3, generator=_gen(13), **kw)
    b = ContentStyle(2, 3, generator=_gen(13), **kw)
    assert all(torch.equal(a.tensors()[k], b.tensors()[k]) for k in a.tensors())
    assert set(a.tensors()) == {"marginal_chol", "change_chol", "B", "a"}
    n = 100_000
    z = a.sample_marginal(n, generator=_gen(14), dtype=torch.float64)
    # Closed form: z0 ~ N(0, S) with S = L L^T; s = s0 + B c + a, i.e. z = M z0 + (0, a).
    m = torch.eye(5, dtype=torch.float64)
    m[2:, :2] = a.B
    cov = m @ a.marginal_chol @ a.marginal_chol.T @ m.T
    assert torch.allclose(z.mean(0)[2:], a.a, atol=0.05)
    assert torch.allclose(torch.cov(z.T), cov, atol=0.05 * cov.abs().max().item())
    # Content and style are correlated under statistical dependence alone.
    st = ContentStyle(2, 3, statistical_dependence=True, generator=_gen(15))
    zs = st.sample_marginal(n, generator=_gen(16), dtype=torch.float64)
    assert torch.corrcoef(zs.T)[:2, 2:].abs().max() > 0.05
    with pytest.raises(ValueError, match="change_prob"):
        ContentStyle(2, 3, change_prob=1.5)
    with pytest.raises(ValueError, match="n_style"):
        ContentStyle(2, 0)
    with pytest.raises(ValueError, match="marginal_scale must be finite and > 0"):
        ContentStyle(2, 3, marginal_scale=0)


def test_content_style_change_noise_has_the_drawn_style_covariance():
    # Under statistical dependence a style change is N(0, sigma^2 Sigma_s) with Sigma_s drawn
    # once: with every coordinate changing, the deltas' covariance is 0.25 L L^T.
    cs = ContentStyle(3, 4, change_prob=1.0, change_scale=0.5, statistical_dependence=True,
                      generator=_gen(42))
    n = 100_000
    z = cs.sample_marginal(n, generator=_gen(43), dtype=torch.float64)
    zp = cs.sample_positive(z, generator=_gen(44))
    assert torch.equal(zp[:, :3], z[:, :3])
    delta = (zp - z)[:, 3:]
    ref = 0.25 * cs.change_chol @ cs.change_chol.T
    # Standard error of a Gaussian sample covariance: sqrt((S_ii S_jj + S_ij^2) / n).
    se = ((torch.outer(ref.diag(), ref.diag()) + ref**2) / n).sqrt()
    assert ((torch.cov(delta.T) - ref).abs() < 4 * se).all()
    assert delta.mean(0).abs().max() < 4 * (ref.diag().max() / n) ** 0.5
    with pytest.raises(ValueError, match=r"z must have shape \(n, 7\)"):
        cs.sample_positive(z[:, :6])


@pytest.mark.parametrize("n,df", ((3, None), (3, 7)))
def test_random_wishart_is_normalized_by_its_degrees_of_freedom(n, df):
    g, k = _gen(45), 20_000
    w = torch.stack([random_wishart(n, df, generator=g) for _ in range(k)])
    df = n if df is None else df
    assert w.shape == (k, n, n) and w.dtype == torch.float64
    assert torch.equal(w, w.transpose(1, 2))
    # Also exactly symmetric at sizes whose BLAS kernels round (i, j) and (j, i) differently.
    for size in (5, 10, 64):
        big = random_wishart(size, generator=g)
        assert torch.equal(big, big.mT)
    # W / df with W ~ Wishart(df, I): mean I, Var = 2 / df on the diagonal and 1 / df off it.
    se = torch.where(torch.eye(n, dtype=torch.bool), 2.0, 1.0).div(df * k).sqrt()
    assert ((w.mean(0) - torch.eye(n, dtype=torch.float64)).abs() < 4 * se).all()
    ref = stats.chi2(df, scale=1 / df)  # a diagonal entry is a sum of df squared normals / df
    assert stats.kstest(w[:, 1, 1].numpy(), ref.cdf).pvalue > 0.01
    assert torch.linalg.eigvalsh(w).min() > 0
    with pytest.raises(ValueError, match="df must be >= n"):
        random_wishart(n, df=n - 1)


# ---- clusters -------------------------------------------------------------------------------
def test_cluster_instances():
    v = Sphere(4).uniform(10, generator=_gen(17), dtype=torch.float64)
    ci = ClusterInstance(v, 1000, kappa=30.0)
    idx = torch.randint(0, 1000, (20_000,), generator=_gen(18))
    assert torch.equal(ci.cluster_of(idx), idx % 10)
    z = ci.sample(idx, generator=_gen(19), dtype=torch.float64)
    cos = (z * v[idx % 10]).sum(1)
    se = (cos.var().item() / 20_000) ** 0.5
    assert abs(cos.mean().item() - mean_resultant_length(30.0, 4)) < 4 * se
    z2 = ci.sample(idx, generator=_gen(20), dtype=torch.float64)
    assert not torch.equal(z, z2)  # a fresh draw per access
    with pytest.raises(ValueError, match="index"):
        ci.sample(torch.tensor([1000]))
    with pytest.raises(ValueError, match="unit"):
        ClusterInstance(2 * v, 10)
    with pytest.raises(ValueError, match="n_instances must be an integer >= 1"):
        ClusterInstance(v, 0)
    with pytest.raises(ValueError, match=r"cluster_vectors must have shape \(n_clusters, d\)"):
        ClusterInstance(v[0], 10)
    with pytest.raises(ValueError, match="index must be a 1-D integer tensor"):
        ci.sample(torch.tensor([1.0]))


@pytest.mark.parametrize("kappa", (5.0, 10.0, 50.0))
def test_logit_scale_recovers_the_vmf_concentration(kappa):
    # The vMF cluster posterior is exactly softmax(kappa <v_c, z>): the MLE is kappa.
    v = Sphere(5).uniform(100, generator=_gen(30), dtype=torch.float64)
    fitted = ClusterInstance(v, 1000, kappa=kappa).logit_scale(65_536, generator=_gen(31))
    assert fitted == pytest.approx(kappa, rel=0.03)


def test_logit_scale_is_the_maximum_likelihood_of_a_naive_reference():
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    v = Sphere(3).uniform(7, generator=_gen(32), dtype=torch.float64)
    ci = ClusterInstance(v, 40, conditional="laplace", scale=0.5)  # 40 % 7: unequal clusters
    idx = torch.randint(0, 40, (4000,), generator=_gen(33))
    z, c = ci.sample(idx, generator=_gen(34), dtype=torch.float64), ci.cluster_of(idx)
    log_prior = torch.bincount(torch.arange(40) % 7).double().log()
    zn, vn, cn, pn = z.numpy(), v.numpy(), c.numpy(), log_prior.numpy()

    def nll(k):  # the paper's posterior, one sample at a time
        return np.mean([logsumexp(k * vn @ zi + pn) - k * vn[ci_] @ zi - pn[ci_]
                        for zi, ci_ in zip(zn, cn, strict=True)])

    ref = minimize_scalar(nll, bounds=(0.0, 100.0), method="bounded",
                          options={"xatol": 1e-9}).x
    ours = logit_scale(z, c, v, log_prior=log_prior, chunk=1000)
    assert ours == pytest.approx(ref, rel=1e-5)
    assert 0 < ours < 100


def test_instance_logit_scale_uses_the_unequal_cluster_sizes_as_prior():
    v = Sphere(3).uniform(7, generator=_gen(36), dtype=torch.float64)
    ci = ClusterInstance(v, 40, conditional="laplace", scale=0.5)  # clusters of 6 and of 5
    ours = ci.logit_scale(3000, generator=_gen(37))
    g = _gen(37)  # the same draws, by hand
    idx = torch.randint(40, (3000,), generator=g)
    z = ci.sample(idx, generator=g, dtype=torch.float64)
    sizes = np.bincount(np.arange(40) % 7)
    assert sorted(set(sizes)) == [5, 6]
    prior = torch.from_numpy(np.log(sizes))
    assert ours == pytest.approx(logit_scale(z, idx % 7, v, log_prior=prior), rel=1e-12)
    assert ours != pytest.approx(logit_scale(z, idx % 7, v), rel=1e-6)  # the prior matters


def test_logit_scale_edge_cases_and_bad_inputs():
    z = Sphere(3).uniform(50, generator=_gen(35), dtype=torch.float64)
    same = torch.tensor([[1.0, 0.0, 0.0]] * 4, dtype=torch.float64)
    # Clusters that share one vector: z says nothing about the cluster.
    assert logit_scale(z, torch.arange(50) % 4, same) == 0.0
    two = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="separable"):
        logit_scale(two.repeat(5, 1), torch.arange(10) % 2, two)
    with pytest.raises(ValueError, match="share d"):
        logit_scale(z, torch.zeros(50, dtype=torch.long), same[:, :2])
    with pytest.raises(ValueError, match="cluster must be an integer"):
        logit_scale(z, torch.zeros(50), same)
    with pytest.raises(ValueError, match="n must be an integer"):
        ClusterInstance(same[:1], 10).logit_scale(1)


# ---- negatives ------------------------------------------------------------------------------
@pytest.mark.parametrize("replacement", (True, False))
def test_negative_indices_exclude_the_anchor_and_are_uniform(replacement):
    pool, m = 7, 6 if not replacement else 40
    anchor = torch.arange(pool).repeat(2000)
    neg = negative_indices(anchor, pool, m, replacement=replacement, generator=_gen(21))
    assert neg.shape == (anchor.numel(), m) and neg.dtype == torch.int64
    assert not (neg == anchor.unsqueeze(1)).any()
    assert ((neg >= 0) & (neg < pool)).all()
    if not replacement:
        assert (neg.sort(1).values.diff(dim=1) > 0).all()  # distinct within a row
    # Uniform over the other pool - 1 indices: chi-square test for anchor 0.
    counts = np.bincount(neg[anchor == 0].ravel().numpy(), minlength=pool)[1:]
    assert stats.chisquare(counts).pvalue > 0.001


def test_negative_indices_bad_inputs():
    a = torch.arange(3)
    with pytest.raises(ValueError, match="pool_size"):
        negative_indices(a, 1)
    with pytest.raises(ValueError, match="anchor entries"):
        negative_indices(a, 2)
    with pytest.raises(ValueError, match="without replacement"):
        negative_indices(a, 3, 3, replacement=False)
    with pytest.raises(ValueError, match="m must"):
        negative_indices(a, 3, 0)
    with pytest.raises(ValueError, match="1-D integer"):
        negative_indices(a.float(), 3)
