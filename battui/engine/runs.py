"""Run directories, `env.json`, RNG states and everything `--resume` needs.

    runs/<preset>-<method>-<YYYYmmdd-HHMMSS>/
        config.yaml          the resolved config (what `--resume` reads back)
        env.json             versions, device, seed, host, argv (+ one entry per resume)
        events.jsonl         the event stream (appended on resume)
        checkpoints/last.pt  every epoch (and on stop / manual save), best.pt by worst-class robust val error
        train.lock           the one-trainer lock (flock; holds the live trainer's pid, empty after)
        control              FIFO (0600) while a trainer runs: `battui watch` pause/resume/save/stop
        train.log            a detached run's log, or a run's after its terminal was lost

    cfg = resume_config("runs/digits-cnn-pgd-at-20250101-120000", ["train.epochs=40"])
"""

from __future__ import annotations

import json
import os
import platform
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch

from battui.config import Config, read_config, save_config
from battui.data.batches import mix_seed  # noqa: F401  (one seed mixer for data and engine)
from battui.engine.distributed import DistInfo, gather_objects
from battui.engine.rundir import RunDir
from battui.engine.runlock import other_holder, taken
from battui.errors import UserError
from battui.methods import method_slug


def seed_everything(seed: int) -> None:
    """torch (CPU and CUDA), python `random` and numpy from one seed."""
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:
        pass


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors / plain containers (loadable with weights_only=True)."""
    py = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": py[0], "state": torch.tensor(py[1], dtype=torch.int64), "gauss": py[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = {"kind": str(kind), "keys": torch.from_numpy(keys.astype("int64")),
                          "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
    except ImportError:
        pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (CUDA states only where the devices exist)."""
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        keys = n["keys"].numpy().astype("uint32")
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))


def rng_states(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's `rng_state()`, in rank order: what a checkpoint's `rng` holds (a collective
    under DDP: every rank calls it). Each rank draws its own attack starts and dropout, so a
    mid-epoch resume restores each rank's own states."""
    return gather_objects(rng_state(), info)


def resumed_rng_state(ckpt: dict[str, Any], info: DistInfo) -> dict[str, Any] | None:
    """This rank's RNG states from a mid-epoch `last.pt` (None at an epoch's end: the next epoch
    reseeds from (train.seed, epoch, rank)); `UserError` when it was saved by another number of
    ranks, whose batches and random streams this run cannot continue."""
    if not int(ckpt.get("batch", 0)):
        return None
    saved = ckpt["rng"]
    states = [saved] if isinstance(saved, dict) else list(saved)  # a dict: rank 0's alone, as older files hold
    if len(states) != info.world_size:
        raise UserError(f"{ckpt['path']} was saved mid-epoch (epoch {int(ckpt['epoch']) + 1} batch {ckpt['batch']}) "
                        f"with the RNG states of {len(states)} rank(s); resume it with {len(states)} "
                        f"(this run has {info.world_size}), as each continues its own shard and random streams")
    return states[info.rank]


def check_run_root(root: str | Path) -> None:
    """run.root is a folder (or can become one) that this user can write to; else a one-line UserError."""
    root = Path(root)
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "run.root" if probe == root else f"run.root {root}: {probe}"
        raise UserError(f"{what} is a file, not a folder; set --set run.root=DIR to a folder for the runs")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot create runs under {root}: {probe} is not writable; "
                        "set --set run.root=DIR to a folder you can write to")


def make_run_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create run directory {path}: {exc.strerror}; "
                        "set --set run.root=DIR to a folder you can write to") from None


def new_run_dir(cfg: Config) -> Path:
    """`<root>/<name>` or `<root>/<preset>-<method>-<YYYYmmdd-HHMMSS>` (suffixed if taken)."""
    root = Path(cfg.run.root)
    check_run_root(root)
    if cfg.run.name:
        path = root / cfg.run.name
        if RunDir(path).events.exists() or RunDir(path).config.exists():
            raise UserError(f"run directory {path} already holds a run; continue it with --resume {path} "
                            "or choose another --run-name")
        return path
    stem = f"{cfg.preset}-{method_slug(cfg.method.name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = root / stem, 2
    while path.exists():
        path, n = root / f"{stem}-{n}", n + 1
    return path


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("battui", "numpy", "torchvision"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
    return out


def env_record(device: torch.device, seed: int, world_size: int) -> dict[str, Any]:
    info = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "argv": list(sys.argv),
        "pid": os.getpid(),
        "device": str(device),
        "seed": seed,
        "world_size": world_size,
        "threads": torch.get_num_threads(),
        "versions": _versions(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def write_env(run_dir: Path, record: dict[str, Any], resumed: bool) -> None:
    """env.json: the first start's record, with later resumes appended under `resumes`."""
    path = RunDir(run_dir).env
    if resumed and path.exists():
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            data = {}
        data.setdefault("resumes", []).append(record)
    else:
        data = record
    _write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def write_run_config(run_dir: Path, cfg: Config) -> None:
    _write_atomically(RunDir(run_dir).config, lambda tmp: save_config(cfg, tmp))


def _write_atomically(final: Path, write) -> None:
    """`write(tmp)` beside `final`, then rename it over `final`; a failed write leaves no temp file.
    The temp name is this process's own (two tables on one folder may write one run's config at once)."""
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


def repair_events_tail(path: Path) -> None:
    """Drop a half-written last line (a crash mid-write) so appended events start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return
        back = min(size, 1 << 20)
        fh.seek(size - back)
        tail = fh.read(back)
        cut = tail.rfind(b"\n")
        fh.truncate(size - back + cut + 1 if cut >= 0 else 0)
