"""LARS against a naive loop written from You et al. (2017), Algorithm 1, and its properties."""

from __future__ import annotations

import math

import pytest
import torch

from sithlib.optim import LARS
from sithlib.train import TrainConfig


def naive_lars(w, grads, lr, momentum, weight_decay, eta, adapt):
    """Algorithm 1, one tensor, plain Python floats: returns the weights after each step."""
    w, v, out = list(w), [0.0] * len(w), []
    for g in grads:
        d = [gi + weight_decay * wi for gi, wi in zip(g, w, strict=True)] if adapt else list(g)
        if adapt:
            wn = math.sqrt(sum(x * x for x in w))
            dn = math.sqrt(sum(x * x for x in d))
            q = eta * wn / dn if wn > 0 and dn > 0 else 1.0
            d = [q * x for x in d]
        v = [momentum * vi + di for vi, di in zip(v, d, strict=True)]
        w = [wi - lr * vi for wi, vi in zip(w, v, strict=True)]
        out.append(w)
    return out


@pytest.mark.parametrize("shape", [(3, 4), (5,)])
def test_matches_the_algorithm(shape):
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    grads = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(4)]
    p = torch.nn.Parameter(w0.clone())
    opt = LARS([p], lr=0.5, momentum=0.9, weight_decay=0.01, eta=0.02)
    ref = naive_lars(w0.flatten().tolist(), [g.flatten().tolist() for g in grads], 0.5, 0.9,
                     0.01, 0.02, adapt=len(shape) > 1)
    for g, expected in zip(grads, ref, strict=True):
        p.grad = g.clone()
        opt.step()
        torch.testing.assert_close(p.detach().flatten(), torch.tensor(expected,
                                                                      dtype=torch.float64))


def test_step_size_ignores_gradient_scale():
    """Without weight decay the trust ratio cancels the gradient's scale (the point of LARS)."""
    w0 = torch.randn(6, 7, generator=torch.Generator().manual_seed(1))
    g = torch.randn(6, 7, generator=torch.Generator().manual_seed(2))
    ends = []
    for scale in (1e-3, 1.0, 1e3):
        p = torch.nn.Parameter(w0.clone())
        p.grad = g * scale
        LARS([p], lr=1.0, eta=0.01).step()
        ends.append(p.detach())
        # the step is eta * ||w|| whatever the gradient's norm
        assert torch.linalg.vector_norm(p.detach() - w0) == pytest.approx(
            0.01 * torch.linalg.vector_norm(w0).item(), rel=1e-5)
    torch.testing.assert_close(ends[0], ends[2])


def test_zero_weights_fall_back_to_sgd():
    p = torch.nn.Parameter(torch.zeros(3, 3))
    p.grad = torch.ones(3, 3)
    LARS([p], lr=0.1, momentum=0.0, eta=0.001).step()
    torch.testing.assert_close(p.detach(), torch.full((3, 3), -0.1))


def test_stacked_models_step_like_separate_ones():
    gen = torch.Generator().manual_seed(3)
    ws = [torch.randn(4, 5, generator=gen) * (i + 1) for i in range(3)]
    gs = [torch.randn(4, 5, generator=gen) * 10 ** i for i in range(3)]
    stacked = torch.nn.Parameter(torch.stack(ws))
    stacked.grad = torch.stack(gs)
    LARS([stacked], lr=0.3, weight_decay=0.1, batch_dims=1).step()
    for i in range(3):
        p = torch.nn.Parameter(ws[i].clone())
        p.grad = gs[i].clone()
        LARS([p], lr=0.3, weight_decay=0.1).step()
        torch.testing.assert_close(stacked.detach()[i], p.detach())


@pytest.mark.parametrize(("field", "value"), [("lr", -1.0), ("eta", -0.1), ("momentum", -0.5),
                                              ("weight_decay", -1e-6), ("batch_dims", 2)])
def test_bad_arguments_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"LARS {field}"):
        LARS([torch.nn.Parameter(torch.ones(2, 2))], **{field: value})


def test_config_rejects_negative_eta():
    with pytest.raises(ValueError, match="eta"):
        TrainConfig(optimizer="lars", eta=-1.0)
