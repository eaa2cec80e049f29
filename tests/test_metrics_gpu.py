"""Every metric on a CUDA device agrees with its CPU value (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from torch import nn

from sithlib import metrics

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def both(fn, *tensors, **kwargs):
    """fn on CPU tensors and on their CUDA copies."""
    cpu = fn(*tensors, **kwargs)
    gpu = fn(*(t.cuda() for t in tensors), **kwargs)
    return cpu, gpu


def close(cpu, gpu, tol=1e-9):
    if isinstance(cpu, dict):
        assert cpu.keys() == gpu.keys()
        for key in cpu:
            close(cpu[key], gpu[key], tol)
    elif isinstance(cpu, torch.Tensor):
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, atol=tol, rtol=0)
    else:
        assert cpu == pytest.approx(gpu, abs=tol)


def test_identifiability_on_cuda():
    z = randn(600, 4, seed=1)
    h = torch.tanh(z @ randn(4, 6, seed=2)) + 0.1 * randn(600, 6, seed=3)
    close(*both(metrics.r2_linear, h, z))
    close(*both(metrics.r2_linear, h, z, multioutput="raw_values"))
    close(*both(metrics.procrustes_r2, h, z))
    close(*both(metrics.orthogonality_score, h, z))
    close(*both(metrics.mcc, h, z, method="spearman"))
    close(*both(metrics.r2_nonlinear, h, z, method="kernel_ridge"), tol=1e-7)
    mlp = dict(method="mlp", mlp_steps=50, mlp_hidden=(16,))
    cpu, gpu = both(metrics.r2_nonlinear, h, z, **mlp)
    assert abs(cpu - gpu) < 0.05  # float32 training on two devices
    # A generator on the GPU drives the split there: the same permutation, drawn from a twin
    # generator, gives the split for scikit-learn (half the rows held out).
    perm = torch.randperm(600, generator=torch.Generator("cuda").manual_seed(0), device="cuda")
    tr, te = perm[:300].cpu().numpy(), perm[300:].cpu().numpy()
    fit = LinearRegression().fit(h.numpy()[tr], z.numpy()[tr])
    want = r2_score(z.numpy()[te], fit.predict(h.numpy()[te]))
    g = torch.Generator("cuda").manual_seed(0)
    assert metrics.r2_linear(h.cuda(), z.cuda(), generator=g) == pytest.approx(want, abs=1e-9)


def test_similarity_on_cuda():
    a = randn(500, 8, seed=4)
    b = torch.tanh(a @ randn(8, 5, seed=5)) + 0.3 * randn(500, 5, seed=6)
    for unbiased in (False, True):
        close(*both(metrics.cka_linear, a, b, unbiased=unbiased))
        close(*both(metrics.cka_rbf, a, b, unbiased=unbiased))
    close(*both(metrics.mutual_knn, a, b, k=10, clamp_quantile=0.95, batch_size=128))
    close(*both(metrics.cycle_knn, a, b, k=10))
    close(*both(metrics.cknna, a, b, k=10))


def test_stability_and_information_on_cuda():
    views = randn(4, 100, 8, seed=7) + 0.5
    close(*both(metrics.center_vector, views))
    close(*both(metrics.mean_norm_decomposition, views))
    close(*both(metrics.effective_rank, views[0]))
    z = randn(400, 3, seed=8)
    close(*both(metrics.gaussian_entropy, z))
    close(*both(metrics.logdet_entropy, z))
    close(*both(metrics.mardia_test, z))
    covs = torch.eye(3, dtype=torch.float64).expand(5, 3, 3) * 0.5
    means = randn(5, 3, seed=9)
    for divergence in ("kl", "bhattacharyya"):
        close(*both(metrics.mixture_entropy_pairwise, means, covs, divergence=divergence))
    g = torch.Generator("cuda").manual_seed(1)
    h, se = metrics.mixture_entropy_mc(
        means.cuda(), covs.cuda(), n_samples=100_000, generator=g, return_stderr=True
    )
    lower = metrics.mixture_entropy_pairwise(means, covs, divergence="bhattacharyya")
    upper = metrics.mixture_entropy_pairwise(means, covs, divergence="kl")
    assert lower - 4 * se <= h <= upper + 4 * se
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2)).double()
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.copy_(randn(*p.shape, seed=20 + i))
    x = randn(200, 3, seed=10)
    cpu = metrics.same_region_fraction(net, x, x + 0.1 * randn(2, 200, 3, seed=11))
    gpu = metrics.same_region_fraction(
        net.cuda(), x.cuda(), (x + 0.1 * randn(2, 200, 3, seed=11)).cuda()
    )
    assert cpu == gpu


def test_probes_on_cuda():
    g = torch.Generator().manual_seed(12)
    y = torch.randint(0, 3, (400,), generator=g)
    x = randn(3, 6, seed=13)[y] + 0.8 * randn(400, 6, seed=14)
    args = (x[:300], y[:300], x[300:], y[300:])
    cpu = metrics.knn_accuracies(*args)
    gpu = metrics.knn_accuracies(*(t.cuda() for t in args))
    assert cpu == gpu
    cpu = metrics.linear_probe(*args)
    gpu = metrics.linear_probe(*(t.cuda() for t in args))
    assert abs(cpu - gpu) <= 1 / 100
