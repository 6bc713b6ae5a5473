"""One training epoch: forward through the method, backward, step, and the flags in between.

Per batch, in this order:
1. pause: wait (the stop flag still ends the wait), with `paused` / `resumed` events; a save
   asked for while paused is done at once (single process);
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
6. the stop / save_now flags (agreed across ranks) are read after the step:
   save_now -> `last.pt` (kind "manual"); stop -> `last.pt`, status interrupted.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import torch

from battui.engine.distributed import agree_flags, any_nonfinite
from battui.engine.events import BatchEvent, Paused, Resumed, TrainAttack
from battui.engine.metrics import ClassCounter


class EpochHost(Protocol):
    """What an epoch reads and calls on the run that owns it (`engine.trainer.Trainer` is one;
    a test can pass any object with these members)."""

    cfg: Any  # battui.config.Config
    control: Any  # battui.engine.control.RunControl: stop / pause / save_now flags
    speed: Any  # battui.engine.setup.SpeedSettings: autocast, channels_last
    dist: Any  # battui.engine.distributed.DistInfo
    device: torch.device
    train_batches: Any  # battui.data.Batches
    method: Any  # battui.methods.Method
    step_module: torch.nn.Module  # (x, y) -> (loss, steps_to_flip, adv_pred, parts)
    optimizer: torch.optim.Optimizer
    attack_counter: ClassCounter
    step: int  # optimiser steps so far (written here)
    started: float  # time.time() when the run (re)started

    def emit(self, event) -> dict: ...

    def save_last(self, epoch_done: int, batch_done: int = 0, kind: str = "last") -> bool: ...

    def fail(self, reason: str, epoch: int) -> str: ...


def summed_counter(counter: ClassCounter, trainer: EpochHost) -> ClassCounter:
    """A copy of `counter` summed over ranks (the original keeps counting this rank only)."""
    out = ClassCounter(counter.num_classes, counter.attack_steps, device=counter.counts.device)
    for dst, src in zip(out._tensors(), counter._tensors(), strict=True):
        dst.copy_(src)
    if trainer.dist.enabled:
        out.all_reduce()
    return out


def attack_event(trainer: EpochHost, epoch: int, done: int, partial: bool) -> TrainAttack:
    stats = summed_counter(trainer.attack_counter, trainer).errors()
    return TrainAttack(epoch=epoch, batch=done, batches=len(trainer.train_batches), partial=partial,
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


def _wait_while_paused(trainer: EpochHost, epoch: int, batch: int) -> bool:
    """Wait while paused; False when a save while paused failed (non-finite weights)."""
    control = trainer.control
    if not control.pause.is_set() or control.stop.is_set():
        return True
    trainer.emit(Paused(epoch=epoch, batch=batch))
    while control.pause.is_set() and not control.stop.is_set():
        if control.save_now.is_set() and not trainer.dist.enabled:  # other ranks are not waiting here
            control.save_now.clear()
            if not trainer.save_last(epoch_done=epoch, batch_done=batch, kind="manual"):
                return False
        control.stop.wait(0.1)
    if not control.stop.is_set():
        trainer.emit(Resumed())
    return True


def train_epoch(trainer: EpochHost, epoch: int, start_batch: int = 0) -> str | None:
    """Train epoch `epoch` (0-based) from batch `start_batch`; None when it completed.

    Returns "interrupted" or "failed" when the run must end (checkpoint already handled).
    """
    cfg, control, speed = trainer.cfg, trainer.control, trainer.speed
    batches = trainer.train_batches
    n_batches = len(batches)
    batches.set_epoch(epoch)
    trainer.method.start_epoch(epoch, cfg.train.epochs)
    trainer.step_module.train()
    log_every = max(1, cfg.train.log_every)
    stats_every = max(1, cfg.train.attack_stats_every)
    window_loss, window_parts, window_n, window_images = 0.0, None, 0, 0
    window_start = time.perf_counter()
    for i, (x, y) in enumerate(batches):
        if i < start_batch:
            continue  # resumed mid-epoch: these batches were trained before the stop
        if not _wait_while_paused(trainer, epoch, i):
            return "failed"
        x = speed.prepare_input(x)
        with speed.autocast():
            loss, steps_to_flip, adv_pred, parts = trainer.step_module(x, y)
        loss_value = loss.detach().float()
        if any_nonfinite(loss_value, trainer.dist):
            return trainer.fail(f"non-finite loss ({float(loss_value)}) at epoch {epoch + 1} batch {i + 1} "
                                f"(step {trainer.step + 1}); try a smaller train.lr", epoch)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        trainer.step += 1
        trainer.attack_counter.update(y, adv_pred, steps_to_flip)

        done = i + 1
        window_loss += loss_value
        window_n += 1
        window_images += len(y) * trainer.dist.world_size
        window_parts = parts_sum(window_parts, parts)
        if done % log_every == 0 or done == n_batches:
            elapsed = time.perf_counter() - window_start
            trainer.emit(BatchEvent(
                epoch=epoch, batch=done, batches=n_batches, step=trainer.step,
                loss=float(window_loss) / window_n, parts=parts_mean(window_parts, window_n),
                lr=trainer.optimizer.param_groups[0]["lr"],
                images_per_s=window_images / elapsed if elapsed > 0 else 0.0,
                elapsed=time.time() - trainer.started,
            ))
            window_loss, window_parts, window_n, window_images = 0.0, None, 0, 0
            window_start = time.perf_counter()
        if done % stats_every == 0 and done < n_batches:
            trainer.emit(attack_event(trainer, epoch, done, partial=True))

        stop, save_now = agree_flags([control.stop.is_set(), control.save_now.is_set()], trainer.dist, trainer.device)
        if save_now or stop:
            control.save_now.clear()
            if not trainer.save_last(epoch_done=epoch, batch_done=done, kind="last" if stop else "manual"):
                return "failed"
            if stop:
                return "interrupted"
    return None


def reset_attack_counter(trainer: EpochHost, state: dict | None = None) -> None:
    """Zero the epoch's training-attack counts, or restore them from a mid-epoch checkpoint."""
    trainer.attack_counter.reset()
    if state:
        for t, saved in zip(trainer.attack_counter._tensors(), state["tensors"], strict=True):
            t.copy_(torch.as_tensor(saved).to(t.device))

