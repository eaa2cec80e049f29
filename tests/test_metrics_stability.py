"""Stability metrics: naive loops, the variance decomposition, collapse values, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sithlib.metrics import (
    center_vector,
    center_vector_norm,
    effective_rank,
    embedding_std,
    mean_norm_decomposition,
    sample_mean_norm,
)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def views_around(n=50, k=4, d=8, noise=0.3, seed=0):
    """K noisy views of N inputs, the shape (K, N, D) the metrics take."""
    base = randn(1, n, d, seed=seed) + 0.5
    return base + noise * randn(k, n, d, seed=seed + 1)


def test_center_vector_matches_loop():
    z = randn(40, 6, seed=1) + 1.0
    want = sum(unit(row) for row in z.numpy()) / 40
    np.testing.assert_allclose(center_vector(z).numpy(), want, atol=1e-12)
    assert center_vector_norm(z) == pytest.approx(np.linalg.norm(want), abs=1e-12)
    want_raw = np.linalg.norm(z.numpy().mean(0))
    assert center_vector_norm(z, normalize=False) == pytest.approx(want_raw, abs=1e-12)
    # Views count as samples.
    v = views_around()
    assert center_vector_norm(v) == pytest.approx(center_vector_norm(v.reshape(-1, 8)), abs=1e-12)


def test_center_vector_norm_known_values():
    z = randn(30, 5, seed=2)
    collapsed = z[:1] * torch.arange(1, 31, dtype=torch.float64)[:, None]  # one direction
    assert center_vector_norm(collapsed) == pytest.approx(1.0, abs=1e-12)
    assert center_vector_norm(torch.cat([z, -z])) == pytest.approx(0.0, abs=1e-12)
    # Uniform on the sphere: E||s||^2 = 1/N exactly.
    norms = [center_vector_norm(randn(100, 10, seed=s)) ** 2 for s in range(200)]
    assert np.mean(norms) == pytest.approx(1 / 100, rel=0.15)


def test_sample_mean_norm_matches_loop():
    v = views_around(seed=3)
    u = unit(v.numpy())
    want = np.mean([np.linalg.norm(u[:, i].mean(0)) for i in range(v.shape[1])])
    assert sample_mean_norm(v) == pytest.approx(want, abs=1e-12)
    # Identical views: every sample's mean embedding has norm 1.
    assert sample_mean_norm(v[:1].expand(5, -1, -1)) == pytest.approx(1.0, abs=1e-12)


def test_unbiased_sample_mean_norm_matches_loop_and_ignores_the_self_term():
    v = views_around(n=12, k=4, noise=1.0, seed=6)
    u = unit(v.numpy())
    per = [np.mean([u[a, i] @ u[b, i] for a in range(4) for b in range(4) if a != b])
           for i in range(12)]
    want = np.mean(np.sqrt(np.clip(per, 0, None)))
    assert sample_mean_norm(v, unbiased=True) == pytest.approx(want, abs=1e-12)
    assert sample_mean_norm(v[:1].expand(3, -1, -1), unbiased=True) == pytest.approx(1.0)
    # Views in independent random directions: mu_x = 0. The norm of a K-view average reads
    # about 1 / sqrt(K); the pairwise estimate a little above 0 (it is clamped at 0).
    noise = torch.randn(4, 2000, 64, generator=torch.Generator().manual_seed(7),
                        dtype=torch.float64)
    assert sample_mean_norm(noise) == pytest.approx(0.5, abs=0.02)
    assert sample_mean_norm(noise, unbiased=True) < 0.1
    with pytest.raises(ValueError, match="K >= 2"):
        sample_mean_norm(v[:1], unbiased=True)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 5),
    n=st.integers(1, 30),
    noise=st.floats(0.0, 3.0),
    normalize=st.booleans(),
)
def test_mean_norm_decomposition_identity(seed, k, n, noise, normalize):
    parts = mean_norm_decomposition(views_around(n, k, 4, noise, seed), normalize=normalize)
    lhs = parts["mean_sq_norm"]
    assert lhs == pytest.approx(parts["center_sq_norm"] + parts["spread"], abs=1e-12)
    assert (k == 1) == math.isnan(parts["view_alignment"])


def test_mean_norm_decomposition_matches_loops():
    v = views_around(n=20, k=3, seed=4)
    u = unit(v.numpy())
    mu = u.mean(0)
    s = mu.mean(0)
    align = np.mean(
        [
            np.mean([u[a, i] @ u[b, i] for a in range(3) for b in range(3) if a != b])
            for i in range(20)
        ]
    )
    parts = mean_norm_decomposition(v)
    assert parts["mean_sq_norm"] == pytest.approx((mu**2).sum(1).mean(), abs=1e-12)
    assert parts["center_sq_norm"] == pytest.approx((s**2).sum(), abs=1e-12)
    assert parts["spread"] == pytest.approx(((mu - s) ** 2).sum(1).mean(), abs=1e-12)
    assert parts["view_alignment"] == pytest.approx(align, abs=1e-12)


def test_view_alignment_is_unbiased_for_the_mean_norm():
    # Many views of each sample: the plug-in E||mu_x||^2 of K views is biased up by
    # (1 - E||mu_x||^2) / K, the pairwise alignment is not.
    big = mean_norm_decomposition(views_around(n=40, k=400, noise=1.0, seed=5))
    small = mean_norm_decomposition(views_around(n=40, k=2, noise=1.0, seed=5))
    assert small["mean_sq_norm"] > big["mean_sq_norm"] + 0.1
    assert small["view_alignment"] == pytest.approx(big["mean_sq_norm"], abs=0.08)


def test_embedding_std():
    z = randn(500, 16, seed=6)
    assert embedding_std(z) == pytest.approx(np.std(unit(z.numpy()), 0, ddof=1).mean(), abs=1e-12)
    assert embedding_std(z) == pytest.approx(1 / math.sqrt(16), rel=0.05)
    assert embedding_std(z, normalize=False) == pytest.approx(1.0, rel=0.05)
    assert embedding_std(z[:1].expand(10, -1) * 3) == pytest.approx(0.0, abs=1e-12)


def test_effective_rank():
    z = randn(200, 12, seed=7)
    s = np.linalg.svd(z.numpy(), compute_uv=False)
    p = s / s.sum() + 1e-7
    assert effective_rank(z) == pytest.approx(np.exp(-(p * np.log(p)).sum()), abs=1e-9)
    # r equal singular values give rank r (exactly with eps = 0).
    q = torch.linalg.qr(randn(50, 5, seed=8))[0]
    low_rank = q @ torch.linalg.qr(randn(12, 5, seed=9))[0].T * 4.0
    assert effective_rank(low_rank, eps=0.0) == pytest.approx(5.0, abs=1e-9)
    assert effective_rank(low_rank) == pytest.approx(5.0, abs=1e-4)
    line = randn(50, 1, seed=10) @ randn(1, 12, seed=11)
    assert effective_rank(line, eps=0.0) == pytest.approx(1.0, abs=1e-9)
    # Centring removes a shared offset direction.
    shifted = low_rank + 100.0
    assert effective_rank(shifted, eps=0.0) < 2.0
    assert effective_rank(shifted, eps=0.0, center=True) > 4.0


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="views must have shape"):
        sample_mean_norm(randn(10, 3))
    with pytest.raises(ValueError, match="views contains NaN"):
        mean_norm_decomposition(torch.full((2, 3, 4), torch.nan))
    with pytest.raises(ValueError, match="z must have shape"):
        center_vector_norm(randn(10))
    with pytest.raises(TypeError, match="z must be a floating-point"):
        center_vector_norm(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 samples"):
        embedding_std(randn(1, 4))
    with pytest.raises(ValueError, match="effective rank is undefined"):
        effective_rank(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="eps"):
        effective_rank(randn(5, 3), eps=-1.0)
    with pytest.raises(TypeError, match="normalize"):
        center_vector_norm(randn(5, 3), normalize="yes")
