"""The battui dashboard: one screen over a stream of run events.

    app = DashboardApp(ReplayFeed(read_events("runs/x/events.jsonl")))
    app.run()

Events arrive as `EventsArrived` messages (from a training thread, a file tail
or a list), are folded into a `RunState` at once, and the screen is redrawn
from that state at most `refresh_hz` times a second, so a fast training loop
never waits for the terminal.
"""

from __future__ import annotations

import time

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

from battui.tui.feeds import EventsArrived, Feed
from battui.tui.state import RunState
from battui.tui.widgets.class_errors import ClassErrors
from battui.tui.widgets.common import SORTS, ViewOptions, class_order
from battui.tui.widgets.curves import Curves
from battui.tui.widgets.header import RunHeader
from battui.tui.widgets.keys import KeysScreen
from battui.tui.widgets.panel import Panel
from battui.tui.widgets.source_steps import SourceSteps
from battui.tui.widgets.targets import Targets

WIDE = 120  # columns from which all four panels are shown at once
MANY_CLASSES = 20  # from here the class views start sorted worst-first


class DashboardApp(App[int]):
    """Header, four panels (class errors, attack steps, targets, curves) and a key footer.

    Narrow terminals show one panel at a time (tab / 1-4 switch); from `WIDE`
    columns the four panels share a 2x2 grid.
    """

    TITLE = "battui"
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE, "-wide")]
    CSS = """
    #panels { height: 1fr; }
    Screen.-narrow #panels Panel { display: none; }
    Screen.-narrow #panels Panel.-active { display: block; }
    Screen.-wide #panels { layout: grid; grid-size: 2 2; grid-columns: 1fr 1fr; grid-rows: 1fr 1fr; }
    """
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+q", "quit", "quit", show=False, priority=True),
        Binding("p", "pause", "pause"),
        Binding("s", "save", "save"),
        Binding("tab", "panel(1)", "panel", priority=True),
        Binding("shift+tab", "panel(-1)", "panel", show=False, priority=True),
        Binding("1", "show_panel(0)", show=False),
        Binding("2", "show_panel(1)", show=False),
        Binding("3", "show_panel(2)", show=False),
        Binding("4", "show_panel(3)", show=False),
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

    def __init__(self, feed: Feed, *, refresh_hz: float = 5.0, clock=time.time):
        super().__init__()
        self.feed = feed
        self.state = RunState()
        self.view = ViewOptions()
        self.refresh_hz = refresh_hz
        self.clock = clock
        self.active = 0
        self.stopping = False
        self.paused = False
        self.override: tuple[str, str] | None = None
        self._dirty = True
        self._sorted_for_many = False

    # ---- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with Container(id="panels"):
            yield ClassErrors(id="errors", classes="-active")
            yield SourceSteps(id="steps")
            yield Targets(id="targets")
            yield Curves(id="curves")
        yield Footer()

    @property
    def panels(self) -> list[Panel]:
        """In key order: 1 class errors, 2 attack steps, 3 targets, 4 curves."""
        return [self.query_one(f"#{name}", Panel) for name in ("errors", "steps", "targets", "curves")]

    @property
    def wide(self) -> bool:
        return self.size.width >= WIDE

    def on_mount(self) -> None:
        self._titles()
        self.set_interval(1.0 / self.refresh_hz, self.redraw)
        if not self.feed.live:
            self.set_interval(1.0, self._check_health)
        self.feed.start(self)

    def on_unmount(self) -> None:
        # However the app ends, no tail thread may outlive it and a live loop must stop.
        self.feed.stop()

    def on_resize(self) -> None:
        self._titles()
        self._dirty = True

    def _titles(self) -> None:
        for i, panel in enumerate(self.panels):
            panel.set_class(i == self.active, "-active")
            if self.wide:
                panel.border_title = f"{i + 1} {panel.label}"
            else:
                strip = " │ ".join(f"[reverse]{j + 1} {p.label}[/]" if j == self.active else f"{j + 1} {p.label}"
                                   for j, p in enumerate(self.panels))
                panel.border_title = strip
            panel.border_subtitle = "tab: next panel · ?: keys" if i == self.active and not self.wide else ""

    # ---- events --------------------------------------------------------------------------

    def on_events_arrived(self, message: EventsArrived) -> None:
        for event in message.events:
            self.state.apply(event)
            if event.get("type") == "message" and "pause" in str(event.get("text", "")).lower():
                self.paused = "resum" not in str(event.get("text", "")).lower()
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
        self.query_one(RunHeader).show(self.state, self.view, status, note)
        for panel in self.panels:
            if self.wide or panel.has_class("-active"):
                panel.show(self.state, self.view)

    def status(self) -> tuple[str, str]:
        """The header's status word and note, from the stream and from what the person did."""
        state = self.state
        if self.stopping and not state.finished:
            return "saving", "stopping after this batch and saving checkpoints/last.pt…"
        if self.override:
            return self.override
        if state.finished:
            reason = str(state.finished.get("reason") or "")
            note = reason if state.status != "completed" else ""
            if self.feed.live:
                note = (note + " · " if note else "") + "q to exit"
            return state.status, note
        if self.paused and state.started:
            return "paused", "p to resume" if self.feed.live else ""
        return state.status, ""

    def _check_health(self) -> None:
        health = self.feed.health(self.state, self.clock())
        if health != self.override:
            self.override = health
            self._dirty = True

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "training" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        if event.state == WorkerState.ERROR:
            self.override = ("failed", f"{type(event.worker.error).__name__}: {event.worker.error}")
        self._dirty = True
        control = getattr(self.feed, "control", None)
        if self.stopping or (control is not None and control.stop.is_set()):
            # q here, or a signal (SIGTERM/SIGHUP) that stopped the loop from outside.
            self.exit(self.return_code_for_run())

    def return_code_for_run(self) -> int:
        """0 when the run completed or was stopped on purpose, 1 when it failed."""
        result = getattr(self.feed, "result", None) or self.state.status
        return 1 if result == "failed" else 0

    # ---- actions -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("pause", "save"):
            return self.feed.live and not self.state.finished and not self.stopping
        return True

    async def action_quit(self) -> None:
        """Live: stop the loop, let it save a checkpoint, then exit. Watch: just detach."""
        if self.stopping:
            self.notify("still saving the checkpoint…", timeout=2)
            return
        self.stopping = True
        self._dirty = True
        if not self.feed.stop():
            self.exit(self.return_code_for_run())
        else:
            self.redraw()

    def action_pause(self) -> None:
        control = getattr(self.feed, "control", None)
        if control is None:
            return
        if control.pause.is_set():
            control.pause.clear()
            self.paused = False
        else:
            control.pause.set()
            self.paused = True
        self._dirty = True

    def action_save(self) -> None:
        control = getattr(self.feed, "control", None)
        if control is not None:
            control.save_now.set()
            self.notify("saving checkpoints/last.pt after this batch", timeout=3)

    def action_panel(self, step: int) -> None:
        self.action_show_panel((self.active + step) % 4)

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
