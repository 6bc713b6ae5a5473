"""`RunState`: the current picture of a run, folded from its event dicts.

Pure and UI-free: the dashboard widgets render from it, tests feed it events.

    state = RunState()
    for event in read_events("runs/.../events.jsonl"):
        state.apply(event)
    state.progress, state.eta, state.latest_eval["robust"], state.train_step_hist

Everything shown on screen is derived from the events themselves (their
`elapsed`, `images_per_s` and counts), never from the wall clock, so a recorded
stream always renders the same screen.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from battui.engine.events import RunStatus
from battui.engine.metrics import kl_to_uniform, mean_steps, never_flipped, target_distribution
from battui.engine.progress import run_progress

HISTORY = 2000  # points kept per curve; older ones are dropped


@dataclass
class RunState:
    """Everything the dashboard shows, updated one event at a time by `apply`."""

    run_name: str = ""
    run_dir: str = ""
    preset: str = ""
    method: str = ""
    dataset: str = ""
    model: str = ""
    device: str = ""
    precision: str = ""  # the training precision and why (empty in streams from before it was recorded)
    classes: list[str] = field(default_factory=list)
    epochs: int = 0
    start_epoch: int = 0
    start_batch: int = 0
    batches_per_epoch: int = 0
    attack_steps: int = 0
    world_size: int = 1
    started: bool = False
    paused: bool = False

    epoch: int = 0
    batch: int = 0
    batches: int = 0
    step: int = 0
    loss: float | None = None
    parts: dict[str, float] = field(default_factory=dict)
    lr: float | None = None
    images_per_s: float = 0.0
    elapsed: float = 0.0

    loss_history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    part_history: dict[str, deque] = field(default_factory=dict)
    lr_history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    eval_history: list[dict[str, Any]] = field(default_factory=list)  # epoch, avg, worst per eval

    train_epoch: int | None = None
    train_partial: bool = False
    train_step_hist: list[list[int]] | None = None
    train_confusion: list[list[int]] | None = None

    latest_eval: dict[str, Any] | None = None
    previous_eval: dict[str, Any] | None = None  # the eval before `latest_eval` on the same split
    last_eval_by_split: dict[str, dict[str, Any]] = field(default_factory=dict)

    last_checkpoint: dict[str, Any] | None = None
    messages: deque = field(default_factory=lambda: deque(maxlen=50))
    finished: dict[str, Any] | None = None
    events_seen: int = 0
    last_event_time: float | None = None

    # ---- folding -------------------------------------------------------------------------

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event dict (as written to events.jsonl) into the picture."""
        self.events_seen += 1
        if isinstance(event.get("time"), (int, float)):
            self.last_event_time = float(event["time"])
        handler = getattr(self, "_on_" + str(event.get("type", "")), None)
        if handler is not None:
            handler(event)

    def _on_run_started(self, e: dict[str, Any]) -> None:
        for name in ("run_name", "run_dir", "preset", "method", "dataset", "model", "device", "precision"):
            setattr(self, name, str(e.get(name, "")))
        self.classes = [str(c) for c in e.get("classes", [])]
        self.epochs = int(e.get("epochs", 0))
        self.start_epoch = int(e.get("start_epoch", 0))
        self.start_batch = int(e.get("start_batch", 0))
        self.epoch, self.batch, self.elapsed, self.paused = self.start_epoch, self.start_batch, 0.0, False
        self.batches_per_epoch = int(e.get("batches_per_epoch", 0))
        self.batches = self.batches_per_epoch
        self.attack_steps = int(e.get("attack_steps", 0))
        self.world_size = int(e.get("world_size", 1))
        self.started = True
        self.finished = None  # a resumed run appends a new start to the same stream

    def _on_batch(self, e: dict[str, Any]) -> None:
        self.epoch = int(e.get("epoch", self.epoch))
        self.batch = int(e.get("batch", 0))
        self.batches = int(e.get("batches", self.batches)) or self.batches
        self.step = int(e.get("step", self.step))
        self.loss = float(e["loss"]) if e.get("loss") is not None else None
        self.parts = {str(k): float(v) for k, v in (e.get("parts") or {}).items()}
        self.lr = float(e.get("lr", 0.0))
        self.images_per_s = float(e.get("images_per_s", 0.0))
        self.elapsed = float(e.get("elapsed", self.elapsed))
        if self.loss is not None:
            self.loss_history.append(self.loss)
        for name, value in self.parts.items():
            self.part_history.setdefault(name, deque(maxlen=HISTORY)).append(value)
        self.lr_history.append(self.lr)

    def _on_train_attack(self, e: dict[str, Any]) -> None:
        self.train_epoch = int(e.get("epoch", 0))
        self.train_partial = bool(e.get("partial", False))
        self.train_step_hist = e.get("step_hist")
        self.train_confusion = e.get("target_confusion")

    def _on_eval(self, e: dict[str, Any]) -> None:
        # Deltas compare like with like: the final test eval is not "better" than the last val eval.
        split = str(e.get("split", ""))
        self.previous_eval, self.latest_eval = self.last_eval_by_split.get(split), e
        self.last_eval_by_split[split] = e
        if not self.eval_history or self.eval_history[0]["split"] == split:
            self.eval_history.append({"epoch": e.get("epoch"), "split": split, "avg": e.get("avg", {}),
                                      "worst": e.get("worst", {})})

    def _on_checkpoint(self, e: dict[str, Any]) -> None:
        self.last_checkpoint = e
        name = str(e.get("path", "")).rsplit("/", 1)[-1]
        self.messages.append(("info", f"saved {name} (epoch {e.get('epoch')})"))

    def _on_run_finished(self, e: dict[str, Any]) -> None:
        self.finished = e
        self.paused = False

    def _on_paused(self, e: dict[str, Any]) -> None:
        self.paused = True
        self.messages.append(("info", f"paused at epoch {int(e.get('epoch', 0)) + 1} batch {e.get('batch')}"))

    def _on_resumed(self, e: dict[str, Any]) -> None:
        self.paused = False
        self.messages.append(("info", "resumed"))

    def _on_message(self, e: dict[str, Any]) -> None:
        self.messages.append((str(e.get("level", "info")), str(e.get("text", ""))))

    # ---- derived numbers -----------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        for source in (self.latest_eval and self.latest_eval.get("robust"), self.train_step_hist):
            if source:
                return len(source)
        return 0

    def class_name(self, index: int) -> str:
        return self.classes[index] if 0 <= index < len(self.classes) else str(index)

    def _progress(self) -> tuple[float, float | None]:
        return run_progress(self.epoch, self.batch, self.batches or self.batches_per_epoch, self.epochs,
                            self.start_epoch, self.start_batch, self.elapsed)

    @property
    def progress(self) -> float:
        """Fraction of the whole run's batches done, 0..1 (a resumed run counts what came before)."""
        if self.epochs <= 0 or not (self.batches or self.batches_per_epoch):
            return 1.0 if self.finished else 0.0
        return self._progress()[0]

    @property
    def eta(self) -> float | None:
        """Seconds left, from the events' own `elapsed` since this start (or resume) and its progress."""
        return None if self.finished else self._progress()[1]

    @property
    def status(self) -> str:
        """The run_finished status (completed | interrupted | failed), else running or waiting."""
        if self.finished:
            return str(self.finished.get("status", RunStatus.COMPLETED))
        return RunStatus.RUNNING if self.started else RunStatus.WAITING

    def eval_delta(self, kind: str) -> list[float | None]:
        """Per-class change of `kind` error since the previous eval (None without one)."""
        if not self.latest_eval:
            return []
        now = self.latest_eval.get(kind) or []
        before = (self.previous_eval or {}).get(kind) or []
        if len(before) != len(now):
            return [None] * len(now)
        return [a - b for a, b in zip(now, before, strict=True)]

    def summary_delta(self, which: str, kind: str) -> float | None:
        """Change of avg/worst `kind` error since the previous eval."""
        if not self.latest_eval or not self.previous_eval:
            return None
        try:
            return float(self.latest_eval[which][kind]) - float(self.previous_eval[which][kind])
        except (KeyError, TypeError, ValueError):
            return None

    def worst_class(self, kind: str = "robust") -> int | None:
        values = (self.latest_eval or {}).get(kind) or []
        return max(range(len(values)), key=values.__getitem__) if values else None

    def mean_steps(self) -> list[float | None]:
        return mean_steps(self.train_step_hist) if self.train_step_hist else []

    def never_flipped(self) -> list[float]:
        return never_flipped(self.train_step_hist) if self.train_step_hist else []

    def confusion(self, source: str) -> tuple[list[list[int]] | None, str]:
        """The adversarial confusion to show: `source` "eval" or "train", falling back to the other."""
        evaluated = (self.latest_eval or {}).get("adv_confusion")
        order = [("eval", evaluated), ("train", self.train_confusion)]
        if source == "train":
            order.reverse()
        for name, matrix in order:
            if matrix:
                return matrix, name
        return None, source

    def targets(self, source: str) -> tuple[list[float], float | None, str]:
        """Target distribution over classes, its KL to uniform, and which confusion it came from."""
        matrix, name = self.confusion(source)
        if not matrix:
            return [], None, name
        dist = target_distribution(matrix)
        return dist, (kl_to_uniform(dist) if any(dist) else None), name
