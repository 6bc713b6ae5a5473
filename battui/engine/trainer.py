"""`Trainer`: the engine behind `battui train`, usable without any UI.

    trainer = Trainer(load_config("synthetic-tiny"), listeners=[print]).prepare()
    status = trainer.run()              # RunStatus.COMPLETED | INTERRUPTED | FAILED
    trainer.run_dir, trainer.events_path, trainer.parts.model
    Trainer(cfg, resume="runs/digits-cnn-pgd-at-20250101-120000").prepare().run()   # continue last.pt

`prepare()` builds the run (`build.build_run`; `UserError` on bad input, before anything is written),
loads a resumed run's last.pt (`resume.restore`), then creates the run's files (`runfiles.RunFiles`).
`run()` trains; every event goes to events.jsonl and to each listener. A `RunControl` stops, pauses
or saves between batches (`battui watch` sets it through the control FIFO). `run_epoch` is an epoch's
order of operations, `loop.train_epoch` a batch's; the reproducibility contract: docs/DESIGN.md 5.4.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from battui.config import Config
from battui.engine import distributed, numerics, runfiles, seeding
from battui.engine.build import RunParts, build_run
from battui.engine.checkpoint import load_model_state
from battui.engine.control import RunControl
from battui.engine.events import CheckpointEvent, Message, RunFinished, RunStatus
from battui.engine.faults import WriteFault, low_space_warning
from battui.engine.loop import attack_event, train_epoch
from battui.engine.resume import StartPoint, restore, resume_config
from battui.engine.rundir import RunDir
from battui.engine.setup import restore_determinism


class Trainer:
    def __init__(self, cfg: Config | None, *, run_dir: str | Path | None = None, resume: str | Path | None = None,
                 control: RunControl | None = None, listeners=()) -> None:
        if cfg is None and resume is None:
            raise ValueError("Trainer needs a config or a run directory to resume")
        self.cfg = cfg if cfg is not None else resume_config(resume)
        self.resume_dir = Path(resume) if resume else None
        self.files = runfiles.RunFiles(run_dir or self.resume_dir or Path())
        self.files.listeners = self.listeners = list(listeners)
        self.control = control or RunControl()
        self.parts: RunParts | None = None
        self.start = StartPoint()
        self.step, self.best_metric, self.failure = 0, None, None
        self.started = time.time()

    run_dir = property(lambda self: self.files.path)
    events_path = property(lambda self: self.files.dir.events)
    checkpoint_dir = property(lambda self: self.files.dir.checkpoints)

    def prepare(self, on_device: bool = True) -> Trainer:
        """Build the run, load a resumed run's last.pt, create the run directory; `UserError` on bad input.
        `on_device=False` (`train --detach`): built on the CPU (`build_run`); env.json still records the device."""
        cfg = self.cfg
        if self.resume_dir is None and self.run_dir == Path():
            runfiles.check_run_root(cfg.run.root)
        resuming = self.resume_dir is not None and RunDir(self.resume_dir).last.exists()
        self.parts = p = build_run(cfg, resuming=resuming, on_device=on_device)
        self.files.main = p.dist.is_main
        if self.resume_dir is not None:
            with self.files.resume_lock():  # before last.pt is read: never a stale state
                self.start = restore(p, self.resume_dir, cfg.train.epochs) if resuming else StartPoint()
            self.step, self.best_metric = self.start.step, self.start.best_metric
            self.files.saved = (self.start.epoch, self.start.batch) if resuming else None
        else:
            name = runfiles.new_run_dir(cfg) if p.dist.is_main and self.run_dir == Path() else self.run_dir
            self.files.path = Path(distributed.broadcast_object(str(name), p.dist))
        env = {**runfiles.env_record(p.device, cfg.train.seed, p.dist.world_size),
               "numerics": numerics.record(p.speed, cfg.train.deterministic, p.device)}
        self.files.create(cfg, env, resumed=self.resume_dir is not None)  # rank 0 alone
        if cfg.run.tensorboard and p.dist.is_main:
            from battui.report.tensorboard import TensorBoardListener

            self.listeners.append(TensorBoardListener(self.files.dir.tensorboard))  # RUN/tensorboard/, live
        return self

    def emit(self, event) -> dict:
        return self.files.publish(event)

    def run(self) -> RunStatus:
        """Train to the end (or until stopped); returns COMPLETED, INTERRUPTED or FAILED."""
        if self.parts is None:
            self.prepare()
        self.started, self.failure = time.time(), None
        self.files.open(self.control)
        try:
            status = self._run()
        except WriteFault as fault:  # disk full, run folder unwritable or removed: one line, no traceback
            status = self._write_failed(fault)
        except BaseException as exc:
            stopped = isinstance(exc, KeyboardInterrupt)
            self.emit(RunFinished(status=RunStatus.INTERRUPTED if stopped else RunStatus.FAILED, epoch=self.start.epoch,
                                  reason="interrupted (KeyboardInterrupt)" if stopped else repr(exc)[:300]))
            raise
        finally:
            self.files.close()
            restore_determinism(self.parts.global_flags)
            torch.set_num_threads(self.parts.threads)
        return status

    def _run(self) -> RunStatus:
        cfg, p, start = self.cfg, self.parts, self.start
        self.emit(p.run_started(self.run_dir, start.epoch, start.batch))
        if start.path is not None:
            where = f"epoch {start.epoch + 1}" + (f" batch {start.batch + 1}" if start.batch else "")
            self.emit(Message(text=f"resumed from {start.path} at {where} ({p.device_note})"))
        warning = low_space_warning(self.run_dir, p.checkpoint_bytes()) if p.dist.is_main else None
        if warning:
            self.emit(Message(text=warning, level="warning"))
        if start.epoch == 0 and not start.batch:
            p.method_validation(-1, p.method.start_training)  # a fresh run, once
        epoch = start.epoch
        for epoch in range(start.epoch, cfg.train.epochs):
            status = self.run_epoch(epoch, start.batch if epoch == start.epoch else 0)
            if status is not None:
                return status
        averaged = p.method.averaged_state()  # CFA's FAWA: the test evaluation's weights, saved as fawa.pt
        if averaged is not None:  # last.pt keeps the raw weights for resuming
            load_model_state(p.model, averaged, f"{cfg.method.name}'s averaged weights")
            self.save("averaged", cfg.train.epochs)
        self.emit(p.evaluation(p.test_batches, "test", epoch))
        return self._finish(RunStatus.COMPLETED, cfg.train.epochs)

    def run_epoch(self, epoch: int, start_batch: int) -> RunStatus | None:
        """One epoch, in order: seed, train the batches, one network on every rank, the training attack's
        counts, the method's validation, the lr schedule, evaluation, best.pt, last.pt, the stop flag.
        None when the run goes on, else how it ended (`run_finished` written)."""
        p, epochs = self.parts, self.cfg.train.epochs
        p.attack_counter.reset(self.start.epoch_progress if start_batch and p.dist.is_main else None)
        seeding.seed_epoch(self.cfg.train.seed, epoch, p.dist.rank, start_batch, self.start.rng)
        outcome = self.train_epoch(epoch, start_batch)
        if outcome is not None:
            return self._finish(outcome, epoch)
        self.sync_network()  # one network for the validation, evaluation, averaging and checkpoints below
        self.emit(attack_event(p.attack_counter, epoch, len(p.train_batches), len(p.train_batches), partial=False))
        method_info = p.method_validation(epoch) if p.method.needs_validation else {}
        p.scheduler.step()
        metric = None
        if (epoch + 1) % max(1, self.cfg.eval.every) == 0 or epoch + 1 == epochs:
            record = self.emit(p.evaluation(p.val_batches, p.val_name, epoch, method_info))
            metric = [record["worst"]["robust"], record["avg"]["robust"]]  # worst-class, ties broken by the avg
        if not self.finite_or_fail(epoch + 1):
            return self._finish(RunStatus.FAILED, epoch)
        # best.pt, then last.pt, both holding the best metric this epoch's evaluation updated: a crash
        # between the two resumes from the previous last.pt and retrains this epoch to the same best.pt
        if metric is not None and (self.best_metric is None or metric < list(self.best_metric)):
            self.best_metric = metric
            self.save("best", epoch + 1, metric=metric[0])
        self.save("last", epoch + 1)
        stop = distributed.agree_flags([self.control.stop.is_set()], p.dist, p.device)[0]
        if stop and epoch + 1 < epochs:  # after the last epoch only the test evaluation is left: finish it
            return self._finish(RunStatus.INTERRUPTED, epoch + 1)
        return None

    def train_epoch(self, epoch: int, start_batch: int = 0) -> RunStatus | None:
        """The epoch's batches (`loop.train_epoch`); None when they all trained, else INTERRUPTED or
        FAILED (checkpoint and error message already handled)."""
        def save(step: int, batch_done: int, kind: str) -> bool:  # mid-epoch: the ranks' buffers differ here
            self.step = step
            self.sync_network()
            return self.save_last(epoch_done=epoch, batch_done=batch_done, kind=kind)

        end = train_epoch(self.parts.epoch_parts(self.control, self.started), epoch, step=self.step,
                          start_batch=start_batch, emit=self.emit, save=save)
        self.step = end.step
        return self.fail(end.failure) if end.failure else end.outcome

    def sync_network(self) -> None:  # rank 0's buffers on every rank: all validate, evaluate, save one network
        distributed.broadcast_buffers(self.parts.model, self.parts.dist)

    def save_last(self, epoch_done: int, batch_done: int = 0, kind: str = "last") -> bool:
        """Save last.pt (all ranks call this; rank 0 writes; the callers ran `sync_network`). False when
        the weights went non-finite."""
        ok = self.finite_or_fail(epoch_done)
        if ok:
            self.save(kind, epoch_done, batch_done)
        return ok

    def save(self, kind: str, epoch_done: int, batch_done: int = 0, metric: float | None = None) -> None:
        """Checkpoint `kind` (`RunFiles.save`): every rank calls this, as the gathers below are
        collectives under DDP (the training attack's counts of a mid-epoch save, a method's per-class
        sums, every rank's RNG states); rank 0 then writes the file and its `checkpoint` event."""
        p = self.parts
        progress = p.attack_counter.summed().state() if batch_done else None
        method_state, rng = p.method.state_dict(), seeding.rng_states(p.dist)
        payload = p.checkpoint(epoch_done, batch_done, self.step, self.best_metric, progress, method_state, rng)
        path = self.files.save(kind, payload, epoch=epoch_done, batch=batch_done)
        if path is not None:
            self.emit(CheckpointEvent(epoch=epoch_done, path=str(path), kind=kind, metric=metric))

    def finite_or_fail(self, epoch_done: int) -> bool:
        """False, the run failed (its message written), when the weights went non-finite."""
        if self.parts.weights_finite():
            return True
        self.fail(f"weights became non-finite by epoch {epoch_done + 1} (step {self.step}); "
                  "last.pt keeps the last good weights; try a smaller train.lr")
        return False

    def fail(self, reason: str) -> RunStatus:
        self.emit(Message(text=reason, level="error"))
        self.failure = reason
        return RunStatus.FAILED

    def _write_failed(self, fault: WriteFault) -> RunStatus:
        saved = self.files.saved
        self.failure, epoch = fault.describe(self.run_dir, saved), saved[0] if saved else self.start.epoch
        try:
            return self._finish(RunStatus.FAILED, epoch)
        except WriteFault:  # events.jsonl cannot take the line either: the listeners still hear it
            self.files.close_events()
            return self._finish(RunStatus.FAILED, epoch)

    def _finish(self, status: RunStatus, epoch: int) -> RunStatus:
        if status == RunStatus.FAILED and self.failure:
            reason = self.failure
        elif status == RunStatus.INTERRUPTED:
            reason = self.control.stop_reason or "stopped"
        else:
            best = f"; best worst-class robust error {self.best_metric[0]:.1f}%" if self.best_metric else ""
            reason = f"trained {self.cfg.train.epochs} epochs{best}"
        self.emit(RunFinished(status=status, reason=reason, epoch=epoch))
        return status
