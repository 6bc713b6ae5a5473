"""ABSLD: Zhao, Wang, Wei, Li, Zhang and Ji, "Improving Adversarial Robust Fairness via
Anti-Bias Soft Label Distillation", NeurIPS 2024 (public code zhaoshiji123/ABSLD @7407c3a,
``resnet18_absld_cifar10.py``, ``absld_loss.py``).

Distils a robust teacher T into the student f with per-class temperatures (the RSLAD
recipe): harder classes get sharper soft labels.

    z = T(x) (eval mode, no grad, the clean augmented batch)
    q_adv = softmax(z / tau_adv[y]),  q_nat = softmax(z / tau_nat[y])          temperatures="separate"
    q_adv = q_nat = softmax(z / (tau_adv[y] * tau_nat[y]))                      temperatures="code" (default)
    x' = x + xi N(0, I), then `steps` PGD steps ascending sum_n KL(q_adv,n || p(x'_n)) (student in eval mode)
    L = 5/6 * mean_{n,k} q_adv (log(q_adv + 1e-5) - log p(x'))                part adv
      + 1/6 * mean_{n,k} q_nat (log(q_nat + 1e-5) - log p(x))                 part nat

The means run over all B x K entries, so each term is the per-sample KL / K: the code's
scale, kept (a plain batch-mean KL would be K times larger). Temperatures start at 1. Each
epoch sums CE(f(x'_n), y_n) (for tau_adv) and CE(f(x_n), y_n) (for tau_nat) per class, from
the train-mode logits of the update; at the epoch's end, with R those sums,

    gap = R - mean(R);   tau <- clamp(tau - b * gap / max|gap|, tau_min, tau_max)

(no change when every class has the same sum), b = tau_rate x0.1 at each of the training
schedule's lr milestones (the code decays both at the same epochs; `lr_milestones` is
filled in from `train.milestones` of a multistep schedule). A class with a larger loss
gets a lower temperature.

Where the code differs from the paper's text: its two teacher-logit copies share storage,
so the second division applies to the first as well: both KL terms and the attack use z /
(tau_adv[y] * tau_nat[y]) (`temperatures="code"`); `"separate"` is the paper's reading.

The teacher: `teacher=PATH`, a battui checkpoint (or run folder) of the same classes, or
another code's file with `teacher_model=NAME` (and `teacher_normalize=MEAN/STD` for weights
trained on normalised inputs), as `battui eval --model/--normalize` read them (the dataset
is the run's own). The engine loads it before anything is written (a missing or unreadable
file is a one-line error) and hands it over with `use_teacher`; `battui table` trains a
TRADES(1/λ=6) run of the same seed as the teacher when `teacher` is not given (the code
distils the TRADES CIFAR-10 WRN-34-10 release).

The code's schedule (300 epochs, lr 0.1, x0.1 after 215, 260, 285, weight decay 2e-4) is not
a method default: ABSLD trains on the preset's schedule, as every method but FAAL (which is
a 2-epoch fine-tuning by definition) does, so a table compares methods on one schedule. Its
loss is the per-sample KL / K, so its gradients are about 1/K of a CE loss's and short
schedules underfit: on digits at the preset's 22 epochs (396 steps) the student stayed near
the uniform output (train-set entropy 2.22 of log 10 = 2.30, seed 0): 29.2% clean, 70.5%
robust test error; the same 22 epochs at lr 1.0, weight decay 5e-5 (exactly the code's loss
x K at lr 0.1, weight decay 5e-4 under SGD with momentum) gave 3.1% clean, 31.4% robust
(50.0% worst class). For the code's schedule: `--set train.epochs=300 --set
train.milestones=[215,260,285] --set train.weight_decay=2e-4`.

Arguments:
    eps (float): Linf budget. (Default: 8/255)
    step_size (float): attack step. (Default: 2/255)
    steps (int): attack steps. (Default: 10)
    teacher (str): the teacher's checkpoint. (Default: "", required to train)
    teacher_model (str): the architecture of a foreign teacher file. (Default: "")
    teacher_normalize (str): "MEAN/STD" of a teacher trained on normalised inputs. (Default: "")
    temperatures (str): "code" or "separate". (Default: "code")
    tau_rate (float): b, the temperature step. (Default: 0.1)
    tau_min, tau_max (float): temperature range. (Default: 0.5, 5.0)
    lr_milestones (list): epochs at which b is divided by 10 (fractions of the epochs or epoch
        numbers, as `train.milestones`). (Default: the training schedule's)
    xi (float): std of the start noise. (Default: 0.001)
    num_classes (int): K. (Default: 10)

Shape:
    x: [B, C, H, W] in [0, 1]; y: [B]; loss: scalar. State: tau_adv, tau_nat [K], the epoch's loss sums [2, K].

Example::

    method = build_method("absld", teacher="runs/trades/checkpoints/last.pt", num_classes=10)
    method.use_teacher(teacher_model)        # the engine does this from `teacher`
    method.start_epoch(epoch, total_epochs)
    out = method.loss(model, x, y)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from battui.attacks import class_sums, pgd, sum_over_ranks
from battui.methods.base import AttackRecord, Method, MethodOutput, float_parts
from battui.methods.classwise import accumulator_dtype

TEMPERATURES = ("code", "separate")
ADV_WEIGHT = 5 / 6  # the code's 5/6 adversarial, 1/6 clean


def soft_kl(q: Tensor, logits: Tensor) -> Tensor:
    """mean over all B x K entries of q (log(q + 1e-5) - log_softmax(logits)): the code's KL term."""
    return (q * (torch.log(q + 1e-5) - F.log_softmax(logits, dim=1))).mean()


