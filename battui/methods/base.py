"""The interface every training method implements, and its records.

Method state stays plain attributes (not `nn.Module` buffers), decided with a measured
prototype (WAT's `cum_cost`/`rounds` as buffers, as timm's loss modules hold theirs):

- DDP: a method is held by the `LossModule` that DDP wraps (engine/distributed.py); as an
  `nn.Module` its buffers become DDP's (`method.cum_cost`, `method.rounds`) and are
  broadcast from rank 0 at every forward (`broadcast_buffers=True`, which the model's
  BatchNorm statistics need), overwriting each rank's own partial per-class sums (CFA's
  hits/seen, DAFA's similarity sums) -- a change of results, not a refactor.
- Checkpoints: last.pt's `method_state` holds plain ints and nested dicts (`rounds`,
  `measured_epochs`, `epoch`, CFA's FAWA weights or None); `nn.Module.load_state_dict`
  refuses today's files ("expected torch.Tensor ... but received <class 'int'>"), so a
  loader for them is needed anyway, and the FAWA average is not a fixed set of buffers.
- Device moves: the per-class updates run in float64 on the host between epochs and the
  loss wants the step's device and dtype; buffers give a device move, not the derived
  per-class weights in the step's dtype: recomputing and casting WAT's weights every step
  took 48 us against 0.7 us for the `on_device` cache hit, so a cache is needed either way
  (benchmarks/method_state.py, PyTorch 2.14, a 2-thread CPU).
- Shape checks come for free, but as a multi-line RuntimeError; `checked_tensors` gives
  the one-line error naming the method and the key.

So `on_device` (a device copy per change of the host-side state) and `checked_tensors`
(the one shape check of a `load_state_dict`) stay the one mechanism of every method.
"""

from __future__ import annotations

