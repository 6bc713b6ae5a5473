"""A training process that outlives its terminal, and the background process that takes a run over.

    guard = TerminalGuard(run_dir)       # notes which of fds 0, 1, 2 are terminals
    guard.lost.set()                     # SIGHUP, or the dashboard found its terminal dead
    guard.to_log()                       # those fds: 1 and 2 -> RUN/train.log, 0 -> /dev/null
    pid = spawn_detached(run_dir, lock)  # `battui train --headless --resume RUN` in a session of its own

After `to_log()` nothing writes to the dead terminal any more (no EIO, no
SIGPIPE, no spinning on it), and the rest of the run's log lines land in
RUN/train.log, where `battui watch` and `tail -f` find them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from battui.engine.rundir import RunDir
from battui.engine.runlock import RunLock


def dumb_terminal() -> bool:
    """TERM=dumb (or unset): no full-screen dashboard, the plain log instead."""
    return os.environ.get("TERM", "dumb") in ("", "dumb")


class TerminalGuard:
    def __init__(self, run_dir: str | Path):
        self.log_path = RunDir(run_dir).log
        self.ttys = [fd for fd in (0, 1, 2) if _isatty(fd)]
        self.lost = threading.Event()
        self.redirected = False

    def to_log(self) -> None:
        """Point the terminal fds at the run's log (and stdin at /dev/null); once."""
        if self.redirected or not self.ttys:
            return
        self.redirected = True
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        for fd in self.ttys:
            os.dup2(null if fd == 0 else log, fd)
        os.close(log)
        os.close(null)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def spawn_detached(run_dir: str | Path, lock: RunLock | None) -> int:
    """Continue `run_dir` in a background process (its own session, log in RUN/train.log); its pid.

    The run's lock passes to the child as an inherited fd, so no other trainer can
    slip in between; this process then drops its handle.
    """
    run_dir = Path(run_dir)
    cmd = [sys.executable, "-m", "battui", "train", "--headless", "--resume", str(run_dir)]
    env = dict(os.environ)
    fds: tuple[int, ...] = ()
    if lock is not None and lock.fd >= 0:
        env.update(lock.handover_env())
        fds = (lock.fd,)
    with open(RunDir(run_dir).log, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(cmd, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env, pass_fds=fds)
    if lock is not None:
        lock.close_handed_over(proc.pid)
    return proc.pid
