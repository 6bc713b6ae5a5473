"""TRADES: Zhang et al., "Theoretically Principled Trade-off between
Robustness and Accuracy", ICML 2019.

    L = CE(f(x), y) + beta * max_{x' in B(x, eps)} KL(p(x) || p(x'))

The inner max is PGD-Linf on KL(p(x) || p(x')) from x + 0.001 * N(0, I),
with p(x) fixed during the attack (eval mode); in the loss p(x) is not
detached. beta is the paper's 1/lambda (1 and 6 in the BAT paper's tables).

Arguments:
    eps (float): Linf budget. (Default: 8/255)
    step_size (float): attack step. (Default: 2/255)
    steps (int): attack steps. (Default: 10)
    beta (float): weight of the KL term. (Default: 6.0)
    xi (float): std of the start noise. (Default: 0.001)

Shape:
    x: [B, C, H, W] in [0, 1]; y: [B]; loss: scalar.

Example::

    method = build_method("trades", beta=6.0)
    out = method.loss(model, x, y)   # out.parts == {"ce": ..., "kl": ...}
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from battui.attacks import kl_logits, pgd
from battui.methods.base import AttackRecord, Method, MethodOutput, float_parts


class TRADES(Method):
    name = "trades"
    label = "TRADES"

    @classmethod
    def label_head(cls, params: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        beta = float(params.get("beta", cls.defaults()["beta"]))
        return f"TRADES(1/λ={beta:g})", ("beta",)

    def __init__(self, eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                 beta: float = 6.0, xi: float = 0.001) -> None:
        super().__init__(eps, step_size, steps)
        self.beta = float(beta)
        self.xi = float(xi)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> MethodOutput:
        res = pgd(model, x, y, eps=self.eps, step_size=self.step_size,
                  steps=self.steps, objective="kl", start="gaussian", xi=self.xi)
        model.train()
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        kl = self.beta * kl_logits(logits, model(res.x_last))
        return MethodOutput(ce + kl, float_parts(ce=ce, kl=kl), AttackRecord(res.steps_to_flip, res.pred_last))
