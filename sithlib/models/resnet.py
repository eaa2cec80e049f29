"""ResNet-18 (He et al., 2016) in plain ``torch.nn``, with the CIFAR stem by default.

The CIFAR stem replaces the ImageNet 7x7 stride-2 convolution and max-pool by one 3x3 stride-1
convolution, so 32x32 images keep their resolution in the first stage (the convention of the
SimCLR CIFAR recipe and solo-learn). Module names follow torchvision, so torchvision
state dicts load into the ``"imagenet"`` stem and the parameter counts can be cross-checked.
"""

from __future__ import annotations

import torch
from torch import nn

from sithlib.models._init import kaiming_normal_fan_out_, torch_default_

_STEMS = ("cifar", "imagenet")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 feature extractor: images (B, C, H, W) to features (B, 512 * width / 64).

    Parameters
    ----------
    stem : str
        ``"cifar"`` (default: 3x3 conv, stride 1, no max-pool) or ``"imagenet"`` (7x7 conv,
        stride 2, 3x3 max-pool).
    in_channels : int
        Number of image channels.
    width : int
        Channels of the first stage (64 in the paper); the stages have width, 2, 4, 8 times it.
    num_classes : int
        0 (default) returns the pooled features; > 0 adds a Linear classifier named ``fc``.
    zero_init_residual : bool
        Start every block's last BatchNorm at weight 0 (torchvision's option, off by default).
    generator : torch.Generator, optional
        Source of the initial weights (torchvision's scheme: He normal fan-out for the
        convolutions, BatchNorm weight 1 and bias 0, PyTorch's default for ``fc``).

    Attributes
    ----------
    out_dim : int
        Dimension of the returned features (or ``num_classes``).
    """

    def __init__(
        self,
        *,
        stem: str = "cifar",
        in_channels: int = 3,
        width: int = 64,
        num_classes: int = 0,
        zero_init_residual: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if stem not in _STEMS:
            raise ValueError(f"stem must be one of {_STEMS}, got {stem!r}")
        for name, value in (("in_channels", in_channels), ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        self.stem = stem
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        planes = [width, 2 * width, 4 * width, 8 * width]
        self.layer1 = self._stage(width, planes[0], stride=1)
        self.layer2 = self._stage(planes[0], planes[1], stride=2)
        self.layer3 = self._stage(planes[1], planes[2], stride=2)
        self.layer4 = self._stage(planes[2], planes[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = planes[3]
        self.fc: nn.Module = nn.Linear(planes[3], num_classes) if num_classes else nn.Identity()
        self.out_dim = num_classes or planes[3]
        self.in_channels = in_channels
        self._init(zero_init_residual, generator)

    @staticmethod
    def _stage(in_planes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))

    @torch.no_grad()
    def _init(self, zero_init_residual: bool, generator: torch.Generator | None) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_normal_fan_out_(m.weight, generator)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                torch_default_(m, generator)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    m.bn2.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (or logits with ``num_classes``) of images (batch, C, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (batch, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
