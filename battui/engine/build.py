"""The build step of a run: its config -> device, data, model, method, optimiser, schedule; no file written.

    parts = build_run(load_config("synthetic-tiny"), resuming=False)
    parts.model, parts.method, parts.optimizer, parts.train_batches, parts.val_batches

Everything here reads (datasets, `train.init_from`, a teacher) and checks the input, raising
`UserError` before the run directory exists; `engine/runfiles.py` writes the run's files and
`engine/trainer.py` runs the epochs. Under DDP every rank builds its own parts (its shard of the
batches, the model wrapped for training). The order below fixes which random numbers each part
draws (the data split, then the model's initial weights from `train.seed`), so do not reorder it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from battui.config import Config, EvalAttack
from battui.engine import distributed, pretrained, seeding
from battui.engine.checkpoint import load_checkpoint, load_model_state
from battui.engine.control import RunControl
from battui.engine.device import resolve_device
from battui.engine.distributed import DistInfo
from battui.engine.evaluate import check_spec, eval_attack, eval_precision, evaluate
from battui.engine.events import EvalEvent, RunStarted
from battui.engine.loop import EpochParts
from battui.engine.metrics import ClassCounter
from battui.engine.setup import SpeedSettings, apply_determinism, build_optimizer, build_scheduler, tune_cpu_threads
from battui.errors import UserError
from battui.methods import Method, method_from_config, method_source


@dataclass
class RunParts:
    """What a run trains with (`build_run`)."""

    cfg: Config
    device: torch.device
    device_note: str  # how the device was chosen, for the "resumed" / start lines
    dist: DistInfo
    speed: SpeedSettings
    global_flags: tuple  # the determinism flags before the run (`setup.restore_determinism`)
    threads: int  # torch's thread count before the run
    classes: list[str]
    data_info: dict[str, Any]  # num_classes, in_channels, classes, image_size: saved in every checkpoint
    train_batches: Any  # this rank's training batches (`data.Batches`)
    val_full: Any  # the whole validation split, sharded: `method.end_epoch`'s (sums all-reduced)
    val_batches: Any  # at most `eval.val_subset` of it: the per-epoch evaluation's, rank 0 alone; [] elsewhere
    val_name: str  # "val", or "test" when data.val_per_class is 0
    test_batches: Any  # the final test evaluation's, rank 0 alone (`battui eval`'s batches); [] elsewhere
    train_size: int
    val_size: int
    model: torch.nn.Module  # the bare network (checkpoints, averaged weights)
    run_model: torch.nn.Module  # the network as run (compiled when train.compile)
    step_module: torch.nn.Module  # (x, y) -> loss, ...: the method's step, DDP-wrapped under torchrun
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    attack_steps: int  # the training attack's steps (a method's `steps` may override attack.steps)
    attack_counter: ClassCounter  # the epoch's training-attack counts, this rank's

    @property
    def spec(self) -> EvalAttack:
        """The evaluation attack: fp32 unless eval.amp, seed eval.seed, as `battui eval`."""
        return eval_attack(self.cfg.eval)

    def epoch_parts(self, control: RunControl, started: float) -> EpochParts:
        train = self.cfg.train
        return EpochParts(step_module=self.step_module, method=self.method, optimizer=self.optimizer,
                          batches=self.train_batches, counter=self.attack_counter, epochs=train.epochs,
                          speed=self.speed, control=control, dist=self.dist, device=self.device,
                          log_every=train.log_every, stats_every=train.attack_stats_every, started=started)

    def run_started(self, run_dir: Path, start_epoch: int, start_batch: int) -> RunStarted:
        cfg = self.cfg
        return RunStarted(
            run_name=run_dir.name, run_dir=str(run_dir), preset=cfg.preset, method=cfg.method.name,
            dataset=cfg.data.name, model=cfg.model.name, device=str(self.device), classes=self.classes,
            epochs=cfg.train.epochs, batches_per_epoch=len(self.train_batches), attack_steps=self.attack_steps,
            train_size=self.train_size, eval_size=self.val_size, start_epoch=start_epoch, start_batch=start_batch,
            world_size=self.dist.world_size, seed=cfg.train.seed, config=cfg.to_dict(),
            precision=self.speed.precision_note)

    def evaluation(self, batches, split: str, epoch: int, method_info: dict | None = None) -> EvalEvent:
        """The `eval` event of the one evaluator (`evaluate`, `spec`) on `batches`."""
        result = evaluate(self.run_model, batches, num_classes=len(self.classes), spec=self.spec)
        fields = {k: result[k] for k in ("n", "counts", "standard", "boundary", "robust", "avg", "worst",
                                         "step_hist", "attack", "adv_confusion")}
        return EvalEvent(epoch=epoch, split=split, method=method_info or {}, **fields)

    def method_validation(self, epoch: int, hook=None) -> dict[str, float]:
        """`method.end_epoch` (or `hook`) on the validation split, seeded alike on every rank, in fp32
        like every evaluation (CFA's FAWA threshold, FRL's and WAT's class weights do not depend on train.amp)."""
        seeding.seed_everything(seeding.mix_seed(self.cfg.train.seed, epoch, 1 << 20))  # identical on every rank
        with eval_precision("fp32", self.device):
            info = (hook or self.method.end_epoch)(self.run_model, self.val_full) or {}
        return {k: float(v) for k, v in info.items()}

    def checkpoint(self, epoch: int, batch: int, step: int, best_metric: list[float] | None,
                   epoch_progress: dict | None, method_state: dict, rng: list[dict]) -> dict[str, Any]:
        """A checkpoint's payload (no collective: what needs every rank, the training attack's counts,
        the method's state and every rank's RNG states, is gathered by the caller, `Trainer.save`)."""
        return {
            "model": self.model.state_dict(), "config": self.cfg.to_dict(), "data_info": self.data_info,
            "epoch": epoch, "batch": batch, "step": step,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "method_state": method_state, "rng": rng,
            "best_metric": best_metric, "epoch_progress": epoch_progress,
            "method_source": method_source(self.cfg.method.name).record(),  # where its class came from (3.6)
        }

    def weights_finite(self) -> bool:
        return bool(torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all())  # one read

    def checkpoint_bytes(self) -> int:
        """About what one checkpoint takes: the model's state and the optimizer's per-parameter buffers."""
        model = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        buffers = 2 if self.cfg.train.optimizer == "adam" else 1  # exp_avg + exp_avg_sq, or the momentum
        return model + buffers * params


def build_run(cfg: Config, *, resuming: bool, on_device: bool = True) -> RunParts:
    """Build a run's parts from its config (validated first); `resuming`: a last.pt will be loaded into them
    (so `train.init_from` and a start checkpoint's check are skipped). `on_device=False` (`train
    --detach`): data, model and teacher stay on the CPU, for a process that only checks the input and
    writes the run directory before handing over; `device` is still the run's."""
    from battui.data import Batches, build_datasets
    from battui.models import build_model, model_options
    from battui.validate import validate_config

    validate_config(cfg)  # changes nothing: a config made or edited in code is checked as a loaded one
    per_rank_batch = distributed.per_rank_batch(cfg.train.batch_size, distributed.env_world_size())
    device, device_note = resolve_device(cfg.run.device)
    dist, device = distributed.init_from_env(device)
    speed = SpeedSettings.resolve(cfg.train, device)
    global_flags = apply_determinism(cfg.train.deterministic, device)
    home = device if on_device else torch.device("cpu")  # where the tensors are built
    if cfg.run.tensorboard:
        from battui.report.tensorboard import summary_writer_class

        summary_writer_class()  # a missing tensorboard fails here, before anything is written
    seed = cfg.train.seed
    splits = build_datasets(cfg.data, seed=seed)
    classes, k = list(splits.classes), splits.num_classes
    data_info = {"num_classes": k, "in_channels": splits.in_channels, "classes": classes,
                 "image_size": splits.image_size}
    threads = tune_cpu_threads(device, splits.in_channels * splits.image_size ** 2)
    if len(splits.train) == 0:
        raise UserError("the training split is empty; check data.classes and data.val_per_class")
    common = dict(device=home, seed=seed, rank=dist.rank, world_size=dist.world_size)
    # train.batch_size is the global batch (the paper's 128 on 1 or 8 GPUs), split over the ranks
    train_batches = Batches(splits.train, per_rank_batch, shuffle=True, augment=cfg.data.augment,
                            pad_shards=True, **common)
    val = splits.val if len(splits.val) else splits.test
    val_name = "val" if len(splits.val) else "test"
    val_full = Batches(val, cfg.eval.batch_size, **common)
    if cfg.eval.val_subset and len(val) > cfg.eval.val_subset:
        pick = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))[: cfg.eval.val_subset]
        val = val.subset(torch.sort(pick)[0])
    # the per-epoch and the final test eval: rank 0 alone (the others join the sums with no images), on
    # `battui eval`'s batches, so they give one process's numbers (the random starts follow the batches)
    val_batches = Batches(val, cfg.eval.batch_size, device=home) if dist.is_main else []
    test_batches = Batches(splits.test, cfg.eval.batch_size, device=home) if dist.is_main else []

    torch.manual_seed(seed)
    try:
        model = build_model(cfg.model.name, num_classes=k, in_channels=splits.in_channels,
                            **model_options(cfg.model))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    method = method_from_config(cfg, num_classes=k)
    pretrained.check_dependencies(method, cfg, resuming=resuming)
    if method.teacher_from:  # ABSLD: its teacher, read before anything is written
        method.use_teacher(pretrained.load_teacher(method, data_info, home))
    check_spec(eval_attack(cfg.eval), k)  # an unknown eval attack, or AutoAttack on < 10 classes, fails here
    if cfg.train.init_from and not resuming:
        load_model_state(model, load_checkpoint(cfg.train.init_from)["model"], cfg.train.init_from)
    model.to(home)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    run_model = speed.compiled(model)
    step_module = distributed.wrap_for_training(run_model, method, dist, device)
    optimizer = build_optimizer(cfg.train, model.parameters())
    scheduler = build_scheduler(cfg.train, optimizer)
    attack_steps = int(getattr(method, "steps", cfg.attack.steps))  # method.steps may override
    return RunParts(
        cfg=cfg, device=device, device_note=device_note, dist=dist, speed=speed, global_flags=global_flags,
        threads=threads, classes=classes, data_info=data_info, train_batches=train_batches, val_full=val_full,
        val_batches=val_batches, val_name=val_name, test_batches=test_batches, train_size=len(splits.train),
        val_size=len(val), model=model, run_model=run_model, step_module=step_module, method=method,
        optimizer=optimizer, scheduler=scheduler, attack_steps=attack_steps,
        attack_counter=ClassCounter(k, attack_steps, device=home))
