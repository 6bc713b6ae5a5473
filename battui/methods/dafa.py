"""DAFA: Lee, Lee, Jang, Park, Bae and Yoon, "DAFA: Distance-Aware Fair
Adversarial Training", ICLR 2024 (public code rucy74/DAFA, ``--loss trades
--rob_fairness_algorithm dafa``).

TRADES for a warm-up; then, once, class weights W and margins from the
inter-class similarity of adversarial predictions over the last warm-up epoch:

    p_i(j) = mean over the training samples of class i of softmax(f(x'))_j
             (train-mode prediction on the training adversarial example x')
    W_i = 1 + lambda * sum_{j != i} s_ij * p_i(j) * p_j(j),
          s_ij = +1 if p_i(i) < p_j(j) (i is the harder of the two), else -1
    eps_i = W_i * eps,   step_i = W_i * step_size
    L = (1/B) sum_n [ W_{y_n} CE(f(x_n), y_n) + beta KL(p(x_n) || p(x'_n)) ]      parts ce, kl

with x' the TRADES attack (KL, start x + xi * N(0, I)) in B(x_n, eps_{y_n}) with
step step_{y_n}. A hard class takes weight and margin from the similar classes
it is confused with, an easy class gives them up; far-apart classes barely
interact. The weights are computed at the start of the first epoch >= round(warmup
* total_epochs) that follows a full epoch of statistics (70 of 110 epochs in the
reference) and then kept; until then W = 1 and ``loss`` accumulates each epoch's
p_i(j) (summed over DDP ranks when read). For lambda <= 1, W_i >= 1 - lambda >= 0;
W is clamped at 0 for larger lambda so that no margin is negative.

Arguments:
    eps (float): base Linf budget. (Default: 8/255)
    step_size (float): base attack step. (Default: 2/255)
    steps (int): attack steps. (Default: 10)
    beta (float): TRADES beta. (Default: 6.0)
    lam (float): DAFA's lambda. (Default: 1.0)
    warmup (float): fraction of training before the weights are set. (Default: 70/110)
    xi (float): std of the start noise. (Default: 0.001)
    num_classes (int): K. (Default: 10)

Shape:
    x: [B, C, H, W] in [0, 1]; y: [B]; loss: scalar. State: W [K], similarity sums [K, K].

Example::

    method = build_method("dafa", num_classes=10)
    method.start_epoch(epoch, total_epochs)
    out = method.loss(model, x, y)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from battui.attacks import sum_over_ranks
from battui.methods.base import AttackRecord, Method, MethodOutput, float_parts
from battui.methods.classwise import add_batch, resumed_sums, saved_sums, trades_terms


def dafa_weights(similarity: Tensor, lam: float) -> Tensor:
    """W_i = 1 + lam * sum_{j != i} s_ij p_i(j) p_j(j) for a similarity matrix [K, K]
    (row i = mean adversarial softmax of class i)."""
    s = similarity.to(torch.float64)
    diag = s.diagonal()
    sign = torch.where(diag[:, None] < diag[None, :], 1.0, -1.0).to(torch.float64)
    sign.fill_diagonal_(0.0)
    return 1.0 + lam * (sign * s * diag[None, :]).sum(dim=1)


class DAFA(Method):
    name = "dafa"
    label = "DAFA"
    param_ranges = {**Method.param_ranges, "lam": (0.0, None, False)}

    def __init__(self, eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                 beta: float = 6.0, lam: float = 1.0, warmup: float = 70 / 110, xi: float = 0.001,
                 num_classes: int = 10) -> None:
        super().__init__(eps, step_size, steps)
        self.beta, self.lam, self.warmup, self.xi = float(beta), float(lam), float(warmup), float(xi)
        self.num_classes = k = int(num_classes)
        self.weights = torch.ones(k, dtype=torch.float64)
        self.applied = False  # weights set (once, after the warm-up)
        self.epoch = -1       # the epoch being accumulated
        self._prob_sums = torch.zeros(k, k, dtype=torch.float64)
        self._seen = torch.zeros(k, dtype=torch.float64)

    @property
    def class_eps(self) -> Tensor:
        return self.weights.clamp(min=0) * self.eps

    @property
    def class_step(self) -> Tensor:
        return self.weights.clamp(min=0) * self.step_size

    def observe(self, y: Tensor, adv_probs: Tensor) -> None:
        """Add one batch's adversarial softmax [B, K] to this epoch's per-class sums."""
        self._prob_sums, self._seen = add_batch(self._prob_sums, self._seen, y, adv_probs, self.num_classes)

    def similarity(self) -> Tensor:
        """p_i(j) from the counts so far (summed over ranks); a class with no samples gets a zero row."""
        sums, seen = (sum_over_ranks(t).to("cpu", torch.float64) for t in (self._prob_sums, self._seen))
        return sums / seen.clamp(min=1)[:, None]

    def class_weights(self, similarity: Tensor) -> Tensor:
        """W from the similarity matrix (TRIX overrides it with its own formula)."""
        return dafa_weights(similarity, self.lam)

    def attack_options(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Extra `pgd` arguments for this batch (none; TRIX adds its targeted samples)."""
        return {}

    def start_epoch(self, epoch: int, total_epochs: int) -> None:
        if epoch == self.epoch:
            return  # resumed inside this epoch: keep its partial sums
        if (not self.applied and epoch >= round(self.warmup * total_epochs)
                and float(self._seen.sum()) > 0):
            self.weights = self.class_weights(self.similarity())
            self.applied = True
        k = self.num_classes
        self._prob_sums = torch.zeros(k, k, dtype=torch.float64)
        self._seen = torch.zeros(k, dtype=torch.float64)
        self.epoch = epoch

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> MethodOutput:
        src = (self.weights,)
        eps_c = self.on_device("eps", src, x, lambda: self.class_eps)
        step_c = self.on_device("step", src, x, lambda: self.class_step)
        res, logits_adv, ce, kl = trades_terms(model, x, y, eps=eps_c[y], step_size=step_c[y],
                                               steps=self.steps, xi=self.xi, **self.attack_options(model, x, y))
        w = self.on_device("w", src, ce, lambda: self.weights)[y]
        ce_term = (w * ce).mean()
        kl_term = self.beta * kl.mean()
        if not self.applied:
            self.observe(y, F.softmax(logits_adv.detach().float(), dim=1))
        return MethodOutput(ce_term + kl_term, float_parts(ce=ce_term, kl=kl_term),
                            AttackRecord(res.steps_to_flip, res.pred_last))

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.clone(), "applied": self.applied, "epoch": self.epoch,
                "prob_sums": saved_sums(self._prob_sums), "seen": saved_sums(self._seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        k = self.num_classes
        loaded = self.checked_tensors(state, {"weights": (k,), "prob_sums": (k, k), "seen": (k,)})
        self.weights = loaded["weights"]
        self._prob_sums, self._seen = resumed_sums(loaded["prob_sums"]), resumed_sums(loaded["seen"])
        self.applied, self.epoch = bool(state["applied"]), int(state["epoch"])
