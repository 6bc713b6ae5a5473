"""What `--resume` needs: the run's saved config with overrides, checked against its last.pt.

    cfg = resume_config("runs/digits-cnn-pgd-at-20250101-120000", ["train.epochs=40"])
"""

from __future__ import annotations

from pathlib import Path

from battui.config import Config, read_config
from battui.engine.rundir import RunDir
from battui.engine.runlock import other_holder, taken
from battui.errors import UserError


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
    from battui.engine.checkpoint import load_checkpoint
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

