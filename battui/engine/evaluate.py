"""Per-class robust evaluation (docs/DESIGN.md section 4), shared by training and `battui eval`.

    spec = eval_attack(cfg.eval)              # or EvalAttack(attack="pgd", eps=8/255, steps=20)
    result = evaluate(model, batches, num_classes=10, spec=spec)
    result["worst"]["robust"], result["robust"][3], result["step_hist"]

PGD-20 (CE, uniform random start) records every sample's steps to its first
misclassification and its final adversarial prediction in one pass; with
`restarts > 1` a sample counts as broken if any restart breaks it. AutoAttack is
the authors' standard version from their own package (`battui.attacks.autoattack`,
pyautoattack), run once over all the images; it has no per-step record (its
samples land in the "never" or step-K bin) and adds `result["autoattack"]`, the
robust count after each of its four attacks.

With `keep_outcomes=True` the result also holds `outcomes`, every image's record in
evaluation order: `label`, `clean_correct` and `adv_correct` (0/1) and `steps` (to the
first misclassification, -1 = never), from which `battui.report.stats` computes
intervals and paired tests without re-running the attack (one process only: a DDP
rank holds a shard of the images).

One evaluation precision everywhere (training's per-epoch validation and test
evaluation, `battui eval/compare/table`): fp32 (autocast off, TF32 off) unless
the spec says bf16 (`eval.amp=true`). The attack is described by one type,
`battui.config.EvalAttack` (made from the `eval` section by `eval_attack`); `attack_record` is what eval
events, eval JSON and the report's cache key store of it. The attack's random start is seeded from
`spec.seed` (`eval.seed`, default 0) inside a forked RNG, so the same weights on
the same images give the same numbers in every path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch

from battui.attacks.losses import ranks_joined, sum_over_ranks
from battui.config import EvalAttack, EvalConfig
from battui.engine.metrics import ClassCounter
from battui.errors import UserError

EVAL_ATTACKS = ("pgd", "autoattack")  # `eval.attack` (attacks/autoattack.py: ATTACKS is its four attacks)
PRECISIONS = ("fp32", "bf16")


def eval_attack(e: EvalConfig, *, precision: str | None = None, **overrides) -> EvalAttack:
    """The evaluation attack of an `eval` config section, normalised and checked.

    `overrides` (not None) replace its fields (attack, eps, step_size, steps, restarts,
    seed); `precision` ("fp32" | "bf16") replaces the section's (`eval.amp`).
    """
    values = {"attack": e.attack, "eps": e.eps, "step_size": e.step_size, "steps": e.steps,
              "restarts": e.restarts, "seed": e.seed}
    values.update({k: v for k, v in overrides.items() if v is not None})
    precision = str(e.precision if precision is None else precision)
    spec = EvalAttack(attack=str(values["attack"] or "pgd").lower(), eps=float(values["eps"]),
                      step_size=float(values["step_size"]), steps=int(values["steps"]),
                      restarts=int(values["restarts"]), seed=int(values["seed"]), precision=precision)
    if spec.attack not in EVAL_ATTACKS:
        raise UserError(f"unknown attack '{spec.attack}'; use pgd or autoattack")
    if precision not in PRECISIONS:
        raise UserError(f"unknown evaluation precision '{precision}'; use fp32 or bf16")
    if spec.eps < 0 or spec.step_size <= 0 or spec.steps < 1 or spec.restarts < 1:
        raise UserError("the attack needs eps >= 0, step size > 0, steps >= 1 and restarts >= 1")
    return spec


def attack_record(spec: EvalAttack) -> dict:
    """The `attack` record of eval events and eval JSON, hashed into the report's cache key:
    its keys and their order are fixed (tests/test_engine_eval_attack.py), or existing caches stop matching."""
    out = {"name": spec.attack, "eps": spec.eps, "step_size": spec.step_size, "steps": spec.steps,
           "restarts": spec.restarts, "seed": spec.seed, "precision": spec.precision}
    if spec.attack == "autoattack":
        from battui.attacks.autoattack import implementation

        out["implementation"] = implementation()
    return out


def check_spec(spec: EvalAttack, num_classes: int) -> None:
    """Refuse an attack the dataset cannot take (standard AutoAttack needs >= 10 classes)."""
    if spec.attack == "autoattack":
        from battui.attacks.autoattack import check_classes

        check_classes(num_classes)


@contextmanager
def eval_precision(precision: str, device: torch.device) -> Iterator[None]:
    """bf16 autocast for "bf16"; for "fp32" autocast off and TF32 off (restored after)."""
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
        return
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.autocast(device.type, enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _pgd_outcome(model, x, y, spec: EvalAttack):
    from battui.attacks import pgd

    adv_pred = steps = None
    for _ in range(max(1, spec.restarts)):
        res = pgd(model, x, y, eps=spec.eps, step_size=spec.step_size, steps=spec.steps,
                  objective="ce", start="uniform")
        if adv_pred is None:
            adv_pred, steps = res.pred_last, res.steps_to_flip
            continue
        # keep the first restart that breaks a sample still unbroken
        take = (adv_pred == y) & (res.pred_last != y)
        adv_pred = torch.where(take, res.pred_last, adv_pred)
        steps = torch.where(take, res.steps_to_flip, steps)
    return adv_pred, steps


def _take(batches: Iterable, limit: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The evaluation images as a list of batches, at most `limit` images (0 = all)."""
    out, seen = [], 0
    for x, y in batches:
        if limit and seen >= limit:
            break
        if limit:
            x, y = x[: limit - seen], y[: limit - seen]
        out.append((x, y))
        seen += len(y)
    return out


