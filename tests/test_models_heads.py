"""Projector / predictor heads: BatchNorm placement per paper, weight norm, prototypes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sithlib.models import (
    BatchNormScale,
    DINOHead,
    Prototypes,
    WeightNormLinear,
    barlow_twins_projector,
    byol_mlp,
    linear_head,
    mlp_head,
    simclr_projector,
    simsiam_predictor,
    simsiam_projector,
    swav_projector,
    vicreg_expander,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def signature(head: nn.Module) -> list[str]:
    """Compact layer description: L+ / L- (Linear with / without bias), BN, BN0 (no affine)..."""
    out = []
    for m in head.children():
        if isinstance(m, nn.Linear):
            out.append("L+" if m.bias is not None else "L-")
        elif isinstance(m, nn.BatchNorm1d):
            out.append("BN" if m.affine else "BN0")
        else:
            out.append(type(m).__name__)
    return out


@pytest.mark.parametrize(
    "head, expected",
    [
        (simclr_projector(8, out_dim=4), ["L-", "BN", "ReLU", "L-", "BatchNormScale"]),
        (byol_mlp(8, hidden_dim=16, out_dim=4), ["L+", "BN", "ReLU", "L-"]),
        (
            simsiam_projector(8, hidden_dim=16, out_dim=4),
            ["L-", "BN", "ReLU", "L-", "BN", "ReLU", "L-", "BN0"],
        ),
        (simsiam_predictor(4, hidden_dim=2), ["L-", "BN", "ReLU", "L+"]),
        (
            barlow_twins_projector(8, dims=(16, 16, 4)),
            ["L-", "BN", "ReLU", "L-", "BN", "ReLU", "L-"],
        ),
        (vicreg_expander(8, dims=(16, 16, 4)), ["L+", "BN", "ReLU", "L+", "BN", "ReLU", "L-"]),
        (swav_projector(8, hidden_dim=16, out_dim=4), ["L+", "BN", "ReLU", "L+", "SphereNorm"]),
    ],
)
def test_batchnorm_placement_follows_official_code(head, expected):
    assert signature(head) == expected
    in_dim = next(m for m in head.children() if isinstance(m, nn.Linear)).in_features
    assert head(torch.randn(10, in_dim, generator=gen(1))).shape == (10, 4)


def test_default_widths():
    assert simclr_projector(32)[0].out_features == 32  # hidden width = input width (official)
    assert simclr_projector(32)[3].out_features == 128
    assert [m.out_features for m in byol_mlp(32) if isinstance(m, nn.Linear)] == [4096, 256]
    assert simsiam_predictor()[0].in_features == 2048 and simsiam_predictor()[0].out_features == 512
    assert len(simclr_projector(8, num_layers=3)) == 8  # v2: two hidden blocks


def test_batch_norm_scale_is_bn_without_shift():
    bn = BatchNormScale(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, -0.5]))
    x = torch.randn(50, 3, generator=gen(2)).double() * 4 + 1
    ref = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5) * bn.weight.double()
    torch.testing.assert_close(bn.double()(x), ref)
    assert [n for n, _ in bn.named_parameters()] == ["weight"]  # no shift parameter


def test_simsiam_projector_output_is_standardised():
    head = simsiam_projector(6, hidden_dim=12, out_dim=5, generator=gen(0))
    z = head(torch.randn(64, 6, generator=gen(3)))
    torch.testing.assert_close(z.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)


def test_mlp_head_seeded_and_validated():
    a, b = mlp_head([4, 8, 2], generator=gen(9)), mlp_head([4, 8, 2], generator=gen(9))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    with pytest.raises(ValueError, match="dims"):
        mlp_head([4])
    with pytest.raises(ValueError, match="last_norm"):
        mlp_head([4, 2], last_norm="layer")
    with pytest.raises(ValueError, match="activation"):
        mlp_head([4, 2], activation="tanh")
    with pytest.raises(ValueError, match="num_layers"):
        simclr_projector(4, num_layers=0)


def test_prototypes_unit_rows_and_scores():
    protos = Prototypes(dim=5, num_prototypes=7, generator=gen(0))
    torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(7))
    with torch.no_grad():
        protos.weight.mul_(torch.linspace(0.5, 3.0, 7).unsqueeze(1))
    protos.normalize_()
    torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(7))
    z = torch.randn(3, 5, generator=gen(1))
    scores = protos(z)
    ref = torch.stack([torch.stack([z[i] @ protos.weight[k] for k in range(7)]) for i in range(3)])
    torch.testing.assert_close(scores, ref)
    protos(z.requires_grad_(), detach=True).sum().backward()
    assert protos.weight.grad is None
    with pytest.raises(ValueError, match="num_prototypes"):
        Prototypes(dim=3, num_prototypes=0)


@pytest.mark.parametrize("layer", ["prototypes", "weight_norm"])
def test_temperature_scaled_scores_stay_float32_under_autocast(layer):
    # Divided by SwAV's eps 0.05 or DINO's 0.04, bf16 scores would change the codes visibly.
    m = (Prototypes(dim=16, num_prototypes=32, generator=gen(0)) if layer == "prototypes"
         else WeightNormLinear(16, 32, generator=gen(0)))
    x = torch.randn(64, 16, generator=gen(1))
    exact = m(x.double())
    assert exact.dtype == torch.float64  # float64 inputs are not rounded down
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = m(x)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores.double(), exact, rtol=1e-5, atol=1e-6)


def test_weight_norm_linear_matches_torch_parametrization():
    wn = WeightNormLinear(6, 4, fix_norm=False, generator=gen(0))
    with torch.no_grad():
        wn.weight_g.copy_(torch.tensor([[0.5], [1.0], [2.0], [3.0]]))
    ref = nn.Linear(6, 4, bias=False)
    ref.weight.data.copy_(wn.weight_v.data)
    ref = torch.nn.utils.parametrizations.weight_norm(ref, dim=0)
    ref.parametrizations.weight.original0.data.copy_(wn.weight_g.data)
    x = torch.randn(5, 6, generator=gen(1))
    torch.testing.assert_close(wn(x), ref(x))
    torch.testing.assert_close(wn.weight().norm(dim=1), wn.weight_g.squeeze(1))


def test_weight_norm_fixed_gain_and_freezing():
    wn = WeightNormLinear(6, 4, generator=gen(0))
    assert not wn.weight_g.requires_grad
    torch.testing.assert_close(wn.weight().norm(dim=1), torch.ones(4))
    wn(torch.randn(2, 6)).sum().backward()
    assert wn.weight_v.grad is not None and wn.weight_g.grad is None
    wn.weight_v.grad = None
    wn(torch.randn(2, 6, requires_grad=True), detach=True).sum().backward()
    assert wn.weight_v.grad is None


def test_dino_head_structure_and_init():
    head = DINOHead(32, 50, hidden_dim=64, bottleneck_dim=16, generator=gen(0))
    assert signature(head.mlp) == ["L+", "GELU", "L+", "GELU", "L+"]
    x = torch.randn(8, 32, generator=gen(1))
    assert head(x).shape == (8, 50)
    bottleneck = head.norm(head.mlp(x))
    torch.testing.assert_close(bottleneck.norm(dim=1), torch.ones(8))
    # |out_k| = |<unit bottleneck, unit row k>| <= 1 with the gain fixed to 1.
    assert head(x).abs().max() <= 1 + 1e-6
    w = head.mlp[2].weight.double()
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert len(linears) == 3 and all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in linears)
    assert abs(w.std().item() / 0.02 - 1) < 4 / (2 * w.numel()) ** 0.5
    head(x, freeze_last_layer=True).sum().backward()
    assert head.last_layer.weight_v.grad is None and head.mlp[0].weight.grad is not None
    assert signature(DINOHead(8, 4, hidden_dim=6, bottleneck_dim=3, use_bn=True).mlp)[1] == "BN"


def test_linear_head_seeded():
    a, b = linear_head(4, 9, bias=False, generator=gen(3)), linear_head(4, 9, generator=gen(3))
    assert a.bias is None and torch.equal(a.weight, b.weight)
