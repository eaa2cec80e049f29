"""NT-Xent, InfoNCE, alignment and uniformity against naive float64 loops of the papers'
equations, plus known values, symmetries and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sithlib.losses import alignment, info_nce, nt_xent, uniformity

TOL = 1e-6


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def orthogonal(d, seed=0):
    q, _ = torch.linalg.qr(rand(d, d, seed=seed))
    return q


# ---------------------------------------------------------------- references (loops, float64)


def ref_nt_xent(za, zb, tau):
    za, zb = za.numpy(), zb.numpy()
    n = len(za)
    views = [v / np.linalg.norm(v) for v in list(za) + list(zb)]
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        num = math.exp(float(views[i] @ views[pos]) / tau)
        den = sum(math.exp(float(views[i] @ views[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(num / den)
    return total / (2 * n)


def phi(u, v, similarity, p):
    if similarity == "dot":
        return float(u @ v)
    return -float(sum(abs(x) ** p for x in u - v))


def ref_info_nce(za, zb, tau, similarity="dot", p=2.0, pool="positives", include=False, negs=None):
    za, zb = za.numpy(), zb.numpy()
    n = len(za)
    total = 0.0
    for i in range(n):
        pos = phi(za[i], zb[i], similarity, p) / tau
        if negs is not None:
            neg_set = list(negs.numpy())
        else:
            source = zb if pool == "positives" else za
            neg_set = [source[k] for k in range(n) if include or k != i]
        logits = [pos] + [phi(za[i], c, similarity, p) / tau for c in neg_set]
        top = max(logits)  # log-sum-exp: with -|a - b|^p / tau every exp can underflow to 0
        log_den = top + math.log(sum(math.exp(v - top) for v in logits))
        total += -(pos - log_den)
    return total / n


def ref_alignment(za, zb, alpha):
    pairs = zip(za.numpy(), zb.numpy(), strict=True)
    return float(np.mean([np.linalg.norm(a - b) ** alpha for a, b in pairs]))


def ref_uniformity(z, t):
    z = z.numpy()
    n = len(z)
    pots = [math.exp(-t * np.sum((z[i] - z[j]) ** 2)) for i in range(n) for j in range(i + 1, n)]
    return math.log(sum(pots) / len(pots))


# ---------------------------------------------------------------- NT-Xent


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    n=st.integers(2, 7),
    d=st.integers(1, 6),
    tau=st.sampled_from([0.05, 0.1, 0.5, 1.0]),
    seed=st.integers(0, 10_000),
)
def test_nt_xent_matches_loop(n, d, tau, seed):
    za, zb = rand(n, d, seed=seed), rand(n, d, seed=seed + 1)
    got = nt_xent(za, zb, temperature=tau)
    assert got.dtype == torch.float64
    assert abs(got.item() - ref_nt_xent(za, zb, tau)) < TOL


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_orthogonal_identical_views(tau):
    n = 4
    z = torch.eye(6, dtype=torch.float64)[:n] * 3.0  # orthogonal directions, any norm
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / tau))
    assert abs(nt_xent(z, z.clone(), temperature=tau).item() - expected) < 1e-12


def test_nt_xent_collapsed_is_log_2n_minus_1():
    z = torch.ones(5, 3, dtype=torch.float64)
    assert abs(nt_xent(z, z, temperature=0.1).item() - math.log(9)) < 1e-12


def test_nt_xent_symmetry_and_invariances():
    za, zb = rand(6, 4, seed=1), rand(6, 4, seed=2)
    base = nt_xent(za, zb).item()
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    q = orthogonal(4)
    scale = rand(6, 1, seed=3).abs() + 0.1
    assert abs(nt_xent(zb, za).item() - base) < 1e-12
    assert abs(nt_xent(za[perm], zb[perm]).item() - base) < 1e-12
    assert abs(nt_xent(za @ q, zb @ q).item() - base) < 1e-12
    assert abs(nt_xent(za * scale, zb).item() - base) < 1e-12


# ---------------------------------------------------------------- InfoNCE


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    n=st.integers(2, 6),
    d=st.integers(1, 5),
    tau=st.sampled_from([0.2, 1.0]),
    similarity=st.sampled_from(["dot", "lp"]),
    p=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    pool=st.sampled_from(["positives", "anchors"]),
    include=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_info_nce_matches_loop(n, d, tau, similarity, p, pool, include, seed):
    za, zb = rand(n, d, seed=seed), rand(n, d, seed=seed + 1)
    got = info_nce(
        za, zb, temperature=tau, similarity=similarity, p=p, negatives=pool, include_anchor=include
    )
    want = ref_info_nce(za, zb, tau, similarity, p, pool, include)
    assert abs(got.item() - want) < TOL


@pytest.mark.parametrize("similarity", ["dot", "lp"])
def test_info_nce_external_negatives_match_loop(similarity):
    za, zb, neg = rand(5, 3, seed=1), rand(5, 3, seed=2), rand(7, 3, seed=3)
    got = info_nce(za, zb, negatives=neg, similarity=similarity, temperature=0.5)
    assert abs(got.item() - ref_info_nce(za, zb, 0.5, similarity, negs=neg)) < TOL


def test_info_nce_default_is_cross_entropy_over_positives():
    za, zb = rand(8, 4, seed=4), rand(8, 4, seed=5)
    want = F.cross_entropy(za @ zb.T / 0.3, torch.arange(8))
    assert abs(info_nce(za, zb, temperature=0.3).item() - want.item()) < 1e-12
    assert abs(info_nce(za, zb, negatives="positives").item() - info_nce(za, zb).item()) < 1e-15


@pytest.mark.parametrize("similarity", ["dot", "lp"])
def test_info_nce_cl_ica_form(similarity):
    """cl-ica: logsumexp over the full B x B anchors-vs-rolled-anchors matrix plus the positive."""
    za, zb = F.normalize(rand(6, 3, seed=6), dim=1), F.normalize(rand(6, 3, seed=7), dim=1)
    z3 = torch.roll(za, 1, 0)
    if similarity == "dot":
        neg, pos = za @ z3.T, (za * zb).sum(1)
    else:
        neg, pos = -torch.cdist(za, z3).square(), -(za - zb).square().sum(1)
    want = (-pos + torch.logsumexp(torch.cat([neg, pos[:, None]], 1), 1)).mean()
    got = info_nce(za, zb, similarity=similarity, negatives="anchors", include_anchor=True)
    assert abs(got.item() - want.item()) < 1e-12


def test_info_nce_known_value_orthogonal():
    n, tau = 5, 0.5
    z = torch.eye(n, dtype=torch.float64)
    expected = math.log(1 + (n - 1) * math.exp(-1 / tau))
    assert abs(info_nce(z, z, temperature=tau).item() - expected) < 1e-12


def test_info_nce_invariances():
    za, zb, neg = rand(6, 3, seed=8), rand(6, 3, seed=9), rand(4, 3, seed=10)
    q, shift = orthogonal(3, seed=2), rand(1, 3, seed=11)
    base_dot = info_nce(za, zb, negatives=neg).item()
    assert abs(info_nce(za @ q, zb @ q, negatives=neg @ q).item() - base_dot) < 1e-12
    base_lp = info_nce(za, zb, similarity="lp", negatives=neg).item()
    moved = info_nce(za + shift, zb + shift, similarity="lp", negatives=neg + shift).item()
    assert abs(moved - base_lp) < 1e-12
    perm = torch.tensor([3, 1, 0, 5, 2, 4])
    assert abs(info_nce(za[perm], zb[perm]).item() - info_nce(za, zb).item()) < 1e-12


def test_info_nce_finite_gradient_at_zero_distance():
    za = rand(5, 3, seed=12).requires_grad_()
    for p in (0.5, 1.0, 2.0):
        loss = info_nce(za, za, similarity="lp", p=p, negatives="anchors", include_anchor=True)
        (g,) = torch.autograd.grad(loss, za)
        assert torch.isfinite(g).all()


def test_info_nce_bad_input():
    za, zb = rand(4, 3), rand(4, 3, seed=1)
    with pytest.raises(ValueError, match="similarity"):
        info_nce(za, zb, similarity="cosine")
    with pytest.raises(ValueError, match="negatives"):
        info_nce(za, zb, negatives="others")
    with pytest.raises(ValueError, match="negatives"):
        info_nce(za, zb, negatives=rand(4, 2))
    with pytest.raises(TypeError, match="negatives must be None, one of 'positives', 'anchors'"):
        info_nce(za, zb, negatives=5)
    with pytest.raises(ValueError, match="include_anchor"):
        info_nce(za, zb, negatives=rand(4, 3), include_anchor=True)
    with pytest.raises(ValueError, match="p must"):
        info_nce(za, zb, similarity="lp", p=0)
    with pytest.raises(ValueError, match="at least one negative"):
        info_nce(za[:1], zb[:1])


# ---------------------------------------------------------------- alignment and uniformity


@pytest.mark.parametrize("alpha", [0.5, 1, 2, 3])
def test_alignment_matches_loop(alpha):
    za, zb = rand(7, 4, seed=13), rand(7, 4, seed=14)
    assert abs(alignment(za, zb, alpha=alpha).item() - ref_alignment(za, zb, alpha)) < TOL


def test_alignment_identical_views_zero_with_finite_gradient():
    z = rand(4, 3, seed=15).requires_grad_()
    for alpha in (0.5, 2):
        loss = alignment(z, z, alpha=alpha)
        (g,) = torch.autograd.grad(loss, z)
        assert loss.item() == 0 and torch.isfinite(g).all()


@pytest.mark.parametrize("t", [0.5, 2, 5])
def test_uniformity_matches_loop(t):
    z = F.normalize(rand(8, 3, seed=16), dim=1)
    assert abs(uniformity(z, t=t).item() - ref_uniformity(z, t)) < TOL


def test_uniformity_known_values():
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert abs(uniformity(antipodal).item() - (-8.0)) < 1e-12
    assert uniformity(torch.ones(4, 2)).item() == 0.0
    # exp(-20000) underflows; the log-sum-exp form does not.
    far = torch.tensor([[0.0], [100.0]], dtype=torch.float64)
    assert abs(uniformity(far, t=2).item() + 20000.0) < 1e-9


def test_contrastive_bad_input():
    za = rand(4, 3)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(za, za, temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(za, za, temperature=-1.0)
    with pytest.raises(TypeError, match="temperature"):
        nt_xent(za, za, temperature="0.1")
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(za, rand(5, 3))
    with pytest.raises(ValueError, match="z_b"):
        nt_xent(za, rand(4))
    with pytest.raises(TypeError, match="z_a"):
        nt_xent(torch.ones(4, 3, dtype=torch.long), za)
    with pytest.raises(TypeError, match="z_a"):
        nt_xent(np.ones((4, 3)), za)
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent(za[:1], za[:1])
    with pytest.raises(ValueError, match="alpha"):
        alignment(za, za, alpha=0)
    with pytest.raises(ValueError, match="t must"):
        uniformity(za, t=0)
    with pytest.raises(TypeError, match="distributed"):
        nt_xent(za, za, distributed=1)


# ---------------------------------------------------------------- transforms (seed ensembles)

ENSEMBLE_CASES = {
    "nt_xent": lambda a, b: nt_xent(a, b, temperature=0.2),
    "info_nce": lambda a, b: info_nce(a, b, temperature=0.5),
    "info_nce_anchors": lambda a, b: info_nce(a, b, temperature=0.5, negatives="anchors"),
    "info_nce_lp": lambda a, b: info_nce(a, b, temperature=0.5, similarity="lp", p=1.5),
}


@pytest.mark.parametrize("name", list(ENSEMBLE_CASES))
def test_vmap_over_seeds_equals_separate_calls_with_gradients(name):
    # The engine's ensembles vmap the loss; the losses fill their excluded entries in place,
    # which must act on each seed's matrix alone.
    loss = ENSEMBLE_CASES[name]
    za, zb = (rand(3, 12, 4, seed=s).requires_grad_() for s in (1, 2))
    batched = torch.func.vmap(loss)(za, zb)
    grads = torch.autograd.grad(batched.sum(), (za, zb))
    for i in range(3):
        a, b = za[i].detach().requires_grad_(), zb[i].detach().requires_grad_()
        single = loss(a, b)
        torch.testing.assert_close(batched[i], single, rtol=0, atol=1e-12)
        for g, g_one in zip(grads, torch.autograd.grad(single, (a, b)), strict=True):
            torch.testing.assert_close(g[i], g_one, rtol=0, atol=1e-12)
