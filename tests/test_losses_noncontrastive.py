"""BYOL, SimSiam, Barlow Twins, VICReg and the stability objective against naive float64 loops
of the published equations (the official code's conventions), plus known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sithlib.experiments.stability_mechanism import pair_mean
from sithlib.losses import barlow_twins, byol, simsiam, stability, vicreg

TOL = 1e-6


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def whitened(n, d, seed=0, unbiased=True):
    """n x d with zero column means and covariance exactly I (unbiased or biased)."""
    x = rand(n, d, seed=seed)
    x = x - x.mean(0)
    q, _ = torch.linalg.qr(x)  # orthonormal columns, still orthogonal to the ones vector
    return q * math.sqrt(n - 1 if unbiased else n)


# ---------------------------------------------------------------- references (loops, float64)


def cos(u, v):
    return float(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))


def ref_byol(p, z):
    return float(np.mean([2 - 2 * cos(a, b) for a, b in zip(p.numpy(), z.numpy(), strict=True)]))


def ref_simsiam(p, z):
    return float(np.mean([-cos(a, b) for a, b in zip(p.numpy(), z.numpy(), strict=True)]))


def ref_barlow(za, zb, lambd, scale=1.0):
    za, zb = za.numpy(), zb.numpy()
    n, d = za.shape

    def bn(z):
        out = np.empty_like(z)
        for j in range(d):
            mean = sum(z[:, j]) / n
            var = sum((z[b, j] - mean) ** 2 for b in range(n)) / n
            out[:, j] = (z[:, j] - mean) / math.sqrt(var + 1e-5)
        return out

    a, b = bn(za), bn(zb)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lambd * c**2
    return scale * loss


def ref_vicreg(za, zb, sim=25.0, std=25.0, cov=1.0, gamma=1.0, eps=1e-4):
    """The official main_vicreg.py, which averages the two views' hinges (va / 2 + vb / 2); the
    paper's equation sums them. test_vicreg_halving_convention pins this choice."""
    za, zb = za.numpy(), zb.numpy()
    n, d = za.shape
    inv = sum((za[i, j] - zb[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def terms(z):
        mean = [sum(z[:, j]) / n for j in range(d)]
        c = [[0.0] * d for _ in range(d)]
        for i in range(d):
            for j in range(d):
                c[i][j] = sum((z[k, i] - mean[i]) * (z[k, j] - mean[j]) for k in range(n)) / (n - 1)
        hinge = sum(max(0.0, gamma - math.sqrt(c[j][j] + eps)) for j in range(d)) / d
        off = sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
        return hinge, off

    (va, ca), (vb, cb) = terms(za), terms(zb)
    return sim * inv + std * (va / 2 + vb / 2) + cov * (ca + cb)


def ref_stability(za, zb, lambd):
    ua = [v / np.linalg.norm(v) for v in za.numpy()]
    ub = [v / np.linalg.norm(v) for v in zb.numpy()]
    inv = -sum(float(a @ b) for a, b in zip(ua, ub, strict=True)) / len(ua)
    s = sum(ua + ub) / (2 * len(ua))
    return inv + lambd * float(s @ s)


# ---------------------------------------------------------------- BYOL and SimSiam


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 6), d=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_byol_and_simsiam_match_loop(n, d, seed):
    p, z = rand(n, d, seed=seed), rand(n, d, seed=seed + 1)
    assert abs(byol(p, z).item() - ref_byol(p, z)) < TOL
    assert abs(simsiam(p, z).item() - ref_simsiam(p, z)) < TOL


def test_byol_simsiam_known_values_and_stop_gradient():
    p = rand(5, 3, seed=2).requires_grad_()
    z = (p.detach() * 2.5).requires_grad_()  # same directions
    assert abs(byol(p, z).item()) < 1e-12
    assert abs(simsiam(p, z).item() + 1) < 1e-12
    assert abs(byol(p, -z).item() - 4) < 1e-12
    for loss_fn in (byol, simsiam):
        target = rand(5, 3, seed=4).requires_grad_()
        loss = loss_fn(p, target)
        loss.backward()
        assert target.grad is None and p.grad is not None
        p.grad = None


def test_byol_is_regression_on_normalised_vectors():
    p, z = rand(6, 4, seed=5), rand(6, 4, seed=6)
    pn, zn = p / p.norm(dim=1, keepdim=True), z / z.norm(dim=1, keepdim=True)
    assert abs(byol(p, z).item() - (pn - zn).square().sum(1).mean().item()) < 1e-12
    assert abs(byol(p, z).item() - (2 + 2 * simsiam(p, z).item())) < 1e-12


# ---------------------------------------------------------------- Barlow Twins


@pytest.mark.parametrize("lambd", [0.0051, 0.5])
def test_barlow_twins_matches_loop(lambd):
    za, zb = rand(7, 4, seed=7) * 2 + 1, rand(7, 4, seed=8)
    got = barlow_twins(za, zb, lambd=lambd, scale=0.5)
    assert abs(got.item() - ref_barlow(za, zb, lambd, 0.5)) < TOL


def test_barlow_twins_whitened_identical_views():
    z = whitened(16, 4, unbiased=False)  # BatchNorm standardises with the biased variance
    c_ii = 1 / (1 + 1e-5)
    assert abs(barlow_twins(z, z.clone()).item() - 4 * (1 - c_ii) ** 2) < 1e-15
    assert abs(barlow_twins(z, -z).item() - 4 * (1 + c_ii) ** 2) < 1e-12


def test_barlow_twins_symmetric_and_affine_invariant():
    za, zb = rand(9, 3, seed=9), rand(9, 3, seed=10)
    base = barlow_twins(za, zb).item()
    assert abs(barlow_twins(zb, za).item() - base) < 1e-12
    # Per-dimension affine maps change c only through the eps of the standardisation.
    moved = barlow_twins(za * torch.tensor([2.0, 0.5, 3.0]) + 7, zb - 1).item()
    assert abs(moved - base) < 1e-4


# ---------------------------------------------------------------- VICReg


@settings(max_examples=10, deadline=None)
@given(n=st.integers(2, 6), d=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_vicreg_matches_loop(n, d, seed):
    za, zb = rand(n, d, seed=seed) * 0.7, rand(n, d, seed=seed + 1) * 1.5
    assert abs(vicreg(za, zb).item() - ref_vicreg(za, zb)) < TOL
    got = vicreg(za, zb, sim_coeff=1.0, std_coeff=2.0, cov_coeff=3.0, gamma=0.5, eps=1e-2)
    assert abs(got.item() - ref_vicreg(za, zb, 1.0, 2.0, 3.0, 0.5, 1e-2)) < TOL


def test_vicreg_known_values():
    z = whitened(12, 5)
    assert abs(vicreg(z, z.clone()).item()) < 1e-12
    collapsed = torch.ones(8, 5, dtype=torch.float64)
    # std = sqrt(eps) = 0.01 in every dimension; the variance term is (0.99 + 0.99) / 2.
    assert abs(vicreg(collapsed, collapsed).item() - 25 * 0.99) < 1e-12
    # eps inside the square root keeps the gradient finite at and near complete collapse (the
    # std's derivative is 1 / (2 sqrt(var + eps)), not 1 / 0), in float32 too; near collapse
    # the variance hinge pushes the samples apart.
    for dtype in (torch.float64, torch.float32):
        base = torch.ones(8, 5, dtype=dtype)
        for z in (base, base + 1e-6 * rand(8, 5, seed=3).to(dtype)):
            z = z.clone().requires_grad_(True)
            vicreg(z, z.detach().clone()).backward()
            assert torch.isfinite(z.grad).all()
        spread = (z - z.grad).var(0).sum() > z.var(0).sum()  # a gradient step widens the batch
        assert spread


def test_vicreg_halving_convention():
    """Official code: the variance term is the MEAN of the two views' hinges, the covariance term
    the SUM of the two views' penalties (the paper sums both). Absolute values, because the term
    of each view is linear, so relations between vicreg(a, b), vicreg(a, a) and vicreg(b, b)
    alone hold under any convention."""
    za, zb = rand(6, 3, seed=11) * 0.3, rand(6, 3, seed=12) * 0.2
    d = za.shape[1]

    def hinge(z):  # mean over dimensions of relu(1 - std), unbiased variance, eps 1e-4
        std = np.sqrt(np.var(z.numpy(), axis=0, ddof=1) + 1e-4)
        return float(np.maximum(0.0, 1.0 - std).mean())

    def off_diag_sq(z):
        c = np.cov(z.numpy(), rowvar=False)
        return float((c**2).sum() - (np.diag(c) ** 2).sum())

    assert hinge(za) > 0.1 and off_diag_sq(za) > 1e-4  # both terms active in this batch
    var_only = dict(sim_coeff=0, std_coeff=1, cov_coeff=0)
    cov_only = dict(sim_coeff=0, std_coeff=0, cov_coeff=1)
    # One batch for both views: the hinge once (the paper's form would give twice it), the
    # off-diagonal penalty twice.
    assert abs(vicreg(za, za, **var_only).item() - hinge(za)) < 1e-12
    assert abs(vicreg(za, za, **cov_only).item() - 2 * off_diag_sq(za) / d) < 1e-12
    assert abs(vicreg(za, zb, **var_only).item() - (hinge(za) + hinge(zb)) / 2) < 1e-12
    assert abs(vicreg(za, zb, **cov_only).item() - (off_diag_sq(za) + off_diag_sq(zb)) / d) < 1e-12
    assert abs(vicreg(za, zb).item() - vicreg(zb, za).item()) < 1e-12
    shift = rand(1, 3, seed=13)
    assert abs(vicreg(za + shift, zb + shift).item() - vicreg(za, zb).item()) < 1e-12


# ---------------------------------------------------------------- stability objective


@pytest.mark.parametrize("lambd", [0.0, 1.0, 3.0])
def test_stability_matches_loop(lambd):
    za, zb = rand(6, 4, seed=14), rand(6, 4, seed=15)
    assert abs(stability(za, zb, lambd=lambd).item() - ref_stability(za, zb, lambd)) < TOL


def test_stability_known_values():
    e = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    collapsed = e.repeat(4, 1) * torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    assert abs(stability(collapsed, collapsed).item()) < 1e-12  # -1 + ||s||^2 = 0
    balanced = torch.cat([e, -e, e, -e])
    assert abs(stability(balanced, balanced).item() + 1) < 1e-12  # center vector 0


def test_stability_identity_center_norm_is_mean_pairwise_similarity():
    """||s||^2 is the mean inner product over all N^2 ordered pairs of the N = 2n normalised
    embeddings, self-pairs i = j included. The linearised contrastive objective averages over
    distinct pairs only, (N ||s||^2 - 1) / (N - 1), so lambda = 1 matches it up to the factor
    N / (N - 1) and a constant: the same minimisers, a gradient N / (N - 1) times larger."""
    za, zb = rand(5, 3, seed=16), rand(5, 3, seed=17)
    u = torch.cat([za, zb])
    u = u / u.norm(dim=1, keepdim=True)
    n_all = u.shape[0]
    rows = u.numpy()
    ordered = [float(a @ b) for a in rows for b in rows]
    distinct = [float(rows[i] @ rows[j]) for i in range(n_all) for j in range(n_all) if i != j]
    penalty = stability(za, zb, lambd=1).item() - stability(za, zb, lambd=0).item()
    assert abs(penalty - np.mean(ordered)) < 1e-12
    assert abs(np.mean(distinct) - (n_all * penalty - 1) / (n_all - 1)) < 1e-12
    # The experiment's pair_mean is the same distinct-pair mean.
    assert abs(pair_mean(u) - np.mean(distinct)) < 1e-12
    # Gradients: d(distinct mean) = N / (N - 1) * d(penalty).
    za_g = za.clone().requires_grad_(True)
    (g_pen,) = torch.autograd.grad(stability(za_g, zb, lambd=1) - stability(za_g, zb, lambd=0),
                                   za_g)
    u_g = torch.cat([za_g, zb])
    u_g = u_g / u_g.norm(dim=1, keepdim=True)
    gram = u_g @ u_g.T
    (g_pair,) = torch.autograd.grad((gram.sum() - gram.diagonal().sum()) / (n_all * (n_all - 1)),
                                    za_g)
    torch.testing.assert_close(g_pair, n_all / (n_all - 1) * g_pen, rtol=1e-10, atol=1e-12)


def test_noncontrastive_bad_input():
    za = rand(4, 3)
    with pytest.raises(ValueError, match="lambd"):
        barlow_twins(za, za, lambd=-1)
    with pytest.raises(ValueError, match="scale"):
        barlow_twins(za, za, scale=0)
    with pytest.raises(ValueError, match="at least 2"):
        barlow_twins(za[:1], za[:1])
    with pytest.raises(ValueError, match="eps"):
        vicreg(za, za, eps=0)
    with pytest.raises(ValueError, match="gamma"):
        vicreg(za, za, gamma=-1)
    for coeff in ("sim_coeff", "std_coeff", "cov_coeff"):
        with pytest.raises(ValueError, match=f"{coeff} must be a finite number >= 0"):
            vicreg(za, za, **{coeff: -1.0})
    with pytest.raises(TypeError, match="lambd must be a real number >= 0"):
        barlow_twins(za, za, lambd="0.1")
    with pytest.raises(ValueError, match="same shape"):
        vicreg(za, rand(4, 2))
    with pytest.raises(ValueError, match="same shape"):
        byol(za, rand(3, 3))
    with pytest.raises(TypeError, match="z_target"):
        simsiam(za, torch.zeros(4, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match="p must"):
        byol([[1.0]], za)
    with pytest.raises(ValueError, match="lambd"):
        stability(za, za, lambd=float("nan"))
