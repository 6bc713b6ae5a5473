"""One vectorised Linf PGD loop that every method and the evaluator share.

Every attack in battui is this loop with different settings: the objective
(cross-entropy, or TRADES' KL to the clean prediction), the start point
(uniform in the ball, x + xi * N(0, I), or x itself), per-sample budgets and an
optional per-sample early stop (FAT, BAT). Along the way it records, for every
sample, how many steps the attack needed before the model first misclassified
it (``steps_to_flip``) -- the source-class fairness signal of the BAT paper --
and the prediction on the returned example (the target-class signal).

Samples that stop leave the batch (active-set compaction), in buckets: the
active set shrinks only to a multiple of ``bucket`` rows (16 per 128 samples of
the batch by default), padded with rows that already stopped, which are masked
out of the loss and of every record. So a batch of 128 shows the model at most
8 batch sizes (128, 112, ..., 16) instead of every size from 1 to 128: on CUDA
each new shape is a fresh cuDNN autotune (``cudnn.benchmark``), and under
``torch.compile`` a guard to check. ``bucket=1`` compacts exactly (every size).
Per-sample records are kept on the device with
``torch.where`` and index copies, so the loop waits on the host only once per
step, and only when samples can stop (the ``nonzero`` that compacts the batch).
The model runs in eval mode during the attack and
every module's train/eval flag is restored afterwards; gradients are taken
with ``torch.autograd.grad`` w.r.t. the input only, so nothing accumulates in
parameter ``.grad``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OBJECTIVES = ("ce", "kl")
STARTS = ("uniform", "gaussian", "none")


@dataclass
class PGDResult:
    """What ``pgd`` returns, per sample of the batch.

    x_last: the last iterate of each sample's attack, same shape as the input:
        x^steps, or, with ``stop_after_flip``, the iterate where the sample stopped.
    pred_last: LongTensor [B]; the model's prediction on ``x_last`` (eval mode).
    steps_to_flip: LongTensor [B]; attack steps applied to the iterate when it
        was first seen misclassified; 0 = the start point already was,
        -1 = never within the budget. Values in 0..steps or -1.
    correct_steps: LongTensor [B]; how many of the evaluated iterates
        x^0..x^(steps-1) were classified correctly (GAIRAT's kappa).
    x_last_correct, x_first_misclassified: BAT's boundary pair, only with
        ``record_boundary`` (else None): the last iterate classified correctly
        before the first flip and the first misclassified iterate, one attack
        step later; both are x itself for samples flipped at the start point,
        and x^(steps-1), x^steps for samples never flipped within the loop.
    """

    x_last: Tensor
    pred_last: Tensor
    steps_to_flip: Tensor
    correct_steps: Tensor
    x_last_correct: Tensor | None = None
    x_first_misclassified: Tensor | None = None


def runnable(model: nn.Module) -> nn.Module:
    """The module inside a DDP/DataParallel wrapper, still compiled if it was (attacks run on it)."""
    return model._modules.get("module", model)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside any DDP/DataParallel and ``torch.compile`` wrappers (whose
    ``state_dict`` has the model's own keys, not ``module.`` / ``_orig_mod.`` ones)."""
    while True:
        inner = model._modules.get("_orig_mod", model._modules.get("module"))
        if inner is None:
            return model
        model = inner


def bucket_rows(batch: int) -> int:
    """The default bucket of the early-stopping attacks: 16 rows per 128 samples of the batch
    (at most 8 distinct active-set sizes per batch size)."""
    return 16 * max(1, -(-batch // 128))


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
    """A scalar or [B] budget as a [B, 1, ..., 1] tensor broadcastable to x.

    A Python float becomes a device fill (no host-to-device copy); a tensor
    already on x's device and dtype is used as it is.
    """
    b = x.shape[0]
    if isinstance(value, Tensor):
        t = value.to(device=x.device, dtype=x.dtype)
        if t.dim() == 0:
            t = t.expand(b)
    else:
        t = x.new_full((b,), float(value))
    if t.shape != (b,):
        raise ValueError(f"per-sample value must be a float or a [{b}] tensor, got {tuple(t.shape)}")
    return t.reshape(b, *([1] * (x.dim() - 1)))


def _take(t: Tensor, idx: Tensor | None) -> Tensor:
    """The active rows of a full-batch tensor (all of it while nothing has stopped)."""
    return t if idx is None else t.index_select(0, idx)


def _put(t: Tensor, idx: Tensor | None, value: Tensor) -> None:
    """Write the active rows of a full-batch tensor back (an index copy, no host sync)."""
    if idx is None:
        t.copy_(value)
    else:
        t.index_copy_(0, idx, value)


@dataclass
class _ActiveSet:
    """The rows the loop still attacks: their batch positions and every per-sample tensor the
    loop reads, compacted together by ``take`` (a new per-sample tensor is a field here).

    idx: None = every sample, in batch order; else LongTensor [rows], the batch positions of
    the rows (the full-batch records are read and written through it, ``_take``/``_put``).
    """

    idx: Tensor | None
    y: Tensor
    lo: Tensor
    hi: Tensor
    step: Tensor
    budget: Tensor | None  # early stop: flips each row may still take before it stops
    p0: Tensor | None  # the KL objective's target distribution
    targets: Tensor | None  # targeted rows (>= 0)

    def take(self, pos: Tensor, *step_tensors: Tensor) -> tuple[Tensor, ...]:
        """Keep the rows at ``pos`` (of the current rows, in that order) of every field, and
        return ``step_tensors`` (this step's per-row tensors: iterate, gradient, ...) cut alike."""
        self.idx = pos if self.idx is None else self.idx.index_select(0, pos)
        for f in fields(self):
            t = getattr(self, f.name)
            if f.name != "idx" and t is not None:
                setattr(self, f.name, t.index_select(0, pos))
        return tuple(t.index_select(0, pos) for t in step_tensors)


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    return mask.reshape(-1, *([1] * (like.dim() - 1)))


def _attack_loss(logits: Tensor, y: Tensor, p0: Tensor | None, weight: Tensor | None,
                 targets: Tensor | None = None) -> Tensor:
    """Summed CE (or KL to p0) over the batch; ``weight`` (0/1 per sample) masks stopped samples;
    a sample with ``targets`` >= 0 ascends -CE(f, target) instead (a targeted attack)."""
    if targets is not None:
        away = F.kl_div(F.log_softmax(logits, dim=1), p0, reduction="none").sum(dim=1) if p0 is not None \
            else F.cross_entropy(logits, y, reduction="none")
        toward = -F.cross_entropy(logits, targets.clamp(min=0), reduction="none")
        per = torch.where(targets >= 0, toward, away)
        return per.sum() if weight is None else (per * weight).sum()
    if p0 is None:
        per = F.cross_entropy(logits, y, reduction="sum" if weight is None else "none")
    else:
        per = F.kl_div(F.log_softmax(logits, dim=1), p0, reduction="sum" if weight is None else "none")
        if weight is not None:
            per = per.sum(dim=1)
    return per if weight is None else (per * weight).sum()


def pgd(
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
    precise_start: bool | None = None,
    p0: Tensor | None = None,
    targets: Tensor | None = None,
    bucket: int | None = None,
) -> PGDResult:
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
            its ``control`` counter). A stopped sample's ``x_last`` is that iterate.
        omega: std of gaussian noise added after every step (FAT; default 0).
        record_boundary: also keep BAT's boundary pair (``x_last_correct``,
            ``x_first_misclassified``), whether or not samples stop early.
            With ``objective="kl", start="gaussian", stop_after_flip=0`` this is
            BAT's Algorithm 1 (docs/DESIGN.md section 3.1).
        precise_start: (default None = when the start is "gaussian" and autocast
            is on) compute p(x) and the first step's forward and backward in fp32.
            The start x + xi * N(0, I) with xi = 0.001 is below bf16's resolution
            (~0.004 near 1), so under bf16 the first KL gradient is rounding noise
            instead of the curvature direction it is in fp32; on digits this weakened
            the TRADES attack by 2.6 points of robust error (docs/PERFORMANCE.md,
            benchmarks/bf16_attack.py).
        p0: ``objective="kl"`` only: the target distribution [B, K] of the KL (ABSLD's
            teacher soft labels); default None = softmax f(x), eval mode, no grad.
        targets: LongTensor [B] or None (default): a sample with a target class t >= 0 is
            attacked *targeted*, descending CE(f(x^k), t) (ascending -CE), the others with
            the objective (TRIX's mixed attack); steps_to_flip still counts flips away from y.
        bucket: with ``stop_after_flip``, the active set shrinks only to multiples of
            this many rows (or stays the whole batch), padded with stopped rows that are
            masked out; None (default) = ``bucket_rows(B)``, 16 per 128 samples; 1 = exact
            compaction. The results do not depend on it: rows are independent in eval mode,
            and ``omega``'s noise is drawn for the whole batch every step.

    Host syncs: none without early stop (per-sample records are kept with
    ``torch.where`` and index copies); with ``stop_after_flip`` exactly one per
    attack step (the count of active samples that sizes the next bucket), taken
    after the step's backward pass has been queued.

    Example::

        res = pgd(model, x, y, eps=8/255, step_size=2/255, steps=20)
        robust_acc = (res.pred_last == y).float().mean()
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if stop_after_flip is not None and stop_after_flip < 0:
        raise ValueError("stop_after_flip must be None or >= 0")
    if bucket is not None and bucket < 1:
        raise ValueError("bucket must be None or >= 1")
    net = runnable(model)
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
    pred_last = torch.zeros(b, **long)
    x_last = torch.zeros_like(x)
    x_clean = x.clone() if record_boundary else None
    x_first = x.clone() if record_boundary else None

    if precise_start is None:
        precise_start = start == "gaussian" and torch.is_autocast_enabled(x.device.type)

    def precision(k: int) -> AbstractContextManager:
        on = precise_start and k == 0
        return torch.autocast(x.device.type, enabled=False) if on else nullcontext()

    if p0 is not None and objective != "kl":
        raise ValueError("p0 is the KL objective's target distribution; it needs objective='kl'")
    with eval_mode(net):
        if objective == "kl" and p0 is None:
            with torch.no_grad(), precision(0):
                p0 = F.softmax(net(x), dim=1)
        # live: None = every active row is attacked; else [rows] bool, False on the stopped
        # rows that pad the bucket.
        act = _ActiveSet(idx=None, y=y, lo=lo, hi=hi, step=step_b, p0=p0, targets=targets,
                         budget=None if stop_after_flip is None else torch.full((b,), stop_after_flip, **long))
        live: Tensor | None = None
        rows = bucket_rows(b) if bucket is None else int(bucket)
        active = b > 0
        prev = x
        for k in range(steps):
            idx = act.idx
            cur = cur.detach().requires_grad_(True)
            with torch.enable_grad(), precision(k):
                logits = net(cur)
                pred = logits.detach().argmax(1)
                wrong = pred != act.y
                right = ~wrong
                if live is not None:
                    wrong, right = wrong & live, right & live
                _put(correct_steps, idx, _take(correct_steps, idx) + right.long())
                stf_a = _take(steps_to_flip, idx)
                first = wrong & (stf_a == -1)
                _put(steps_to_flip, idx, torch.where(first, k, stf_a))
                if record_boundary and k > 0:
                    f = _rows(first, cur)
                    _put(x_clean, idx, torch.where(f, prev, _take(x_clean, idx)))
                    _put(x_first, idx, torch.where(f, cur.detach(), _take(x_first, idx)))
                keep = None
                if act.budget is not None:
                    stop = wrong & (act.budget == 0)
                    act.budget = act.budget - (wrong & ~stop).long()
                    _put(x_last, idx, torch.where(_rows(stop, cur), cur.detach(), _take(x_last, idx)))
                    _put(pred_last, idx, torch.where(stop, pred, _take(pred_last, idx)))
                    keep = ~stop if live is None else live & ~stop
                weight = None if keep is None else keep.to(logits.dtype)
                loss = _attack_loss(logits, act.y, act.p0, weight, act.targets)
                grad = torch.autograd.grad(loss, cur)[0]
            cur = cur.detach()
            if keep is not None:
                n = int(keep.sum())  # the one host sync of an early-stopping step
                if n == 0:
                    active = False
                    break
                size = min(b, -(-n // rows) * rows)
                if size < keep.numel():
                    # the kept rows (in order), then stopped ones up to the bucket's size
                    pos = torch.sort((~keep).to(torch.uint8), stable=True).indices[:size]
                    cur, grad, keep = act.take(pos, cur, grad, keep)
                live = None if n == size else keep
            prev = cur
            cur = cur + act.step * grad.sign()
            if omega > 0:
                cur = cur + omega * _take(torch.randn_like(x), act.idx)  # whole-batch draw: one stream, any bucket
            cur = torch.maximum(torch.minimum(cur, act.hi), act.lo)

        if active:
            idx = act.idx
            # Survivors ran every step: one forward (no backward) for their prediction.
            with torch.no_grad():
                pred = net(cur).argmax(1)
            wrong = pred != act.y
            stf_a = _take(steps_to_flip, idx)
            never = stf_a == -1  # False on the padding rows: they stopped, so they were seen misclassified
            _put(steps_to_flip, idx, torch.where(wrong & never, steps, stf_a))
            if live is not None:  # the padding rows keep the iterate and prediction they stopped with
                cur = torch.where(_rows(live, cur), cur, _take(x_last, idx))
                pred = torch.where(live, pred, _take(pred_last, idx))
            _put(x_last, idx, cur)
            _put(pred_last, idx, pred)
            if record_boundary:
                n = _rows(never, cur)
                _put(x_clean, idx, torch.where(n, prev, _take(x_clean, idx)))
                _put(x_first, idx, torch.where(n, cur, _take(x_first, idx)))

    return PGDResult(
        x_last=x_last,
        pred_last=pred_last,
        steps_to_flip=steps_to_flip,
        correct_steps=correct_steps,
        x_last_correct=x_clean,
        x_first_misclassified=x_first,
    )
