"""The battui dashboard: one screen over a stream of run events.

    app = DashboardApp(ReplayFeed(read_events("runs/x/events.jsonl")))
    app.run()

Events arrive as `EventsArrived` messages (from a training thread, a file tail
or a list), are folded into a `RunState` at once, and the screen is redrawn
from that state at most `refresh_hz` times a second, so a fast training loop
never waits for the terminal.

Given a `lost` event (set on SIGHUP, or by the hang-up-safe driver), the app
closes itself within a quarter second of losing its terminal; whoever ran it
decides what happens to the training (see `launch.run_live`).
"""

from __future__ import annotations

import os
import signal
import threading
import time

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.filter import Monochrome, NoColor
from textual.widgets import Footer

from battui.engine.events import DisplayState, RunStatus
from battui.errors import UserError
from battui.tui.driver import terminal_alive
from battui.tui.feeds import EventsArrived, Feed, TrainingDone
from battui.tui.panels import PANELS
from battui.tui.state import RunState
from battui.tui.widgets.common import SORTS, ViewOptions, class_order
from battui.tui.widgets.confirm import Ask
from battui.tui.widgets.header import RunHeader
from battui.tui.widgets.keys import KeysScreen
from battui.tui.widgets.panel import Panel

WIDE = 120  # columns from which all panels are shown at once
MANY_CLASSES = 20  # from here the class views start sorted worst-first


