"""sithlib.dgp.mixing: conditioning by construction, exact inverse, Jacobian against autograd,
nonlinearity (held-out linear R2), serialization with hash checks, bad inputs."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression

from sithlib.dgp import (
    IdentityMixing,
    InvertibleMLP,
    LinearMixing,
    Sphere,
    jacobian_condition_number,
    make_mixing,
    mixing_from_state_dict,
    pool_condition,
    random_matrix,
)
from sithlib.dgp._hashing import config_hash
from sithlib.dgp._random import random_orthogonal


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dim", (1, 2, 10, 40))
@pytest.mark.parametrize("cond", (1.0, 4.0, 100.0))
def test_random_matrix_has_the_target_condition_number(dim, cond):
    if dim == 1 and cond != 1.0:
        with pytest.raises(ValueError, match="condition number 1"):
            random_matrix(dim, cond, generator=_gen())
        return
    w = random_matrix(dim, cond, generator=_gen(dim))
    s = torch.linalg.svdvals(w)
    assert (s[0] / s[-1]).item() == pytest.approx(cond, rel=1e-10)
    assert (w**2).sum().item() == pytest.approx(dim, rel=1e-12)  # mean squared column norm 1
    if cond == 1.0:
        assert torch.allclose(w.T @ w, torch.eye(dim, dtype=torch.float64), atol=1e-12)


def test_random_orthogonal_is_orthogonal_and_haar_like():
    qs = torch.stack([random_orthogonal(3, generator=_gen(i)) for i in range(2000)])
    eye = torch.eye(3, dtype=torch.float64).expand(2000, 3, 3)
    assert torch.allclose(qs.transpose(1, 2) @ qs, eye, atol=1e-12)
    # Under Haar measure every entry has mean 0 and variance 1/3.
    assert qs.mean(0).abs().max() < 4 * (1 / 3 / 2000) ** 0.5
    assert torch.allclose(qs.var(0), torch.full((3, 3), 1 / 3, dtype=torch.float64), atol=0.04)


@pytest.mark.parametrize("n_layers,cond", ((1, 2.0), (3, 4.0), (4, 10.0)))
def test_mlp_layer_conditions_meet_the_target(n_layers, cond):
    g = InvertibleMLP.random(10, n_layers, cond, generator=_gen(n_layers))
    measured = g.layer_condition_numbers()
    assert measured.shape == (n_layers,)
    assert torch.allclose(measured, torch.full_like(measured, cond), rtol=1e-10)


def _sphere_z(n, dim=10, dtype=torch.float32, seed=5):
    return Sphere(dim).uniform(n, generator=_gen(seed), dtype=dtype)


def test_mlp_inverse_recovers_z():
    g = InvertibleMLP.random(10, generator=_gen(1))  # the default: 3 layers, cond 4, slope 0.2
    z32 = _sphere_z(20_000)
    # Each of the 3 layers (condition 4) amplifies float32 rounding by at most 4 on the way back.
    assert (g.inverse(g(z32)) - z32).abs().max().item() < 4**3 * 4 * torch.finfo().eps
    z64 = z32.double()
    assert (g.inverse(g(z64)) - z64).abs().max().item() < 1e-10
    assert g(z32).dtype == torch.float32 and g(z64).dtype == torch.float64


def test_mlp_forward_matches_a_naive_loop():
    g = InvertibleMLP.random(4, 3, 3.0, 0.3, generator=_gen(2))
    z = torch.randn(50, 4, dtype=torch.float64, generator=_gen(3))
    for row in range(50):
        h = z[row].tolist()
        for i, w in enumerate(g.weights):
            h = [sum(w[r, c].item() * h[c] for c in range(4)) for r in range(4)]
            if i < 2:
                h = [v if v > 0 else 0.3 * v for v in h]
        assert torch.allclose(g(z[row : row + 1])[0], torch.tensor(h, dtype=torch.float64),
                              atol=1e-12)


def test_jacobian_matches_autograd_and_its_condition_number():
    g = InvertibleMLP.random(6, 3, 5.0, generator=_gen(4))
    z = torch.randn(20, 6, dtype=torch.float64, generator=_gen(5))

    def naive(v):  # torch's leaky_relu backward rounds the slope to float32, so spell it out
        for i, w in enumerate(g.weights):
            v = w @ v
            v = torch.where(v > 0, v, 0.2 * v) if i < 2 else v
        return v

    ref = torch.stack([torch.autograd.functional.jacobian(naive, zi) for zi in z])
    assert torch.allclose(g.jacobian(z), ref, rtol=0, atol=1e-13)
    s = torch.linalg.svdvals(ref)
    assert torch.allclose(jacobian_condition_number(g, z), s[:, 0] / s[:, -1], rtol=1e-8)
    # Each layer scales by at most cond and each leaky ReLU by at most 1 / slope.
    assert (jacobian_condition_number(g, z) <= 5.0**3 * 5.0**2 * (1 + 1e-9)).all()


def test_linear_and_identity_mixings():
    lin = LinearMixing.random(5, 3.0, generator=_gen(6))
    z = torch.randn(100, 5, dtype=torch.float64, generator=_gen(7))
    assert torch.allclose(lin(z), z @ lin.weights[0].T)
    assert torch.allclose(lin.inverse(lin(z)), z, atol=1e-12)
    assert torch.allclose(jacobian_condition_number(lin, z), torch.full((100,), 3.0,
                                                                         dtype=torch.float64))
    ident = IdentityMixing(5)
    assert ident(z) is z and ident.inverse(z) is z
    assert torch.equal(jacobian_condition_number(ident, z), torch.ones(100, dtype=torch.float64))


def _held_out_r2(x, z):
    x, z = x.double().numpy(), z.double().numpy()
    half = len(x) // 2
    return LinearRegression().fit(x[:half], z[:half]).score(x[half:], z[half:])


def test_raw_mixing_is_clearly_nonlinear():
    z = _sphere_z(8000)
    r2_mlp = _held_out_r2(make_mixing("mlp", 10, generator=_gen(8))(z), z)
    r2_lin = _held_out_r2(make_mixing("linear", 10, generator=_gen(8))(z), z)
    print(f"held-out linear R2 of raw observations: mlp {r2_mlp:.3f}, linear {r2_lin:.6f}")
    assert r2_lin > 0.999999
    assert r2_mlp < 0.9


@pytest.mark.parametrize("name", ("mlp", "linear", "identity"))
def test_state_dict_round_trip_and_tamper_checks(name):
    g = make_mixing(name, 7, n_layers=2, cond=3.0, generator=_gen(9))
    state = g.state_dict()
    assert set(state) == {"config", "config_hash", "tensors", "tensors_hash"}
    assert all(isinstance(t, torch.Tensor) for t in state["tensors"].values())
    h = mixing_from_state_dict(state)
    z = torch.randn(30, 7, generator=_gen(10))
    assert torch.equal(h(z), g(z)) and h.config_hash == g.config_hash
    bad_config = {**state, "config": {**state["config"], "dim": 8}}
    with pytest.raises(ValueError, match="config_hash"):
        mixing_from_state_dict(bad_config)
    if state["tensors"]:
        tensors = {k: v.clone() for k, v in state["tensors"].items()}
        tensors["weight.0"][0, 0] += 1e-12
        with pytest.raises(ValueError, match="tensors_hash"):
            mixing_from_state_dict({**state, "tensors": tensors})


def test_same_generator_same_weights_different_seed_different_weights():
    a = InvertibleMLP.random(5, generator=_gen(11))
    b = InvertibleMLP.random(5, generator=_gen(11))
    c = InvertibleMLP.random(5, generator=_gen(12))
    assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights, strict=True))
    assert not torch.equal(a.weights[0], c.weights[0])


@pytest.mark.parametrize("quantile", (0.0, 0.001, 0.25, 0.999))
def test_pool_condition_matches_cl_icas_threshold_loop(quantile):
    # cl-ica's construct_invertible_mlp, written out on the same draws: unit columns, one
    # condition number per matrix, sorted, the entry at int(pool * quantile).
    pool, dim = 700, 6
    a = (torch.rand(pool, dim, dim, generator=_gen(3), dtype=torch.float64) * 2 - 1).numpy()
    conds = []
    for m in a:
        m = m / np.sqrt(np.sum(m * m, axis=0))
        conds.append(np.linalg.cond(m))
    conds.sort()
    got = pool_condition(dim, pool, quantile, generator=_gen(3))
    assert got == pytest.approx(conds[int(pool * quantile)], rel=1e-10)


def test_pool_condition_known_values():
    assert pool_condition(1, 10, generator=_gen()) == pytest.approx(1.0)
    # csi's DIET threshold (best of 25 000) grows fast with d; papers.md quotes ~3.6 for d = 10.
    best5 = pool_condition(5, generator=_gen(1))
    best10 = pool_condition(10, generator=_gen(1))
    assert 1.3 < best5 < 1.9
    assert 3.2 < best10 < 4.4
    assert pool_condition(5, 2000, 0.5, generator=_gen(1)) > pool_condition(
        5, 2000, 0.1, generator=_gen(1)) > pool_condition(5, 2000, 0.0, generator=_gen(1))


def test_bad_inputs():
    with pytest.raises(ValueError, match="quantile"):
        pool_condition(3, 10, 1.0)
    with pytest.raises(ValueError, match="pool"):
        pool_condition(3, 0)
    with pytest.raises(ValueError, match="mixing must be one of"):
        make_mixing("flow", 3)
    with pytest.raises(ValueError, match="cond"):
        random_matrix(3, 0.5)
    with pytest.raises(ValueError, match="dim"):
        random_matrix(0)
    with pytest.raises(ValueError, match="n_layers"):
        InvertibleMLP.random(3, 0)
    with pytest.raises(ValueError, match="negative_slope"):
        InvertibleMLP.random(3, negative_slope=0.0)
    with pytest.raises(ValueError, match="invertible"):
        InvertibleMLP([torch.zeros(3, 3)])
    with pytest.raises(ValueError, match="square"):
        InvertibleMLP([torch.ones(3, 2)])
    with pytest.raises(ValueError, match=r"weights must all have the same size.*\(4, 4\)"):
        InvertibleMLP([torch.eye(3), torch.eye(4)])
    g = InvertibleMLP.random(3, generator=_gen(0))
    with pytest.raises(ValueError, match="shape"):
        g(torch.ones(4, 5))
    with pytest.raises(ValueError, match="state"):
        mixing_from_state_dict({"config": {}})
    config = {"kind": "flow", "dim": 3}
    with pytest.raises(ValueError, match="unknown mixing kind 'flow' in state; expected one of"):
        mixing_from_state_dict({"config": config, "config_hash": config_hash(config),
                                "tensors": {}})
