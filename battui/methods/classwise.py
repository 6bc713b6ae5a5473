"""Shared mechanics of the class-wise TRADES variants (CFA, DAFA, WAT).

The TRADES attack and loss terms with per-sample budgets, and per-class sums
accumulated on the device (summed over DDP ranks when distributed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from battui.attacks import PGDResult, kl_logits, pgd
from battui.attacks.losses import one_hot
from battui.methods.base import unwrap


def trades_terms(model: nn.Module, x: Tensor, y: Tensor, *, eps: float | Tensor, step_size: float | Tensor,
                 steps: int, xi: float) -> tuple[PGDResult, Tensor, Tensor, Tensor]:
    """TRADES attack (per-sample eps / step allowed), then the train-mode terms.

    Returns (attack result, adversarial logits, per-sample CE(f(x), y) [B],
    per-sample KL(p(x) || p(x_adv)) [B]); gradients flow into both logits.
    """
    res = pgd(unwrap(model), x, y, eps=eps, step_size=step_size, steps=steps,
              objective="kl", start="gaussian", xi=xi)
    model.train()
    logits = model(x)
    logits_adv = model(res.x_last)
    ce = F.cross_entropy(logits, y, reduction="none")
    return res, logits_adv, ce, kl_logits(logits, logits_adv, reduction="none")


def class_sums(y: Tensor, values: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """Per-class sums of ``values`` ([B] or [B, D]) -> [K] or [K, D], as a one-hot
    matmul (deterministic on every device, no host sync)."""
    onehot = one_hot(y, num_classes).to(dtype)
    return onehot.t() @ values.to(dtype)


def accumulator_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def sum_across_ranks(t: Tensor) -> Tensor:
    """``t`` summed over DDP ranks (a CPU float64 copy); ``t`` itself when not distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return t.detach().to("cpu", torch.float64)
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    buf = t.detach().to(dev, torch.float32 if dev.type == "mps" else torch.float64).clone()
    dist.all_reduce(buf)
    return buf.cpu()
