"""Where the dashboard's events come from: a trainer in this process, a run directory, or a list.

All three deliver the same thing, `EventsArrived` messages posted to the app
(safe and non-blocking from any thread), so the screen cannot tell a live run
from a watched or replayed one.

    LiveFeed(trainer, control)          # trainer runs in its own thread; listener posts events
    WatchFeed(events_path, pid=None)    # a thread worker tails events.jsonl (follow_events)
    ReplayFeed(events)                  # a fixed list, applied at start (tests, snapshots)

Live and watched runs take the same commands (`feed.command("pause")`): a live
feed sets its `RunControl` flags, a watch feed writes them to the run's
control FIFO (`battui.engine.channel`).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from textual.message import Message

from battui.engine.channel import send_command
from battui.engine.events import DisplayState, RunStatus, follow_events, read_events
from battui.engine.rundir import RunDir
from battui.engine.runlock import live_pid, process_exists, recorded_pid
from battui.errors import UserError
from battui.tui.state import RunState
from battui.tui.widgets.common import format_duration

if TYPE_CHECKING:
    from textual.app import App

    from battui.engine.control import RunControl
    from battui.engine.runfiles import RunFiles

STALE_AFTER = 60.0  # seconds without an event before a watched run counts as quiet
WATCH_BATCH = 500  # events per message while catching up on a long file
STOP_REASON = "stopped from the dashboard (q)"


class EventsArrived(Message):
    """One or more event dicts, in stream order."""

    def __init__(self, events: list[dict[str, Any]]):
        super().__init__()
        self.events = events


class TrainingDone(Message):
    """The training thread of a live feed returned (completed, stopped or failed)."""


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a finished child of ours is reaped, not counted)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    except OSError:
        return False
    return process_exists(pid)


class Feed(Protocol):
    """What the dashboard reads of its source; the defaults are a read-only one's (subclasses inherit them).

    `live` feeds own a training run; `controls` feeds can pause, save, stop it. A live
    feed's `control` is the run's flags and `result`/`error` what its training returned or raised.
    """

    live: bool = False
    controls: bool = False
    control: RunControl | None = None
    result: RunStatus | None = None
    error: BaseException | None = None

    def start(self, app: App) -> None:
        """Begin delivering `EventsArrived` to `app` (called once the app is mounted)."""

    def stop(self) -> bool:
        """Ask the source to stop; True when the app must wait for a worker to finish first."""
        return False

    def health(self, state: RunState, now: float) -> tuple[str, str] | None:
        """A (status, note) override when the stream itself cannot tell, e.g. a writer gone quiet."""
        return None

    def command(self, name: str) -> None:
        """pause | resume | save | stop the run; UserError when it cannot be done."""
        raise UserError("this view only replays events")

    def hand_over(self) -> None:
        """The run goes on in a background process: its lock goes there with it (live feeds)."""


class Trainable(Protocol):
    """What `LiveFeed` and `launch.run_live` need of a trainer (`battui.engine.trainer.Trainer` is one)."""

    run_dir: Path
    events_path: Path
    listeners: list
    files: RunFiles  # its lock; `files.keep_lock`: the run was handed to a background process, the lock goes too

    def run(self) -> RunStatus: ...


class ReplayFeed(Feed):
    """A fixed list of events, applied when the app starts."""

    def __init__(self, events: list[dict[str, Any]]):
        self.events = list(events)

    def start(self, app: App) -> None:
        app.post_message(EventsArrived(self.events))


class LiveFeed(Feed):
    """A `Trainer` run in a thread of its own; its listener posts each event to the app.

    The thread is not the app's: it goes on when the dashboard closes (a lost
    terminal), and `join()` waits for it. It cannot be killed: `stop()` sets
    `control.stop`, the loop notices at the next batch, saves
    `checkpoints/last.pt` and returns; the app then gets `TrainingDone`.
    """

    live = True
    controls = True

    def __init__(self, trainer: Trainable, control: RunControl):
        self.trainer, self.control = trainer, control
        self.result: RunStatus | None = None
        self.error: BaseException | None = None
        self._app: App | None = None
        self.thread: threading.Thread | None = None
        self.started_event: dict[str, Any] | None = None  # the run's latest run_started

    def _listener(self, event: Any) -> None:
        # Runs on the training thread: post only (never call_from_thread, it blocks and
        # raises once the app closes), and never let the dashboard break the training loop.
        record = event if isinstance(event, dict) else event.to_dict()
        if record.get("type") == "run_started":
            self.started_event = record
        app = self._app
        if app is None:
            return
        try:
            app.post_message(EventsArrived([record]))
        except Exception:
            pass

    def start(self, app: App) -> None:
        self._app = app
        if self.trainer.events_path.is_file():  # whatever prepare() already wrote
            app.post_message(EventsArrived(read_events(self.trainer.events_path)))
        self.trainer.listeners.append(self._listener)
        self.thread = threading.Thread(target=self._train, name="battui-training", daemon=True)
        self.thread.start()

    def _train(self) -> None:
        try:
            self.result = RunStatus(self.trainer.run())
        except BaseException as exc:
            self.error, self.result = exc, RunStatus.FAILED
        finally:
            app = self._app
            try:
                if app is not None:
                    app.post_message(TrainingDone())
            except Exception:
                pass

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def detach_app(self) -> None:
        """The app is gone: events stop going to it (training goes on)."""
        self._app = None

    def join(self) -> None:
        """Wait for training to end, waking twice a second so signal handlers run."""
        while self.running:
            self.thread.join(0.5)

    def command(self, name: str) -> None:
        self.control.command(name, STOP_REASON)

    def stop(self) -> bool:
        self.control.request_stop(STOP_REASON)  # keeps the first reason when already stopping
        return self.result is None

    def hand_over(self) -> None:
        self.trainer.files.keep_lock = True


class WatchFeed(Feed):
    """Tails a run's events.jsonl in a thread worker; never touches the run itself."""

    controls = True

    def __init__(self, events_path: str | Path, pid: int | None = None):
        self.events_path = Path(events_path)
        self.pid = pid if pid is not None else self._pid_from_env()
        self.caught_up = False  # the tail has read everything written so far at least once
        self._stop = threading.Event()

    def _pid_from_env(self) -> int | None:
        """The training process: the holder (or last holder) of the run's lock, else env.json's pid if on this host."""
        run_dir = self.events_path.parent
        pid = live_pid(run_dir) or recorded_pid(run_dir)  # a killed trainer's pid stays in the file
        if pid and pid > 0:
            return pid
        try:
            env = json.loads(RunDir(run_dir).env.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(env, dict):
            return None
        record = (env.get("resumes") or [env])[-1]  # the latest start owns the run now
        if not isinstance(record, dict) or record.get("host", socket.gethostname()) != socket.gethostname():
            return None
        pid = record.get("pid")
        return pid if isinstance(pid, int) and pid > 0 else None

    def start(self, app: App) -> None:
        app.run_worker(lambda: self._follow(app), thread=True, name="watch", group="watch")

    def _follow(self, app: App) -> None:
        pending: list[dict[str, Any]] = []
        stop = lambda: self._stop.is_set() or not app.is_running  # noqa: E731  (never outlive the app)
        for event in follow_events(self.events_path, stop=stop, poll=0.2):
            if event is not None:
                pending.append(event)
            if pending and (event is None or len(pending) >= WATCH_BATCH):
                app.post_message(EventsArrived(pending))
                pending = []
            if event is None:
                self.caught_up = True

    def stop(self) -> bool:
        self._stop.set()
        return False

    def command(self, name: str) -> None:
        send_command(self.events_path.parent, name)

    def health(self, state: RunState, now: float) -> tuple[str, str] | None:
        if state.finished:
            return None
        try:
            last = max(state.last_event_time or 0.0, self.events_path.stat().st_mtime)
        except OSError:
            last = state.last_event_time or 0.0
        idle = now - last if last else 0.0
        holder = live_pid(self.events_path.parent)  # a resumed or handed-over run has a new trainer
        if holder and holder > 0:
            self.pid = holder
        alive = pid_alive(self.pid) if self.pid else None
        if alive is False and self.caught_up:
            return DisplayState.STALE, f"process {self.pid} is gone and the run did not finish"
        if idle > STALE_AFTER:
            if alive:
                return DisplayState.RUNNING, f"quiet for {format_duration(idle)} (pid {self.pid} alive)"
            return DisplayState.STALE, f"no event for {format_duration(idle)}; the run stopped writing"
        return None

