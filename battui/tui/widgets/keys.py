"""The `?` screen: every key the dashboard understands, and what it does in this mode."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS_LIVE = [
    ("q", "quit: stop training after the current batch, save checkpoints/last.pt, exit"),
    ("p", "pause / resume training"),
    ("s", "save a checkpoint now (checkpoints/last.pt)"),
]
KEYS_WATCH = [
    ("q", "detach: leave the run alone and exit (re-attach with battui watch RUN_DIR)"),
]
KEYS_COMMON = [
    ("tab / shift+tab", "next / previous panel (one at a time on narrow terminals)"),
    ("1 2 3 4", "class errors · attack steps · targets · curves"),
    ("↑ ↓  j k", "pick the previous / next class (in the order shown)"),
    ("pgup pgdn home end", "scroll the active panel"),
    ("o", "order classes: by index, robust, boundary, standard error (worst first)"),
    ("t", "targets from the latest eval or from the training attack"),
    ("?", "this help; escape closes it"),
]


class KeysScreen(ModalScreen[None]):
    """A modal table of keys; any of escape, ? or q closes it."""

    DEFAULT_CSS = """
    KeysScreen { align: center middle; }
    KeysScreen > Vertical { width: auto; max-width: 100%; height: auto; border: round $accent;
                            background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close", show=False)]

    def __init__(self, live: bool):
        super().__init__()
        self.live = live

    def compose(self) -> ComposeResult:
        table = Table(show_header=False, box=None, padding=(0, 1))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, text in (KEYS_LIVE if self.live else KEYS_WATCH) + KEYS_COMMON:
            table.add_row(key, text)
        with Vertical():
            yield Static("[b]battui keys[/b]  " + ("(training in this process)" if self.live else "(watching)"))
            yield Static(table)
