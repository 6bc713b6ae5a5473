"""One vectorised Linf PGD loop that every method and the evaluator share.

Every attack in battui is this loop with different settings: the objective
(cross-entropy, or TRADES' KL to the clean prediction), the start point
(uniform in the ball, x + xi * N(0, I), or x itself), per-sample budgets and an
optional per-sample early stop (FAT, BAT). Along the way it records, for every
sample, how many steps the attack needed before the model first misclassified
it (``steps_to_flip``) -- the source-class fairness signal of the BAT paper --
and the prediction on the returned example (the target-class signal).

Samples that stop leave the batch (active-set compaction): no later forward or
backward pass includes them. The model runs in eval mode during the attack and
every module's train/eval flag is restored afterwards; gradients are taken
with ``torch.autograd.grad`` w.r.t. the input only, so nothing accumulates in
parameter ``.grad``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OBJECTIVES = ("ce", "kl")
STARTS = ("uniform", "gaussian", "none")


@dataclass
class AttackResult:
    """What an attack returns, per sample of the batch.

    x_adv: the adversarial example, same shape as the input.
    steps_to_flip: LongTensor [B]; attack steps applied to the iterate when it
        was first seen misclassified; 0 = the start point already was,
        -1 = never within the budget. Values in 0..steps or -1.
    adv_pred: LongTensor [B]; the model's prediction on ``x_adv`` (eval mode).
    correct_steps: LongTensor [B] or None; how many of the evaluated iterates
        x^0..x^(steps-1) were classified correctly (GAIRAT's kappa).
    """

    x_adv: Tensor
    steps_to_flip: Tensor
    adv_pred: Tensor
    correct_steps: Tensor | None = None


@dataclass
class PGDTrace(AttackResult):
    """``AttackResult`` plus BAT's boundary pair (only when ``record_boundary``).

    x_clean: the last iterate classified correctly before the first flip
        (x itself for samples flipped at the start point).
    x_first_adv: the first misclassified iterate (x itself for samples flipped
        at the start point; x^steps for samples never flipped).
    """

    x_clean: Tensor | None = None
    x_first_adv: Tensor | None = None


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode and restore each one's own flag after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _per_sample(value: float | Tensor, x: Tensor) -> Tensor:
    """A scalar or [B] budget as a [B, 1, ..., 1] tensor broadcastable to x."""
    b = x.shape[0]
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(b)
    if t.shape != (b,):
        raise ValueError(f"per-sample value must be a float or a [{b}] tensor, got {tuple(t.shape)}")
    return t.reshape(b, *([1] * (x.dim() - 1)))


def run_pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Tensor,
    step_size: float | Tensor,
    steps: int,
    objective: str = "ce",
    start: str = "uniform",
    xi: float = 0.001,
    stop_after_flip: int | None = None,
    omega: float = 0.0,
    record_boundary: bool = False,
) -> PGDTrace:
    """The shared loop; see ``linf_pgd`` for the arguments.

    ``record_boundary`` also keeps BAT's boundary pair for every sample
    (the last correctly classified iterate and the first misclassified one),
    whether or not samples stop early.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if stop_after_flip is not None and stop_after_flip < 0:
        raise ValueError("stop_after_flip must be None or >= 0")
    net = getattr(model, "module", model)
    x = x.detach()
    y = y.detach()
    b = x.shape[0]
    eps_b = _per_sample(eps, x)
    step_b = _per_sample(step_size, x)
    lo = (x - eps_b).clamp(min=0.0)
    hi = (x + eps_b).clamp(max=1.0)

    if start == "uniform":
        cur = x + torch.empty_like(x).uniform_(-1.0, 1.0) * eps_b
    elif start == "gaussian":
        cur = x + xi * torch.randn_like(x)
    else:
        cur = x.clone()
    cur = torch.maximum(torch.minimum(cur, hi), lo)

    long = dict(dtype=torch.long, device=x.device)
    steps_to_flip = torch.full((b,), -1, **long)
    correct_steps = torch.zeros(b, **long)
    adv_pred = torch.empty(b, **long)
    x_out = torch.empty_like(x)
    x_clean = x.clone() if record_boundary else None
    x_first = x.clone() if record_boundary else None

    with eval_mode(net):
        p0 = None
        if objective == "kl":
            with torch.no_grad():
                p0 = F.softmax(net(x), dim=1)
        # Active set: everything below is indexed by position in `idx`.
        idx = torch.arange(b, device=x.device)
        nat, y_a, lo_a, hi_a, step_a, p0_a = x, y, lo, hi, step_b, p0
        budget = None if stop_after_flip is None else torch.full((b,), stop_after_flip, **long)
        prev = x
        for k in range(steps):
            cur = cur.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = net(cur)
                pred = logits.detach().argmax(1)
                wrong = pred != y_a
                correct_steps[idx] += (~wrong).long()
                first = wrong & (steps_to_flip[idx] == -1)
                steps_to_flip[idx[first]] = k
                if record_boundary and k > 0:
                    x_clean[idx[first]] = prev[first]
                    x_first[idx[first]] = cur.detach()[first]
                keep = None
                if budget is not None:
                    stop = wrong & (budget == 0)
                    budget = budget - (wrong & ~stop).long()
                    if bool(stop.any()):
                        keep = ~stop
                        x_out[idx[stop]] = cur.detach()[stop]
                        adv_pred[idx[stop]] = pred[stop]
                        logits = logits[keep]
                if keep is not None and logits.shape[0] == 0:
                    idx = idx[keep]
                    break
                if objective == "ce":
                    loss = F.cross_entropy(logits, y_a if keep is None else y_a[keep], reduction="sum")
                else:
                    target = p0_a if keep is None else p0_a[keep]
                    loss = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="sum")
                grad = torch.autograd.grad(loss, cur)[0]
            cur = cur.detach()
            if keep is not None:
                idx, nat, y_a, lo_a, hi_a, step_a = (
                    t[keep] for t in (idx, nat, y_a, lo_a, hi_a, step_a)
                )
                budget = budget[keep]
                p0_a = None if p0_a is None else p0_a[keep]
                cur, grad = cur[keep], grad[keep]
            prev = cur
            cur = cur + step_a * grad.sign()
            if omega > 0:
                cur = cur + omega * torch.randn_like(cur)
            cur = torch.maximum(torch.minimum(cur, hi_a), lo_a)

        if idx.numel() > 0:
            # Survivors ran every step: one forward (no backward) for their prediction.
            with torch.no_grad():
                pred = net(cur).argmax(1)
            wrong = pred != y_a
            never = steps_to_flip[idx] == -1
            steps_to_flip[idx[wrong & never]] = steps
            x_out[idx] = cur
            adv_pred[idx] = pred
            if record_boundary:
                x_clean[idx[never]] = prev[never]
                x_first[idx[never]] = cur[never]

    return PGDTrace(
        x_adv=x_out,
        steps_to_flip=steps_to_flip,
        adv_pred=adv_pred,
        correct_steps=correct_steps,
        x_clean=x_clean,
        x_first_adv=x_first,
    )


