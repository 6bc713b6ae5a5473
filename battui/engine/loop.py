"""One training epoch: forward through the method, backward, step, and the flags in between.

Per batch, in this order:
1. pause: wait (the stop flag still ends the wait), with `paused` / `resumed` events; a save
   asked for while paused is done at once; under DDP every rank waits, the flags agreed;
2. `method.loss` under bf16 autocast when enabled (attack + loss; one DDP forward);
3. a non-finite loss on any rank (agreed across ranks *before* backward, so no
   rank waits in an all-reduce another skipped) fails the run without stepping;
   `last.pt` keeps the last good weights;
4. backward and optimiser step; the training attack's outcome goes into the
   epoch's `ClassCounter` (step histograms, target confusion) and the loss terms
   into the window's sums, both on the device: a step waits for the device once
   (the loss value of step 3; under DDP once more for the flags of step 6), and the
   sums are fetched only when an event is written;
5. `batch` events every `train.log_every` batches, partial `train_attack`
   events every `train.attack_stats_every` batches;
6. the stop / save_now / pause flags (agreed across ranks) are read after the step:
   save_now -> `last.pt` (kind "manual"); stop -> `last.pt`, status interrupted.

The epoch knows nothing of the run that owns it: it gets its `EpochParts` (plain values),
the step count, an `emit(event)` callback for events and a `save(step, batch_done, kind)`
callback for `last.pt`, and returns an `EpochEnd`:

    parts = EpochParts(step_module=LossModule(model, method), method=method, optimizer=opt,
                       batches=batches, counter=ClassCounter(k, method.steps), epochs=2)
    end = train_epoch(parts, 0, step=0, emit=events.append, save=lambda step, batch, kind: True)
    end.step, end.batches_done, end.outcome      # e.g. 4, 4, None (completed)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from battui.engine.control import RunControl
from battui.engine.distributed import DistInfo, agree_flags, any_nonfinite
from battui.engine.events import BatchEvent, Paused, Resumed, RunStatus, TrainAttack
from battui.engine.metrics import ClassCounter
from battui.engine.setup import SpeedSettings
from battui.methods import Method

if TYPE_CHECKING:  # the trainer imports the data package only when it builds a run
    from battui.data import Batches

Emit = Callable[[Any], Any]  # an event -> (ignored)
Save = Callable[[int, int, str], bool]  # (step, batches done, kind) -> False when the save failed the run


@dataclass
class EpochParts:
    """Everything one training epoch works with, as plain values (`build.RunParts.epoch_parts` builds
    them for a run; a test builds them from a tiny model)."""

    step_module: torch.nn.Module  # (x, y) -> (loss, steps_to_flip, adv_pred, parts): `distributed.LossModule`
    method: Method  # its `start_epoch(epoch, epochs)` opens the epoch
    optimizer: torch.optim.Optimizer
    batches: Batches  # this rank's training batches (`set_epoch`, `len`, iteration)
    counter: ClassCounter  # the epoch's training-attack counts, this rank's (updated in place)
    epochs: int  # train.epochs, for `start_epoch`
    speed: SpeedSettings = field(default_factory=SpeedSettings)  # autocast, channels_last
    control: RunControl = field(default_factory=RunControl)  # stop / pause / save_now flags
    dist: DistInfo = field(default_factory=DistInfo)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    log_every: int = 1  # a `batch` event every so many batches (and at the epoch's end)
    stats_every: int = 1  # a partial `train_attack` event every so many batches
    started: float = field(default_factory=time.time)  # when the run (re)started, for `elapsed`


@dataclass
class EpochEnd:
    """How an epoch ended."""

    step: int  # optimiser steps so far, this epoch's included
    batches_done: int  # batches of the epoch trained (before a resume included)
    outcome: RunStatus | None = None  # None: completed; INTERRUPTED (stop; last.pt saved) or FAILED
    failure: str = ""  # why, when the epoch found the failure itself (a failed save reports its own)


def attack_event(counter: ClassCounter, epoch: int, done: int, batches: int, partial: bool) -> TrainAttack:
    """The training attack's counts so far, summed over ranks, as a `train_attack` event."""
    stats = counter.summed().errors()
    return TrainAttack(epoch=epoch, batch=done, batches=batches, partial=partial,
                       step_hist=stats["step_hist"], target_confusion=stats["adv_confusion"])


def parts_sum(total: tuple | None, parts) -> tuple:
    """Add one step's loss terms to the window's sums: (names, device tensor) for the
    methods' `LossParts` (no host sync), (names, list of floats) for a plain dict."""
    names = tuple(parts)
    values = getattr(parts, "tensor", None)
    if isinstance(values, torch.Tensor):
        return (names, values if total is None else total[1] + values)
    floats = [float(parts[k]) for k in names]
    return (names, floats if total is None else [a + b for a, b in zip(total[1], floats, strict=True)])


