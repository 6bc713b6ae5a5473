"""Loss helpers the methods share: KL terms, per-class sums and their sums over DDP ranks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def kl_logits(p_logits: Tensor, q_logits: Tensor, reduction: str = "batchmean") -> Tensor:
    """KL(p || q) with p = softmax(p_logits), q = softmax(q_logits).

    ``reduction="none"`` gives the per-sample KL [B]; "batchmean" its mean.
    Gradients flow into both arguments unless the caller detaches one.
    """
    per_elem = F.kl_div(F.log_softmax(q_logits, dim=1), F.softmax(p_logits, dim=1), reduction="none")
    per_sample = per_elem.sum(dim=1)
    if reduction == "none":
        return per_sample
    if reduction == "batchmean":
        return per_sample.mean()
    raise ValueError(f"reduction must be 'none' or 'batchmean', got {reduction!r}")


def kl_uniform(logits: Tensor, direction: str = "paper") -> Tensor:
    """Batch-mean KL between the uniform distribution U over K classes and p.

    direction="paper": KL(U || p) (BAT Eq. 6) = -log K - mean_k log p_k.
    direction="code":  KL(p || U) (the BAT public code) = sum_k p_k log p_k + log K.
    """
    k = logits.shape[1]
    log_p = F.log_softmax(logits, dim=1)
    if direction == "paper":
        return (-math.log(k) - log_p.mean(dim=1)).mean()
    if direction == "code":
        return ((log_p.exp() * log_p).sum(dim=1) + math.log(k)).mean()
    raise ValueError(f"uniform_kl must be 'paper' or 'code', got {direction!r}")


def one_hot(index: Tensor, n: int) -> Tensor:
    """Bool [..., n] with True at ``index`` -- an elementwise compare: unlike ``F.one_hot``
    (which checks the range on the host) and ``bincount`` it never waits for the device."""
    return index.unsqueeze(-1) == torch.arange(n, device=index.device)


def class_sums(y: Tensor, num_classes: int, values: Tensor | None = None,
               dtype: torch.dtype | None = None) -> Tensor:
    """Per-class sums of ``values`` ([B] or [B, D]) over the samples of each class of ``y``
    -> [K] or [K, D]; the class counts when ``values`` is None. Bool values give long
    counts; ``dtype`` sets the accumulator. The one per-class sum of battui: one-hot
    products summed on the device, deterministic and without the host sync of ``bincount``."""
    hot = one_hot(y, num_classes)
    v = torch.ones_like(y, dtype=torch.bool) if values is None else values
    if dtype is not None:
        hot, v = hot.to(dtype), v.to(dtype)
    elif v.dtype != torch.bool:
        hot = hot.to(v.dtype)
    hot = hot.reshape(*hot.shape, *([1] * (v.dim() - 1)))
    return (hot * v.unsqueeze(1)).sum(dim=0)


def per_class_mean(values: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Mean of ``values`` [B] over the samples of each class -> [K] (0 for absent classes)."""
    sums = class_sums(y, num_classes, values, torch.float64)
    counts = class_sums(y, num_classes, dtype=torch.float64)
    return sums / counts.clamp(min=1)


def ranks_joined() -> bool:
    """Whether this process is one of the ranks of a DDP process group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def sum_over_ranks(t: Tensor) -> Tensor:
    """``t`` summed over the DDP ranks (a new tensor on ``t``'s device and dtype), or ``t``
    itself when not distributed. The one cross-process sum of battui (per-class counts and
    sums, evaluation tallies); it moves ``t`` to the backend's device when it must (nccl: CUDA)."""
    if not ranks_joined():
        return t
    import torch.distributed as dist

    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    buf = t.detach().to(dev, copy=True)
    dist.all_reduce(buf)
    return buf.to(t.device)
