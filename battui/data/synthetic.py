"""Generated class-conditional images whose classes are deliberately unequal in difficulty.

For tests and quick experiments: any number of channels and any size, no files.
Class c is a fixed smooth random pattern P_c shown at contrast a_c over grey,
plus pixel noise:

    x = clip(0.5 + a_c * (P_c - 0.5) + sigma * N(0, I), 0, 1)
    a_c falls linearly from 1.0 (class 0, easy) to 0.25 (last class, hard),
    times ``contrast_scale`` (default 1; smaller = harder, e.g. 0.3 gives
    CIFAR-10-like robust accuracy at 32x32, see benchmarks/step_cost.py)

so the low-contrast classes sit close to each other and to the decision
boundaries: a model trained on them shows per-class error gaps like real data.

    pool = make_synthetic_pool(num_classes=10, per_class=60, size=8, channels=3, seed=0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from battui.data.splits import Pool

NOISE = 0.15


def make_synthetic_pool(
    num_classes: int = 10, per_class: int = 60, size: int = 8, channels: int = 3, seed: int = 0,
    contrast_scale: float = 1.0,
) -> Pool:
    """`per_class` uint8 images [C, size, size] per class, labels sorted by class."""
    if not 0.0 < contrast_scale <= 1.0:
        raise ValueError(f"contrast_scale must be in (0, 1], got {contrast_scale}")
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    # Smooth patterns: 4x4 random grids upsampled, so they survive small perturbations and resizes.
    coarse = torch.rand(num_classes, channels, 4, 4, generator=gen)
    patterns = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    contrast = torch.linspace(1.0, 0.25, num_classes) if num_classes > 1 else torch.ones(1)
    contrast = contrast * contrast_scale
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    noise = torch.randn(len(labels), channels, size, size, generator=gen) * NOISE
    images = 0.5 + contrast[labels].view(-1, 1, 1, 1) * (patterns[labels] - 0.5) + noise
    images = images.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return Pool(images, labels, [f"class{c}" for c in range(num_classes)])
