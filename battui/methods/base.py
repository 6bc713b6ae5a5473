"""The interface every training method implements, and its records."""

from __future__ import annotations

import abc
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


@dataclass
class AttackRecord:
    """Per-sample outcome of the method's training attack (detached).

    steps_to_flip: LongTensor [B]; attack steps until first misclassified,
        0 = start point already was, -1 = never within the budget.
    adv_pred: LongTensor [B]; eval-mode prediction on the adversarial example.
    """

    steps_to_flip: Tensor
    adv_pred: Tensor


@dataclass
class MethodOutput:
    """One step's loss (scalar with grad), its named terms and the attack record.

    ``parts`` are plain floats that add up to ``loss`` (for the loss plot).
    """

    loss: Tensor
    parts: dict[str, float]
    attack: AttackRecord


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP/DataParallel wrapper (the attack runs on it)."""
    return getattr(model, "module", model)


def float_parts(**terms: Tensor) -> dict[str, float]:
    """Detached scalar terms as plain floats, with one device sync."""
    values = torch.stack([t.detach() for t in terms.values()]).tolist()
    return dict(zip(terms, values, strict=True))


class Method(abc.ABC):
    """Base class: attack parameters shared by every method.

    Arguments:
        eps: Linf budget (default 8/255). step_size: attack step (default 2/255).
        steps: attack steps during training (default 10).

    Subclasses implement ``loss``; the caller does backward and the optimizer
    step. The model is put in eval mode for the attack and in train mode for
    the loss forward passes, as the TRADES reference code does.
    """

    name: ClassVar[str] = ""
    needs_validation: ClassVar[bool] = False

    def __init__(self, eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10) -> None:
        self.eps = float(eps)
        self.step_size = float(step_size)
        self.steps = int(steps)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Accepted parameters and their defaults (from ``__init__``'s signature)."""
        out: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name != "self" and p.default is not inspect.Parameter.empty:
                    out[p.name] = p.default
        return out

    @abc.abstractmethod
    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> MethodOutput:
        """One training step's loss on the batch (x in [0, 1], y class indices)."""

    def start_epoch(self, epoch: int, total_epochs: int) -> None:
        """Called before each epoch; ``epoch`` counts from 0."""
        return None

    def end_epoch(self, model: nn.Module, val_batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        """Called after each epoch with validation batches (only used if ``needs_validation``)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Method state for checkpoints: tensors and plain containers only."""
        return {}

    def averaged_state(self) -> dict[str, Tensor] | None:
        """Weights the run should end with instead of the last ones (CFA's FAWA), or None."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name} carries no state, got keys {sorted(state)}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k, v)!r}" for k, v in self.defaults().items())
        return f"{type(self).__name__}({args})"
