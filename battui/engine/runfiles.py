"""A run directory as training writes it: `RunFiles` (lock, config.yaml, env.json, events, checkpoints).

    runs/<preset>-<method>-<YYYYmmdd-HHMMSS>/
        config.yaml          the resolved config (what `--resume` reads back)
        env.json             versions, device, seed, host, argv (+ one entry per resume)
        events.jsonl         the event stream (appended on resume)
        checkpoints/last.pt  every epoch (and on stop / manual save), best.pt by worst-class robust val error
        train.lock           the one-trainer lock (flock; holds the live trainer's pid, empty after)
        control              FIFO (0600) while a trainer runs: `battui watch` pause/resume/save/stop
        train.log            a detached run's log, or a run's after its terminal was lost

(RNG states: `seeding.py`; `--resume`'s config: `resume.py`.)
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from battui.config import Config, save_config
from battui.engine.channel import ControlChannel
from battui.engine.checkpoint import save_checkpoint
from battui.engine.control import RunControl
from battui.engine.events import EventWriter, Message
from battui.engine.faults import WriteFault
from battui.engine.rundir import RunDir
from battui.engine.runlock import RunLock
from battui.errors import UserError
from battui.methods import method_slug


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


class RunFiles:
    """A training run's files, written by rank 0 alone (`main=False`: every call writes nothing).

        files = RunFiles(run_dir)              # nothing touched yet
        with files.resume_lock(): ...           # a resumed run: the lock before last.pt is read
        files.create(cfg, env, resumed=False)  # the folder, the lock, config.yaml, env.json, the events tail
        files.open(control)                    # events.jsonl (appended) and the control FIFO
        files.publish(event); files.save("last", payload, epoch=2, batch=0)
        files.close()                          # events, FIFO, and the lock unless `keep_lock`

    `lock` may be set before `create` (a table's worker holds it already); `keep_lock` leaves it
    held after `close` (a handover to a detached process, or the worker releasing it itself).
    `saved` is the (epochs, batches) of the last.pt on disk, for the write-failure message.
    """

    KINDS = {"last": "last", "manual": "last", "best": "best", "averaged": "averaged"}  # kind -> RunDir file

    def __init__(self, path: str | Path = Path(), *, main: bool = True) -> None:
        self.path, self.main = Path(path), main
        self.lock: RunLock | None = None
        self.keep_lock = False
        self.writer: EventWriter | None = None
        self.channel: ControlChannel | None = None
        self.saved: tuple[int, int] | None = None
        self.listeners: list = []

    @property
    def dir(self) -> RunDir:
        return RunDir(self.path)

    @contextmanager
    def resume_lock(self) -> Iterator[None]:
        """Hold the run's lock from here (rank 0); released again if the block raises."""
        if self.main:
            self.lock = self.lock or RunLock.acquire(self.path)
        try:
            yield
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def create(self, cfg: Config, env: dict[str, Any], resumed: bool) -> None:
        """The run directory with its lock, config.yaml and env.json (a resume appends to env.json and
        drops a torn last line of events.jsonl); a full or read-only disk: one-line `UserError`."""
        if not self.main:
            return
        make_run_dir(self.path)
        self.lock = self.lock or RunLock.acquire(self.path)
        try:
            write_run_config(self.path, cfg)
            write_env(self.path, env, resumed=resumed)
            repair_events_tail(self.dir.events)
        except OSError as exc:
            self.lock.release()
            raise UserError(WriteFault(exc.filename or self.path, exc).describe(self.path, self.saved)) from None

    def open(self, control: RunControl) -> None:
        if self.main:
            self.writer = EventWriter(self.dir.events)
            self.channel = ControlChannel(self.path, control).open()

    def publish(self, event) -> dict:
        """Write `event` to events.jsonl and hand its dict to every listener (a callable that must not
        block; one that raises is removed with a warning); off rank 0 nothing is written or heard."""
        record = event.to_dict()
        if not self.main:
            return record
        if self.writer is not None:
            self.writer.write(record)
        for listener in list(self.listeners):
            try:
                listener(record)
            except Exception as exc:  # a broken view must not stop training
                self.listeners.remove(listener)
                self.publish(Message(text=f"listener {listener!r} failed and was removed: {exc}", level="warning"))
        return record

    def close_events(self) -> None:
        """Stop writing events.jsonl (it refused a line: the listeners still hear the rest)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def save(self, kind: str, payload: dict, *, epoch: int, batch: int = 0) -> Path | None:
        """Write checkpoint `kind` (last, manual -> last.pt; best; averaged -> fawa.pt); None off rank 0."""
        if not self.main:
            return None
        path = save_checkpoint(getattr(self.dir, self.KINDS[kind]), payload)
        if self.KINDS[kind] == "last":
            self.saved = (epoch, batch)
        return path

    def close(self) -> None:
        self.close_events()
        if self.channel is not None:
            self.channel.close()
        if self.lock is not None and not self.keep_lock:
            self.lock.release()
