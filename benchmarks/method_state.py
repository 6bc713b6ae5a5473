"""The Method-state decision (methods/base.py docstring), measured: WAT's state as nn.Module
buffers (a prototype, as timm's loss modules hold theirs) against today's plain attributes.

    PYTHONPATH=. .venv/bin/python benchmarks/method_state.py

Prints whether a checkpoint's method_state written today loads into the prototype, the shape
check it gives, the buffers DDP would broadcast from rank 0 at every forward once the method
is a submodule of the LossModule DDP wraps, and the per-step cost of the weights in the step's dtype.
"""

from __future__ import annotations

import timeit

import torch
from torch import nn

from battui.engine.distributed import LossModule
from battui.methods.wat import WAT, hedge_weights


class WATModule(nn.Module):
    """The prototype: cum_cost and rounds as buffers; the rest of WAT unchanged."""

    def __init__(self, num_classes: int = 10, eta: float = 0.1) -> None:
        super().__init__()
        self.num_classes, self.eta = num_classes, eta
        self.register_buffer("cum_cost", torch.zeros(num_classes + 1, dtype=torch.float64))
        self.register_buffer("rounds", torch.zeros((), dtype=torch.long))

    def weights(self, like: torch.Tensor) -> torch.Tensor:
        return hedge_weights(self.cum_cost, self.eta, self.num_classes).to(like.dtype)


def one_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: " + " ".join(str(exc).split())


today = WAT(num_classes=10)
today.cum_cost += torch.arange(11.0)
today.rounds = 3
saved = today.state_dict()  # what last.pt's method_state holds today
print("today's method_state:", {k: type(v).__name__ for k, v in saved.items()})
proto = WATModule(10)
print("prototype state_dict:", {k: str(v.dtype) for k, v in proto.state_dict().items()})
try:
    proto.load_state_dict(saved)
    print("today's checkpoint loads into the prototype")
except Exception as exc:  # noqa: BLE001  (the point is what it raises)
    print("today's checkpoint into the prototype:", one_line(exc))
try:
    WATModule(4).load_state_dict(proto.state_dict())
except Exception as exc:  # noqa: BLE001
    print("shape check for free:", one_line(exc))
# the method sits inside the LossModule that DDP wraps: as an nn.Module it becomes a submodule
print("buffers DDP would broadcast from rank 0 at every forward (broadcast_buffers=True):",
      [n for n, _ in LossModule(nn.Linear(3, 10), WATModule(10)).named_buffers()],
      "; today:", [n for n, _ in LossModule(nn.Linear(3, 10), WAT(num_classes=10)).named_buffers()])
x = torch.zeros(128, 10)
cached = lambda: today.on_device("w", (today.cum_cost,), x, lambda: today.weights)  # noqa: E731
t_today = min(timeit.repeat(cached, number=2000, repeat=5)) / 2000
t_proto = min(timeit.repeat(lambda: proto.weights(x), number=2000, repeat=5)) / 2000
print(f"per step: today's on_device cache hit {t_today * 1e6:.1f} us; "
      f"buffers, weights recomputed and cast {t_proto * 1e6:.1f} us")
