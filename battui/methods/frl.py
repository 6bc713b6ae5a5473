"""FRL (Reweight + Remargin): Xu et al., "To be Robust or to be Fair:
Towards Fairness in Adversarial Training", ICML 2021 (public code
hannxu123/fair_robust, ``frlrmrw.py``; docs/DESIGN.md section 3.2).

Fine-tunes a pre-trained robust model. Between epochs, on a held-out
validation split, per-class clean error e0_i and boundary error e1_i
(clean right and adversarial wrong, PGD-``val_steps`` CE, uniform start) give

    g0_i = e0_i - mean(e0) - tau,        g1_i = e1_i - mean(e1) - tau
    lambda0 <- N(lambda0 + rate * g0),   lambda1 <- N(lambda1 + 2 * rate * g1)
    lambda2 <- lambda2 + rate2 * g1
    N(l) = clamp(l, min=0), rescaled to sum lim if its sum exceeds lim

and the training loss of the next epoch is

    w_i = 1/K + (K-1)/K * lambda_i - 1/K * sum_{j != i} lambda_j   (w0 from lambda0, w1 from lambda1)
    eps_i = eps * clamp(exp(2 * lambda2_i), eps_scale_min, eps_scale_max)
    L = sum_n [ w0_{y_n} CE(f(x_n), y_n) + beta * w1_{y_n} KL(p(x_n) || p(x'_n)) ]
        / sum_n (w0_{y_n} + w1_{y_n})

with x' the TRADES-KL attack under per-sample eps_{y_n} and step max_i(eps_i) / 4.
The lambdas start at 0 (uniform weights, eps unchanged). To follow the
reference exactly (it updates *before* each epoch's training), ``start_training``
runs the same update once before the first epoch.

Arguments:
    eps (float): base Linf budget. (Default: 8/255)
    step_size (float): step of the validation attack. (Default: 2/255)
    steps (int): training attack steps. (Default: 10)
    beta (float): weight of the KL term. (Default: 1.5)
    tau (float): fairness tolerance (0.05 or 0.07 in the paper). (Default: 0.05)
    rate (float): lambda0/lambda1 step. (Default: 0.05)
    rate2 (float): lambda2 (remargin) step. (Default: 0.2)
    lim (float): bound on sum(lambda0) and sum(lambda1). (Default: 0.5)
    eps_scale_min, eps_scale_max (float): clamp of exp(2 lambda2). (Default: 0.98, 2.5)
    val_steps (int): steps of the validation PGD. (Default: 20)
    xi (float): std of the training attack's start noise. (Default: 0.001)
    num_classes (int): K. (Default: 10)

Shape:
    x: [B, C, H, W] in [0, 1]; y: [B]; loss: scalar. State: lambda0/1/2 [K].

Example::

    method = build_method("frl", num_classes=10, tau=0.05)
    method.start_training(model, val_batches)   # before epoch 1
    method.end_epoch(model, val_batches)        # after each epoch
    out = method.loss(model, x, y)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from battui.attacks import PGDResult, eval_mode, kl_logits, pgd
from battui.methods.base import AttackRecord, Method, MethodOutput, float_parts
from battui.methods.classwise import validation_sums


def normalize_lambda(lam: Tensor, lim: float) -> Tensor:
    """Clamp at 0 and rescale so the sum is at most ``lim``."""
    lam = lam.clamp(min=0)
    total = lam.sum()
    return lam * (lim / total) if total > lim else lam


def class_weights(lam: Tensor) -> Tensor:
    """w_i = 1/K + (K-1)/K lambda_i - 1/K sum_{j != i} lambda_j = 1/K + lambda_i - sum(lambda)/K."""
    k = lam.numel()
    return 1.0 / k + lam - lam.sum() / k


class FRL(Method):
    name = "frl"
    label = "FRL"
    needs_validation = True
    fine_tunes_from = "pgd-at"
    fine_tune_epochs = 0.4  # of the table's train.epochs (at least 1)

    @classmethod
    def label_head(cls, params: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        tau = float(params.get("tau", cls.defaults()["tau"]))
        return f"FRL(Reweight+Remargin, {tau:g})", ("tau",)

    @classmethod
    def fine_tune_schedule(cls, train: Any) -> None:
        """The public code's fine-tuning: a fraction of the epochs at lr/100, weight decay 5e-4, constant lr."""
        train.epochs = max(1, round(train.epochs * cls.fine_tune_epochs))
        train.lr = train.lr / 100.0
        train.weight_decay = 5e-4
        train.schedule = "constant"

    def __init__(self, eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                 beta: float = 1.5, tau: float = 0.05, rate: float = 0.05, rate2: float = 0.2,
                 lim: float = 0.5, eps_scale_min: float = 0.98, eps_scale_max: float = 2.5,
                 val_steps: int = 20, xi: float = 0.001, num_classes: int = 10) -> None:
        super().__init__(eps, step_size, steps)
        self.beta, self.tau, self.rate, self.rate2 = float(beta), float(tau), float(rate), float(rate2)
        self.lim = float(lim)
        if eps_scale_min > eps_scale_max:
            raise ValueError("eps_scale_min must not exceed eps_scale_max")
        self.eps_scale_min, self.eps_scale_max = float(eps_scale_min), float(eps_scale_max)
        self.val_steps, self.xi = int(val_steps), float(xi)
        self.num_classes = int(num_classes)
        zeros = torch.zeros(self.num_classes, dtype=torch.float64)
        self.lambda0, self.lambda1, self.lambda2 = zeros.clone(), zeros.clone(), zeros.clone()

    # -- per-class state -> weights and budgets
    @property
    def weights(self) -> tuple[Tensor, Tensor]:
        """(w0, w1): per-class weights of the CE and KL terms, [K] each."""
        return class_weights(self.lambda0), class_weights(self.lambda1)

    @property
    def eps_per_class(self) -> Tensor:
        """Per-class attack budget [K]."""
        scale = torch.exp(2 * self.lambda2).clamp(self.eps_scale_min, self.eps_scale_max)
        return self.eps * scale

    def update(self, clean_err: Tensor, bndy_err: Tensor) -> dict[str, float]:
        """One multiplier update from per-class validation errors (fractions, [K])."""
        e0 = clean_err.to(torch.float64).cpu()
        e1 = bndy_err.to(torch.float64).cpu()
        g0 = e0 - e0.mean() - self.tau
        g1 = e1 - e1.mean() - self.tau
        self.lambda0 = normalize_lambda(self.lambda0 + self.rate * g0, self.lim)
        self.lambda1 = normalize_lambda(self.lambda1 + 2 * self.rate * g1, self.lim)
        self.lambda2 = self.lambda2 + self.rate2 * g1
        w0, w1 = self.weights
        eps_c = self.eps_per_class
        return {
            "val_clean_error": float(e0.mean()), "val_boundary_error": float(e1.mean()),
            "val_worst_clean_error": float(e0.max()), "val_worst_boundary_error": float(e1.max()),
            "w0_max": float(w0.max()), "w1_max": float(w1.max()),
            "eps_max": float(eps_c.max()), "eps_min": float(eps_c.min()),
        }

    def start_training(self, model: nn.Module, val_batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        self.end_epoch(model, val_batches)

    def end_epoch(self, model: nn.Module, val_batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        def measure(x: Tensor, y: Tensor, res: PGDResult) -> tuple[Tensor, Tensor]:
            with eval_mode(model), torch.no_grad():
                ok = model(x).argmax(1) == y
            return ~ok, ok & (res.pred_last != y)  # clean wrong; boundary: clean right, adversarial wrong

        sums = validation_sums(model, val_batches, self.num_classes, self.name, ("clean_wrong", "boundary_wrong"),
                               measure, eps=self.eps, step_size=self.step_size, steps=self.val_steps,
                               objective="ce", start="uniform")
        seen = sums["seen"].clamp(min=1)
        info = self.update(sums["clean_wrong"] / seen, sums["boundary_wrong"] / seen)
        return {**info, "val_samples": float(sums["seen"].sum())}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> MethodOutput:
        lams = (self.lambda0, self.lambda1, self.lambda2)
        eps_c = self.on_device("eps", lams, x, lambda: self.eps_per_class)
        step = self.on_device("step", lams, x, lambda: self.eps_per_class.max() / 4)
        w0, w1 = (self.on_device(f"w{i}", lams, x, lambda i=i: self.weights[i])[y] for i in (0, 1))
        res = pgd(model, x, y, eps=eps_c[y], step_size=step,
                  steps=self.steps, objective="kl", start="gaussian", xi=self.xi)
        model.train()
        logits = model(x)
        ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        kl = kl_logits(logits, model(res.x_last), reduction="none")
        norm = (w0 + w1).sum()
        ce_term = (w0 * ce).sum() / norm
        kl_term = self.beta * (w1 * kl).sum() / norm
        return MethodOutput(ce_term + kl_term, float_parts(ce=ce_term, kl=kl_term),
                            AttackRecord(res.steps_to_flip, res.pred_last))

    def state_dict(self) -> dict[str, Any]:
        return {"lambda0": self.lambda0.clone(), "lambda1": self.lambda1.clone(),
                "lambda2": self.lambda2.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        t = self.checked_tensors(state, dict.fromkeys(("lambda0", "lambda1", "lambda2"), (self.num_classes,)))
        self.lambda0, self.lambda1, self.lambda2 = t["lambda0"], t["lambda1"], t["lambda2"]
