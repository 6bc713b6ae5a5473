"""The one plain-text rendering of run events: `battui train --headless`, `battui watch --headless`, train.log.

    trainer = Trainer(cfg, listeners=[HeadlessLog()])
    python -m battui train --headless --preset synthetic-tiny | tee train.log
    lines = EventLines(); text = lines(event_dict)        # the line of one event, or None

One line per `batch` event (every `train.log_every` batches), one per eval,
checkpoint and message, and a closing line. `EventLines` is the formatter (it
keeps the run's classes, epochs and start from `run_started` for the ETA);
`HeadlessLog` prints its lines to stdout, flushed, so a pipe or `tail -f` sees
them as they happen. Every view that prints events as text uses these two.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from battui.engine.metrics import mean_steps
from battui.engine.progress import run_progress


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class EventLines:
    """`EventLines()(event_dict)`: that event's line, or None when it has none (a `last` checkpoint, ...).

    An event missing fields (a foreign or older stream) gets a short `type: key value ...` line.
    """

    def __init__(self) -> None:
        self.classes: list[str] = []
        self.epochs = 0
        self.start = (0, 0)

    def __call__(self, event: dict[str, Any]) -> str | None:
        kind = str(event.get("type", ""))
        handler = getattr(self, "_" + kind, None)
        if handler is None:
            return None
        try:
            return handler(event)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            fields = " ".join(f"{k} {v}" for k, v in event.items()
                              if k not in ("type", "time") and isinstance(v, (str, int, float)))
            return f"{kind}: {fields}".rstrip()

    def _run_started(self, e: dict) -> str:
        self.classes, self.epochs = list(e["classes"]), e["epochs"]
        self.start = (int(e.get("start_epoch", 0)), int(e.get("start_batch", 0)))
        ranks = f", {e['world_size']} ranks" if e.get("world_size", 1) > 1 else ""
        start = f", from epoch {e['start_epoch'] + 1}" if e.get("start_epoch") else ""
        precision = f", {e['precision']}" if e.get("precision") else ""
        return (f"run {e['run_dir']}: {e['method']} on {e['dataset']} ({e['model']}), device {e['device']}"
                f"{precision}{ranks}; {e['epochs']} epochs x {e['batches_per_epoch']} batches, "
                f"train {e['train_size']} / eval {e['eval_size']} images{start}")

    def _batch(self, e: dict) -> str:
        parts = " ".join(f"{k} {v:.4f}" for k, v in e.get("parts", {}).items())
        parts = f" ({parts})" if parts and list(e["parts"]) != ["loss"] else ""
        fraction, eta = run_progress(e["epoch"], e["batch"], e["batches"], self.epochs, *self.start, e["elapsed"])
        left = f" {100 * fraction:.0f}% ETA {_clock(eta)}" if eta is not None else ""
        return (f"epoch {e['epoch'] + 1}/{self.epochs} batch {e['batch']}/{e['batches']} "
                f"loss {e['loss']:.4f}{parts} lr {e['lr']:.3g} {e['images_per_s']:.0f} img/s "
                f"[{_clock(e['elapsed'])}]{left}")

    def _train_attack(self, e: dict) -> str | None:
        if e.get("partial"):
            return None
        means = mean_steps(e["step_hist"])
        text = " ".join(f"{self._name(c)}:{'-' if m is None else f'{m:.1f}'}" for c, m in enumerate(means))
        return f"epoch {e['epoch'] + 1} training attack, mean steps to flip per class: {text}"

    def _name(self, c: int) -> str:
        return self.classes[c] if c < len(self.classes) else str(c)

    def _eval(self, e: dict) -> str:
        worst_class = max(range(len(e["robust"])), key=lambda c: e["robust"][c]) if e["robust"] else 0
        a = e["attack"]
        what = f"{a.get('name', 'pgd')}-{a.get('steps', '')}" if a.get("name") == "pgd" else a.get("name", "")
        what += f", {a['precision']}" if a.get("precision") else ""
        return (f"eval {e['split']} epoch {e['epoch'] + 1} ({e['n']} images, {what}): "
                f"standard avg {e['avg']['standard']:.1f}% worst {e['worst']['standard']:.1f}% | "
                f"robust avg {e['avg']['robust']:.1f}% worst {e['worst']['robust']:.1f}% "
                f"(class {self._name(worst_class)}) | boundary avg {e['avg']['boundary']:.1f}%")

    def _checkpoint(self, e: dict) -> str | None:
        if e["kind"] == "last":
            return None  # every epoch; the eval line already marks the epoch
        metric = f", worst-class robust error {e['metric']:.1f}%" if e.get("metric") is not None else ""
        return f"saved {e['kind']} checkpoint {e['path']}{metric}"

    def _message(self, e: dict) -> str:
        level = e.get("level", "info")
        return e["text"] if level == "info" else f"{level}: {e['text']}"

    def _paused(self, e: dict) -> str:
        return f"paused at epoch {e['epoch'] + 1} batch {e['batch']} (resume: battui watch RUN --send resume)"

    def _resumed(self, e: dict) -> str:
        return "resumed"

    def _run_finished(self, e: dict) -> str:
        return f"run {e['status']}: {e.get('reason', '')}"


class HeadlessLog:
    """A listener: `HeadlessLog()(event_dict)` prints that event's `EventLines` line, if it has one."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.lines = EventLines()

    def __call__(self, event: dict) -> None:
        line = self.lines(event)
        if line is not None:
            print(line, file=self.stream or sys.stdout, flush=True)  # whole lines: no wrapping
