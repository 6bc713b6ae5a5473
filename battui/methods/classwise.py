"""Shared mechanics of the class-wise methods (CFA, DAFA, WAT; FRL's validation).

The TRADES attack and loss terms with per-sample budgets, the dtype of their
per-class sums on the device (`attacks.losses.class_sums`, summed over DDP ranks with
`attacks.losses.sum_over_ranks`), and `validation_sums`, the one per-class loop over the
validation split of FRL's, CFA's and WAT's `end_epoch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from battui.attacks import PGDResult, class_sums, kl_logits, pgd, sum_over_ranks
from battui.attacks.losses import ranks_joined


def trades_terms(model: nn.Module, x: Tensor, y: Tensor, *, eps: float | Tensor, step_size: float | Tensor,
                 steps: int, xi: float, p0: Tensor | None = None,
                 targets: Tensor | None = None) -> tuple[PGDResult, Tensor, Tensor, Tensor]:
    """TRADES attack (per-sample eps / step allowed; `p0` and `targets` as in `pgd`, TRIX's
    mixed attack), then the train-mode terms.

    Returns (attack result, adversarial logits, per-sample CE(f(x), y) [B],
    per-sample KL(p(x) || p(x_adv)) [B]); gradients flow into both logits.
    """
    res = pgd(model, x, y, eps=eps, step_size=step_size, steps=steps,
              objective="kl", start="gaussian", xi=xi, p0=p0, targets=targets)
    model.train()
    logits = model(x)
    logits_adv = model(res.x_last)
    ce = F.cross_entropy(logits, y, reduction="none")
    return res, logits_adv, ce, kl_logits(logits, logits_adv, reduction="none")


def accumulator_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def validation_sums(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], num_classes: int, who: str,
                    names: tuple[str, ...], measure: Callable[[Tensor, Tensor, PGDResult], tuple[Tensor, ...]],
                    **attack) -> dict[str, Tensor]:
    """Per-class sums over the validation split: every batch attacked with ``pgd(model, x, y,
    **attack)``, then ``measure(x, y, result)`` gives one per-sample value [B] (bool or float)
    for each of ``names``, summed per class in the accumulator dtype on the batch's device.

    Returns ``{"seen": samples per class, **{name: sums}}``, each [K] float64 on the CPU, this
    rank's shard summed over the DDP ranks (an empty shard adds zeros; every rank calls it, a
    collective). ``ValueError`` naming ``who`` when the whole split is empty.
    """
    sums = None  # [1 + len(names), K]
    for x, y in batches:
        res = pgd(model, x, y, **attack)
        dtype = accumulator_dtype(y.device)
        part = torch.stack([class_sums(y, num_classes, dtype=dtype),
                            *(class_sums(y, num_classes, v, dtype) for v in measure(x, y, res))])
        sums = part if sums is None else sums + part
    if sums is None:  # this rank's shard is empty; the others' still count
        sums = torch.zeros(1 + len(names), num_classes, dtype=torch.float64)
    sums = sum_over_ranks(sums).to("cpu", torch.float64)  # shards -> the whole split
    if float(sums[0].sum()) == 0:
        raise ValueError(f"{who}: end_epoch needs a non-empty validation split")
    return dict(zip(("seen", *names), sums.unbind(0), strict=True))


def add_batch(sums: Tensor, seen: Tensor, y: Tensor, values: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """An epoch's per-class sums of ``values`` and sample counts with one batch added, kept on
    the batch's device in the accumulator dtype (CFA's robust hits, DAFA's softmax sums)."""
    dtype = accumulator_dtype(y.device)
    sums, seen = sums.to(y.device, dtype), seen.to(y.device, dtype)
    return (sums + class_sums(y, num_classes, values.detach(), dtype),
            seen + class_sums(y, num_classes, dtype=dtype))


def saved_sums(t: Tensor) -> Tensor:
    """An epoch's partial per-class sums as a checkpoint holds them: summed over the DDP ranks
    (each counted its own shard), float64 on the CPU. Every rank calls it (a collective)."""
    return sum_over_ranks(t.detach()).cpu().double()


def resumed_sums(t: Tensor) -> Tensor:
    """`saved_sums` loaded back: the whole on rank 0 and zeros on the others, so the next sum
    over the ranks counts every sample once."""
    import torch.distributed as dist

    return torch.zeros_like(t) if ranks_joined() and dist.get_rank() != 0 else t
