"""What `--resume` needs: the run's saved config with overrides, checked against its last.pt.

    cfg = resume_config("runs/digits-cnn-pgd-at-20250101-120000", ["train.epochs=40"])
    start = restore(build_run(cfg, resuming=True), run_dir, cfg.train.epochs)   # continue its last.pt
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from battui.config import Config, read_config
from battui.engine.checkpoint import load_checkpoint, load_model_state
from battui.engine.rundir import RunDir
from battui.engine.runlock import other_holder, taken
from battui.engine.seeding import resumed_rng_state
from battui.engine.setup import resume_schedule
from battui.errors import UserError

if TYPE_CHECKING:
    from battui.engine.build import RunParts


def never_started(run_dir: Path) -> bool:
    """A run directory `prepare()` made (config.yaml, env.json) that never trained: nothing in it to lose.

    `battui train --detach` hands such a directory to its background process with --resume.
    """
    events = RunDir(run_dir).events
    ckpts = RunDir(run_dir).checkpoints
    return (not events.exists() or events.stat().st_size == 0) and not (ckpts.exists() and any(ckpts.iterdir()))


# Settings a resume cannot honour: last.pt's optimizer state is of its optimizer, and its weights
# are the run's own (init_from only seeds a fresh run). Every other train.* / eval.* change applies.
FIXED_ON_RESUME = ("train.optimizer", "train.init_from")


def resume_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = (), *, allow_changes: bool = False,
                  note=None, restart: bool = False) -> Config:
    """The run's saved config.yaml with `section.key=value` overrides (e.g. more epochs, another device).

    Refuses a run with no checkpoints/last.pt to continue from (unless it never started), a change
    of `FIXED_ON_RESUME`, and changes to the data, model, method, training attack or seed against
    the config its last.pt was trained with (also edits of config.yaml) unless `allow_changes`;
    `note(text)` hears the changes that are kept, all of which the resumed run applies (the lr,
    momentum and weight decay on the optimizer, the schedule re-derived at the resumed epoch).
    `restart=True` (a table's own run folder, resubmitted) trains a run that failed before its
    first checkpoint again from epoch 1 in the same folder.
    """
    from battui.config import _set_key, _validate_method_params, parse_override
    from battui.validate import config_changes, describe_changes, protected, validate_config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a run directory; pass runs/<name>/ from `battui train`")
    if not RunDir(run_dir).config.exists():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); pass runs/<name>/ from `battui train`")
    pid = other_holder(run_dir)
    if pid:  # before anything else: a run being trained has nothing to resume yet, whatever its files say
        raise taken(run_dir, pid)
    cfg = read_config(RunDir(run_dir).config)
    for text in overrides:
        _set_key(cfg, *parse_override(text))
    _validate_method_params(cfg)
    validate_config(cfg)
    last = RunDir(run_dir).last
    if not last.exists():
        if restart or never_started(run_dir):
            return cfg
        raise UserError(f"{run_dir} has no checkpoints/last.pt to continue from (it stopped before its first "
                        f"checkpoint, or the file was removed); nothing was changed there; start a new run with "
                        f"`battui train --preset {cfg.preset}`")
    trained = load_checkpoint(last, mmap=True)["config"]
    changes = config_changes(trained, cfg.to_dict())
    fixed = [c for c in changes if c[0] in FIXED_ON_RESUME]
    if fixed:
        raise UserError(f"resuming {run_dir} cannot change {describe_changes(fixed)}: the optimizer state and "
                        "the weights in last.pt belong to the old setting; start a new run for it")
    refused = protected(changes)
    if refused and not allow_changes:
        raise UserError(f"resuming {run_dir} would change {describe_changes(refused)}, which makes it another "
                        "experiment; start a new run, or pass --allow-changes to continue this one anyway")
    if changes and note is not None:
        note(f"resuming with changed settings: {describe_changes(changes)}")
    return cfg



@dataclass
class StartPoint:
    """Where a run starts: `StartPoint()` for a fresh run, else its last.pt's (`restore`)."""

    path: Path | None = None  # the last.pt it continues
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the next epoch done (a mid-epoch last.pt), else 0
    step: int = 0  # optimiser steps so far
    best_metric: list[float] | None = None  # [worst-class, average] robust error of best.pt
    epoch_progress: dict | None = None  # the epoch's training-attack counts so far (rank 0's sums), mid-epoch
    rng: dict | None = None  # this rank's RNG states saved after that batch, mid-epoch


def restore(parts: RunParts, run_dir: Path, epochs: int) -> StartPoint:
    """Load `run_dir`'s last.pt: its weights and the optimiser, schedule and method states into a built run.

    The config's optimiser settings and schedule win over the saved ones (`setup.resume_schedule`);
    a state that does not fit the config, or a run that already trained all `epochs`, is a `UserError`.
    """
    path = RunDir(run_dir).last
    ckpt = load_checkpoint(path)
    load_model_state(parts.model, ckpt["model"], str(path))
    try:
        parts.optimizer.load_state_dict(ckpt["optimizer"])
        sched = dict(ckpt["scheduler"])
        sched["lr_lambdas"] = [None] * len(parts.optimizer.param_groups)  # schedule from the (maybe extended) config
        parts.scheduler.load_state_dict(sched)
        resume_schedule(parts.cfg.train, parts.optimizer, parts.scheduler)
        parts.method.load_state_dict(ckpt.get("method_state") or {})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"{path} does not fit this run's config: {exc}") from None
    point = StartPoint(path=path, epoch=int(ckpt["epoch"]), batch=int(ckpt.get("batch", 0)),
                        step=int(ckpt.get("step", 0)), best_metric=ckpt.get("best_metric"),
                        epoch_progress=ckpt.get("epoch_progress"),
                       rng=resumed_rng_state(ckpt, parts.dist))  # this rank's, mid-epoch
    if point.epoch >= epochs and not point.batch:
        raise UserError(f"{run_dir} already trained all {epochs} epochs; "
                        f"pass --epochs N (N > {point.epoch}) to train longer")
    return point
