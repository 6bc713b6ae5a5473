"""CFA: Wei, Wang, Guo and Wang, "CFA: Class-wise Calibrated Fair Adversarial
Training", CVPR 2023 (public code PKU-ML/CFA, ``train.py --mode TRADES --ccm --ccr``
with FAWA).

TRADES whose budget and regularisation are calibrated per class from A_k, the
*training* robust accuracy of class k in the previous epoch (train-mode
prediction on that epoch's training adversarial examples):

    eps_k  = (lambda1 + A_k) * eps                                    (CCM)
    beta_k = (lambda2 + A_k) * beta                                   (CCR)
    L = (1/B) sum_n [ 1/(1+beta_k) CE(f(x_n), y_n) + beta_k/(1+beta_k) KL(p(x_n) || p(x'_n)) ],  k = y_n

with x' the TRADES attack (KL, start x + xi * N(0, I), step ``step_size``) in
B(x_n, eps_{y_n}). Until the warm-up ends (epoch < round(warmup * total_epochs);
10 of 200 epochs in the reference) eps_k = eps and beta_k = beta.

FAWA (fairness-aware weight average): after every epoch, R_k = robust accuracy
of class k on the validation split under PGD-``val_steps`` (CE, uniform start,
eps, step_size);

    min_k R_k >= fawa_threshold:  theta_bar <- theta  (first accepted epoch),
                                  theta_bar <- d * theta_bar + (1 - d) * theta  (later; d = fawa_decay)
    otherwise:                    theta_bar unchanged.

``end_epoch`` runs after training epochs only (the hook before training is
``start_training``, which CFA does not use). ``averaged_state()`` returns theta_bar (keys of the model's ``state_dict``;
None until an epoch is accepted) for the engine to save as the final weights.

Arguments:
    eps (float): base Linf budget. (Default: 8/255)
    step_size (float): attack step, training and validation. (Default: 2/255)
    steps (int): training attack steps. (Default: 10)
    beta (float): TRADES beta. (Default: 6.0)
    lambda1 (float): CCM base. (Default: 0.5)
    lambda2 (float): CCR base. (Default: 0.5)
    warmup (float): fraction of training before calibration starts. (Default: 0.05)
    fawa_decay (float): FAWA decay d. (Default: 0.88)
    fawa_threshold (float): worst-class validation robust accuracy a checkpoint
        needs to enter the average. (Default: 0.24)
    val_steps (int): validation PGD steps. (Default: 10)
    xi (float): std of the training attack's start noise. (Default: 0.001)
    num_classes (int): K. (Default: 10)

Shape:
    x: [B, C, H, W] in [0, 1]; y: [B]; loss: scalar. State: eps_k, beta_k, A_k [K], FAWA weights.

Example::

    method = build_method("cfa", num_classes=10)
    method.start_epoch(epoch, total_epochs)
    out = method.loss(model, x, y)              # per batch
    method.end_epoch(model, val_batches)        # FAWA accept / reject
    model.load_state_dict(method.averaged_state())
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from battui.attacks import sum_over_ranks
from battui.methods.base import AttackRecord, Method, MethodOutput, float_parts, unwrap
from battui.methods.classwise import add_batch, resumed_sums, saved_sums, trades_terms, validation_sums


# -- mechanics shared by the class-wise TRADES methods (CFA, DAFA, WAT)
def calibrated_eps(train_acc: Tensor, eps: float, lambda1: float) -> Tensor:
    """CCM: eps_k = (lambda1 + A_k) * eps."""
    return (lambda1 + train_acc.to(torch.float64)) * eps


def calibrated_beta(train_acc: Tensor, beta: float, lambda2: float) -> Tensor:
    """CCR: beta_k = (lambda2 + A_k) * beta."""
    return (lambda2 + train_acc.to(torch.float64)) * beta


def weight_average(avg: dict[str, Tensor] | None, state: dict[str, Tensor], decay: float) -> dict[str, Tensor]:
    """avg <- decay * avg + (1 - decay) * state for floating entries (a copy of
    ``state`` when ``avg`` is None); integer buffers take the latest value."""
    if avg is None:
        return {k: v.detach().clone() for k, v in state.items()}
    out = {}
    for k, v in state.items():
        v = v.detach()
        prev = avg[k].to(v.device)
        out[k] = prev * decay + v * (1.0 - decay) if v.is_floating_point() else v.clone()
    return out


class CFA(Method):
    name = "cfa"
    label = "CFA"
    needs_validation = True

    def __init__(self, eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                 beta: float = 6.0, lambda1: float = 0.5, lambda2: float = 0.5, warmup: float = 0.05,
                 fawa_decay: float = 0.88, fawa_threshold: float = 0.24, val_steps: int = 10,
                 xi: float = 0.001, num_classes: int = 10) -> None:
        super().__init__(eps, step_size, steps)
        self.beta, self.lambda1, self.lambda2 = float(beta), float(lambda1), float(lambda2)
        self.warmup = float(warmup)
        self.fawa_decay, self.fawa_threshold = float(fawa_decay), float(fawa_threshold)
        if not 0.0 <= self.fawa_decay <= 1.0:
            raise ValueError(f"cfa: fawa_decay must be in [0, 1], got {fawa_decay}")
        self.val_steps, self.xi = int(val_steps), float(xi)
        self.num_classes = k = int(num_classes)
        f64 = dict(dtype=torch.float64)
        self.class_eps = torch.full((k,), self.eps, **f64)
        self.class_beta = torch.full((k,), self.beta, **f64)
        self.train_acc = torch.zeros(k, **f64)  # A_k of the last finished epoch
        self.measured_epochs = 0                 # epochs that contributed to train_acc
        self.epoch = -1                          # the epoch being accumulated
        self._hits = torch.zeros(k, **f64)       # this epoch: robust-correct per class
        self._seen = torch.zeros(k, **f64)       # this epoch: samples per class
        self.fawa: dict[str, Tensor] | None = None
        self.fawa_count = 0

    # -- CCM / CCR
    def observe(self, y: Tensor, robust_correct: Tensor) -> None:
        """Add one batch's training robust outcomes (bool [B]) to this epoch's counts."""
        self._hits, self._seen = add_batch(self._hits, self._seen, y, robust_correct, self.num_classes)

    def start_epoch(self, epoch: int, total_epochs: int) -> None:
        if epoch == self.epoch:
            return  # resumed inside this epoch: keep its budgets and partial counts
        hits, seen = (sum_over_ranks(t).to("cpu", torch.float64) for t in (self._hits, self._seen))
        if float(seen.sum()) > 0:
            # a class absent from the epoch keeps its previous accuracy
            self.train_acc = torch.where(seen > 0, hits / seen.clamp(min=1), self.train_acc)
            self.measured_epochs += 1
        self._hits = torch.zeros(self.num_classes, dtype=torch.float64)
        self._seen = torch.zeros(self.num_classes, dtype=torch.float64)
        self.epoch = epoch
        if epoch >= round(self.warmup * total_epochs) and self.measured_epochs > 0:
            self.class_eps = calibrated_eps(self.train_acc, self.eps, self.lambda1)
            self.class_beta = calibrated_beta(self.train_acc, self.beta, self.lambda2)
        else:
            self.class_eps = torch.full((self.num_classes,), self.eps, dtype=torch.float64)
            self.class_beta = torch.full((self.num_classes,), self.beta, dtype=torch.float64)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> MethodOutput:
        eps_c = self.on_device("eps", (self.class_eps,), x, lambda: self.class_eps)
        res, logits_adv, ce, kl = trades_terms(model, x, y, eps=eps_c[y], step_size=self.step_size,
                                               steps=self.steps, xi=self.xi)
        beta_y = self.on_device("beta", (self.class_beta,), ce, lambda: self.class_beta)[y]
        ce_term = (ce / (1 + beta_y)).mean()
        kl_term = (kl * beta_y / (1 + beta_y)).mean()
        self.observe(y, logits_adv.detach().argmax(1) == y)
        return MethodOutput(ce_term + kl_term, float_parts(ce=ce_term, kl=kl_term),
                            AttackRecord(res.steps_to_flip, res.pred_last))

    # -- FAWA
    def fawa_update(self, model: nn.Module, worst_robust_acc: float) -> bool:
        """Take the model into the average if its worst-class validation robust
        accuracy reaches the threshold; returns whether it was accepted."""
        if worst_robust_acc < self.fawa_threshold:
            return False
        decay = self.fawa_decay if self.fawa is not None else 0.0
        self.fawa = weight_average(self.fawa, unwrap(model).state_dict(), decay)
        self.fawa_count += 1
        return True

    def averaged_state(self) -> dict[str, Tensor] | None:
        """FAWA weights (model ``state_dict`` keys), or None before any accepted epoch."""
        return None if self.fawa is None else dict(self.fawa)

    def end_epoch(self, model: nn.Module, val_batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        sums = validation_sums(model, val_batches, self.num_classes, self.name, ("hits",),
                               lambda x, y, res: (res.pred_last == y,), eps=self.eps, step_size=self.step_size,
                               steps=self.val_steps, objective="ce", start="uniform")
        hits, seen = sums["hits"], sums["seen"]
        present = seen > 0
        acc = hits[present] / seen[present]
        worst = float(acc.min())
        accepted = self.fawa_update(model, worst)
        return {"val_robust_acc": float(hits.sum() / seen.sum()), "val_worst_robust_acc": worst,
                "fawa_accepted": float(accepted), "fawa_count": float(self.fawa_count),
                "eps_max": float(self.class_eps.max()), "eps_min": float(self.class_eps.min())}

    # -- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "class_eps": self.class_eps.clone(), "class_beta": self.class_beta.clone(),
            "train_acc": self.train_acc.clone(), "measured_epochs": self.measured_epochs,
            "epoch": self.epoch, "hits": saved_sums(self._hits), "seen": saved_sums(self._seen),
            "fawa": None if self.fawa is None else {k: v.detach().cpu().clone() for k, v in self.fawa.items()},
            "fawa_count": self.fawa_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = ("class_eps", "class_beta", "train_acc", "hits", "seen")
        t = self.checked_tensors(state, dict.fromkeys(names, (self.num_classes,)))
        self.class_eps, self.class_beta, self.train_acc = (t[n] for n in names[:3])
        self._hits, self._seen = resumed_sums(t["hits"]), resumed_sums(t["seen"])
        self.measured_epochs, self.epoch = int(state["measured_epochs"]), int(state["epoch"])
        fawa = state.get("fawa")
        self.fawa = None if fawa is None else {name: torch.as_tensor(v) for name, v in fawa.items()}
        self.fawa_count = int(state.get("fawa_count", 0))