import abc
import inspect
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from battui.attacks import unwrap as unwrap  # public API (battui.methods): the model's own state_dict keys (CFA's FAWA)
from battui.errors import MAX_ATTACK_STEPS


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

    ``parts`` map names to plain floats that add up to ``loss`` (for the loss
    plot); the values stay on the device until first read (``LossParts``).
    """

    loss: Tensor
    parts: Mapping[str, float]
    attack: AttackRecord


class LossParts(Mapping):
    """Named scalar loss terms, kept as one detached device tensor.

    Reading a value fetches all of them with one device sync (the first time);
    the engine sums ``tensor`` over a logging window on the device instead,
    so a training step does not wait for them.
    """

    def __init__(self, names: tuple[str, ...], values: Tensor) -> None:
        self.names, self.tensor = names, values
        self._floats: dict[str, float] | None = None

    def _fetch(self) -> dict[str, float]:
        if self._floats is None:
            self._floats = dict(zip(self.names, self.tensor.tolist(), strict=True))
        return self._floats

    def __getitem__(self, key: str) -> float:
        return self._fetch()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"LossParts({dict(self)})"


def float_parts(**terms: Tensor) -> LossParts:
    """Detached scalar terms; plain floats when read (no device sync until then)."""
    return LossParts(tuple(terms), torch.stack([t.detach() for t in terms.values()]))


class Method(abc.ABC):
    """Base class: attack parameters shared by every method.

    Arguments:
        eps: Linf budget (default 8/255). step_size: attack step (default 2/255).
        steps: attack steps during training (default 10).

    Subclasses implement ``loss``; the caller does backward and the optimizer
    step. The model is put in eval mode for the attack and in train mode for
    the loss forward passes, as the TRADES reference code does.
    """

    name: ClassVar[str] = ""  # the registry name (`--method`)
    label: ClassVar[str] = ""  # the paper's row name in tables and figures
    needs_validation: ClassVar[bool] = False  # `end_epoch` gets validation batches
    fine_tunes_from: ClassVar[str] = ""  # a method whose trained weights this one starts from (FRL: pgd-at)
    needs_start: ClassVar[bool] = False  # refuses to train without train.init_from (FAAL)
    teacher_from: ClassVar[str] = ""  # the method `battui table` trains as the teacher when none is given (ABSLD)
    train_defaults: ClassVar[dict[str, Any]] = {}  # the method's own `train` schedule over the preset's (FAAL)
    # each numeric parameter's range, (low, high, low_open), None = unbounded; checked by the registry
    # (`build_method`) for the parameters a method takes. A subclass extends it: {**Method.param_ranges, ...}
    param_ranges: ClassVar[dict[str, tuple[float | None, float | None, bool]]] = {
        "eps": (0.0, 1.0, True), "step_size": (0.0, 1.0, True), "steps": (1, MAX_ATTACK_STEPS, False),
        "val_steps": (1, MAX_ATTACK_STEPS, False), "beta": (0.0, None, False), "alpha": (0.0, None, False),
        "xi": (0.0, 1.0, True), "tau": (0.0, None, False), "rate": (0.0, None, False), "rate2": (0.0, None, False),
        "lim": (0.0, None, False), "eps_scale_min": (0.0, None, True), "eps_scale_max": (0.0, None, True),
        "omega": (0.0, None, False), "lambda1": (0.0, None, False), "lambda2": (0.0, None, False),
        "warmup": (0.0, 1.0, False), "fawa_decay": (0.0, 1.0, False), "fawa_threshold": (0.0, 1.0, False),
        "eta": (0.0, None, True), "num_classes": (2, 100_000, False),
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__doc__ is None:  # a method's file documents it (paper, formula, arguments, example)
            cls.__doc__ = sys.modules[cls.__module__].__doc__

    def __init__(self, eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10) -> None:
        self.eps = float(eps)
        self.step_size = float(step_size)
        self.steps = int(steps)
        self._device_cache: dict[str, tuple[tuple, Tensor]] = {}

    def on_device(self, key: str, sources: tuple[Tensor, ...], like: Tensor, build: Callable[[], Tensor]) -> Tensor:
        """``build()`` moved to ``like``'s device and dtype, cached until one of ``sources``
        (the host-side state it derives from) is replaced or modified in place, so
        per-class state is copied to the device once per change, not every step."""
        stamp = (like.device, like.dtype, *((id(s), s._version) for s in sources))
        hit = self._device_cache.get(key)
        if hit is not None and hit[0][0] == stamp:
            return hit[1]
        value = build().to(device=like.device, dtype=like.dtype)
        self._device_cache[key] = ((stamp, sources), value)  # holding `sources` keeps their ids unique
        return value

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

    @classmethod
    def label_head(cls, params: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        """The row name for `params` and the parameters it already shows (others are listed after it)."""
        return cls.label or cls.name, ()

    @classmethod
    def fine_tune_schedule(cls, train: Any) -> None:
        """Adjust a `train` config section for fine-tuning (only for methods with `fine_tunes_from`):
        by default the method's `train_defaults`."""
        for key, value in cls.train_defaults.items():
            setattr(train, key, value)

    @classmethod
    def start_method(cls, params: dict[str, Any]) -> str:
        """The method whose trained weights a row with `params` starts from (`fine_tunes_from`)."""
        return cls.fine_tunes_from

    def use_teacher(self, teacher: nn.Module) -> None:
        """Receive the loaded teacher (eval mode, on the training device; methods with `teacher_from`)."""
        raise ValueError(f"{self.name} distils no teacher")

    @abc.abstractmethod
    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> MethodOutput:
        """One training step's loss on the batch (x in [0, 1], y class indices)."""

    def start_epoch(self, epoch: int, total_epochs: int) -> None:
        """Called before each epoch; ``epoch`` counts from 0."""
        return None

    def start_training(self, model: nn.Module, val_batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """Called once before the first epoch of a fresh run (not on a resume), with the
        validation batches (FRL updates its multipliers here too, as its reference does)."""
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

    def checked_tensors(self, state: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Tensor]:
        """The tensors ``shapes`` names in a saved ``state``, as CPU float64, each checked
        against its shape (``ValueError`` naming the method, the key and both shapes):
        the one check of every ``load_state_dict`` with per-class state."""
        out = {}
        for key, shape in shapes.items():
            t = torch.as_tensor(state[key], dtype=torch.float64).cpu()
            if t.shape != shape:
                raise ValueError(f"{self.name}: {key} has shape {tuple(t.shape)}, expected {shape}")
            out[key] = t
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k, v)!r}" for k, v in self.defaults().items())
        return f"{type(self).__name__}({args})"
