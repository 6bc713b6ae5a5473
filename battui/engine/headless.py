"""The plain progress log of `battui train --headless` (and of any run without a terminal).

    trainer = Trainer(cfg, listeners=[HeadlessLog()])
    python -m battui train --headless --preset synthetic-tiny | tee train.log

One line per `batch` event (every `train.log_every` batches), one per eval,
checkpoint and message, and a closing line. Lines go to stdout and are flushed
so a pipe or `tail -f` sees them as they happen.
"""

from __future__ import annotations

import sys
from typing import TextIO

from battui.engine.metrics import mean_steps
from battui.engine.progress import run_progress


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class HeadlessLog:
    """A listener: `HeadlessLog()(event_dict)` prints that event's line, if it has one."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.classes: list[str] = []
        self.epochs = 0
        self.start = (0, 0)

    def _print(self, text: str) -> None:
        stream = self.stream or sys.stdout
        print(text, file=stream, flush=True)

    def __call__(self, event: dict) -> None:
        handler = getattr(self, "_" + event.get("type", ""), None)
        if handler is not None:
            handler(event)

    def _run_started(self, e: dict) -> None:
        self.classes, self.epochs = list(e["classes"]), e["epochs"]
        self.start = (int(e.get("start_epoch", 0)), int(e.get("start_batch", 0)))
        ranks = f", {e['world_size']} ranks" if e.get("world_size", 1) > 1 else ""
        start = f", from epoch {e['start_epoch'] + 1}" if e.get("start_epoch") else ""
        self._print(f"run {e['run_dir']}: {e['method']} on {e['dataset']} ({e['model']}), device {e['device']}"
                    f"{ranks}; {e['epochs']} epochs x {e['batches_per_epoch']} batches, "
                    f"train {e['train_size']} / eval {e['eval_size']} images{start}")

    def _batch(self, e: dict) -> None:
        parts = " ".join(f"{k} {v:.4f}" for k, v in e.get("parts", {}).items())
        parts = f" ({parts})" if parts and list(e["parts"]) != ["loss"] else ""
        fraction, eta = run_progress(e["epoch"], e["batch"], e["batches"], self.epochs, *self.start, e["elapsed"])
        left = f" {100 * fraction:.0f}% ETA {_clock(eta)}" if eta is not None else ""
        self._print(f"epoch {e['epoch'] + 1}/{self.epochs} batch {e['batch']}/{e['batches']} "
                    f"loss {e['loss']:.4f}{parts} lr {e['lr']:.3g} {e['images_per_s']:.0f} img/s "
                    f"[{_clock(e['elapsed'])}]{left}")

    def _train_attack(self, e: dict) -> None:
        if e.get("partial"):
            return
        means = mean_steps(e["step_hist"])
        text = " ".join(f"{self._name(c)}:{'-' if m is None else f'{m:.1f}'}" for c, m in enumerate(means))
        self._print(f"epoch {e['epoch'] + 1} training attack, mean steps to flip per class: {text}")

    def _name(self, c: int) -> str:
        return self.classes[c] if c < len(self.classes) else str(c)

    def _eval(self, e: dict) -> None:
        worst_class = max(range(len(e["robust"])), key=lambda c: e["robust"][c]) if e["robust"] else 0
        a = e["attack"]
        what = f"{a.get('name', 'pgd')}-{a.get('steps', '')}" if a.get("name") == "pgd" else a.get("name", "")
        what += f", {a['precision']}" if a.get("precision") else ""
        self._print(f"eval {e['split']} epoch {e['epoch'] + 1} ({e['n']} images, {what}): "
                    f"standard avg {e['avg']['standard']:.1f}% worst {e['worst']['standard']:.1f}% | "
                    f"robust avg {e['avg']['robust']:.1f}% worst {e['worst']['robust']:.1f}% "
                    f"(class {self._name(worst_class)}) | boundary avg {e['avg']['boundary']:.1f}%")

    def _checkpoint(self, e: dict) -> None:
        if e["kind"] == "last":
            return  # every epoch; the eval line already marks the epoch
        metric = f", worst-class robust error {e['metric']:.1f}%" if e.get("metric") is not None else ""
        self._print(f"saved {e['kind']} checkpoint {e['path']}{metric}")

    def _message(self, e: dict) -> None:
        level = e.get("level", "info")
        self._print(e["text"] if level == "info" else f"{level}: {e['text']}")

    def _paused(self, e: dict) -> None:
        self._print(f"paused at epoch {e['epoch'] + 1} batch {e['batch']} (resume: battui watch RUN --send resume)")

    def _resumed(self, e: dict) -> None:
        self._print("resumed")

    def _run_finished(self, e: dict) -> None:
        self._print(f"run {e['status']}: {e.get('reason', '')}")
