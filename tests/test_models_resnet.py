"""ResNet-18: parameter counts and outputs against torchvision, the CIFAR stem, init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sithlib.models import ResNet18

torchvision = pytest.importorskip("torchvision")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def tv_cifar(num_classes=0):
    """torchvision's resnet18 with the CIFAR stem swapped in (the reference)."""
    m = torchvision.models.resnet18(num_classes=max(num_classes, 1))
    m.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    m.maxpool = nn.Identity()
    if num_classes == 0:
        m.fc = nn.Identity()
    return m


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_count_and_keys_match_torchvision_cifar_stem():
    ours, ref = ResNet18(), tv_cifar()
    assert n_params(ours) == n_params(ref) == 11_168_832
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }


def test_imagenet_stem_with_classifier_matches_torchvision_exactly():
    ours = ResNet18(stem="imagenet", num_classes=1000)
    ref = torchvision.models.resnet18()
    assert n_params(ours) == n_params(ref) == 11_689_512
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=gen(1))
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_outputs_equal_torchvision_with_the_same_weights(train):
    ours, ref = ResNet18(generator=gen(0)), tv_cifar()
    ref.load_state_dict(ours.state_dict())
    ours.train(train), ref.train(train)
    x = torch.randn(4, 3, 32, 32, generator=gen(2))
    out = ours(x)
    assert out.shape == (4, 512) and ours.out_dim == 512
    torch.testing.assert_close(out, ref(x), atol=1e-5, rtol=1e-5)


def test_cifar_stem_keeps_resolution():
    model = ResNet18()
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.shape

        return hook

    model.layer1.register_forward_hook(record("layer1"))
    model.layer4.register_forward_hook(record("layer4"))
    model.eval()(torch.zeros(1, 3, 32, 32))
    assert seen["layer1"] == (1, 64, 32, 32) and seen["layer4"] == (1, 512, 4, 4)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)


def test_width_channels_and_classifier():
    model = ResNet18(width=16, in_channels=1, num_classes=10)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10) and model.out_dim == 10
    assert model.feature_dim == 128


def test_init_is_seeded_he_normal_fan_out():
    a, b, c = ResNet18(generator=gen(5)), ResNet18(generator=gen(5)), ResNet18(generator=gen(6))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    w = a.layer3[0].conv2.weight.double()  # 256 x 256 x 3 x 3, fan_out = 2304
    std = math.sqrt(2.0 / (256 * 9))
    # Sample std of ~590k normals: relative standard error 1/sqrt(2n) ~ 1e-3.
    assert abs(w.std().item() / std - 1) < 4 / math.sqrt(2 * w.numel())
    assert torch.equal(a.bn1.weight, torch.ones(64)) and torch.equal(a.bn1.bias, torch.zeros(64))
    z = ResNet18(zero_init_residual=True)
    assert all(blk.bn2.weight.abs().sum() == 0 for blk in (z.layer1[0], z.layer4[1]))


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="stem"):
        ResNet18(stem="tiny")
    with pytest.raises(ValueError, match="width"):
        ResNet18(width=0)
    with pytest.raises(ValueError, match="num_classes"):
        ResNet18(num_classes=-1)
    with pytest.raises(ValueError, match="x must have shape"):
        ResNet18()(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="x must have shape"):
        ResNet18()(torch.zeros(3, 32, 32))
