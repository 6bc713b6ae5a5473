"""A one-question modal: a line of text and the keys that answer it (the answer is the key pressed)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class Ask(ModalScreen[str]):
    """Dismissed with the pressed key among `answers` (e.g. "y", "d"), or "" on n / escape."""

    DEFAULT_CSS = """
    Ask { align: center middle; }
    Ask > Vertical { width: auto; max-width: 90%; height: auto; border: round $warning; background: $surface;
                     padding: 0 1; }
    Ask > Vertical > Static { width: auto; }
    """
    BINDINGS = [Binding("escape,n", "answer('')", "cancel", show=False)]

    def __init__(self, question: str, answers: list[tuple[str, str]]):
        super().__init__()
        self.question, self.answers = question, answers

    def compose(self) -> ComposeResult:
        keys = "   ".join(f"[b reverse] {key} [/] {text}" for key, text in self.answers)
        with Vertical():
            yield Static(f"[b]{self.question}[/b]")
            yield Static(keys + "   [b reverse] n [/] cancel")

    def on_key(self, event) -> None:
        if any(event.key == key for key, _ in self.answers):
            event.stop()
            self.dismiss(event.key)

    def action_answer(self, key: str) -> None:
        self.dismiss(key)
