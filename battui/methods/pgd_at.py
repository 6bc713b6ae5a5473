"""PGD-AT: Madry et al., "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018.

    min_theta E [ max_{||delta||_inf <= eps} CE(f(x + delta), y) ]

The inner max is PGD-Linf with a uniform random start; the loss is the mean
cross-entropy on the adversarial examples (part ``ce_adv``).

Arguments:
    eps (float): Linf budget. (Default: 8/255)
    step_size (float): attack step. (Default: 2/255)
    steps (int): attack steps. (Default: 10)

Shape:
    x: [B, C, H, W] in [0, 1]; y: [B] class indices; loss: scalar.

Example::

    method = build_method("pgd-at", eps=8/255, step_size=2/255, steps=10)
    out = method.loss(model, x, y)
    out.loss.backward(); optimizer.step()
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from battui.attacks import pgd
from battui.methods.base import AttackRecord, Method, MethodOutput, float_parts


class PGDAT(Method):
    name = "pgd-at"
    label = "PGD-AT"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> MethodOutput:
        res = pgd(model, x, y, eps=self.eps, step_size=self.step_size,
                  steps=self.steps, objective="ce", start="uniform")
        model.train()
        loss = F.cross_entropy(model(res.x_last), y)
        return MethodOutput(loss, float_parts(ce_adv=loss), AttackRecord(res.steps_to_flip, res.pred_last))
