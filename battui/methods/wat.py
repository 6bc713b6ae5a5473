"""WAT: Li and Liu, "WAT: Improve the Worst-class Robustness in Adversarial
Training", AAAI 2023 (public code of the paper, ``--alg wat``).

TRADES as a game against the worst class: the experts are the K classes plus
one for the average loss, weighted by Hedge on their validation losses. After
epoch t, on the validation split (TRADES attack, eval mode), per class k

    c_k^t = mean over class k of [ CE(f(x), y) + beta * KL(p(x) || p(x')) ],   c_{K}^t = mean over all
    w = K * softmax(eta * sum_{s <= t} c^s)            (K + 1 entries, summing to K)

and the training loss of the next epoch is

    L = (1/B) sum_n w_{y_n} [ CE(f(x_n), y_n) + beta KL(p(x_n) || p(x'_n)) ]
        + w_K * (1/B) sum_n [ CE(f(x_n), y_n) + beta KL(p(x_n) || p(x'_n)) ]

with x' the TRADES attack (KL, start x + xi * N(0, I)). Before the first
validation all weights are K/(K+1) (Hedge's uniform start); ``end_epoch`` runs after
training epochs only (the hook before training is ``start_training``, which WAT does not use).

Arguments:
    eps (float): Linf budget. (Default: 8/255)
    step_size (float): attack step, training and validation. (Default: 2/255)
    steps (int): attack steps, training and validation. (Default: 10)
    beta (float): TRADES beta. (Default: 6.0)
    eta (float): Hedge learning rate. (Default: 0.1)
    xi (float): std of the start noise. (Default: 0.001)
    num_classes (int): K. (Default: 10)

Shape:
    x: [B, C, H, W] in [0, 1]; y: [B]; loss: scalar. State: cumulative costs [K + 1].

Example::

    method = build_method("wat", num_classes=10)
    out = method.loss(model, x, y)              # per batch
    method.end_epoch(model, val_batches)        # Hedge step
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from battui.attacks import PGDResult, eval_mode, kl_logits
from battui.methods.base import AttackRecord, Method, MethodOutput, float_parts
from battui.methods.classwise import trades_terms, validation_sums


def hedge_weights(cum_cost: Tensor, eta: float, num_classes: int) -> Tensor:
    """w = K * softmax(eta * cumulative cost) over the K + 1 experts."""
    return num_classes * torch.softmax(eta * cum_cost.to(torch.float64), dim=0)


class WAT(Method):
    name = "wat"
    label = "WAT"
    needs_validation = True

    def __init__(self, eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                 beta: float = 6.0, eta: float = 0.1, xi: float = 0.001, num_classes: int = 10) -> None:
        super().__init__(eps, step_size, steps)
        self.beta, self.eta, self.xi = float(beta), float(eta), float(xi)
        self.num_classes = int(num_classes)
        self.cum_cost = torch.zeros(self.num_classes + 1, dtype=torch.float64)
        self.rounds = 0

    @property
    def weights(self) -> Tensor:
        """[K + 1]: one weight per class, then the average expert's."""
        return hedge_weights(self.cum_cost, self.eta, self.num_classes)

    def update(self, class_cost: Tensor, mean_cost: float) -> dict[str, float]:
        """One Hedge step from per-class validation losses [K] and the overall mean."""
        c = torch.cat([class_cost.detach().cpu().to(torch.float64),
                       torch.tensor([float(mean_cost)], dtype=torch.float64)])
        self.cum_cost = self.cum_cost + c
        self.rounds += 1
        w = self.weights
        return {"val_loss": float(mean_cost), "val_worst_class_loss": float(c[:-1].max()),
                "w_max": float(w[:-1].max()), "w_min": float(w[:-1].min()), "w_avg_expert": float(w[-1])}

    def end_epoch(self, model: nn.Module, val_batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        def measure(x: Tensor, y: Tensor, res: PGDResult) -> tuple[Tensor, Tensor]:
            with eval_mode(model), torch.no_grad():
                logits, logits_adv = model(x), model(res.x_last)
                cost = (torch.nn.functional.cross_entropy(logits, y, reduction="none")
                        + self.beta * kl_logits(logits, logits_adv, reduction="none"))
            return cost, logits_adv.argmax(1) == y

        sums = validation_sums(model, val_batches, self.num_classes, self.name, ("cost", "hits"), measure,
                               eps=self.eps, step_size=self.step_size, steps=self.steps,
                               objective="kl", start="gaussian", xi=self.xi)
        seen, hits = sums["seen"], sums["hits"]
        # a class absent from the split costs its mean-so-far (0 on the first round): no pull either way
        class_cost = torch.where(seen > 0, sums["cost"] / seen.clamp(min=1),
                                 self.cum_cost[:-1] / max(self.rounds, 1))
        out = self.update(class_cost, float(sums["cost"].sum() / seen.sum()))
        acc = hits[seen > 0] / seen[seen > 0]
        out.update(val_robust_acc=float(hits.sum() / seen.sum()), val_worst_robust_acc=float(acc.min()))
        return out

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> MethodOutput:
        res, _, ce, kl = trades_terms(model, x, y, eps=self.eps, step_size=self.step_size,
                                      steps=self.steps, xi=self.xi)
        w = self.on_device("w", (self.cum_cost,), ce, lambda: self.weights)
        per_sample = ce + self.beta * kl
        class_term = (w[:-1][y] * per_sample).mean()
        avg_term = w[-1] * per_sample.mean()
        return MethodOutput(class_term + avg_term, float_parts(worst_class=class_term, average=avg_term),
                            AttackRecord(res.steps_to_flip, res.pred_last))

    def state_dict(self) -> dict[str, Any]:
        return {"cum_cost": self.cum_cost.clone(), "rounds": self.rounds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cum_cost = self.checked_tensors(state, {"cum_cost": (self.num_classes + 1,)})["cum_cost"]
        self.rounds = int(state["rounds"])
