"""GAIRAT: Zhang et al., "Geometry-aware Instance-reweighted Adversarial
Training", ICLR 2021 (Madry variant, Tanh weights).

    L = (1/B) sum_i w_i * CE(f(x~_i), y_i),                               part ce_adv
    w_i = (tanh(lam + 5 * (h - kappa_i) / h) + 1) / 2,  h = floor(K / 2),  normalised to mean 1

(for even K, 5 (h - kappa_i) / h = 5 * (1 - 2 * kappa_i / K)), where x~ is PGD-K
(uniform start, CE; K >= 2) and kappa_i counts the iterates x^0..x^(K-1) that the
model classifies correctly (the reference's Kappa; ``PGDResult.correct_steps``).
Before the warm-up ends the loss is the plain mean CE (as in the reference,
weighting starts at (epoch + 1) >= warmup * total_epochs, epochs from 0).

Arguments:
    eps (float): Linf budget. (Default: 8/255)
    step_size (float): attack step. (Default: 2/255)
    steps (int): attack steps K. (Default: 10)
    lam (float): the weight function's lambda. (Default: -1.0)
    warmup (float): fraction of training before reweighting starts. (Default: 0.5)

Shape:
    x: [B, C, H, W] in [0, 1]; y: [B]; loss: scalar.

Example::

    method = build_method("gairat")
    method.start_epoch(epoch, total_epochs)
    out = method.loss(model, x, y)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from battui.attacks import pgd
from battui.methods.base import AttackRecord, Method, MethodOutput, float_parts


def gair_weights(kappa: Tensor, steps: int, lam: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """GAIRAT's Tanh weights for kappa [B], normalised to mean 1."""
    half = steps // 2
    w = (torch.tanh(lam + (half - kappa.to(dtype)) * 5.0 / half) + 1.0) / 2.0
    return w * w.numel() / w.sum()


class GAIRAT(Method):
    name = "gairat"
    label = "GAIRAT"

    def __init__(self, eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                 lam: float = -1.0, warmup: float = 0.5) -> None:
        super().__init__(eps, step_size, steps)
        if self.steps < 2:
            raise ValueError("gairat: steps must be >= 2 (kappa is scaled by steps // 2)")
        self.lam = float(lam)
        self.warmup = float(warmup)
        self.reweight = False

    def start_epoch(self, epoch: int, total_epochs: int) -> None:
        self.reweight = (epoch + 1) >= self.warmup * total_epochs

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> MethodOutput:
        res = pgd(model, x, y, eps=self.eps, step_size=self.step_size,
                  steps=self.steps, objective="ce", start="uniform")
        model.train()
        ce = F.cross_entropy(model(res.x_last), y, reduction="none")
        if self.reweight:
            loss = (ce * gair_weights(res.correct_steps, self.steps, self.lam, ce.dtype)).mean()
        else:
            loss = ce.mean()
        return MethodOutput(loss, float_parts(ce_adv=loss), AttackRecord(res.steps_to_flip, res.pred_last))