def parts_mean(total: tuple | None, n: int) -> dict[str, float]:
    """The window's mean loss terms as plain floats (one device read)."""
    if total is None:
        return {}
    names, values = total
    values = values.tolist() if isinstance(values, torch.Tensor) else values
    return {k: v / n for k, v in zip(names, values, strict=True)}


def _control_flags(parts: EpochParts) -> tuple[bool, bool, bool]:
    """(pause, stop, save_now), agreed across ranks (OR) under DDP: only rank 0 hears the control FIFO."""
    c = parts.control
    flags = [c.pause.is_set(), c.stop.is_set(), c.save_now.is_set()]
    pause, stop, save_now = agree_flags(flags, parts.dist, parts.device)
    return pause, stop, save_now


def _wait_while_paused(parts: EpochParts, epoch: int, batch: int, step: int, emit: Emit, save: Save) -> bool:
    """Wait while paused, every rank together (under DDP they agree on the flags every 0.1 s, so
    no rank sits in a collective its peers never join); False when a save while paused failed."""
    pause, stop, save_now = _control_flags(parts)
    if not pause or stop:
        return True
    emit(Paused(epoch=epoch, batch=batch))
    while pause and not stop:
        if save_now:
            parts.control.save_now.clear()
            if not save(step, batch, "manual"):
                return False
        parts.control.stop.wait(0.1)
        pause, stop, save_now = _control_flags(parts)
    if not stop:
        emit(Resumed())
    return True


def train_epoch(parts: EpochParts, epoch: int, *, step: int, start_batch: int = 0, emit: Emit,
                save: Save) -> EpochEnd:
    """Train epoch `epoch` (0-based) from batch `start_batch`, `step` optimiser steps done before."""
    control, speed, dist = parts.control, parts.speed, parts.dist
    batches = parts.batches
    n_batches = len(batches)
    batches.set_epoch(epoch)
    parts.method.start_epoch(epoch, parts.epochs)
    parts.step_module.train()
    log_every, stats_every = max(1, parts.log_every), max(1, parts.stats_every)
    window_loss, window_parts, window_n, window_images = 0.0, None, 0, 0
    window_start = time.perf_counter()
    # under DDP the pause flag is agreed with the stop flags after each step (no extra collective per
    # batch); the epoch's first batch asks the ranks once
    pause_agreed = True
    for i, (x, y) in enumerate(batches):
        if i < start_batch:
            continue  # resumed mid-epoch: these batches were trained before the stop
        if (pause_agreed or not dist.enabled) and not _wait_while_paused(parts, epoch, i, step, emit, save):
            return EpochEnd(step, i, RunStatus.FAILED)
        x = speed.prepare_input(x)
        with speed.autocast():
            loss, steps_to_flip, adv_pred, loss_parts = parts.step_module(x, y)
        loss_value = loss.detach().float()
        if any_nonfinite(loss_value, dist):
            return EpochEnd(step, i, RunStatus.FAILED, f"non-finite loss ({float(loss_value)}) at epoch {epoch + 1} "
                            f"batch {i + 1} (step {step + 1}); try a smaller train.lr")
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parts.optimizer.step()
        step += 1
        parts.counter.update(y, adv_pred, steps_to_flip)

        done = i + 1
        window_loss += loss_value
        window_n += 1
        window_images += len(y) * dist.world_size
        window_parts = parts_sum(window_parts, loss_parts)
        if done % log_every == 0 or done == n_batches:
            elapsed = time.perf_counter() - window_start
            emit(BatchEvent(
                epoch=epoch, batch=done, batches=n_batches, step=step,
                loss=float(window_loss) / window_n, parts=parts_mean(window_parts, window_n),
                lr=parts.optimizer.param_groups[0]["lr"],
                images_per_s=window_images / elapsed if elapsed > 0 else 0.0,
                elapsed=time.time() - parts.started,
            ))
            window_loss, window_parts, window_n, window_images = 0.0, None, 0, 0
            window_start = time.perf_counter()
        if done % stats_every == 0 and done < n_batches:
            emit(attack_event(parts.counter, epoch, done, n_batches, partial=True))

        stop, save_now, pause_agreed = agree_flags([control.stop.is_set(), control.save_now.is_set(),
                                                    control.pause.is_set()], dist, parts.device)
        if save_now or stop:
            control.save_now.clear()
            if not save(step, done, "last" if stop else "manual"):
                return EpochEnd(step, done, RunStatus.FAILED)
            if stop:
                return EpochEnd(step, done, RunStatus.INTERRUPTED)
    return EpochEnd(step, n_batches)
