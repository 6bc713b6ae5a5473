"""ResNet-18 for CIFAR-sized images (He, Zhang, Ren, Sun, "Deep Residual Learning for
Image Recognition", CVPR 2016), in the CIFAR form used by Madry et al. 2018, TRADES
and the BAT paper: a 3x3 stride-1 stem with no max-pool, four stages of two basic
blocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2), global average pool, linear.
Parameter names are the standard CIFAR ResNet-18's (`conv1, bn1, layer1..layer4,
linear`, blocks with `shortcut`), so the public code's checkpoints load as they are
(battui/models/keymap.py maps older battui names).

~11.2M parameters for 10 classes. Any input size >= 8 works (adaptive pooling);
any number of input channels and classes. Input float [B, C, H, W] in [0, 1];
output logits [B, num_classes].

    model = ResNet18(num_classes=10, in_channels=3)
    logits = model(torch.rand(2, 3, 32, 32))    # [2, 10]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes = width
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2**i
            stage = nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))
            setattr(self, f"layer{i + 1}", stage)
            in_planes = planes
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.pool(out), 1))
