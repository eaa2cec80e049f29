"""both_views: one batch for networks with independent rows, two calls for batch norm."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from sithlib.models import MLP, both_views, mixes_rows


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def mlp(seed=0):
    return MLP([4, 16, 16, 3], generator=torch.Generator().manual_seed(seed)).double()


def test_independent_rows_give_the_two_calls_values_and_gradients():
    f, x_a, x_b = mlp(), rand(8, 4, seed=1), rand(8, 4, seed=2)
    h_a, h_b = both_views(f, x_a, x_b)
    torch.testing.assert_close(h_a, f(x_a), rtol=0, atol=1e-12)
    torch.testing.assert_close(h_b, f(x_b), rtol=0, atol=1e-12)
    one = torch.autograd.grad((h_a * h_b).sum(), list(f.parameters()))
    two = torch.autograd.grad((f(x_a) * f(x_b)).sum(), list(f.parameters()))
    for g, g_two in zip(one, two, strict=True):
        torch.testing.assert_close(g, g_two, rtol=0, atol=1e-12)


def test_batch_norm_in_training_keeps_each_views_statistics():
    f = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6)).double()
    x_a, x_b = rand(8, 4, seed=1), 3.0 + rand(8, 4, seed=2)  # different means per view
    assert mixes_rows(f)
    h_a, h_b = both_views(f, x_a, x_b)
    # each view normalised by its own batch: zero mean per view
    torch.testing.assert_close(h_a.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-12,
                               rtol=0)
    torch.testing.assert_close(h_b.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-12,
                               rtol=0)
    f.eval()  # running statistics: rows independent again, one batch
    assert not mixes_rows(f)
    h_a, _ = both_views(f, x_a, x_b)
    torch.testing.assert_close(h_a, f(x_a), rtol=0, atol=1e-12)


def test_vmapped_ensemble_members_are_concatenated_per_seed():
    models = [mlp(s) for s in range(3)]
    params, _ = stack_module_state(models)
    x_a, x_b = rand(3, 8, 4, seed=1), rand(3, 8, 4, seed=2)

    def one(p, a, b):
        return both_views(lambda *x: functional_call(models[0], p, x), a, b)

    h_a, h_b = vmap(one)(params, x_a, x_b)
    for i, m in enumerate(models):
        torch.testing.assert_close(h_a[i], m(x_a[i]), rtol=0, atol=1e-12)
        torch.testing.assert_close(h_b[i], m(x_b[i]), rtol=0, atol=1e-12)


def test_views_with_different_row_shapes_are_refused():
    with pytest.raises(ValueError, match="same row shape"):
        both_views(mlp(), rand(8, 4), rand(8, 5))