def _autoattack(model, data, clean, correct: int, counter: ClassCounter, kept: list, spec: EvalAttack, progress,
                reduced_for_tests) -> dict:
    """Standard AutoAttack once over all the images; counts into `counter`, returns the per-attack breakdown."""
    from battui.attacks.autoattack import empty_breakdown, run_autoattack

    if not data:  # an empty DDP shard still joins the all-reduce of the breakdown
        return empty_breakdown()
    x, y = torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])
    out = run_autoattack(model, x, y, eps=spec.eps, seed=spec.seed, batch_size=len(data[0][1]),
                         clean_correct=correct, progress=progress, reduced_for_tests=reduced_for_tests)
    # no per-step record: broken samples go in bin K, the others in "never"
    steps = torch.where(out.adv_pred != y, torch.full_like(y, spec.steps), torch.full_like(y, -1))
    counter.update(y, out.adv_pred, steps, clean_pred=torch.cat(clean))
    kept.append((y, torch.cat(clean), out.adv_pred, steps))
    return out.breakdown


def _outcomes(kept: list[tuple[torch.Tensor, ...]]) -> dict[str, list[int]]:
    """Per-image outcomes from (label, clean prediction, adversarial prediction, steps) batches."""
    if not kept:
        return {"label": [], "clean_correct": [], "adv_correct": [], "steps": []}
    y, clean, adv, steps = (torch.cat(parts).cpu().long() for parts in zip(*kept))
    return {"label": y.tolist(), "clean_correct": (clean == y).long().tolist(),
            "adv_correct": (adv == y).long().tolist(), "steps": steps.tolist()}


def _reduce_breakdown(breakdown: dict, device: torch.device) -> dict:
    """Sum AutoAttack's per-attack counts over DDP ranks (no-op when not distributed)."""
    if not ranks_joined():
        return breakdown
    attacks = breakdown["attacks"]
    t = torch.tensor([breakdown["n"], breakdown["clean"], *(breakdown["robust_after"][a] for a in attacks)],
                     dtype=torch.long, device=device)
    values = sum_over_ranks(t).tolist()
    return {**breakdown, "n": values[0], "clean": values[1], "robust_after": dict(zip(attacks, values[2:]))}


def evaluate(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    spec: EvalAttack,
    limit: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    on_clean: Callable[[int, int], None] | None = None,
    reduced_for_tests=None,
    keep_outcomes: bool = False,
) -> dict:
    """Clean and adversarial predictions per class over `batches` (at most `limit` images).

    A clean pass comes first (`on_clean(correct, n)` is told its result before
    the attack starts), then the attack; `progress(stage, done, total)` follows
    it in images ("PGD-20", or "APGD-CE", "APGD-T", "FAB-T", "Square" each over
    the images still robust when it starts). `reduced_for_tests` (an
    `attacks.autoattack.ReducedBudget`) is for tests only. Returns
    ClassCounter.errors() plus `attack` (and `autoattack` for AutoAttack);
    counts are summed over DDP ranks. `keep_outcomes` adds `outcomes` (module docstring).
    """
    check_spec(spec, num_classes)
    if keep_outcomes and ranks_joined():
        raise ValueError("per-image outcomes are kept by one process only, not under DDP")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = ClassCounter(num_classes, spec.steps, device=device)
    extra: dict = {}
    kept: list[tuple[torch.Tensor, ...]] = []
    data = _take(batches, limit)
    n = sum(len(y) for _, y in data)
    # the same random starts for every checkpoint compared, and training's RNG untouched
    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    with rng, eval_precision(spec.precision, device):
        torch.manual_seed(spec.seed)
        try:
            with torch.no_grad():
                clean = [model(x).argmax(1) for x, _ in data]
            correct = sum(int((c == y).sum()) for c, (_, y) in zip(clean, data))
            if on_clean is not None:
                on_clean(correct, n)
            if spec.attack == "autoattack":
                extra["autoattack"] = _autoattack(model, data, clean, correct, counter, kept, spec, progress,
                                                  reduced_for_tests)
            else:
                stage, done = f"PGD-{spec.steps}", 0
                if progress is not None:
                    progress(stage, 0, n)
                for (x, y), clean_pred in zip(data, clean):
                    adv_pred, steps = _pgd_outcome(model, x, y, spec)
                    counter.update(y, adv_pred, steps, clean_pred=clean_pred)
                    if keep_outcomes:
                        kept.append((y, clean_pred, adv_pred, steps))
                    done += len(y)
                    if progress is not None:
                        progress(stage, done, n)
        finally:
            model.train(was_training)
    errors = counter.summed().errors()
    if "autoattack" in extra:
        extra["autoattack"] = _reduce_breakdown(extra["autoattack"], device)
    if keep_outcomes:
        extra["outcomes"] = _outcomes(kept)
    return {**errors, "attack": attack_record(spec), **extra}
