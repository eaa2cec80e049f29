"""Identifiability metrics: cross-checks against scikit-learn / SciPy, invariances, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV

from sithlib.metrics import (
    block_r2,
    fit_linear_map,
    mcc,
    orthogonality_score,
    procrustes_r2,
    r2_linear,
    r2_nonlinear,
)
from sithlib.metrics.identifiability import _kernel_ridge_predict

TOL = 1e-6


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64)


def invertible(d, seed, low=0.2, high=5.0):
    """A random invertible matrix with singular values in [low, high]."""
    g = gen(seed)
    q1 = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    q2 = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    s = low + (high - low) * torch.rand(d, generator=g, dtype=torch.float64)
    return q1 @ torch.diag(s) @ q2


def orthogonal(d, seed):
    return torch.linalg.qr(randn(d, d, seed=seed))[0]


def nonlinear_data(n=400, d=4, seed=0):
    """Latents and a noisy nonlinear representation of them (a structured test case)."""
    z = randn(n, d, seed=seed)
    h = torch.tanh(z @ invertible(d, seed + 1)) + 0.1 * randn(n, d, seed=seed + 2)
    return h, z


# --------------------------------------------------------------------------- r2_linear
@pytest.mark.parametrize("multioutput", ["uniform_average", "raw_values", "variance_weighted"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_r2_linear_matches_sklearn_held_out(multioutput, fit_intercept):
    h, z = nonlinear_data()
    z = z * torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64) + 1.0
    n_test = 120
    n_train = len(h) - n_test
    model = LinearRegression(fit_intercept=fit_intercept).fit(h[:n_train].numpy(), z[:n_train])
    want = r2_score(z[n_train:], model.predict(h[n_train:].numpy()), multioutput=multioutput)
    got = r2_linear(
        h, z, test_fraction=n_test / len(h), fit_intercept=fit_intercept, multioutput=multioutput
    )
    np.testing.assert_allclose(np.asarray(got), want, atol=TOL, rtol=0)


def test_r2_linear_in_sample_matches_sklearn_and_exceeds_held_out():
    # Many predictors, few samples: the in-sample score is inflated by overfitting.
    h, z = randn(60, 20, seed=3), randn(60, 2, seed=4)
    model = LinearRegression().fit(h.numpy(), z.numpy())
    want = r2_score(z.numpy(), model.predict(h.numpy()))
    assert abs(r2_linear(h, z, in_sample=True) - want) < TOL
    assert r2_linear(h, z) < want - 0.2


def test_r2_linear_generator_shuffles_reproducibly():
    h, z = nonlinear_data(seed=5)
    perm = torch.randperm(len(h), generator=gen(7))
    tr, te = perm[:200], perm[200:]
    model = LinearRegression().fit(h[tr].numpy(), z[tr].numpy())
    want = r2_score(z[te].numpy(), model.predict(h[te].numpy()))
    assert abs(r2_linear(h, z, generator=gen(7)) - want) < TOL
    assert r2_linear(h, z, generator=gen(7)) == r2_linear(h, z, generator=gen(7))


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("d", [30, 400])  # the primal (d <= n) and the dual (d > n) solve
def test_r2_linear_ridge_matches_sklearn_ridge(fit_intercept, d):
    from sklearn.linear_model import Ridge

    h, z = randn(300, d, seed=8) * 3.0, randn(300, 3, seed=9)
    z = z + h[:, :3] * 0.2
    n_train, c = 150, 0.3
    x = h[:n_train] - (h[:n_train].mean(0) if fit_intercept else 0)
    alpha = c * float(x.pow(2).sum()) / d  # c times n tr(C) / d
    model = Ridge(alpha=alpha, fit_intercept=fit_intercept, solver="svd")
    model.fit(h[:n_train].numpy(), z[:n_train].numpy())
    want = r2_score(z[n_train:].numpy(), model.predict(h[n_train:].numpy()))
    got = r2_linear(h, z, ridge=c, fit_intercept=fit_intercept)
    assert abs(got - want) < 1e-8
    # The strength is relative: rescaling h changes nothing.
    assert abs(r2_linear(h * 1e3, z, ridge=c, fit_intercept=fit_intercept) - got) < 1e-8


def test_r2_linear_ridge_grid_chooses_on_training_rows_only():
    # As many pixels as training rows: least squares interpolates the training half and
    # its held-out score collapses; the grid picks a penalty and stays sensible.
    h, z = randn(200, 100, seed=10), randn(200, 2, seed=11)
    z = z + h[:, :2]
    grid = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    plain, chosen = r2_linear(h, z), r2_linear(h, z, ridge=grid)
    assert plain < 0 < chosen
    # The same as picking by hand: fit on the first 80 of the 100 training rows, score the rest.
    val = [r2_linear(h[:100], z[:100], test_fraction=0.2, ridge=c) for c in grid]
    best = grid[int(np.argmax(val))]
    assert chosen == r2_linear(h, z, ridge=best)
    # Held-out rows never enter the choice: changing them leaves the chosen fit alone.
    z2 = z.clone()
    z2[100:] = randn(100, 2, seed=12)
    assert r2_linear(h, z2, ridge=grid) == r2_linear(h, z2, ridge=best)
    for bad in (-1.0, (), (0.1, float("nan")), True):
        with pytest.raises(ValueError, match="ridge must be"):
            r2_linear(h, z, ridge=bad)


def test_r2_linear_raw_values_is_a_tensor_per_latent():
    h, z = nonlinear_data()
    raw = r2_linear(h, z, multioutput="raw_values")
    assert isinstance(raw, torch.Tensor) and raw.shape == (4,)
    assert abs(float(raw.mean()) - r2_linear(h, z)) < 1e-12


def test_r2_linear_float32_input_and_constant_target():
    h, z = nonlinear_data()
    z = torch.cat([z, torch.full((len(z), 1), 2.0, dtype=torch.float64)], 1)
    raw = r2_linear(h.float(), z.float(), multioutput="raw_values")
    # sklearn's convention: a constant target predicted exactly scores 1.
    assert raw[-1] == 1.0
    assert abs(float(raw[:-1].mean()) - r2_linear(h, z[:, :-1])) < 1e-5


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 8), d_extra=st.integers(0, 3))
def test_r2_linear_is_one_for_any_invertible_affine_map(seed, d, d_extra):
    z = randn(200, d, seed=seed)
    h = z @ invertible(d, seed + 1) + randn(1, d, seed=seed + 2)
    # Extra nuisance dimensions in h must not hurt an affine decoder.
    h = torch.cat([h, randn(200, d_extra, seed=seed + 3)], 1)
    assert r2_linear(h, z) == pytest.approx(1.0, abs=1e-9)
    assert r2_linear(z, h[:, :d]) == pytest.approx(1.0, abs=1e-9)


def test_fit_linear_map_matches_sklearn_coefficients():
    h, z = nonlinear_data()
    model = LinearRegression().fit(h.numpy(), z.numpy())
    w, b = fit_linear_map(h, z)
    np.testing.assert_allclose(w.numpy(), model.coef_.T, atol=1e-9)
    np.testing.assert_allclose(b.numpy(), model.intercept_, atol=1e-9)


# --------------------------------------------------------------------------- orthogonality
def test_orthogonality_score_zero_for_scaled_orthogonal_maps():
    z = randn(300, 5, seed=1)
    h = 3.0 * z @ orthogonal(5, 2) + 1.0
    assert orthogonality_score(h, z) < 1e-9
    # Without the scale normalisation every singular value is 1/3.
    assert orthogonality_score(h, z, normalize_scale=False) == pytest.approx(2 / 3, abs=1e-9)
    assert orthogonality_score(z @ invertible(5, 3, 0.2, 5.0), z) > 0.1


def test_orthogonality_score_matches_numpy_singular_values():
    h, z = nonlinear_data()
    coef = LinearRegression().fit(h.numpy(), z.numpy()).coef_
    s = np.linalg.svd(coef, compute_uv=False)
    assert orthogonality_score(h, z) == pytest.approx(np.abs(s / s.mean() - 1).mean(), abs=TOL)


def test_procrustes_r2_matches_scipy_orthogonal_procrustes():
    h, z = nonlinear_data(seed=11)
    n_train = 200
    a, b = h[:n_train].numpy(), z[:n_train].numpy()
    a_mean, b_mean = a.mean(0), b.mean(0)
    r, scale = scipy.linalg.orthogonal_procrustes(a - a_mean, b - b_mean)
    c = scale / ((a - a_mean) ** 2).sum()
    pred = c * (h[n_train:].numpy() - a_mean) @ r + b_mean
    for multioutput in ("uniform_average", "raw_values"):
        want = r2_score(z[n_train:].numpy(), pred, multioutput=multioutput)
        got = procrustes_r2(h, z, multioutput=multioutput)
        np.testing.assert_allclose(np.asarray(got), want, atol=TOL)


def test_procrustes_r2_separates_orthogonal_from_linear_maps():
    z = randn(400, 4, seed=12)
    rotated = 2.5 * z @ orthogonal(4, 13) - 3.0
    assert procrustes_r2(rotated, z) == pytest.approx(1.0, abs=1e-9)
    assert procrustes_r2(rotated, z, scale=False) < 0.5  # the scale 2.5 is not fitted
    mixed = z @ invertible(4, 14, 0.2, 5.0)
    assert r2_linear(mixed, z) == pytest.approx(1.0, abs=1e-9)
    assert procrustes_r2(mixed, z) < 0.9
    # Unequal dimensions: the map has orthonormal columns and drops the extra directions.
    wide = torch.cat([rotated, randn(400, 2, seed=15)], 1)
    assert procrustes_r2(wide, z) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("extra", [1, 5, 40])
def test_procrustes_r2_wider_h_matches_padded_scipy_with_least_squares_scale(extra):
    """d_h > d_z: scipy's square Procrustes against z padded with zero columns, then the scale
    that minimises the squared error of that map (not the ratio for a square map)."""
    z = randn(400, 4, seed=16)
    h = torch.cat([3.0 * z @ orthogonal(4, 17), randn(400, extra, seed=18)], 1) + 1.0
    h = h + 0.1 * randn(400, 4 + extra, seed=19)
    n_train = 200
    a, b = h[:n_train].numpy(), z[:n_train].numpy()
    a_mean, b_mean = a.mean(0), b.mean(0)
    padded = np.hstack([b - b_mean, np.zeros((n_train, extra))])
    r, _ = scipy.linalg.orthogonal_procrustes(a - a_mean, padded)
    mapped = (a - a_mean) @ r[:, :4]
    c = (mapped * (b - b_mean)).sum() / (mapped**2).sum()
    pred = c * (h[n_train:].numpy() - a_mean) @ r[:, :4] + b_mean
    want = r2_score(z[n_train:].numpy(), pred)
    assert procrustes_r2(h, z) == pytest.approx(want, abs=TOL)
    # h holds a noisy orthogonal copy of z: the extra columns must not shrink its prediction.
    assert want > 0.9


# --------------------------------------------------------------------------- nonlinear R^2
def _standardized_split(h, z, n_train):
    h_tr, h_te = h[:n_train], h[n_train:]
    mean, std = h_tr.mean(0), h_tr.std(0, correction=0)
    return (h_tr - mean) / std, (h_te - mean) / std, z[:n_train], z[n_train:]


def test_kernel_ridge_matches_sklearn_grid_search():
    h, z = nonlinear_data(n=240, d=3, seed=20)
    alphas, gammas = [1.0, 0.1, 0.01, 0.001], list(np.logspace(-2, 2, 4))
    h_tr, h_te, z_tr, z_te = _standardized_split(h, z, 160)
    z_mean = z_tr.mean(0)
    search = GridSearchCV(KernelRidge(kernel="rbf"), {"alpha": alphas, "gamma": gammas}, cv=3)
    search.fit(h_tr.numpy(), (z_tr - z_mean).numpy())
    pred, (alpha, gamma) = _kernel_ridge_predict(h_tr, z_tr - z_mean, h_te, alphas, gammas, 3)
    assert (alpha, gamma) == (search.best_params_["alpha"], search.best_params_["gamma"])
    np.testing.assert_allclose(pred.numpy(), search.predict(h_te.numpy()), atol=TOL)
    # One (alpha, gamma) for every latent, chosen on their mean R^2, as sklearn's search does.
    for multioutput in ("uniform_average", "raw_values", "variance_weighted"):
        want = r2_score(
            z_te.numpy(), search.predict(h_te.numpy()) + z_mean.numpy(), multioutput=multioutput
        )
        got = r2_nonlinear(
            h, z, method="kernel_ridge", test_fraction=80 / 240, multioutput=multioutput
        )
        np.testing.assert_allclose(np.asarray(got), want, atol=TOL, rtol=0)


def test_r2_nonlinear_recovers_an_invertible_nonlinear_map():
    z = randn(600, 3, seed=21)
    u = z @ invertible(3, 22, 0.5, 1.0)
    h = torch.tanh(2 * u) + 0.2 * u  # invertible (strictly increasing) but far from linear
    linear = r2_linear(h, z)
    kernel = r2_nonlinear(h, z, method="kernel_ridge")
    assert kernel > 0.98
    assert kernel > linear + 0.05


def test_r2_nonlinear_mlp_is_deterministic_and_learns():
    z = randn(800, 3, seed=23)
    h = torch.tanh(z @ invertible(3, 24, 0.5, 1.5)) + 0.3 * z
    mlp = dict(mlp_hidden=(32, 32), mlp_steps=300, mlp_batch_size=128, mlp_lr=1e-2)
    a = r2_nonlinear(h, z, method="mlp", **mlp, generator=gen(1))
    assert a == r2_nonlinear(h, z, method="mlp", **mlp, generator=gen(1))
    assert a > 0.95
    assert a > r2_linear(h, z, generator=gen(1)) + 0.02
    # "auto" switches to the MLP above kernel_max_train.
    auto = r2_nonlinear(h, z, method="auto", kernel_max_train=100, **mlp, generator=gen(1))
    assert auto == a


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_r2_nonlinear_mlp_agrees_with_sklearn_and_its_ceiling():
    """Independent references for the MLP probe on a regression with a known answer:
    z = f(h) + sigma * noise with f far from linear, so the best possible R^2 is
    Var f / (Var f + sigma^2) per dimension. Ours must sit below that ceiling, far above the
    linear probe, and beside scikit-learn's MLPRegressor (same widths, Adam, minibatches,
    standardised inputs and targets, the same first/last-half split) over three seeds."""
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    def f(h):
        return torch.stack([torch.sin(2 * h[:, 0]) + 0.5 * h[:, 1] * h[:, 2],
                            torch.cos(2 * h[:, 1]) * h[:, 0]], 1)

    sigma = 0.3
    var_f = f(randn(10**6, 3, seed=1)).var(0)  # Monte Carlo: about (0.75, 0.50)
    ceiling = float((var_f / (var_f + sigma**2)).mean())  # about 0.87
    h = randn(1000, 3, seed=38)
    z = f(h) + sigma * randn(1000, 2, seed=39)
    ours = r2_nonlinear(h, z, method="mlp", mlp_hidden=(64, 64), mlp_steps=1500,
                        mlp_batch_size=128, mlp_lr=3e-3)
    tr, te = slice(0, 500), slice(500, None)  # generator=None: first rows train, last test
    hn, zn = h.numpy(), z.numpy()
    sx, sz = StandardScaler().fit(hn[tr]), StandardScaler().fit(zn[tr])
    reference = []
    for seed in range(3):
        mlp = MLPRegressor(hidden_layer_sizes=(64, 64), learning_rate_init=3e-3, batch_size=128,
                           max_iter=400, alpha=0.0, random_state=seed)
        mlp.fit(sx.transform(hn[tr]), sz.transform(zn[tr]))
        pred = sz.inverse_transform(mlp.predict(sx.transform(hn[te])))
        reference.append(r2_score(zn[te], pred))
    # Measured: ours 0.788, scikit-learn 0.780 to 0.794, linear 0.05, ceiling 0.87.
    assert ours == pytest.approx(np.mean(reference), abs=0.02)
    assert ours < ceiling
    assert ours > r2_linear(h, z) + 0.5


def test_r2_nonlinear_mlp_is_affine_invariant():
    """h is standardised and z standardised then restored with the train split's statistics,
    so per-column rescaling and shifting of either changes nothing beyond rounding."""
    h, z = nonlinear_data(n=300, d=3, seed=34)
    mlp = dict(method="mlp", mlp_hidden=(16,), mlp_steps=200)
    base = r2_nonlinear(h, z, **mlp)
    scale, shift = torch.tensor([0.01, 3.0, 50.0], dtype=h.dtype), torch.tensor([5.0, -2.0, 0.0])
    moved = r2_nonlinear(h * scale + shift, z * scale.flip(0) - shift, **mlp)
    assert moved == pytest.approx(base, abs=1e-4)


def test_r2_nonlinear_in_sample_and_raw_values():
    h, z = nonlinear_data(n=200, d=2, seed=25)
    raw = r2_nonlinear(h, z, method="kernel_ridge", multioutput="raw_values")
    assert isinstance(raw, torch.Tensor) and raw.shape == (2,)
    assert float(raw.mean()) == pytest.approx(r2_nonlinear(h, z, method="kernel_ridge"), abs=1e-12)
    assert r2_nonlinear(h, z, method="kernel_ridge", in_sample=True) > float(raw.mean())
    mlp = dict(method="mlp", mlp_hidden=(8,), mlp_steps=20)
    raw = r2_nonlinear(h, z, multioutput="raw_values", **mlp)
    assert float(raw.mean()) == pytest.approx(r2_nonlinear(h, z, **mlp), abs=1e-12)


def test_r2_nonlinear_mlp_without_generator_is_seeded():
    """generator=None seeds the MLP with 0: repeated calls agree whatever the global RNG, which
    the call leaves untouched."""
    h, z = nonlinear_data(n=200, d=2, seed=26)
    mlp = dict(method="mlp", mlp_hidden=(8,), mlp_steps=20)
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    first = r2_nonlinear(h, z, **mlp)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(2)
    assert r2_nonlinear(h, z, **mlp) == first


def test_block_r2_content_and_style():
    c, s = randn(500, 2, seed=30), randn(500, 2, seed=31)
    z = torch.cat([c, s], 1)
    h = torch.tanh(c @ invertible(2, 32, 0.5, 2.0))  # content only, nonlinearly mixed
    blocks = {"content": slice(0, 2), "style": [2, 3]}
    scores = block_r2(h, z, blocks, method="kernel_ridge")
    assert scores["content"] > 0.95
    assert scores["style"] < 0.05
    lin = block_r2(h, z, blocks, nonlinear=False, generator=gen(3))
    assert lin["content"] == r2_linear(h, c, generator=gen(3))
    assert lin["style"] == r2_linear(h, s, generator=gen(3))
    for cols in (slice(0, 10), slice(-9, 2), [0, 10]):
        with pytest.raises(ValueError, match="outside z's 4 columns"):
            block_r2(h, z, {"c": cols}, nonlinear=False)


# --------------------------------------------------------------------------- MCC
def _reference_mcc(h, z, method):
    h, z = h.numpy(), z.numpy()
    d_z = z.shape[1]
    if method == "pearson":
        c = np.corrcoef(z.T, h.T)[:d_z, d_z:]
    else:
        c = scipy.stats.spearmanr(z, h).statistic[:d_z, d_z:]
    rows, cols = linear_sum_assignment(-np.abs(c))
    return np.abs(c[rows, cols])


@pytest.mark.parametrize("method", ["pearson", "spearman"])
@pytest.mark.parametrize("d_h", [3, 4, 6])
def test_mcc_matches_scipy(method, d_h):
    z = randn(300, 4, seed=40)
    h = torch.tanh(z @ randn(4, d_h, seed=41)) + 0.3 * randn(300, d_h, seed=42)
    if method == "spearman":
        h = torch.round(h * 4) / 4  # ties, ranked by their average rank
    want = _reference_mcc(h, z, method)
    assert mcc(h, z, method=method) == pytest.approx(want.mean(), abs=TOL)
    raw = mcc(h, z, method=method, multioutput="raw_values")
    np.testing.assert_allclose(raw.numpy(), want, atol=TOL)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 8))
def test_mcc_one_under_permutation_sign_and_scale(seed, d):
    z = randn(200, d, seed=seed)
    g = gen(seed + 1)
    perm = torch.randperm(d, generator=g)
    signs = torch.where(torch.rand(d, generator=g) < 0.5, -1.0, 1.0).double()
    scales = 0.1 + 10 * torch.rand(d, generator=g, dtype=torch.float64)
    h = z[:, perm] * signs * scales + randn(1, d, seed=seed + 2)
    assert mcc(h, z) == pytest.approx(1.0, abs=1e-9)
    # Spearman also forgives any strictly monotone map of each coordinate.
    assert mcc(torch.sinh(h) ** 3, z, method="spearman") == pytest.approx(1.0, abs=1e-9)


def test_mcc_below_one_for_mixing_and_for_unmatched_pearson():
    z = randn(500, 3, seed=43)
    assert mcc(z @ invertible(3, 44, 0.5, 2.0), z) < 0.95
    assert mcc(torch.exp(2 * z), z) < 0.9  # monotone but nonlinear: only Spearman is 1


def test_mcc_constant_column_correlates_zero():
    z = randn(100, 2, seed=45)
    h = torch.stack([z[:, 0], torch.ones(100, dtype=torch.float64)], 1)
    raw = mcc(h, z, multioutput="raw_values")
    assert raw.tolist() == pytest.approx([1.0, 0.0])


# --------------------------------------------------------------------------- bad inputs
def test_bad_inputs_give_clear_errors():
    h, z = randn(50, 3), randn(50, 2)
    with pytest.raises(ValueError, match="same n"):
        r2_linear(h, z[:40])
    with pytest.raises(ValueError, match="z contains NaN"):
        r2_linear(h, torch.where(z > 1.5, torch.nan, z))
    with pytest.raises(ValueError, match="h contains NaN"):
        mcc(torch.full_like(h, torch.inf), z)
    with pytest.raises(ValueError, match="too few samples"):
        r2_linear(h[:3], z[:3])
    with pytest.raises(ValueError, match="too few samples"):
        r2_nonlinear(h[:8], z[:8], method="kernel_ridge")
    with pytest.raises(ValueError, match="too few samples"):
        r2_nonlinear(h[:5], z[:5], method="kernel_ridge", in_sample=True)
    with pytest.raises(ValueError, match="test_fraction"):
        r2_linear(h, z, test_fraction=1.5)
    with pytest.raises(TypeError, match="test_fraction"):
        r2_linear(h, z, test_fraction="half")
    with pytest.raises(ValueError, match="multioutput"):
        r2_linear(h, z, multioutput="mean")
    with pytest.raises(ValueError, match="h must have shape"):
        r2_linear(h[:, 0], z)
    with pytest.raises(TypeError, match="z must be a floating-point"):
        r2_linear(h, torch.ones(50, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        r2_linear(h, [[0.0]] * 50)
    with pytest.raises(ValueError, match="method"):
        mcc(h, z, method="kendall")
    with pytest.raises(ValueError, match="kernel_max_train"):
        r2_nonlinear(h, z, method="kernel_ridge", kernel_max_train=10)
    with pytest.raises(ValueError, match="alphas"):
        r2_nonlinear(h, z, alphas=(0.0,))
    with pytest.raises(TypeError, match="generator"):
        r2_linear(h, z, generator=0)
    with pytest.raises(ValueError, match=r"blocks\['c'\]"):
        block_r2(h, z, {"c": [5]})
    with pytest.raises(TypeError, match="blocks"):
        block_r2(h, z, [0, 1])
    with pytest.raises(ValueError, match=r"blocks\['c'\] must be a slice or a non-empty"):
        block_r2(h, z, {"c": []})
    with pytest.raises(ValueError, match=r"blocks\['c'\] must be .* int column indices"):
        block_r2(h, z, {"c": [0.0, 1.0]})
    with pytest.raises(ValueError, match="multioutput"):
        block_r2(h, z, {"c": [0]}, multioutput="raw_values")
    with pytest.raises(ValueError, match="alphas and gammas"):
        r2_nonlinear(h, z, alphas=())
    with pytest.raises(ValueError, match="alphas and gammas"):
        r2_nonlinear(h, z, gammas=())
    with pytest.raises(TypeError, match="mlp_steps must be an int >= 1"):
        r2_nonlinear(h, z, method="mlp", mlp_steps=10.0)
    with pytest.raises(ValueError, match="fitted map from h to z is zero"):
        orthogonality_score(torch.ones_like(h), z)  # a constant h: the fitted map is 0
    with pytest.raises(ValueError, match="h must have at least one feature"):
        r2_linear(h[:, :0], z)


def test_results_carry_no_gradient():
    h = randn(60, 3).requires_grad_(True)
    z = randn(60, 2, seed=1)
    raw = r2_linear(h, z, multioutput="raw_values")
    assert not raw.requires_grad
    assert isinstance(r2_linear(h, z), float)
