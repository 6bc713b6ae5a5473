"""`Trainer`: the engine behind `battui train`, usable without any UI.

    from battui.config import load_config
    from battui.engine.trainer import Trainer
    trainer = Trainer(load_config("synthetic-tiny"), listeners=[print]).prepare()
    status = trainer.run()              # RunStatus.COMPLETED | INTERRUPTED | FAILED
    trainer.run_dir, trainer.events_path

    Trainer(cfg, resume="runs/digits-cnn-pgd-at-20250101-120000").prepare().run()   # continue last.pt

`prepare()` builds data, model and method and checks the input (raising
`UserError` before anything is written), then creates the run directory with
`config.yaml` and `env.json`, holding the run's lock (one trainer per run
directory, `runlock.py`) until `run()` ends. `run()` trains: every event goes to
`events.jsonl` and to each listener (a callable taking the event dict; it must
not block). A `RunControl` stops, pauses or saves the run between batches;
`battui watch` sets the same flags through the run's control FIFO (`channel.py`).

Event numbering: `batch`, `train_attack` and `eval` carry the 0-based epoch they
belong to (the final test `eval` carries the last epoch's); `checkpoint` and
`run_finished` carry epochs completed. Per-epoch evaluation runs on the
validation split (at most `eval.val_subset` images, a fixed random subset) or,
when `data.val_per_class` is 0, on the test split with `split: "test"`.

Every epoch `e` draws its randomness from seed (train.seed, e, rank) and the
batches from (train.seed, e), so a run resumed from an end-of-epoch `last.pt`
replays exactly; a mid-epoch `last.pt` (stop or manual save) carries every rank's RNG
states and the batch index and resumes from the next batch (with the same number of ranks).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from battui.config import Config, EvalConfig
from battui.engine import distributed, numerics, pretrained, runs
from battui.engine.channel import ControlChannel
from battui.engine.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from battui.engine.control import RunControl
from battui.engine.device import resolve_device
from battui.engine.evaluate import check_spec, eval_attack, eval_precision, evaluate
from battui.engine.events import CheckpointEvent, EvalEvent, EventWriter, Message, RunFinished, RunStarted, RunStatus
from battui.engine.faults import WriteFault, low_space_warning
from battui.engine.loop import EpochParts, attack_event, train_epoch
from battui.engine.metrics import ClassCounter
from battui.engine.rundir import RunDir
from battui.engine.runlock import RunLock
from battui.engine.setup import (
    SpeedSettings,
    apply_determinism,
    build_optimizer,
    build_scheduler,
    restore_determinism,
    resume_schedule,
    tune_cpu_threads,
)
from battui.errors import UserError
from battui.methods import method_from_config, method_source


class Trainer:
    def __init__(self, cfg: Config | None, *, run_dir: str | Path | None = None, resume: str | Path | None = None,
                 control: RunControl | None = None, listeners=()) -> None:
        if cfg is None and resume is None:
            raise ValueError("Trainer needs a config or a run directory to resume")
        self.cfg = cfg if cfg is not None else runs.resume_config(resume)
        self.resume_dir = Path(resume) if resume else None
        self.run_dir: Path = Path(run_dir) if run_dir else (self.resume_dir or Path())
        self.control = control or RunControl()
        self.listeners = list(listeners)
        self.prepared = False
        self.step = 0
        self.best_metric: float | None = None
        self.started = time.time()
        self.writer: EventWriter | None = None
        self.lock: RunLock | None = None
        self.saved: tuple[int, int] | None = None  # (epochs, batches) of the last.pt on disk
        self.keep_lock = False  # set when another owner releases the lock (a handover, the table's worker)

    # ------------------------------------------------------------------ setup
    @property
    def events_path(self) -> Path:
        return RunDir(self.run_dir).events

    @property
    def checkpoint_dir(self) -> Path:
        return RunDir(self.run_dir).checkpoints

    def prepare(self, on_device: bool = True) -> Trainer:
        """Build everything and create the run directory; `UserError` on bad input. `on_device=False`
        (`train --detach`): data, model and teacher stay on the CPU, for a process that only checks the
        input and writes the run directory before handing over; env.json still records the run's device."""
        from battui.data import Batches, build_datasets
        from battui.models import build_model, model_options
        from battui.validate import validate_config

        cfg = self.cfg
        validate_config(cfg)
        if self.resume_dir is None and self.run_dir == Path():
            runs.check_run_root(cfg.run.root)
        per_rank_batch = distributed.per_rank_batch(cfg.train.batch_size, distributed.env_world_size())
        device, self.device_note = resolve_device(cfg.run.device)
        self.dist, self.device = distributed.init_from_env(device)
        self.speed = SpeedSettings.resolve(cfg.train, self.device)
        self._global_flags = apply_determinism(cfg.train.deterministic, self.device)
        home = self.device if on_device else torch.device("cpu")  # where the tensors are built
        if cfg.train.epochs < 1 or cfg.train.batch_size < 1:
            raise UserError("train.epochs and train.batch_size must be at least 1")
        if cfg.run.tensorboard:
            from battui.report.tensorboard import summary_writer_class

            summary_writer_class()  # a missing tensorboard fails here, before anything is written
        seed = cfg.train.seed
        splits = build_datasets(cfg.data, seed=seed)
        self.classes, k = list(splits.classes), splits.num_classes
        self.data_info = {"num_classes": k, "in_channels": splits.in_channels, "classes": self.classes,
                          "image_size": splits.image_size}
        self._threads = tune_cpu_threads(self.device, splits.in_channels * splits.image_size ** 2)
        if len(splits.train) == 0:
            raise UserError("the training split is empty; check data.classes and data.val_per_class")
        common = dict(device=home, seed=seed, rank=self.dist.rank, world_size=(world := self.dist.world_size))
        # train.batch_size is the global batch (the paper's 128 on 1 or 8 GPUs), split over the ranks
        self.train_batches = Batches(splits.train, per_rank_batch, shuffle=True, augment=cfg.data.augment,
                                     pad_shards=True, **common)
        val = splits.val if len(splits.val) else splits.test
        self.val_name = "val" if len(splits.val) else "test"
        self.val_full = Batches(val, cfg.eval.batch_size, **common)  # method.end_epoch: sharded, sums all-reduced
        if cfg.eval.val_subset and len(val) > cfg.eval.val_subset:
            pick = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))[: cfg.eval.val_subset]
            val = val.subset(torch.sort(pick)[0])
        # the per-epoch and the final test eval: rank 0 alone (the others join the sums with no images), on
        # `battui eval`'s batches, so they give one process's numbers (the random starts follow the batches)
        self.val_batches = Batches(val, cfg.eval.batch_size, device=home) if self.dist.is_main else []
        self.test_batches = Batches(splits.test, cfg.eval.batch_size, device=home) if self.dist.is_main else []
        self.train_size, self.val_size = len(splits.train), len(val)

        torch.manual_seed(seed)
        try:
            self.model = build_model(cfg.model.name, num_classes=k, in_channels=splits.in_channels,
                                     **model_options(cfg.model))
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.method = method_from_config(cfg, num_classes=k)
        pretrained.check_dependencies(self.method, cfg, resuming=self._resume_ckpt_path() is not None)
        if self.method.teacher_from:  # ABSLD: its teacher, read before anything is written
            self.method.use_teacher(pretrained.load_teacher(self.method, self.data_info, home))
        check_spec(self._spec(), k)  # an unknown eval attack, or AutoAttack on < 10 classes, fails before training
        if cfg.train.init_from and not self._resume_ckpt_path():
            src = load_checkpoint(cfg.train.init_from)
            load_model_state(self.model, src["model"], cfg.train.init_from)
        self.model.to(home)
        if self.speed.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.run_model = self.speed.compiled(self.model)
        self.step_module = distributed.wrap_for_training(self.run_model, self.method, self.dist, self.device)
        self.optimizer = build_optimizer(cfg.train, self.model.parameters())
        self.scheduler = build_scheduler(cfg.train, self.optimizer)
        self.attack_steps = int(getattr(self.method, "steps", cfg.attack.steps))  # method.steps may override
        self.attack_counter = ClassCounter(k, self.attack_steps, device=home)
        self.start_epoch, self.start_batch, self.epoch_progress = 0, 0, None
        if self.resume_dir is not None and self.dist.is_main:
            self.lock = self.lock or RunLock.acquire(self.resume_dir)  # before last.pt is read: never a stale state
        try:
            ckpt = self._load_resume_state()
        except BaseException:
            if self.lock is not None:
                self.lock.release()
                self.lock = None
            raise
        self.resumed_from = ckpt["path"] if ckpt else None

        if self.resume_dir is None:
            name = runs.new_run_dir(cfg) if self.dist.is_main and self.run_dir == Path() else self.run_dir
            self.run_dir = Path(distributed.broadcast_object(str(name), self.dist))
        if self.dist.is_main:
            runs.make_run_dir(self.run_dir)
            self.lock = self.lock or RunLock.acquire(self.run_dir)
            try:
                runs.write_run_config(self.run_dir, cfg)
                env = {**runs.env_record(self.device, seed, world),
                       "numerics": numerics.record(self.speed, cfg.train.deterministic, self.device)}
                runs.write_env(self.run_dir, env, resumed=ckpt is not None or self.resume_dir is not None)
                runs.repair_events_tail(self.events_path)
            except OSError as exc:  # a full or read-only disk at the start: the same one line, before training
                self.lock.release()
                raise UserError(WriteFault(exc.filename or self.run_dir, exc).describe(self.run_dir, self.saved)) \
                    from None
            if cfg.run.tensorboard:
                from battui.report.tensorboard import TensorBoardListener

                self.listeners.append(TensorBoardListener(RunDir(self.run_dir).tensorboard))  # RUN/tensorboard/, live
        self.prepared = True
        return self

    def _resume_ckpt_path(self) -> Path | None:
        if self.resume_dir is None:
            return None
        path = RunDir(self.resume_dir).last
        return path if path.exists() else None

    def _load_resume_state(self) -> dict | None:
        path = self._resume_ckpt_path()
        if path is None:
            return None
        ckpt = load_checkpoint(path)
        load_model_state(self.model, ckpt["model"], str(path))
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            sched = dict(ckpt["scheduler"])
            sched["lr_lambdas"] = [None] * len(self.optimizer.param_groups)  # schedule from the (maybe extended) config
            self.scheduler.load_state_dict(sched)
            resume_schedule(self.cfg.train, self.optimizer, self.scheduler)
            self.method.load_state_dict(ckpt.get("method_state") or {})
        except (ValueError, KeyError, RuntimeError) as exc:
            raise UserError(f"{path} does not fit this run's config: {exc}") from None
        self.start_epoch, self.start_batch = int(ckpt["epoch"]), int(ckpt.get("batch", 0))
        self.saved = (self.start_epoch, self.start_batch)
        self.step = int(ckpt.get("step", 0))
        self.best_metric = ckpt.get("best_metric")
        self.epoch_progress = ckpt.get("epoch_progress")
        self.resume_rng = runs.resumed_rng_state(ckpt, self.dist)  # this rank's, mid-epoch
        if self.start_epoch >= self.cfg.train.epochs and not self.start_batch:
            raise UserError(f"{self.resume_dir} already trained all {self.cfg.train.epochs} epochs; "
                            f"pass --epochs N (N > {self.start_epoch}) to train longer")
        return ckpt

    # ------------------------------------------------------------- events
    def emit(self, event) -> dict:
        """Write `event` to events.jsonl and hand it to every listener (rank 0 only)."""
        record = event.to_dict()
        if not self.dist.is_main:
            return record
        if self.writer is not None:
            self.writer.write(record)
        for listener in list(self.listeners):
            try:
                listener(record)
            except Exception as exc:  # a broken view must not stop training
                self.listeners.remove(listener)
                self.emit(Message(text=f"listener {listener!r} failed and was removed: {exc}", level="warning"))
        return record

    # -------------------------------------------------------- checkpoints
    def _payload(self, epoch_done: int, batch_done: int) -> dict:
        progress = None
        if batch_done:
            progress = self.attack_counter.summed().state()
        return {
            "model": self.model.state_dict(), "config": self.cfg.to_dict(), "data_info": self.data_info,
            "epoch": epoch_done, "batch": batch_done, "step": self.step,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "method_state": self.method.state_dict(), "rng": runs.rng_states(self.dist),
            "best_metric": self.best_metric, "epoch_progress": progress,
            "method_source": method_source(self.cfg.method.name).record(),  # where its class came from (3.6)
        }

    def _checkpoint_bytes(self) -> int:
        """About what one checkpoint takes: the model's state and the optimizer's per-parameter buffers."""
        model = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        buffers = 2 if self.cfg.train.optimizer == "adam" else 1  # exp_avg + exp_avg_sq, or the momentum
        return model + buffers * params

    def sync_network(self) -> None:  # rank 0's buffers on every rank: all validate, evaluate, save one network
        distributed.broadcast_buffers(self.model, self.dist)

    def _weights_finite(self) -> bool:
        return bool(torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all())  # one read

    def save_last(self, epoch_done: int, batch_done: int = 0, kind: str = "last") -> bool:
        """Save last.pt (all ranks call this; rank 0 writes). False when the weights went non-finite."""
        if not self._weights_finite():
            self._non_finite(epoch_done)
            return False
        self.sync_network()
        payload = self._payload(epoch_done, batch_done)
        if self.dist.is_main:
            path = save_checkpoint(RunDir(self.run_dir).last, payload)
            self.saved = (epoch_done, batch_done)
            self.emit(CheckpointEvent(epoch=epoch_done, path=str(path), kind=kind))
        return True

    def _non_finite(self, epoch_done: int) -> RunStatus:
        return self.fail(f"weights became non-finite by epoch {epoch_done + 1} (step {self.step}); "
                         "last.pt keeps the last good weights; try a smaller train.lr", epoch_done)

    def fail(self, reason: str, epoch: int) -> RunStatus:
        self.emit(Message(text=reason, level="error"))
        self.failure = (reason, epoch)
        return RunStatus.FAILED

    # ---------------------------------------------------------- evaluation
    def _spec(self) -> EvalConfig:
        return eval_attack(self.cfg.eval)  # fp32 unless eval.amp, seed eval.seed: as `battui eval`

    def evaluate(self, batches, split: str, epoch: int, method_info: dict | None = None) -> dict:
        result = evaluate(self.run_model, batches, num_classes=len(self.classes), spec=self._spec())
        fields = {k: result[k] for k in ("n", "counts", "standard", "boundary", "robust", "avg", "worst",
                                         "step_hist")}
        return self.emit(EvalEvent(epoch=epoch, split=split, attack=result["attack"],
                                   adv_confusion=result["adv_confusion"], method=method_info or {}, **fields))

    # ---------------------------------------------------------------- run
    def run(self) -> RunStatus:
        """Train to the end (or until stopped); returns COMPLETED, INTERRUPTED or FAILED."""
        if not self.prepared:
            self.prepare()
        self.started = time.time()
        self.failure: tuple[str, int] | None = None
        channel = None
        if self.dist.is_main:
            self.writer = EventWriter(self.events_path)
            channel = ControlChannel(self.run_dir, self.control).open()
        try:
            status = self._run()
        except WriteFault as fault:  # disk full, run folder unwritable or removed: one line, no traceback
            status = self._write_failed(fault)
        except BaseException as exc:
            stopped = isinstance(exc, KeyboardInterrupt)
            reason = "interrupted (KeyboardInterrupt)" if stopped else repr(exc)[:300]
            self.emit(RunFinished(status=RunStatus.INTERRUPTED if stopped else RunStatus.FAILED, reason=reason,
                                  epoch=self.start_epoch))
            raise
        finally:
            if self.writer is not None:
                self.writer.close()
            if channel is not None:
                channel.close()
            if self.lock is not None and not self.keep_lock:
                self.lock.release()
            restore_determinism(self._global_flags)
            torch.set_num_threads(self._threads)
        return status

    def _run(self) -> RunStatus:
        cfg, epochs = self.cfg, self.cfg.train.epochs
        self.emit(RunStarted(
            run_name=self.run_dir.name, run_dir=str(self.run_dir), preset=cfg.preset, method=cfg.method.name,
            dataset=cfg.data.name, model=cfg.model.name, device=str(self.device), classes=self.classes,
            epochs=epochs, batches_per_epoch=len(self.train_batches), attack_steps=self.attack_steps,
            train_size=self.train_size, eval_size=self.val_size, start_epoch=self.start_epoch,
            start_batch=self.start_batch,
            world_size=self.dist.world_size, seed=cfg.train.seed, config=cfg.to_dict(),
            precision=self.speed.precision_note))
        if self.resumed_from is not None:
            where = f"epoch {self.start_epoch + 1}" + (f" batch {self.start_batch + 1}" if self.start_batch else "")
            self.emit(Message(text=f"resumed from {self.resumed_from} at {where} ({self.device_note})"))
        if self.dist.is_main:
            warning = low_space_warning(self.run_dir, self._checkpoint_bytes())
            if warning:
                self.emit(Message(text=warning, level="warning"))
        if self.start_epoch == 0 and not self.start_batch:
            self._method_validation(-1, self.method.start_training)  # a fresh run, once
        epoch = self.start_epoch
        for epoch in range(self.start_epoch, epochs):
            start_batch = self.start_batch if epoch == self.start_epoch else 0
            if start_batch:
                self.attack_counter.reset(self.epoch_progress if self.dist.is_main else None)
                runs.set_rng_state(self.resume_rng)  # exact: this rank's states saved after that batch
            else:
                self.attack_counter.reset()
                runs.seed_everything(runs.mix_seed(cfg.train.seed, epoch, self.dist.rank))
            outcome = self.train_epoch(epoch, start_batch)
            if outcome is not None:
                return self._finish(outcome, epoch)
            self.sync_network()  # one network for the validation, evaluation, averaging and checkpoints below
            self.emit(attack_event(self.attack_counter, epoch, len(self.train_batches), len(self.train_batches),
                                   partial=False))
            method_info = self._method_validation(epoch) if self.method.needs_validation else {}
            self.scheduler.step()
            metric = None
            if (epoch + 1) % max(1, cfg.eval.every) == 0 or epoch + 1 == epochs:
                record = self.evaluate(self.val_batches, self.val_name, epoch, method_info)
                # worst-class robust error, ties (common early on, at 100%) broken by the average
                metric = [record["worst"]["robust"], record["avg"]["robust"]]
            # best.pt, then last.pt, both holding the best metric this epoch's evaluation updated: a crash
            # between the two resumes from the previous last.pt and retrains this epoch to the same best.pt
            if metric is not None and (self.best_metric is None or metric < list(self.best_metric)):
                if not self._weights_finite():
                    return self._finish(self._non_finite(epoch + 1), epoch)
                self.best_metric = metric
                payload = self._payload(epoch + 1, 0)  # on every rank: the method's state is summed over them
                if self.dist.is_main:
                    path = save_checkpoint(RunDir(self.run_dir).best, payload)
                    self.emit(CheckpointEvent(epoch=epoch + 1, path=str(path), kind="best", metric=metric[0]))
            if not self.save_last(epoch_done=epoch + 1):
                return self._finish(RunStatus.FAILED, epoch)
            stop = distributed.agree_flags([self.control.stop.is_set()], self.dist, self.device)[0]
            if stop and epoch + 1 < epochs:  # after the last epoch only the test evaluation is left: finish it
                return self._finish(RunStatus.INTERRUPTED, epoch + 1)
        self._use_averaged_weights(epochs)
        self.evaluate(self.test_batches, "test", epoch)
        return self._finish(RunStatus.COMPLETED, epochs)

    def epoch_parts(self) -> EpochParts:
        train = self.cfg.train
        return EpochParts(step_module=self.step_module, method=self.method, optimizer=self.optimizer,
                          batches=self.train_batches, counter=self.attack_counter, epochs=train.epochs,
                          speed=self.speed, control=self.control, dist=self.dist, device=self.device,
                          log_every=train.log_every, stats_every=train.attack_stats_every, started=self.started)

    def train_epoch(self, epoch: int, start_batch: int = 0) -> RunStatus | None:
        """Train one epoch (`loop.train_epoch`); None when it completed, else INTERRUPTED or
        FAILED (checkpoint and error message already handled)."""
        def save(step: int, batch_done: int, kind: str) -> bool:
            self.step = step
            return self.save_last(epoch_done=epoch, batch_done=batch_done, kind=kind)

        end = train_epoch(self.epoch_parts(), epoch, step=self.step, start_batch=start_batch, emit=self.emit,
                          save=save)
        self.step = end.step
        return self.fail(end.failure, epoch) if end.failure else end.outcome

    def _use_averaged_weights(self, epochs: int) -> None:
        """Methods that average weights (CFA's FAWA) end with the average: saved as
        fawa.pt and loaded for the test evaluation; last.pt keeps the raw weights for resuming."""
        averaged = self.method.averaged_state()
        if averaged is None:
            return
        load_model_state(self.model, averaged, f"{self.cfg.method.name}'s averaged weights")
        payload = self._payload(epochs, 0)
        if self.dist.is_main:
            path = save_checkpoint(RunDir(self.run_dir).averaged, payload)
            self.emit(CheckpointEvent(epoch=epochs, path=str(path), kind="averaged"))

    def _method_validation(self, epoch: int, hook=None) -> dict:
        """`method.end_epoch` (or `hook`) on the validation split, seeded alike on every rank, in fp32
        like every evaluation (CFA's FAWA threshold, FRL's and WAT's class weights do not depend on train.amp)."""
        runs.seed_everything(runs.mix_seed(self.cfg.train.seed, epoch, 1 << 20))  # identical on every rank
        with eval_precision("fp32", self.device):
            info = (hook or self.method.end_epoch)(self.run_model, self.val_full) or {}
        return {k: float(v) for k, v in info.items()}

    def _write_failed(self, fault: WriteFault) -> RunStatus:
        reason = fault.describe(self.run_dir, self.saved)
        epoch = self.saved[0] if self.saved else self.start_epoch
        self.failure = (reason, epoch)
        try:
            return self._finish(RunStatus.FAILED, epoch)
        except WriteFault:  # events.jsonl cannot take the line either: the listeners still hear it
            self.writer.close()
            self.writer = None
            return self._finish(RunStatus.FAILED, epoch)

    def _finish(self, status: RunStatus, epoch: int) -> RunStatus:
        if status == RunStatus.FAILED and self.failure:
            reason = self.failure[0]
        elif status == RunStatus.INTERRUPTED:
            reason = self.control.stop_reason or "stopped"
        else:
            best = f"; best worst-class robust error {self.best_metric[0]:.1f}%" if self.best_metric else ""
            reason = f"trained {self.cfg.train.epochs} epochs{best}"
        self.emit(RunFinished(status=status, reason=reason, epoch=epoch))
        return status
