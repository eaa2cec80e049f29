"""MLP encoders: the cl-ica preset, a float64 reference forward pass, init and bad inputs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from sithlib.models import MLP, SphereNorm, cl_ica_encoder, cl_ica_widths
from sithlib.models._init import trunc_normal_


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def reference_forward(model: MLP, x: torch.Tensor, slope: float) -> torch.Tensor:
    """Layer-by-layer loop in float64 from the weights: h <- leaky(W h + b), no act at the end."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    h = x.double()
    for i, lin in enumerate(linears):
        h = h @ lin.weight.double().t() + lin.bias.double()
        if i < len(linears) - 1:
            h = torch.where(h > 0, h, slope * h)
    return h


def test_cl_ica_widths_and_parameter_count():
    n = 10
    assert cl_ica_widths(n) == [10, 100, 500, 500, 500, 500, 100, 10]
    assert cl_ica_widths(5, out_dim=3)[-1] == 3
    enc = cl_ica_encoder(n)
    w = cl_ica_widths(n)
    expected = sum(a * b + b for a, b in zip(w[:-1], w[1:], strict=True))
    assert sum(p.numel() for p in enc.parameters()) == expected == 854_210
    assert (enc.in_dim, enc.out_dim) == (10, 10)


def test_cl_ica_structure_leaky_between_layers_only_no_norm():
    enc = cl_ica_encoder(4)
    mods = list(enc.net)
    assert isinstance(mods[-1], nn.Linear)  # no activation after the last layer
    acts = [m for m in mods if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 6 and all(a.negative_slope == 0.01 for a in acts)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in enc.modules())


def test_forward_matches_float64_loop():
    enc = MLP([3, 7, 5, 2], negative_slope=0.2, generator=gen(1))
    x = torch.randn(16, 3, generator=gen(2))
    ref = reference_forward(enc, x, 0.2)
    torch.testing.assert_close(enc(x).double(), ref, atol=1e-6, rtol=1e-5)


def test_sphere_output_has_radius_and_matches_normalised_reference():
    enc = cl_ica_encoder(5, output_norm="sphere", generator=gen(0))
    x = torch.randn(32, 5, generator=gen(3))
    z = enc(x)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(32), atol=1e-6, rtol=0)
    ref = reference_forward(enc, x, 0.01)
    ref = ref / ref.norm(dim=1, keepdim=True)
    torch.testing.assert_close(z.double(), ref, atol=1e-6, rtol=1e-5)
    z3 = MLP([5, 4], output_norm="sphere", radius=3.0)(x)
    torch.testing.assert_close(z3.norm(dim=1), torch.full((32,), 3.0))


def test_sphere_norm_fp16_no_underflow():
    z = torch.full((4, 8), 1e-4, dtype=torch.float16)  # squares underflow in fp16
    out = SphereNorm()(z)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float().norm(dim=1), torch.ones(4), atol=1e-3, rtol=0)


def test_sphere_norm_keeps_float64_precision():
    z = torch.randn(6, 4, dtype=torch.float64, generator=gen(4))
    out = SphereNorm()(z)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, z / z.norm(dim=1, keepdim=True), atol=1e-15, rtol=0)


def test_batch_norm_option_places_bn_before_activation():
    enc = cl_ica_encoder(3, norm="batch")
    mods = list(enc.net)
    for i, m in enumerate(mods):
        if isinstance(m, nn.BatchNorm1d):
            assert isinstance(mods[i - 1], nn.Linear) and isinstance(mods[i + 1], nn.LeakyReLU)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in mods) == 6


def test_linear_before_batch_norm_has_no_bias_and_loses_nothing():
    enc = MLP([3, 8, 8, 2], norm="batch", generator=gen(0))
    linears = [m for m in enc.net if isinstance(m, nn.Linear)]
    assert [lin.bias is None for lin in linears] == [True, True, False]
    # The same network with a random bias before each BatchNorm: in training mode the batch mean
    # subtracts it, so the output and every weight's gradient are unchanged.
    ref = copy.deepcopy(enc)
    for i, lin in enumerate(linears[:-1]):
        j = list(enc.net).index(lin)
        biased = nn.Linear(lin.in_features, lin.out_features)
        with torch.no_grad():
            biased.weight.copy_(lin.weight)
            biased.bias.copy_(torch.randn(lin.out_features, generator=gen(10 + i)) * 3)
        ref.net[j] = biased
    x = torch.randn(16, 3, generator=gen(1))
    out, out_ref = enc(x), ref(x)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    out_ref.square().sum().backward()
    ref_params = dict(ref.named_parameters())
    for name, p in enc.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, atol=1e-4, rtol=1e-4)


def test_init_is_pytorch_default_and_seeded():
    a, b, c = (MLP([20, 30, 4], generator=gen(s)) for s in (0, 0, 1))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.net[0].weight, c.net[0].weight)
    for lin in (a.net[0], a.net[2]):
        bound = 1 / math.sqrt(lin.in_features)
        assert lin.weight.abs().max() <= bound and lin.bias.abs().max() <= bound
        # U(-b, b) has variance b^2 / 3; 600 draws: within 4 standard errors (about 0.23 b^2 / 3).
        var = lin.weight.double().var().item()
        assert abs(var - bound**2 / 3) < 4 * (bound**2 / 3) * math.sqrt(0.8 / lin.weight.numel())


def test_trunc_normal_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    t = torch.empty(20_000)
    trunc_normal_(t, std=1.0, generator=gen(0), bound=1.0)
    assert t.abs().max() <= 1.0
    p = stats.kstest(t.numpy(), stats.truncnorm(-1.0, 1.0).cdf).pvalue
    assert p > 1e-3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"widths": [3]}, "widths"),
        ({"widths": [3, 0]}, "widths"),
        ({"widths": [3, 4], "activation": "tanh"}, "activation"),
        ({"widths": [3, 4], "norm": "layer"}, "norm"),
        ({"widths": [3, 4], "output_norm": "box"}, "output_norm"),
        ({"widths": [3, 4], "output_norm": "sphere", "radius": 0.0}, "radius"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLP(**kwargs)


def test_bad_input_shape_and_n():
    enc = MLP([3, 4])
    with pytest.raises(ValueError, match="x must have shape"):
        enc(torch.randn(5, 4))
    with pytest.raises(ValueError, match="x must have shape"):
        enc(torch.randn(3))
    with pytest.raises(ValueError, match="n must be"):
        cl_ica_widths(0)
