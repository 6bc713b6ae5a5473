"""The method contract (docs/DESIGN.md section 3.4), as checks a method author runs on their own method.

    from battui.methods import check_method, assert_method_contract
    for c in check_method("my_pkg.losses:MyLoss"):     # or a Method subclass, or a built-in name
        print(c.ok, c.name, c.detail)
    assert_method_contract("my-loss", beta=2.0)        # in a pytest test: AssertionError listing what failed

`battui methods --check NAME` runs the same checks from the command line. They build the
method from its defaults (plus the given parameters; a small budget eps 0.1, step 0.025, 5
steps; `num_classes` when it takes one), run one `loss` on a small BatchNorm CNN behind a
DDP-like wrapper, and check what the engine relies on: a scalar loss with grad, train mode
after, no parameter grads left by the attack, the attack run on the unwrapped model, parts
that are floats summing to the loss, the attack record's shapes and range, gradients for
every parameter, `end_epoch` (with validation batches) returning floats, and the state
surviving `torch.save` / `torch.load(weights_only=True)` into a fresh instance.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from battui.methods.base import Method, MethodOutput
from battui.methods.plugins import check_class

BUDGET = {"eps": 0.1, "step_size": 0.025, "steps": 5}
CLASSES, BATCH, SIDE = 4, 12, 8


@dataclass
class ContractCheck:
    """One check: its name, whether it passed, and what was seen when it did not."""

    name: str
    ok: bool
    detail: str = ""


class _Wrapped(nn.Module):
    """Stands in for DistributedDataParallel: `.module` is the model (the attack's), forwards are counted."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.module(x)


def _problem(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * SIDE * SIDE, CLASSES))
    x = torch.rand(BATCH, 3, SIDE, SIDE, generator=gen)
    y = torch.arange(BATCH) % CLASSES
    return model, x, y


def _build(cls: type[Method], params: dict[str, Any]) -> Method:
    accepted = cls.defaults()
    kwargs = {k: v for k, v in BUDGET.items() if k in accepted}
    if "num_classes" in accepted:
        kwargs["num_classes"] = CLASSES
    kwargs.update(params)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{cls.__name__} has no parameter(s) {', '.join(unknown)}; valid: {', '.join(accepted)}")
    return cls(**kwargs)


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, (bool, int, float, str))


def check_method(method: str | type[Method], seed: int = 0, **params: Any) -> list[ContractCheck]:
    """Run the contract checks on a method (a name `--method` accepts, or a `Method` subclass)."""
    from battui.methods import method_class

    checks: list[ContractCheck] = []

    def check(name: str, test: Callable[[], Any]) -> bool:
        try:
            result = test()
        except Exception as exc:  # a check that raises has failed; the message says how
            checks.append(ContractCheck(name, False, f"{type(exc).__name__}: {exc}"))
            return False
        ok, detail = (result, "") if isinstance(result, bool) else result
        checks.append(ContractCheck(name, bool(ok), "" if ok else detail))
        return bool(ok)

    cls = method_class(method) if isinstance(method, str) else check_class(method, f"class {method!r}")
    defaults = cls.defaults()
    check("every parameter has a plain default (number, string, bool or a list of them)",
          lambda: (all(_plain(v) for v in defaults.values()),
                   ", ".join(f"{k}={v!r}" for k, v in defaults.items() if not _plain(v))))
    built: list[Method] = []
    if not check("builds from its defaults", lambda: built.append(_build(cls, params)) or True):
        return checks
    impl = built[0]
    model, x, y = _problem(seed)
    if getattr(impl, "teacher_from", None):  # a distilling method gets a teacher, as the engine hands it over
        impl.use_teacher(_problem(seed + 1)[0])
    wrapped = _Wrapped(model)
    model.eval()
    impl.start_epoch(0, 2)
    outs: list[MethodOutput] = []
    if not check("loss(model, x, y) returns a MethodOutput",
                 lambda: (isinstance(o := impl.loss(wrapped, x, y), MethodOutput) and outs.append(o) is None,
                          "it returned something else")):
        return checks
    out = outs[0]
    check("the loss is a scalar tensor with grad",
          lambda: (out.loss.dim() == 0 and out.loss.requires_grad,
                   f"shape {tuple(out.loss.shape)}, requires_grad={out.loss.requires_grad}"))
    check("the model is in train mode after loss", lambda: (model.training, "it is left in eval mode"))
    check("the attack leaves no parameter gradients",
          lambda: (all(p.grad is None for p in model.parameters()), "call torch.autograd.grad on the input only"))
    check("the attack runs on unwrap(model), the loss forwards on the wrapper",
          lambda: (1 <= wrapped.calls < max(impl.steps, 2), f"{wrapped.calls} forwards went through the wrapper"))
    check("parts are floats that add up to the loss",
          lambda: (all(isinstance(v, float) for v in out.parts.values())
                   and math.isclose(sum(out.parts.values()), out.loss.item(), rel_tol=1e-5, abs_tol=1e-6),
                   f"parts {dict(out.parts)} vs loss {out.loss.item():.6g}"))
    steps = int(getattr(impl, "steps", BUDGET["steps"]))

    def record() -> tuple[bool, str]:
        stf, pred = out.attack.steps_to_flip, out.attack.adv_pred
        shapes = stf.shape == pred.shape == (BATCH,) and stf.dtype == pred.dtype == torch.long
        ranges = bool(((stf >= -1) & (stf <= steps)).all()) and bool(((pred >= 0) & (pred < CLASSES)).all())
        return shapes and ranges and not stf.requires_grad, \
            f"steps_to_flip {stf.dtype} {tuple(stf.shape)}, adv_pred {pred.dtype} {tuple(pred.shape)}"

    check(f"the attack record: LongTensors [B], steps_to_flip in -1..{steps}, adv_pred a class", record)
    check("backward reaches every parameter",
          lambda: (out.loss.backward() is None and all(p.grad is not None for p in model.parameters()),
                   "some parameters got no gradient"))
    val = [(x[: BATCH // 2], y[: BATCH // 2]), (x[BATCH // 2:], y[BATCH // 2:])]
    if impl.needs_validation:
        check("end_epoch(model, val_batches) returns {name: float}",
              lambda: (isinstance(r := impl.end_epoch(model, val), dict)
                       and all(isinstance(v, (int, float)) for v in r.values()), "it returned something else"))

    def round_trip() -> bool:
        buf = io.BytesIO()
        torch.save(impl.state_dict(), buf)
        buf.seek(0)
        _build(cls, params).load_state_dict(torch.load(buf, weights_only=True))
        return True

    check("state_dict survives torch.save / torch.load(weights_only=True) into a fresh instance", round_trip)
    return checks


def assert_method_contract(method: str | type[Method], seed: int = 0, **params: Any) -> None:
    """`check_method`, raising AssertionError that lists every failed check (for a user's pytest test)."""
    failed = [c for c in check_method(method, seed, **params) if not c.ok]
    if failed:
        raise AssertionError("method contract not met: " + "; ".join(f"{c.name} ({c.detail})" for c in failed))
