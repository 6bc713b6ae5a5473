"""`engine.loop.train_epoch` on its own: tiny parts (a linear model on synthetic images,
PGD-AT with 2 steps), no `Trainer`, no run directory. Steps, events, counters, the
save / stop flags and failures, through the `emit` and `save` callbacks.

    .venv/bin/pytest tests/test_engine_epoch_loop.py -q
"""

from __future__ import annotations

import torch

from battui.data.batches import Batches
from battui.data.splits import ArraySplit
from battui.engine.distributed import LossModule
from battui.engine.events import BatchEvent, TrainAttack
from battui.engine.loop import EpochEnd, EpochParts, train_epoch
from battui.engine.metrics import ClassCounter
from battui.methods import build_method

K, N, BATCH = 3, 32, 8  # 4 batches of 8 images, 3 classes


def tiny_parts(**options) -> EpochParts:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, 4, 4), generator=g, dtype=torch.uint8)
    labels = torch.arange(N) % K
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, K))
    method = build_method("pgd-at", eps=0.1, step_size=0.05, steps=2)
    return EpochParts(step_module=LossModule(model, method), method=method,
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                      batches=Batches(ArraySplit(images, labels), BATCH), counter=ClassCounter(K, 2),
                      epochs=2, **options)


class Saves:
    """A `save` callback that records its calls and answers `ok`."""

    def __init__(self, ok: bool = True) -> None:
        self.calls: list[tuple[int, int, str]] = []
        self.ok = ok

    def __call__(self, step: int, batch_done: int, kind: str) -> bool:
        self.calls.append((step, batch_done, kind))
        return self.ok


def test_an_epoch_steps_counts_and_emits_without_a_trainer():
    parts = tiny_parts(log_every=2, stats_every=3)
    weights = parts.step_module.model[1].weight.detach().clone()
    events, saves = [], Saves()
    end = train_epoch(parts, 0, step=5, emit=events.append, save=saves)
    assert end == EpochEnd(step=9, batches_done=4)
    assert saves.calls == []
    batch_events = [e for e in events if isinstance(e, BatchEvent)]
    assert [(e.batch, e.step, e.batches) for e in batch_events] == [(2, 7, 4), (4, 9, 4)]
    assert all(e.loss > 0 and set(e.parts) == {"ce_adv"} for e in batch_events)  # PGD-AT's one term
    attack = [e for e in events if isinstance(e, TrainAttack)]
    assert [(e.batch, e.partial) for e in attack] == [(3, True)]  # the final one is the trainer's
    assert sum(map(sum, attack[0].step_hist)) == 3 * BATCH
    assert parts.counter.counts.tolist() == [11, 11, 10]  # every image once, by class
    assert int(parts.counter.step_hist.sum()) == N
    assert not torch.equal(parts.step_module.model[1].weight, weights)  # it trained


def test_resume_mid_epoch_trains_only_the_rest():
    parts = tiny_parts(log_every=100)
    end = train_epoch(parts, 1, step=10, start_batch=3, emit=lambda e: None, save=Saves())
    assert end == EpochEnd(step=11, batches_done=4)
    assert int(parts.counter.counts.sum()) == BATCH


def test_save_now_and_stop_flags_call_save_then_end_interrupted():
    parts = tiny_parts()
    parts.control.save_now.set()  # `battui watch` s: saved after the next step

    def emit(event):
        if isinstance(event, BatchEvent) and event.batch == 2:
            parts.control.request_stop("test")

    saves = Saves()
    end = train_epoch(parts, 0, step=0, emit=emit, save=saves)
    assert saves.calls == [(1, 1, "manual"), (2, 2, "last")]
    assert end == EpochEnd(step=2, batches_done=2, outcome="interrupted")
    assert not parts.control.save_now.is_set()


def test_a_failed_save_fails_the_epoch():
    parts = tiny_parts()
    parts.control.save_now.set()
    end = train_epoch(parts, 0, step=0, emit=lambda e: None, save=Saves(ok=False))
    assert end == EpochEnd(step=1, batches_done=1, outcome="failed")  # the save reported its own reason


def test_a_non_finite_loss_fails_before_stepping():
    parts = tiny_parts()
    real = parts.method.loss

    def loss(model, x, y):
        out = real(model, x, y)
        out.loss = out.loss * float("nan")
        return out

    parts.method.loss = loss
    weights = parts.step_module.model[1].weight.detach().clone()
    end = train_epoch(parts, 0, step=7, emit=lambda e: None, save=Saves())
    assert (end.step, end.batches_done, end.outcome) == (7, 0, "failed")
    assert "non-finite loss" in end.failure and "epoch 1 batch 1 (step 8)" in end.failure
    assert torch.equal(parts.step_module.model[1].weight, weights)
