"""SIGINT / SIGTERM / SIGHUP / SIGUSR1 / SIGUSR2 -> `RunControl.stop`, so a run ends cleanly.

SIGHUP (the terminal went away) calls `on_hangup` instead when one is given
(`run.on_hangup=continue`: training goes on without the terminal), and stays
ignored when the process started with it ignored (`nohup`).

The first signal asks the loop to finish its batch, save `last.pt` and write
`run_finished` with status `interrupted`; a second SIGINT gives up waiting and
raises KeyboardInterrupt. Handlers can only be installed from the main thread.
SIGUSR1/SIGUSR2 are what Slurm sends before a time limit (`sbatch --signal`,
submitit's USR2), so a job on a cluster saves `last.pt` and `--resume` continues it.

    with handle_signals(control):
        status = trainer.run()
    exit_code = 128 + control.signal      # 130 SIGINT, 143 SIGTERM, 129 SIGHUP, 138/140 SIGUSR1/2
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from battui.engine.control import RunControl
from battui.engine.events import RunStatus

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2") if hasattr(signal, name)
)


@contextmanager
def handle_signals(control: RunControl, on_hangup: Callable[[], None] | None = None) -> Iterator[RunControl]:
    """Install stop handlers for the duration of the block (no-op outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield control
        return

    def on_signal(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if signum == getattr(signal, "SIGHUP", None) and on_hangup is not None:
            on_hangup()
            return
        if control.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop waiting for the batch
        control.request_stop(f"{name} received", signal=signum)

    ignored = {s for s in STOP_SIGNALS if s == getattr(signal, "SIGHUP", None)
               and signal.getsignal(s) is signal.SIG_IGN}
    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS if s not in ignored}
    try:
        yield control
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def exit_code(status: str, control: RunControl) -> int:
    """0 completed, 128 + signal when a signal interrupted, 130 for other stops, 1 failed."""
    if status == RunStatus.COMPLETED:
        return 0
    if status == RunStatus.INTERRUPTED:
        return 128 + control.signal if control.signal else 130
    return 1
