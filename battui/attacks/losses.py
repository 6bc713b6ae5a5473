"""Loss helpers the methods share: KL terms and per-class counting."""

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


def count_values(index: Tensor, n: int, weights: Tensor | None = None) -> Tensor:
    """How often each of 0..n-1 occurs in ``index`` [B] (long [n]), or the sum of
    ``weights`` [B] per value; deterministic and without a host sync on every device."""
    hot = one_hot(index, n)
    if weights is None:
        return hot.sum(dim=0)
    return (hot.to(weights.dtype) * weights.unsqueeze(-1)).sum(dim=0)


def per_class_mean(values: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Mean of ``values`` [B] over the samples of each class -> [K] (0 for absent classes)."""
    v = values.to(torch.float64)
    sums = count_values(y, num_classes, v)
    counts = count_values(y, num_classes).to(torch.float64)
    return sums / counts.clamp(min=1)