class DashboardApp(App[int]):
    """Header, the panels of `PANELS` (class errors, attack steps, targets, curves) and a key footer.

    Narrow terminals show one panel at a time (tab or a panel's key switches); from
    `WIDE` columns all panels share a two-column grid, in `PANELS` order.
    """

    TITLE = "battui"
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE, "-wide")]
    CSS = """
    #panels { height: 1fr; }
    Screen.-narrow #panels Panel { display: none; }
    Screen.-narrow #panels Panel.-active { display: block; }
    Screen.-wide #panels { layout: grid; grid-size: 2; grid-columns: 1fr; grid-rows: 1fr; }
    """
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+q", "quit", "quit", show=False, priority=True),
        Binding("ctrl+c", "interrupt", show=False, priority=True),
        Binding("d", "detach", "detach"),
        Binding("p", "pause", "pause"),
        Binding("s", "save", "save"),
        Binding("x", "stop", "stop", show=False),
        Binding("tab", "panel(1)", "panel", priority=True),
        Binding("shift+tab", "panel(-1)", "panel", show=False, priority=True),
        *(Binding(spec.key, f"show_panel({i})", show=False) for i, spec in enumerate(PANELS)),
        Binding("down,j", "pick(1)", "class", show=False),
        Binding("up,k", "pick(-1)", "class", show=False),
        Binding("pagedown", "scroll(1)", show=False),
        Binding("pageup", "scroll(-1)", show=False),
        Binding("home", "scroll(-1000)", show=False),
        Binding("end", "scroll(1000)", show=False),
        Binding("o", "sort", "order"),
        Binding("t", "targets", "targets", show=False),
        Binding("question_mark", "keys", "keys"),
    ]

    def __init__(self, feed: Feed, *, refresh_hz: float = 5.0, clock=time.time,
                 lost: threading.Event | None = None, driver_class=None):
        super().__init__(driver_class=driver_class)
        if self.no_color:
            # Textual's NO_COLOR filter paints in near-invisible greys; keep the terminal's own
            # colours and let bold, reverse and dim carry the emphasis.
            self._filters = [NoColor() if isinstance(f, Monochrome) else f for f in self._filters]
        self.feed = feed
        self.lost = lost
        self.detaching = False  # `d` on a live run: hand it over to a background process
        self.interrupted = False  # ctrl+c on a live run
        self.state = RunState()
        self.view = ViewOptions()
        self.refresh_hz = refresh_hz
        self.clock = clock
        self.active = 0
        self.stopping = False
        self.pause_asked: bool | None = None  # what p asked for, until the stream confirms it
        self.override: tuple[str, str] | None = None
        self._dirty = True
        self._sorted_for_many = False

    # ---- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with Container(id="panels"):
            for i, spec in enumerate(PANELS):
                yield Panel(spec, classes="-active" if i == self.active else None)
        yield Footer()

    @property
    def panels(self) -> list[Panel]:
        """In `PANELS` order (the key order)."""
        base = self.screen_stack[0]  # the dashboard, also while a modal (keys, a question) is on top
        return list(base.query(Panel))

    @property
    def wide(self) -> bool:
        return self.size.width >= WIDE

    def on_mount(self) -> None:
        self._titles()
        self.set_interval(1.0 / self.refresh_hz, self.redraw)
        if self.lost is not None:
            self._tty = os.dup(0) if os.isatty(0) else None
            self.set_interval(0.25, self._watch_terminal)
        if not self.feed.live:
            self.set_interval(1.0, self._check_health)
        self.feed.start(self)

    def on_unmount(self) -> None:
        # However the app ends, no tail thread may outlive it; a live loop is the launcher's to end.
        if not self.feed.live:
            self.feed.stop()
        if getattr(self, "_tty", None) is not None:
            os.close(self._tty)
            self._tty = None

    def _watch_terminal(self) -> None:
        if not self.lost.is_set() and self._tty is not None and not terminal_alive(self._tty):
            self.lost.set()
        if self.lost.is_set():
            self.exit(self.return_code_for_run())

    def on_resize(self, event: events.Resize) -> None:
        self._titles(event.size.width)
        self._dirty = True

    def _titles(self, width: int | None = None) -> None:
        wide = self.wide if width is None else width >= WIDE
        for i, panel in enumerate(self.panels):
            panel.set_class(i == self.active, "-active")
            if wide:
                panel.border_title = f"{panel.spec.key} {panel.spec.title}"
            else:
                strip = " │ ".join(f"[reverse]{p.key} {p.title}[/]" if j == self.active else f"{p.key} {p.title}"
                                   for j, p in enumerate(PANELS))
                panel.border_title = strip
            panel.border_subtitle = "tab: next panel · ?: keys" if i == self.active and not wide else ""

    # ---- events --------------------------------------------------------------------------

    def on_events_arrived(self, message: EventsArrived) -> None:
        for event in message.events:
            self.state.apply(event)
            if event.get("type") in ("paused", "resumed", "run_finished"):
                self.pause_asked = None
        if not self._sorted_for_many and self.state.num_classes > MANY_CLASSES:
            self._sorted_for_many = True
            self.view.sort = "robust"
            self.view.selected = class_order(self.state, "robust")[0] if self.state.latest_eval else 0
        self._dirty = True
        if self.state.events_seen == len(message.events):
            self.redraw()  # the first picture at once, not one timer tick later

    def redraw(self) -> None:
        """Repaint from the state if anything changed; runs on a timer, never per event."""
        if not self._dirty:
            return
        self._dirty = False
        k = self.state.num_classes
        if k and self.view.selected >= k:
            self.view.selected = 0
        status, note = self.status()
        self.screen_stack[0].query_one(RunHeader).show(self.state, self.view, status, note)
        for panel in self.panels:
            if self.wide or panel.has_class("-active"):
                panel.show(self.state, self.view)

    def status(self) -> tuple[str, str]:
        """The header's status word and note, from the stream and from what the person did."""
        state = self.state
        if self.detaching and not state.finished:
            return DisplayState.SAVING, "saving checkpoints/last.pt to continue in the background…"
        if self.stopping and not state.finished:
            return DisplayState.SAVING, "stopping after this batch and saving checkpoints/last.pt…"
        if self.override:
            return self.override
        if state.finished:
            reason = str(state.finished.get("reason") or "")
            note = reason if state.status != RunStatus.COMPLETED else ""
            if state.status == RunStatus.INTERRUPTED and not self.feed.live and state.run_dir:
                note = (note + " · " if note else "") + f"continue: battui train --resume {state.run_dir}"
            if self.feed.live:
                note = (note + " · " if note else "") + "q to exit"
            return state.status, note
        if self.paused and state.started:
            return DisplayState.PAUSED, "p to resume" if self.feed.controls else ""
        return state.status, ""

    @property
    def paused(self) -> bool:
        return self.state.paused if self.pause_asked is None else self.pause_asked

    def _check_health(self) -> None:
        health = self.feed.health(self.state, self.clock())
        if health != self.override:
            self.override = health
            self._dirty = True

    def on_training_done(self, _message: TrainingDone) -> None:
        error = self.feed.error
        if error is not None:
            self.override = (RunStatus.FAILED, f"{type(error).__name__}: {error}")
        self._dirty = True
        control = self.feed.control
        if self.stopping or (control is not None and control.stop.is_set()):
            # q here, or a signal (SIGTERM/SIGHUP) that stopped the loop from outside.
            self.exit(self.return_code_for_run())

    def return_code_for_run(self) -> int:
        """0 when the run completed or was stopped on purpose, 1 when it failed."""
        result = self.feed.result or self.state.status
        return 1 if result == RunStatus.FAILED else 0

    # ---- actions -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("pause", "save", "stop"):
            return self.feed.controls and not self.state.finished and not self.stopping
        if action == "detach":
            return self.feed.live  # watching, q already detaches
        return True

    @property
    def training_here(self) -> bool:
        """A live run whose training thread is still going."""
        return self.feed.live and self.feed.result is None

    def _end_live(self, reason: str = "", sig: int = 0) -> None:
        """Stop the loop here; the app exits once it has saved last.pt (`TrainingDone`)."""
        self.stopping = True
        self._dirty = True
        control = self.feed.control
        if reason and control is not None:
            control.request_stop(reason, signal=sig)
        if not self.feed.stop():
            self.exit(self.return_code_for_run())
        else:
            self.redraw()

    async def action_quit(self) -> None:
        """Live: ask, then stop (saving last.pt) or detach. Watch or a finished run: just leave."""
        if self.stopping or self.detaching:
            self.notify("still saving the checkpoint…", timeout=2)
            return
        if not self.training_here:
            self.feed.stop()
            self.exit(self.return_code_for_run())
            return
        answers = [("y", "stop: save checkpoints/last.pt and exit"), ("d", "detach: keep training in the background")]
        self.push_screen(Ask("Stop training?", answers), self._answer_quit)

    def _answer_quit(self, key: str | None) -> None:
        if key == "y":
            self._end_live()
        elif key == "d":
            self.action_detach()

    def action_detach(self) -> None:
        """Live: hand the run over to a background process (the launcher starts it). Watch: leave."""
        if not self.training_here:
            self.feed.stop()
            self.exit(self.return_code_for_run())
            return
        if self.stopping or self.detaching:
            return
        self.detaching = True
        self.feed.hand_over()  # the lock goes to the background process with the run
        self._end_live("detached from the dashboard (d); training continues in a background process")

    def action_interrupt(self) -> None:
        """Ctrl-C: as `battui train --help` says, save last.pt and exit non-zero (130). Watch: leave."""
        if not self.training_here:
            self.feed.stop()
            self.exit(self.return_code_for_run())
            return
        if not self.stopping:
            self.interrupted = True
            self._end_live("SIGINT received (Ctrl-C in the dashboard)", sig=signal.SIGINT)

    def action_stop(self) -> None:
        self.push_screen(Ask("Stop the run? It saves checkpoints/last.pt; battui train --resume continues it.",
                             [("y", "stop the run")]), self._answer_stop)

    def _answer_stop(self, key: str | None) -> None:
        if key != "y":
            return
        if self.training_here:
            self._end_live()
        else:
            self._command("stop", "stop asked; the trainer saves checkpoints/last.pt after this batch")

    def _command(self, name: str, note: str) -> bool:
        try:
            self.feed.command(name)
        except UserError as exc:
            self.notify(str(exc), severity="error", timeout=6)
            return False
        self.notify(note, timeout=3)
        return True

    def action_pause(self) -> None:
        if not self.feed.controls:
            return
        pause = not self.paused
        if self._command("pause" if pause else "resume", "pausing…" if pause else "resuming…"):
            self.pause_asked = pause
            self._dirty = True
            self.redraw()

    def action_save(self) -> None:
        self._command("save", "saving checkpoints/last.pt after this batch")

    def action_panel(self, step: int) -> None:
        self.action_show_panel((self.active + step) % len(PANELS))

    def action_show_panel(self, index: int) -> None:
        self.active = index
        self._titles()
        self._dirty = True
        self.redraw()

    def action_pick(self, step: int) -> None:
        order = class_order(self.state, self.view.sort)
        if not order:
            return
        pos = order.index(self.view.selected) if self.view.selected in order else 0
        self.view.selected = order[max(0, min(len(order) - 1, pos + step))]
        self._dirty = True
        self.redraw()

    def action_scroll(self, pages: int) -> None:
        panel = self.panels[self.active]
        panel.scroll_to(y=panel.scroll_y + pages * max(1, panel.scrollable_content_region.height - 1), animate=False)

    def action_sort(self) -> None:
        self.view.sort = SORTS[(SORTS.index(self.view.sort) + 1) % len(SORTS)]
        self.notify(f"classes ordered by {self.view.sort}" + (" error, worst first" if self.view.sort != "class"
                                                                 else " index"), timeout=2)
        self._dirty = True
        self.redraw()

    def action_targets(self) -> None:
        self.view.target_source = "train" if self.view.target_source == "eval" else "eval"
        self._dirty = True
        self.redraw()

    def action_keys(self) -> None:
        self.push_screen(KeysScreen(self.feed.live))
