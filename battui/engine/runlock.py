"""One trainer per run directory: an OS lock on `RUN/train.lock`.

    lock = RunLock.acquire(run_dir)   # UserError naming the live pid when another trainer holds it
    live_pid(run_dir)                 # pid of the trainer holding the lock now, or None
    lock.release()                    # at the end of a run (the OS releases it if the process dies)

`flock(2)` locks belong to the open file, so a SIGKILLed trainer leaves no
stale lock. A lock can be handed to a child process that continues the run
(`lock.fd` in `pass_fds`, its number in the BATTUI_LOCK_FD variable): the child
takes it over without a moment in which the run is unlocked. While held, the
file holds the owner's pid; it is emptied on release.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from battui.engine.rundir import RunDir
from battui.errors import UserError

ENV_FD = "BATTUI_LOCK_FD"


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def _inherited(path: Path) -> int | None:
    """The lock fd a parent handed over for this very file, if any (consumed: not passed on further)."""
    value = os.environ.pop(ENV_FD, "")
    try:
        fd = int(value)
        mine, there = os.fstat(fd), os.stat(path)
    except (ValueError, OSError):
        return None
    if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
        return None
    os.set_inheritable(fd, False)
    return fd


def process_exists(pid: int) -> bool:
    """Whether a process `pid` exists (one of another user counts; a zombie still does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recorded_pid(run_dir: str | Path) -> int | None:
    """The pid written in the lock file: the live owner's, or the last one's if it was killed (SIGKILL)."""
    return _read_pid(RunDir(run_dir).lock)


def live_pid(run_dir: str | Path) -> int | None:
    """The pid of the trainer that holds the run's lock, or None when no trainer runs on it."""
    path = RunDir(run_dir).lock
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a shared probe: trainers retry past it
    except BlockingIOError:
        return _read_pid(path) or -1
    finally:
        os.close(fd)  # also drops the probe's shared lock
    return None


def other_holder(run_dir: str | Path) -> int | None:
    """`live_pid`, unless the lock is this very process's (taken here, or handed over through
    `ENV_FD`): the trainer that owns the run and is not this one."""
    if os.environ.get(ENV_FD):
        return None
    pid = live_pid(run_dir)
    return None if pid == os.getpid() else pid


def taken(run_dir: str | Path, pid: int | None) -> UserError:
    """The one-line error for a run another trainer holds (`pid` None or -1: unknown)."""
    who = f"pid {pid}" if pid and pid > 0 else "another process"
    return UserError(f"{run_dir} is being trained by {who} (it holds {RunDir(run_dir).lock}); watch it with "
                     f"`battui watch {run_dir}` or stop it with `battui watch {run_dir} --send stop`")


class RunLock:
    """An exclusive flock on RUN/train.lock, held for as long as a trainer owns the run."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, run_dir: str | Path, wait: float | None = 1.0, on_wait=None) -> RunLock:
        """Lock the run (retrying for `wait` seconds past short probes); UserError when it is taken.

        `wait=None` waits for as long as the holder trains; `on_wait(pid)` hears once that it waits.
        """
        run_dir = Path(run_dir)
        path = RunDir(run_dir).lock
        fd = _inherited(path) if path.exists() else None
        if fd is None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + (wait if wait is not None else 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if wait is None:
                    if on_wait is not None:
                        on_wait(_read_pid(path))
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX)  # until the holder releases it, or dies
                    except BaseException:
                        os.close(fd)
                        raise
                    break
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(fd)
                raise taken(run_dir, _read_pid(path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def handover_env(self) -> dict[str, str]:
        """Environment for a child that takes the run over (pass `self.fd` in `pass_fds` too)."""
        return {ENV_FD: str(self.fd)}

    def release(self) -> None:
        """Empty the pid file and unlock (the run is free for `--resume`)."""
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = -1

    def close_handed_over(self, pid: int | None = None) -> None:
        """Drop this process's handle after child `pid` took the lock over (the child keeps it locked)."""
        if self.fd < 0:
            return
        if pid is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{pid}\n".encode(), 0)  # the new owner, before it even starts up
        os.close(self.fd)
        self.fd = -1
