"""Where the dashboard's events come from: a trainer in this process, a run directory, or a list.

All three deliver the same thing, `EventsArrived` messages posted to the app
(safe and non-blocking from any thread), so the screen cannot tell a live run
from a watched or replayed one.

    LiveFeed(trainer, control)          # trainer runs in a thread worker; listener posts events
    WatchFeed(events_path, pid=None)    # a thread worker tails events.jsonl (follow_events)
    ReplayFeed(events)                  # a fixed list, applied at start (tests, snapshots)
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.message import Message

from battui.engine.events import follow_events, read_events
from battui.tui.state import RunState
from battui.tui.widgets.common import format_duration

if TYPE_CHECKING:
    from textual.app import App

STALE_AFTER = 60.0  # seconds without an event before a watched run counts as quiet
WATCH_BATCH = 500  # events per message while catching up on a long file


class EventsArrived(Message):
    """One or more event dicts, in stream order."""

    def __init__(self, events: list[dict[str, Any]]):
        super().__init__()
        self.events = events


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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Feed:
    """Base: a read-only source. `live` feeds own a training run and can pause, save and stop it."""

    live = False

    def start(self, app: App) -> None:
        """Begin delivering `EventsArrived` to `app` (called once the app is mounted)."""

    def stop(self) -> bool:
        """Ask the source to stop; True when the app must wait for a worker to finish first."""
        return False

    def health(self, state: RunState, now: float) -> tuple[str, str] | None:
        """A (status, note) override when the stream itself cannot tell, e.g. a writer gone quiet."""
        return None


class ReplayFeed(Feed):
    """A fixed list of events, applied when the app starts."""

    def __init__(self, events: list[dict[str, Any]]):
        self.events = list(events)

    def start(self, app: App) -> None:
        app.post_message(EventsArrived(self.events))


class LiveFeed(Feed):
    """A `Trainer` run in a Textual thread worker of the app; its listener posts each event.

    The worker cannot be killed: `stop()` sets `control.stop`, the loop notices
    at the next batch, saves `checkpoints/last.pt` and returns.
    """

    live = True

    def __init__(self, trainer: Any, control: Any):
        self.trainer, self.control = trainer, control
        self.result: str | None = None
        self.error: BaseException | None = None
        self._app: App | None = None

    def _listener(self, event: Any) -> None:
        # Runs on the training thread: post only (never call_from_thread, it blocks and
        # raises once the app closes), and never let the dashboard break the training loop.
        app = self._app
        if app is None:
            return
        try:
            record = event if isinstance(event, dict) else event.to_dict()
            app.post_message(EventsArrived([record]))
        except Exception:
            pass

    def start(self, app: App) -> None:
        self._app = app
        path = Path(getattr(self.trainer, "events_path", "") or "")
        if path.is_file():
            app.post_message(EventsArrived(read_events(path)))  # whatever prepare() already wrote
        listeners = getattr(self.trainer, "listeners", None)
        if isinstance(listeners, list):
            listeners.append(self._listener)
        elif hasattr(self.trainer, "add_listener"):
            self.trainer.add_listener(self._listener)
        else:
            raise TypeError("the trainer exposes neither a `listeners` list nor add_listener()")
        app.run_worker(self._train, thread=True, name="training", group="training", exit_on_error=False)

    def _train(self) -> str:
        try:
            self.result = str(self.trainer.run())
        except BaseException as exc:
            self.error, self.result = exc, "failed"
            raise
        return self.result

    def stop(self) -> bool:
        if not self.control.stop.is_set():
            if hasattr(self.control, "request_stop"):
                self.control.request_stop("stopped from the dashboard (q)")
            else:
                self.control.stop_reason = "stopped from the dashboard (q)"
                self.control.stop.set()
        return self.result is None


class WatchFeed(Feed):
    """Tails a run's events.jsonl in a thread worker; never touches the run itself."""

    def __init__(self, events_path: str | Path, pid: int | None = None):
        self.events_path = Path(events_path)
        self.pid = pid if pid is not None else self._pid_from_env()
        self.caught_up = False  # the tail has read everything written so far at least once
        self._stop = threading.Event()

    def _pid_from_env(self) -> int | None:
        """The training process: train.pid of a detached run, else env.json's pid if on this host."""
        run_dir = self.events_path.parent
        try:
            return int((run_dir / "train.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        try:
            env = json.loads((run_dir / "env.json").read_text())
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

    def health(self, state: RunState, now: float) -> tuple[str, str] | None:
        if state.finished:
            return None
        try:
            last = max(state.last_event_time or 0.0, self.events_path.stat().st_mtime)
        except OSError:
            last = state.last_event_time or 0.0
        idle = now - last if last else 0.0
        alive = pid_alive(self.pid) if self.pid else None
        if alive is False and self.caught_up:
            return "stale", f"process {self.pid} is gone and the run did not finish"
        if idle > STALE_AFTER:
            if alive:
                return "running", f"quiet for {format_duration(idle)} (pid {self.pid} alive)"
            return "stale", f"no event for {format_duration(idle)}; the run stopped writing"
        return None

