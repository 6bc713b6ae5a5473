"""Per-class robust evaluation (docs/DESIGN.md section 4), shared by training and `battui eval`.

    spec = AttackSpec(name="pgd", eps=8/255, step_size=2/255, steps=20)
    result = evaluate(model, batches, num_classes=10, spec=spec)
    result["worst"]["robust"], result["robust"][3], result["step_hist"]

PGD-20 (CE, uniform random start) records every sample's steps to its first
misclassification and its final adversarial prediction in one pass; with
`restarts > 1` a sample counts as broken if any restart breaks it. AutoAttack
(standard: APGD-CE, APGD-T, FAB-T, Square) comes from torchattacks, a maintained
library, and has no per-step record (its samples land in the "never" or step-K bin).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch

from battui.engine.metrics import ClassCounter


@dataclass
class AttackSpec:
    name: str = "pgd"  # pgd | autoattack
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 20
    restarts: int = 1
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _pgd_outcome(model, x, y, spec: AttackSpec):
    from battui.attacks import linf_pgd

    adv_pred = steps = None
    for _ in range(max(1, spec.restarts)):
        res = linf_pgd(model, x, y, eps=spec.eps, step_size=spec.step_size, steps=spec.steps,
                       objective="ce", start="uniform")
        if adv_pred is None:
            adv_pred, steps = res.adv_pred, res.steps_to_flip
            continue
        # keep the first restart that breaks a sample still unbroken
        take = (adv_pred == y) & (res.adv_pred != y)
        adv_pred = torch.where(take, res.adv_pred, adv_pred)
        steps = torch.where(take, res.steps_to_flip, steps)
    return adv_pred, steps


def _autoattack_outcome(model, x, y, spec: AttackSpec, num_classes: int):
    import torchattacks

    attack = torchattacks.AutoAttack(model, norm="Linf", eps=spec.eps, version="standard",
                                     n_classes=num_classes, seed=spec.seed)
    x_adv = attack(x, y)
    with torch.no_grad():
        adv_pred = model(x_adv).argmax(1)
    # AutoAttack does not report per-step progress: broken samples go in bin K, others "never"
    steps = torch.where(adv_pred != y, torch.full_like(y, spec.steps), torch.full_like(y, -1))
    return adv_pred, steps


def evaluate(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    spec: AttackSpec,
    limit: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Clean and adversarial predictions per class over `batches` (at most `limit` images).

    Returns ClassCounter.errors() plus `attack`; counts are summed over DDP ranks.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = ClassCounter(num_classes, spec.steps, device=device)
    seen = 0
    # the same random starts for every checkpoint compared, and training's RNG untouched
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(spec.seed)
        try:
            for x, y in batches:
                if limit and seen >= limit:
                    break
                if limit:
                    x, y = x[: limit - seen], y[: limit - seen]
                with torch.no_grad():
                    clean_pred = model(x).argmax(1)
                if spec.name == "autoattack":
                    adv_pred, steps = _autoattack_outcome(model, x, y, spec, num_classes)
                else:
                    adv_pred, steps = _pgd_outcome(model, x, y, spec)
                counter.update(y, adv_pred, steps, clean_pred=clean_pred)
                seen += len(y)
                if progress is not None:
                    progress(len(y))
        finally:
            model.train(was_training)
    counter.all_reduce()
    return {**counter.errors(), "attack": spec.to_dict()}
