"""FAT: Zhang et al., "Attacks Which Do Not Kill Training Make Adversarial
Learning Stronger", ICML 2020 (Friendly Adversarial Training, Madry variant).

    min_theta E [ CE(f(x~), y) ],  x~ = early-stopped PGD (PGD-K-tau); part ce_adv:

PGD-Linf from a uniform start stops for a sample once it has been seen
misclassified tau + 1 times (the reference's ``control`` counter), i.e. tau
steps after its first misclassification. tau follows the reference's dynamic
schedule: 0 up to 50/120 of training, 1 up to 90/120, then 2; in general, with
done = (epoch + 1) / total_epochs (epochs from 0), tau = tau_schedule[#{m in
tau_milestones : done > m}].

Arguments:
    eps (float): Linf budget. (Default: 8/255)
    step_size (float): attack step. (Default: 2/255)
    steps (int): maximum attack steps K. (Default: 10)
    tau_schedule (tuple[int, ...]): tau per phase. (Default: (0, 1, 2))
    tau_milestones (tuple[float, ...]): fractions of training where the next
        phase starts, len = len(tau_schedule) - 1. (Default: (50/120, 90/120))
        A fixed tau: tau_schedule=(t,), tau_milestones=().
    omega (float): std of the gaussian noise added after each step, as the
        reference does. (Default: 0.001)

Shape:
    x: [B, C, H, W] in [0, 1]; y: [B]; loss: scalar.

Example::

    method = build_method("fat")
    method.start_epoch(epoch, total_epochs)   # sets method.tau
    out = method.loss(model, x, y)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from battui.attacks import pgd
from battui.methods.base import AttackRecord, Method, MethodOutput, float_parts


class FAT(Method):
    name = "fat"
    label = "FAT"

    def __init__(self, eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                 tau_schedule: tuple = (0, 1, 2), tau_milestones: tuple = (50 / 120, 90 / 120),
                 omega: float = 0.001) -> None:
        super().__init__(eps, step_size, steps)
        self.tau_schedule = tuple(int(t) for t in tau_schedule)
        self.tau_milestones = tuple(float(m) for m in tau_milestones)
        if len(self.tau_schedule) != len(self.tau_milestones) + 1 or min(self.tau_schedule) < 0:
            raise ValueError("fat: need len(tau_schedule) == len(tau_milestones) + 1 and tau >= 0")
        self.omega = float(omega)
        self.tau = self.tau_schedule[0]

    def start_epoch(self, epoch: int, total_epochs: int) -> None:
        # The reference counts epochs from 1 and switches after epoch 50 and 90 of 120.
        done = (epoch + 1) / max(total_epochs, 1)
        self.tau = self.tau_schedule[sum(done > m for m in self.tau_milestones)]

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> MethodOutput:
        res = pgd(model, x, y, eps=self.eps, step_size=self.step_size,
                  steps=self.steps, objective="ce", start="uniform",
                  stop_after_flip=self.tau, omega=self.omega)
        model.train()
        loss = F.cross_entropy(model(res.x_last), y)
        return MethodOutput(loss, float_parts(ce_adv=loss), AttackRecord(res.steps_to_flip, res.pred_last))
