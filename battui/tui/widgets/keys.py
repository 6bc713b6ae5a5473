"""The `?` screen: every key the dashboard understands, and what it does in this mode."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from battui.tui.panels import PANELS

KEYS_LIVE = [
    ("q", "quit: asks; y stops (saves last.pt), d detaches"),
    ("d", "detach: training goes on in the background"),
    ("p", "pause / resume training"),
    ("s", "save checkpoints/last.pt now"),
    ("x", "stop training (asks first; saves last.pt)"),
    ("ctrl+c", "save last.pt and exit with code 130"),
]
KEYS_WATCH = [
    ("q", "detach: leave the run alone (battui watch RUN_DIR)"),
    ("p", "pause / resume the run's training"),
    ("s", "make the trainer save checkpoints/last.pt now"),
    ("x", "stop the run (asks first; it saves last.pt)"),
    ("ctrl+c", "detach, like q"),
]
KEYS_COMMON = [
    ("tab / shift+tab", "next / previous panel"),
    (" ".join(p.key for p in PANELS), " · ".join(p.title for p in PANELS)),
    ("↑ ↓  j k", "pick the previous / next class"),
    ("pgup pgdn home end", "scroll the active panel"),
    ("o", "order classes: index, robust, boundary, standard"),
    ("t", "targets from the latest eval or the training attack"),
    ("?", "this help; escape closes it"),
]


class KeysScreen(ModalScreen[None]):
    """A modal table of keys; any of escape, ? or q closes it."""

    DEFAULT_CSS = """
    KeysScreen { align: center middle; }
    KeysScreen > Vertical { width: auto; max-width: 100%; height: auto; border: round $accent;
                            background: $surface; padding: 0 1; }
    KeysScreen > Vertical > Static { width: auto; }
    """
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close", show=False)]

    def __init__(self, live: bool):
        super().__init__()
        self.live = live

    def compose(self) -> ComposeResult:
        rows = (KEYS_LIVE if self.live else KEYS_WATCH) + KEYS_COMMON
        width = max(len(key) for key, _ in rows) + 2
        lines = Text()
        for key, text in rows:  # plain lines: Textual measures their width (a Rich table here measured 0)
            lines.append("\n" if lines else "").append(key.ljust(width), style="bold").append(text)
        with Vertical():
            yield Static("[b]battui keys[/b]  " + ("(training in this process)" if self.live else "(watching)"))
            yield Static(lines)
