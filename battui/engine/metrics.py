"""Per-class counting: the one place where robust-fairness numbers are computed.

Definitions (docs/DESIGN.md section 4, the paper's and FRL's), per class c:
- standard error: clean prediction wrong;
- boundary error: clean prediction right and adversarial prediction wrong;
- robust error: clean wrong or adversarial wrong (= standard + boundary exactly);
- Avg / Worst: mean / max over classes, in percent.
Source-class fairness: histogram of `steps_to_flip` per class (0..K, never).
Target-class fairness: adversarial confusion matrix; its column sums over flipped
samples (off-diagonal) give the target distribution, and its KL to uniform.

    counter = ClassCounter(num_classes=10, attack_steps=20)
    counter.update(y, adv_pred, steps_to_flip, clean_pred)    # per batch, on any device
    summary = counter.summed().errors()                        # summed over DDP ranks
    saved = counter.summed().state()                           # for a checkpoint (CPU tensors)
    counter.reset(saved)                                       # restored (or zeroed without state)
"""

from __future__ import annotations

import math

import torch

from battui.attacks.losses import class_sums, one_hot, sum_over_ranks


class ClassCounter:
    """Accumulates per-class outcomes of an attack over batches, vectorised."""

    def __init__(self, num_classes: int, attack_steps: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.attack_steps = attack_steps
        k = num_classes
        self.counts = torch.zeros(k, dtype=torch.long, device=device)
        self.clean_wrong = torch.zeros(k, dtype=torch.long, device=device)
        self.boundary_wrong = torch.zeros(k, dtype=torch.long, device=device)
        self.adv_confusion = torch.zeros(k, k, dtype=torch.long, device=device)
        self.step_hist = torch.zeros(k, attack_steps + 2, dtype=torch.long, device=device)

    def _tensors(self) -> list[torch.Tensor]:
        return [self.counts, self.clean_wrong, self.boundary_wrong, self.adv_confusion, self.step_hist]

    @torch.no_grad()
    def update(
        self,
        y: torch.Tensor,
        adv_pred: torch.Tensor,
        steps_to_flip: torch.Tensor,
        clean_pred: torch.Tensor | None = None,
    ) -> None:
        """Add one batch. `clean_pred` may be omitted for training-attack statistics."""
        k = self.num_classes
        dev = self.counts.device
        y = y.to(dev).long()
        adv_pred = adv_pred.to(dev).long()
        steps = steps_to_flip.to(dev).long()
        # per-class sums of one-hot rows: no host sync (bincount and mask indexing wait on CUDA)
        self.counts += class_sums(y, k)
        self.adv_confusion += class_sums(y, k, one_hot(adv_pred, k))
        never = self.attack_steps + 1
        bins = torch.where(steps < 0, never, steps.clamp(max=self.attack_steps))
        self.step_hist += class_sums(y, k, one_hot(bins, never + 1))
        if clean_pred is not None:
            clean_ok = clean_pred.to(dev).long() == y
            self.clean_wrong += class_sums(y, k, ~clean_ok)
            self.boundary_wrong += class_sums(y, k, clean_ok & (adv_pred != y))

    def summed(self) -> ClassCounter:
        """A copy holding the counts summed over DDP ranks (a plain copy when not distributed);
        this counter keeps counting this rank's samples."""
        out = ClassCounter(self.num_classes, self.attack_steps, device=self.counts.device)
        for dst, src in zip(out._tensors(), self._tensors(), strict=True):
            dst.copy_(sum_over_ranks(src))
        return out

    def state(self) -> dict:
        """The counts as CPU tensors, for a checkpoint (`reset(state)` restores them)."""
        return {"tensors": [t.cpu() for t in self._tensors()]}

    def reset(self, state: dict | None = None) -> None:
        """Zero the counts, or set them to a saved `state()`."""
        if not state:
            for t in self._tensors():
                t.zero_()
            return
        for t, saved in zip(self._tensors(), state["tensors"], strict=True):
            t.copy_(torch.as_tensor(saved).to(t.device))

    def errors(self) -> dict:
        """Per-class standard/boundary/robust error (%), avg and worst, and the raw counts."""
        counts = self.counts.cpu()
        denom = counts.clamp(min=1).double()
        standard = (100.0 * self.clean_wrong.cpu() / denom).tolist()
        boundary = (100.0 * self.boundary_wrong.cpu() / denom).tolist()
        robust = [s + b for s, b in zip(standard, boundary)]
        per = {"standard": standard, "boundary": boundary, "robust": robust}
        present = [i for i, c in enumerate(counts.tolist()) if c > 0] or list(range(self.num_classes))
        return {
            "n": int(counts.sum()),
            "counts": counts.tolist(),
            **per,
            "avg": {k: sum(v[i] for i in present) / len(present) for k, v in per.items()},
            "worst": {k: max(v[i] for i in present) for k, v in per.items()},
            "adv_confusion": self.adv_confusion.cpu().tolist(),
            "step_hist": self.step_hist.cpu().tolist(),
        }


def mean_steps(step_hist: list[list[int]]) -> list[float | None]:
    """Mean attack steps to the first misclassification per class, over flipped samples."""
    out: list[float | None] = []
    for row in step_hist:
        flipped = row[:-1]
        n = sum(flipped)
        out.append(sum(s * c for s, c in enumerate(flipped)) / n if n else None)
    return out


def never_flipped(step_hist: list[list[int]]) -> list[float]:
    """Share (%) of each class's samples the attack never misclassified."""
    return [100.0 * row[-1] / sum(row) if sum(row) else 0.0 for row in step_hist]


def target_distribution(confusion: list[list[int]]) -> list[float]:
    """Share of flipped samples (off-diagonal) landing in each predicted class."""
    k = len(confusion)
    cols = [sum(confusion[r][c] for r in range(k) if r != c) for c in range(k)]
    total = sum(cols)
    return [c / total for c in cols] if total else [0.0] * k


def kl_to_uniform(dist: list[float]) -> float:
    """KL(q || U) = sum q log(q K); 0 for a uniform target distribution."""
    k = len(dist)
    return float(sum(q * math.log(q * k) for q in dist if q > 0))
