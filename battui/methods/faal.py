"""FAAL: Zhang, Zhang, Ruan, Wang and Huang, "Towards Fairness-Aware Adversarial Learning",
CVPR 2024 (arXiv 2402.17729; public code TrustAI/FAAL @b20ee9d, ``ft_prn.py``, ``FAAL.py``).

Fine-tunes an already robust model (PGD-AT by default, `loss="trades"` for a TRADES one)
for 2 epochs with per-batch, distributionally robust class weights:

    x' = PGD-CE (uniform start; `loss="trades"`: the TRADES KL attack, start x + xi N(0, I)), eval mode
    z = f(x') in train mode;  m_n = max_{j != y_n} softmax(z_n)_j - softmax(z_n)_{y_n}
    L_k = mean of m_n over the batch's class-k samples (-1 for a class absent from the batch)
    p = argmax_{p in simplex, KL(U || p) <= r} sum_k a_k p_k,   a_k = n_k L_k  (n_k: class-k samples)
    L = (K / B) sum_n p_{y_n} l_n,   l_n = CE(z_n, y_n)                                part ce
        (`loss="trades"`: l_n = CE(f(x_n), y_n) + beta KL(p(x_n) || p(x'_n)),      parts ce, kl)

Uniform p gives the plain mean loss. The objective is count-weighted because the code sums
p_{y_n} L_{y_n} over the batch's samples, so equal margins do not give uniform weights.
The code solves for p with cvxpy (ECOS, then MOSEK, then SCS); battui uses the closed
form of the same optimum (`dro_weights`): from the Lagrangian, p_k = c / (nu - a_k) with
nu > max_k a_k, normalised, and nu found by bisection (in log(nu - max a), on the device,
no host sync) so that the KL constraint is tight, (1/K) sum_k log((1/K) / p_k) = r. All
a_k equal gives the uniform weights. The code also runs f(x) in train mode for the AT
loss, unused, so BatchNorm's running statistics see the clean batch; battui does the same
(without grad). The code selects its checkpoint on the test set; battui's `best.pt` uses
the validation split, and `battui table` scores the final weights.

FAAL needs a start (`train.init_from`); `battui table` trains a `pgd-at` (or `trades`)
run of the same seed first. Its own schedule (`train_defaults`, over the preset's; `--set
train.*` wins in `battui train`, the table always uses it): 2 epochs, SGD lr 0.01 (x0.1
for the second epoch), momentum 0.9 (the preset's), weight decay 5e-4.

Arguments:
    eps (float): Linf budget. (Default: 8/255)
    step_size (float): attack step. (Default: 2/255)
    steps (int): attack steps. (Default: 10)
    r (float): radius of the KL ball around the uniform weights (the code's `--scale`). (Default: 0.5)
    loss (str): "at" (CE on x') or "trades". (Default: "at")
    beta (float): the TRADES variant's KL weight. (Default: 6.0)
    xi (float): std of the TRADES attack's start noise. (Default: 0.001)
    num_classes (int): K. (Default: 10)

Shape:
    x: [B, C, H, W] in [0, 1]; y: [B]; loss: scalar. No state (the weights are per batch).

Example::

    method = build_method("faal", num_classes=10)
    out = method.loss(model, x, y)     # model: a robust network to fine-tune
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from battui.attacks import class_sums, kl_logits, pgd
from battui.methods.base import AttackRecord, Method, MethodOutput, float_parts
from battui.methods.classwise import accumulator_dtype

LOSSES = ("at", "trades")
BISECTIONS = 64  # halvings of log(nu - max a) over [-40, 40]: far below float64's resolution


def dro_weights(a: Tensor, r: float) -> Tensor:
    """argmax_{p in simplex, KL(U || p) <= r} sum_k a_k p_k for a [K] (closed form, see the module).

    p_k = 1 / (t + d_k), normalised, d_k = (max a - a_k) / spread, spread = max a - min a, with
    t > 0 found by bisection on log t so that KL(U || p) = r (KL falls as t grows). Runs on a's
    device in its dtype, without a host sync; all a_k equal gives the uniform weights."""
    k = a.numel()
    spread = a.max() - a.min()
    d = (a.max() - a) / torch.where(spread > 0, spread, torch.ones_like(spread))

    def weights(log_t: Tensor) -> Tensor:
        q = 1.0 / (log_t.exp() + d)
        return q / q.sum()

    def kl_uniform(p: Tensor) -> Tensor:
        return (-math.log(k) - p.log()).mean()

    lo, hi = torch.full_like(spread, -40.0), torch.full_like(spread, 40.0)  # KL(lo) > r > KL(hi) for any sane r
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        too_far = kl_uniform(weights(mid)) > r  # concentrated beyond the ball: move nu out
        lo, hi = torch.where(too_far, mid, lo), torch.where(too_far, hi, mid)
    p = weights(hi)  # the feasible end
    return torch.where(spread > 0, p, torch.full_like(p, 1.0 / k))


class FAAL(Method):
    name = "faal"
    label = "FAAL"
    fine_tunes_from = "pgd-at"
    needs_start = True
    train_defaults = {"epochs": 2, "lr": 0.01, "weight_decay": 5e-4, "schedule": "multistep",
                      "milestones": [0.5], "gamma": 0.1}

    @classmethod
    def start_method(cls, params: dict[str, Any]) -> str:
        return "trades" if params.get("loss", "at") == "trades" else cls.fine_tunes_from

    def __init__(self, eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                 r: float = 0.5, loss: str = "at", beta: float = 6.0, xi: float = 0.001,
                 num_classes: int = 10) -> None:
        super().__init__(eps, step_size, steps)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if not r > 0:
            raise ValueError(f"r (the KL radius) must be > 0, got {r}")
        self.r, self.loss_kind, self.beta, self.xi = float(r), loss, float(beta), float(xi)
        self.num_classes = int(num_classes)

    def class_weights(self, logits_adv: Tensor, y: Tensor) -> Tensor:
        """The batch's DRO class weights p [K] from the adversarial logits (detached)."""
        k = self.num_classes
        prob = F.softmax(logits_adv.detach().float(), dim=1)
        true = prob.gather(1, y[:, None]).squeeze(1)
        other = prob.scatter(1, y[:, None], -1.0).amax(dim=1)
        dtype = accumulator_dtype(y.device)
        n = class_sums(y, k, dtype=dtype)
        margin = torch.where(n > 0, class_sums(y, k, other - true, dtype) / n.clamp(min=1), -1.0)
        return dro_weights(n * margin, self.r)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> MethodOutput:
        trades = self.loss_kind == "trades"
        res = pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                  objective="kl" if trades else "ce", start="gaussian" if trades else "uniform", xi=self.xi)
        model.train()
        logits_adv = model(res.x_last)
        p = self.class_weights(logits_adv, y)
        w = p.to(logits_adv.dtype)[y] * (self.num_classes / y.shape[0])
        if trades:
            logits = model(x)
            ce = (w * F.cross_entropy(logits, y, reduction="none")).sum()
            kl = self.beta * (w * kl_logits(logits, logits_adv, reduction="none")).sum()
            return MethodOutput(ce + kl, float_parts(ce=ce, kl=kl), AttackRecord(res.steps_to_flip, res.pred_last))
        with torch.no_grad():
            model(x)  # as the code: BatchNorm's running statistics also see the clean batch
        ce = (w * F.cross_entropy(logits_adv, y, reduction="none")).sum()
        return MethodOutput(ce, float_parts(ce=ce), AttackRecord(res.steps_to_flip, res.pred_last))
