"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016),
as used by TRADES (Zhang et al. 2019) and the BAT paper: WRN-28-10 (~36.5M
parameters) and WRN-34-10 (~46.2M). Three stages of n = (d - 4) / 6 pre-activation
basic blocks with 16k, 32k, 64k channels (strides 1, 2, 2) after a 3x3 stem of
16 channels, then BN-ReLU, global average pool, linear. Dropout off by default.

Any input size >= 8, any channels and classes. Input float [B, C, H, W] in
[0, 1]; output logits [B, num_classes].

    model = WideResNet(depth=34, widen_factor=10, num_classes=10)
    logits = model(torch.rand(2, 3, 32, 32))    # [2, 10]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from battui.models.preact_resnet import PreActBlock


class WideResNet(nn.Module):
    def __init__(
        self, depth: int = 34, widen_factor: int = 10, num_classes: int = 10, in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 (28, 34, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        stages, in_planes = [], widths[0]
        for planes, stride in zip(widths[1:], (1, 2, 2), strict=True):
            blocks = [PreActBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1, dropout)
                      for i in range(n)]
            stages.append(nn.Sequential(*blocks))
            in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.linear(torch.flatten(self.pool(out), 1))
