"""Control a running trainer from another process through `RUN/control`, a FIFO only its owner can write.

    channel = ControlChannel(run_dir, control).open()   # the trainer: a thread turns lines into flags
    send_command(run_dir, "pause")                      # any watcher: pause | resume | save | stop
    channel.close()                                     # removes the FIFO

The FIFO is created with mode 0600 (the run's owner only). A command is one
line, `COMMAND [PID]`, written in one `write` (atomic for short lines, so
watchers may write at the same time). With no trainer reading, opening the
FIFO for writing fails at once (ENXIO): `send_command` then says so.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import threading
from pathlib import Path

from battui.engine.control import RunControl
from battui.engine.rundir import RunDir
from battui.errors import UserError

COMMANDS = ("pause", "resume", "save", "stop")


class ControlChannel:
    """The trainer's end: a daemon thread reads commands and sets the `RunControl` flags."""

    def __init__(self, run_dir: str | Path, control: RunControl):
        self.path = RunDir(run_dir).control
        self.control = control
        self._fds: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> ControlChannel:
        try:
            self.path.unlink()  # a FIFO left by a killed trainer, or anything else in the way
        except FileNotFoundError:
            pass
        os.mkfifo(self.path, 0o600)
        os.chmod(self.path, 0o600)
        read_fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # Our own idle writer keeps the FIFO from reading end-of-file between watchers.
        self._fds = [read_fd, os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)]
        self._thread = threading.Thread(target=self._serve, name="battui-control", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        fd, pending = self._fds[0], b""
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self.apply(line.decode("utf-8", "replace"))

    def apply(self, line: str) -> None:
        """Act on one command line; unknown commands are ignored."""
        words = line.split()
        if not words:
            return
        command, sender = words[0], f" (pid {words[1]})" if len(words) > 1 and words[1].isdigit() else ""
        self.control.command(command, f"stopped from battui watch{sender}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        try:
            if stat.S_ISFIFO(self.path.lstat().st_mode):
                self.path.unlink()
        except FileNotFoundError:
            pass


def send_command(run_dir: str | Path, command: str) -> None:
    """Write one command to the trainer of `run_dir`; UserError when nobody can receive it."""
    if command not in COMMANDS:
        raise UserError(f"unknown command '{command}'; one of: {', '.join(COMMANDS)}")
    path = RunDir(run_dir).control
    try:
        if not stat.S_ISFIFO(path.lstat().st_mode):
            raise UserError(f"{path} is not a battui control channel")
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UserError(f"no trainer is running on {run_dir} (no {path}); nothing to {command}") from None
    except PermissionError:
        raise UserError(f"only the owner of {run_dir} can control its trainer ({path} is mode 0600)") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            from battui.engine.runlock import live_pid

            pid = live_pid(run_dir)
            if pid is not None:
                raise UserError(f"the trainer of {run_dir} (pid {pid}) is still starting up; "
                                f"try `{command}` again in a moment") from None
            raise UserError(f"no trainer is running on {run_dir}; nothing to {command}") from None
        raise UserError(f"cannot write to {path}: {exc.strerror}") from None
    try:
        os.write(fd, f"{command} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
