"""A Textual terminal driver that survives losing its terminal (SSH dropped, tmux session killed).

Textual's own driver, on a hung-up terminal, lets its writer thread die on EIO
(the app then blocks forever on a full output queue) and its input thread read
end-of-file in a busy loop. Here output errors are swallowed and input errors end
the input thread; both set `lost`, which the dashboard polls to close itself
(the caller then decides whether training goes on without a terminal).

    lost = threading.Event()
    app = DashboardApp(feed, lost=lost, driver_class=hangup_safe_driver(lost))
"""

from __future__ import annotations

import sys
import termios
import threading
from typing import Any

from textual.driver import Driver


class _TerminalOutput:
    """File-like around the terminal stream: after the first write error, writes go nowhere."""

    def __init__(self, file: Any, lost: threading.Event):
        self.file, self.lost = file, lost

    def write(self, text: str) -> int:
        if not self.lost.is_set():
            try:
                self.file.write(text)
            except (OSError, ValueError):
                self.lost.set()
        return len(text)

    def flush(self) -> None:
        if not self.lost.is_set():
            try:
                self.file.flush()
            except (OSError, ValueError):
                self.lost.set()

    def fileno(self) -> int:
        return self.file.fileno()

    def isatty(self) -> bool:
        return True


def terminal_alive(fd: int) -> bool:
    """False once the terminal on `fd` has hung up (its attributes can no longer be read)."""
    try:
        termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError):
        return False
    return True


def hangup_safe_driver(lost: threading.Event) -> type[Driver] | None:
    """A LinuxDriver subclass bound to `lost` (None off POSIX: Textual picks its own)."""
    if sys.platform == "win32":
        return None
    from textual.drivers.linux_driver import LinuxDriver

    class HangupSafeDriver(LinuxDriver):
        def __init__(self, app: Any, **kwargs: Any):
            super().__init__(app, **kwargs)
            self._file = _TerminalOutput(self._file, lost)

        def run_input_thread(self) -> None:
            try:
                super().run_input_thread()
            except OSError:
                lost.set()

    return HangupSafeDriver