def linf_pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Tensor,
    step_size: float | Tensor,
    steps: int,
    objective: str = "ce",
    start: str = "uniform",
    xi: float = 0.001,
    stop_after_flip: int | None = None,
    omega: float = 0.0,
) -> AttackResult:
    r"""Linf projected gradient ascent, vectorised, with per-sample early stop.

    x^0 = start point;  x^{k+1} = Proj_{B(x, eps)}(x^k + step * sign(grad L(x^k)))
    with B(x, eps) the Linf ball intersected with [0, 1]^d and
    L = CE(f(x^k), y) (``objective="ce"``) or KL(p(x) || p(x^k)) (``"kl"``,
    TRADES, p(x) computed once in eval mode and held fixed).

    Arguments:
        model: logits model (a DDP wrapper is unwrapped); run in eval mode,
            each module's mode restored afterwards; no parameter grads touched.
        x: images in [0, 1], shape [B, ...]. y: labels, LongTensor [B].
        eps, step_size: float or per-sample tensor [B].
        steps: number of gradient steps (int).
        objective: "ce" (default) or "kl".
        start: "uniform" (x + U(-eps, eps), default), "gaussian" (x + xi * N(0, I))
            or "none" (x); the start is clipped into B(x, eps).
        xi: std of the gaussian start (default 0.001).
        stop_after_flip: None (default) never stops early; k >= 0 stops a sample
            the (k+1)-th time it is seen misclassified, i.e. k steps after its
            first misclassification if it stays misclassified (FAT's tau and
            its ``control`` counter). A stopped sample returns that iterate.
        omega: std of gaussian noise added after every step (FAT; default 0).

    Returns:
        ``AttackResult`` (x_adv, steps_to_flip, adv_pred, correct_steps).

    Example::

        res = linf_pgd(model, x, y, eps=8/255, step_size=2/255, steps=20)
        robust_acc = (res.adv_pred == y).float().mean()
    """
    t = run_pgd(
        model, x, y, eps=eps, step_size=step_size, steps=steps, objective=objective,
        start=start, xi=xi, stop_after_flip=stop_after_flip, omega=omega,
    )
    return AttackResult(t.x_adv, t.steps_to_flip, t.adv_pred, t.correct_steps)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    step_size: float | Tensor,
    steps: int,
    random_start: bool = True,
) -> Tensor:
    """CE PGD-Linf (Madry et al. 2018), uniform random start; returns x_adv."""
    start = "uniform" if random_start else "none"
    return linf_pgd(model, x, y, eps=eps, step_size=step_size, steps=steps, start=start).x_adv
