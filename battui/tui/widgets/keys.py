"""The `?` screen: every key the dashboard understands, and what it does in this mode."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS_LIVE = [
    ("q", "quit: asks first; y stops after the batch and saves checkpoints/last.pt, d detaches"),
    ("d", "detach: training goes on in the background, the prompt returns (battui watch RUN_DIR)"),
    ("p", "pause / resume training"),
    ("s", "save a checkpoint now (checkpoints/last.pt)"),
    ("x", "stop training (asks first): save checkpoints/last.pt, exit"),
    ("ctrl+c", "stop at once: save checkpoints/last.pt and exit with code 130"),
]
KEYS_WATCH = [
    ("q", "detach: leave the run alone and exit (re-attach with battui watch RUN_DIR)"),
    ("p", "pause / resume the run's training (any watcher, same user)"),
    ("s", "make the trainer save checkpoints/last.pt now"),
    ("x", "stop the run (asks first): it saves checkpoints/last.pt; battui train --resume continues"),
    ("ctrl+c", "detach, like q"),
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
    KeysScreen > Vertical > Static { width: auto; }
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
