"""BAT: Sun et al., "Improving Robust Fairness via Balance Adversarial
Training", AAAI 2023 (paper section 3.3, Algorithm 1; docs/DESIGN.md section 3.1).

One early-stopped TRADES-KL attack per batch (``pgd`` with ``stop_after_flip=0,
record_boundary=True``) gives the last correctly classified iterate x_clean and
the first misclassified one x_adv, one attack step apart. The loss is Eq. 7 = Eq. 2 + alpha * Eq. 6:

    L = CE(f(x_clean), y) + beta * KL(p(x) || p(x_adv))            (source-class; parts source_ce, source_kl)
        + alpha * [ KL(U || p(x_clean)) + KL(U || p(x_adv)) ]      (target-class; parts target_clean, target_adv)

U is uniform over the K classes (K taken from the logits); p(x) is not
detached (as TRADES). All KL terms are batch means, p(x) in train mode. The
uniform term, per sample:

    KL(U || p(z)) = -log K - (1/K) sum_k log p_k(z)     uniform_kl="paper" (Eq. 6)
    KL(p(z) || U) = sum_k p_k(z) log p_k(z) + log K     uniform_kl="code" (the public BAT code)

Where a sample stops (its first misclassified iterate x^k of the S-step attack):
k >= 1: x_clean = x^(k-1), x_adv = x^k, steps_to_flip = k; k = 0 (the noisy start
is already wrong): x_clean = x_adv = x, steps_to_flip = 0; never: x_clean = x^(S-1),
x_adv = x^S, steps_to_flip = S if x^S is wrong, else -1.

Arguments:
    eps (float): Linf budget. (Default: 8/255)
    step_size (float): attack step. (Default: 2/255)
    steps (int): maximum attack steps K. (Default: 10)
    beta (float): weight of the source-class KL. (Default: 6.0)
    alpha (float): weight of the target-class loss. (Default: 1.0)
    xi (float): std of the attack's start noise. (Default: 0.001)
    uniform_kl (str): "paper" = KL(U || p) (Eq. 6) or "code" = KL(p || U)
        (the public BAT code). (Default: "paper")
    source (str): "boundary" = Eq. 2, or "fixed" = Eq. 8,
        CE(f(x), y) + beta * KL(p(x) || p(x_adv^K)) with the full K-step
        attack. (Default: "boundary")
    target_on (tuple[str, ...]): which examples the uniform term regularises,
        any of "clean" (x_clean), "adv" (x_adv), "fixed_adv" (the full K-step
        attack's x_adv); () drops the term. (Default: ("clean", "adv"))

Paper Table 2 ablations (``TABLE2``): No.1 target_on=(); No.2 ("clean",);
No.3 ("adv",); No.4 ("fixed_adv",); No.5 the default; No.6 source="fixed".
With source="fixed" or "fixed_adv" the attack runs all K steps for every
sample (no early stop) and records the boundary pair on the way; x^K (``x_last``)
is then the "fixed" example, and the recorded ``adv_pred`` is the prediction on it.

Shape:
    x: [B, C, H, W] in [0, 1]; y: [B]; loss: scalar.

Example::

    method = build_method("bat", beta=6.0, alpha=1.0)
    out = method.loss(model, x, y)
    out.loss.backward(); optimizer.step()
    out.attack.steps_to_flip   # [B], source-class fairness per sample
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from battui.attacks import kl_logits, kl_uniform, pgd
from battui.methods.base import AttackRecord, Method, MethodOutput, float_parts

TARGETS = ("clean", "adv", "fixed_adv")

TABLE2: dict[int, dict[str, object]] = {
    1: {"source": "boundary", "target_on": ()},
    2: {"source": "boundary", "target_on": ("clean",)},
    3: {"source": "boundary", "target_on": ("adv",)},
    4: {"source": "boundary", "target_on": ("fixed_adv",)},
    5: {"source": "boundary", "target_on": ("clean", "adv")},
    6: {"source": "fixed", "target_on": ("clean", "adv")},
}


class BAT(Method):
    name = "bat"
    label = "BAT"

    def __init__(self, eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                 beta: float = 6.0, alpha: float = 1.0, xi: float = 0.001,
                 uniform_kl: str = "paper", source: str = "boundary",
                 target_on: tuple = ("clean", "adv")) -> None:
        super().__init__(eps, step_size, steps)
        self.beta = float(beta)
        self.alpha = float(alpha)
        self.xi = float(xi)
        if uniform_kl not in ("paper", "code"):
            raise ValueError(f"bat: uniform_kl must be 'paper' or 'code', got {uniform_kl!r}")
        if source not in ("boundary", "fixed"):
            raise ValueError(f"bat: source must be 'boundary' or 'fixed', got {source!r}")
        if isinstance(target_on, str):
            target_on = (target_on,) if target_on else ()
        bad = [t for t in target_on if t not in TARGETS]
        if bad:
            raise ValueError(f"bat: target_on entries must be in {TARGETS}, got {bad}")
        self.uniform_kl = uniform_kl
        self.source = source
        self.target_on = tuple(target_on)

    @property
    def early_stop(self) -> bool:
        """Whether the attack stops samples at their first misclassification."""
        return self.source == "boundary" and "fixed_adv" not in self.target_on

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> MethodOutput:
        # the early-stopped attack is Algorithm 1's boundary examples (docs/DESIGN.md section 3.1)
        res = pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                  objective="kl", start="gaussian", xi=self.xi,
                  stop_after_flip=0 if self.early_stop else None, record_boundary=True)
        x_clean, x_adv = res.x_last_correct, res.x_first_misclassified
        x_fixed = None if self.early_stop else res.x_last
        record = AttackRecord(res.steps_to_flip, res.pred_last)

        model.train()
        logits_nat = model(x)
        cache: dict[str, Tensor] = {}

        def logits_of(which: str) -> Tensor:
            if which not in cache:
                cache[which] = model({"clean": x_clean, "adv": x_adv, "fixed_adv": x_fixed}[which])
            return cache[which]

        if self.source == "boundary":
            source_ce = F.cross_entropy(logits_of("clean"), y)
            source_kl = self.beta * kl_logits(logits_nat, logits_of("adv"))
        else:
            source_ce = F.cross_entropy(logits_nat, y)
            source_kl = self.beta * kl_logits(logits_nat, logits_of("fixed_adv"))
        terms = {"source_ce": source_ce, "source_kl": source_kl}
        for which in self.target_on:
            terms[f"target_{which}"] = self.alpha * kl_uniform(logits_of(which), self.uniform_kl)
        loss = sum(terms.values())
        return MethodOutput(loss, float_parts(**terms), record)
