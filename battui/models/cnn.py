"""Small CNN for 8x8 digits, 28x28 Fashion-MNIST and other small images: three 3x3 convolutions, ~156k parameters.

A LeNet-style network (LeCun et al. 1998) sized for the embedded digits demo.
The default (`depth=3`) pools after the second convolution, so the widest
convolution runs at half resolution: on 8x8 inputs one PGD-10 training step of a
batch of 64 took about 80 ms of one CPU core, against about 130 ms for the older
two-convolution network (`depth=2`, widest convolution at full resolution).
PGD-AT on digits, seed 0, batch 64, lr decay at 75%/90%, test split, PGD-20
(2-core VM shared with other jobs, so CPU times are inflated):
depth=2, lr 0.05, 630 steps: robust error avg 28.4%, worst class 68.2%, 104 s user;
depth=3, lr 0.1, 540 steps: avg 27.8%, worst 68.2%, 59 s user.
At lr 0.05 the 3-conv network sat at chance for ~10 epochs before learning, at lr 0.1 for 6;
with the input normalised (model.normalize, digits-cnn) for 3, and 396 steps reach
avg 27.1%, worst 56.8% (quiet VM, docs/RESULTS.md).

    depth=3 (default):  conv3x3(in, w/2) ReLU  [maxpool 2 if the input is >= 16 px]
                        conv3x3(w/2, w) ReLU  maxpool 2  conv3x3(w, 2w) ReLU
    depth=2:            conv3x3(in, w) ReLU  conv3x3(w, 2w) ReLU  maxpool 2
    then:               adaptive avg-pool 4x4  ->  linear(2w * 16, hidden) ReLU  ->  linear(hidden, num_classes)

w = `width` (32). Works at any input size >= 8 (adaptive pooling). The extra
pool for inputs of 16 px or more (28x28 Fashion-MNIST: the wide convolutions run
at 14x14 and 7x7): one PGD-10 step of a batch of 64 28x28 images took 370 ms of
one busy CPU core with it and 660 ms without; 8x8 digits never take it. Input float
[B, C, H, W] in [0, 1]; output logits [B, num_classes].

    model = SmallCNN(num_classes=10, in_channels=1)
    logits = model(torch.rand(4, 1, 8, 8))     # [4, 10]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32, hidden: int = 128,
                 depth: int = 3) -> None:
        super().__init__()
        self.depth = depth
        if depth == 3:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width // 2, 3, padding=1), nn.ReLU(inplace=True))
            convs = [
                nn.Conv2d(width // 2, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Conv2d(width, 2 * width, 3, padding=1),
                nn.ReLU(inplace=True),
            ]
        elif depth == 2:
            self.stem = nn.Identity()
            convs = [
                nn.Conv2d(in_channels, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, 2 * width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
        else:
            raise ValueError(f"SmallCNN depth must be 2 or 3, got {depth}")
        self.features = nn.Sequential(*convs, nn.AdaptiveAvgPool2d(4))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 16, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.depth == 3 and x.shape[-1] >= 16 and x.shape[-2] >= 16:
            x = F.max_pool2d(x, 2)
        return self.classifier(self.features(x))


def cnn_options_from_state(state) -> dict:
    """SmallCNN's `depth` and `width` as a state dict's keys and shapes say (any wrapper prefix).

    depth 3 has a `stem` convolution of w/2 channels; depth 2 starts with `features.0` of w channels.
    {} when neither key is there (not a SmallCNN: loading then names the missing keys).
    """
    for key, value in state.items():
        if key.endswith("stem.0.weight"):
            return {"depth": 3, "width": 2 * int(value.shape[0])}
    for key, value in state.items():
        if key.endswith("features.0.weight"):
            return {"depth": 2, "width": int(value.shape[0])}
    return {}
