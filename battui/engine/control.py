"""The cancel/pause/save flags a training loop checks once per batch.

The engine never talks to the UI directly: whoever drives a run (the CLI's
signal handlers, the dashboard's key bindings) only sets these flags, and the
loop reacts at the next batch boundary.

    control = RunControl()
    trainer = Trainer(cfg, control=control)
    ...                                   # from any thread:
    control.request_stop("user pressed q")   # finish the batch, save last.pt, stop
    control.pause.set(); control.pause.clear()
    control.save_now.set()                # save last.pt at the next batch boundary
    control.command("pause", stop_reason="")   # by name: pause | resume | save | stop
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class RunControl:
    """Thread-safe flags: `stop`, `pause`, `save_now`, plus why the run was stopped.

    `signal` is the number of the signal that stopped the run (0 when none);
    the CLI turns it into the exit code 128 + signal.
    """

    stop: threading.Event = field(default_factory=threading.Event)
    pause: threading.Event = field(default_factory=threading.Event)
    save_now: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""
    signal: int = 0

    def request_stop(self, reason: str = "stopped by user", signal: int = 0) -> None:
        """Ask the loop to finish the current batch, save `last.pt` and end as `interrupted`."""
        if not self.stop.is_set():
            self.stop_reason = reason
            self.signal = signal
        self.stop.set()

    def command(self, name: str, stop_reason: str) -> None:
        """pause | resume | save | stop (with `stop_reason`): the dashboard's and `watch --send`'s commands."""
        if name == "pause":
            self.pause.set()
        elif name == "resume":
            self.pause.clear()
        elif name == "save":
            self.save_now.set()
        elif name == "stop":
            self.request_stop(stop_reason)
