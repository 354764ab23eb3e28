"""ResNeXt-50 (32x4d), as torchvision builds it, without importing torchvision.

`import torchvision` costs about 2 s on 2 cores (its `ops` import `torch._dynamo`), more than
the rest of a cold `karyosearch query` together, for one constructor. This module builds the
same network: the same modules under the same names (so checkpoints load unchanged), the
same forward pass (torchvision's Bottleneck, "ResNet v1.5": the stride on the 3x3 conv), and
the same initialisation drawing the same random numbers in the same order, so a seeded
training run starts from the weights it started from with torchvision
(tests/model/test_resnext.py checks all three against torchvision).
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = (3, 4, 6, 3)  # Bottleneck blocks per stage (ResNet-50)
GROUPS = 32  # the "32" of 32x4d: groups of the 3x3 conv
WIDTH_PER_GROUP = 4  # the "4d": channels per group at the first stage
EXPANSION = 4  # a block's output channels over its `planes`


class Bottleneck(nn.Module):
    """1x1 -> grouped 3x3 (carrying the stride) -> 1x1, batch norm after each, plus the
    identity (or a strided 1x1 projection): torchvision's `Bottleneck`."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, device=None):
        super().__init__()
        width = int(planes * (WIDTH_PER_GROUP / 64.0)) * GROUPS
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False, device=device)
        self.bn1 = nn.BatchNorm2d(width, device=device)
        self.conv2 = nn.Conv2d(
            width, width, 3, stride=stride, padding=1, groups=GROUPS, bias=False, device=device
        )
        self.bn2 = nn.BatchNorm2d(width, device=device)
        self.conv3 = nn.Conv2d(width, planes * EXPANSION, 1, bias=False, device=device)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION, device=device)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


def _stage(inplanes: int, planes: int, blocks: int, stride: int, device=None) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * EXPANSION:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * EXPANSION, 1, stride=stride, bias=False, device=device),
            nn.BatchNorm2d(planes * EXPANSION, device=device),
        )
    layers = [Bottleneck(inplanes, planes, stride, downsample, device)]
    layers += [Bottleneck(planes * EXPANSION, planes, device=device) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def is_meta(device: torch.device | str | None) -> bool:
    """Whether `device` is the meta device (modules without storage, weights to be loaded)."""
    return device is not None and torch.device(device).type == "meta"


def resnext50_32x4d(device: torch.device | str | None = None) -> dict[str, nn.Module]:
    """The modules of torchvision's `resnext50_32x4d(weights=None)` in order, without the
    pooling and the classifier: conv1 (7x7/2, 3 channels), bn1, relu, maxpool, layer1..4.

    Initialised as torchvision does (Kaiming-normal convs, batch norms at 1 and 0). The
    1000-class classifier is built and dropped so that the random numbers drawn, and so the
    weights under a seed, are torchvision's. On the "meta" device nothing is drawn (for
    weights about to be loaded).
    """
    net = nn.ModuleDict()
    net["conv1"] = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False, device=device)
    net["bn1"] = nn.BatchNorm2d(64, device=device)
    net["relu"] = nn.ReLU(inplace=True)
    net["maxpool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), LAYERS, strict=True)):
        net[f"layer{i + 1}"] = _stage(inplanes, planes, blocks, 1 if i == 0 else 2, device)
        inplanes = planes * EXPANSION
    nn.Linear(
        inplanes, 1000, device=device
    )  # torchvision's fc: drawn, then dropped (see the docstring)
    if is_meta(device):
        return dict(net.items())  # no weights to initialise (and torch's meta normal_ is slow)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return dict(net.items())