def temperature_step(tau: Tensor, sums: Tensor, rate: float, lo: float, hi: float) -> Tensor:
    """tau - rate * gap / max|gap|, gap = sums - mean(sums), clamped to [lo, hi]; unchanged if gap is 0."""
    gap = sums - sums.mean()
    scale = gap.abs().max()
    if float(scale) == 0:
        return tau.clone()
    return (tau - rate * gap / scale).clamp(lo, hi)


class ABSLD(Method):
    name = "absld"
    label = "ABSLD"
    teacher_from = "trades"

    def __init__(self, eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                 teacher: str = "", teacher_model: str = "", teacher_normalize: str = "",
                 temperatures: str = "code", tau_rate: float = 0.1, tau_min: float = 0.5, tau_max: float = 5.0,
                 lr_milestones: list = (), xi: float = 0.001, num_classes: int = 10) -> None:
        super().__init__(eps, step_size, steps)
        if temperatures not in TEMPERATURES:
            raise ValueError(f"temperatures must be one of {', '.join(TEMPERATURES)}, got {temperatures!r}")
        if not 0 < tau_min <= tau_max:
            raise ValueError(f"need 0 < tau_min <= tau_max, got {tau_min}, {tau_max}")
        self.teacher, self.teacher_model, self.teacher_normalize = str(teacher), str(teacher_model), \
            str(teacher_normalize)
        self.temperatures, self.tau_rate = temperatures, float(tau_rate)
        self.tau_min, self.tau_max, self.xi = float(tau_min), float(tau_max), float(xi)
        self.lr_milestones = [float(m) for m in lr_milestones]
        self.num_classes = k = int(num_classes)
        self.tau_adv = torch.ones(k, dtype=torch.float64)
        self.tau_nat = torch.ones(k, dtype=torch.float64)
        self._sums = torch.zeros(2, k, dtype=torch.float64)  # this epoch's CE sums: adversarial, clean
        self.epoch = -1  # the epoch being summed
        self.teacher_net: nn.Module | None = None

    def use_teacher(self, teacher: nn.Module) -> None:
        self.teacher_net = teacher.eval().requires_grad_(False)

    def rate(self, epochs_done: int, total_epochs: int) -> float:
        """b for the update after `epochs_done` epochs: x0.1 per lr milestone reached by then."""
        at = [round(m * total_epochs) if m <= 1 else int(m) for m in self.lr_milestones]
        return self.tau_rate * 0.1 ** sum(1 for m in at if epochs_done >= m)

    def start_epoch(self, epoch: int, total_epochs: int) -> None:
        if epoch == self.epoch:
            return  # resumed inside this epoch: keep its partial sums
        if self.epoch >= 0:  # the end of the previous epoch: update the temperatures from its sums
            sums = sum_over_ranks(self._sums).to("cpu", torch.float64)
            b = self.rate(self.epoch + 1, total_epochs)
            self.tau_adv = temperature_step(self.tau_adv, sums[0], b, self.tau_min, self.tau_max)
            self.tau_nat = temperature_step(self.tau_nat, sums[1], b, self.tau_min, self.tau_max)
        self._sums = torch.zeros(2, self.num_classes, dtype=torch.float64)
        self.epoch = epoch

    def soft_labels(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(q_adv, q_nat) [B, K]: the teacher's softmax at each sample's class temperatures."""
        if self.teacher_net is None:
            raise ValueError("absld needs its teacher: set method.teacher=PATH (the engine loads it)")
        src = (self.tau_adv, self.tau_nat)
        with torch.no_grad():
            z = self.teacher_net(x).float()
            t_adv = self.on_device("tau_adv", src, z, lambda: self.tau_adv)[y][:, None]
            t_nat = self.on_device("tau_nat", src, z, lambda: self.tau_nat)[y][:, None]
            if self.temperatures == "code":
                q = F.softmax(z / (t_adv * t_nat), dim=1)
                return q, q
            return F.softmax(z / t_adv, dim=1), F.softmax(z / t_nat, dim=1)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> MethodOutput:
        q_adv, q_nat = self.soft_labels(x, y)
        res = pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                  objective="kl", start="gaussian", xi=self.xi, p0=q_adv)
        model.train()
        logits_adv, logits = model(res.x_last), model(x)
        adv = ADV_WEIGHT * soft_kl(q_adv, logits_adv)
        nat = (1 - ADV_WEIGHT) * soft_kl(q_nat, logits)
        dtype = accumulator_dtype(y.device)
        ce = torch.stack([F.cross_entropy(z.detach().float(), y, reduction="none") for z in (logits_adv, logits)])
        self._sums = self._sums.to(y.device, dtype) + class_sums(y, self.num_classes, ce.T, dtype).T
        return MethodOutput(adv + nat, float_parts(adv=adv, nat=nat), AttackRecord(res.steps_to_flip, res.pred_last))

    def state_dict(self) -> dict[str, Any]:
        return {"tau_adv": self.tau_adv.clone(), "tau_nat": self.tau_nat.clone(), "epoch": self.epoch,
                "sums": self._sums.detach().cpu().double()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        k = self.num_classes
        t = self.checked_tensors(state, {"tau_adv": (k,), "tau_nat": (k,), "sums": (2, k)})
        self.tau_adv, self.tau_nat, self._sums = t["tau_adv"], t["tau_nat"], t["sums"]
        self.epoch = int(state["epoch"])
