"""TensorBoard logs of a run, from its event stream: live during training or exported afterwards.

    battui train --tensorboard                 # or run.tensorboard: true; writes RUN/tensorboard/ live
    battui export tensorboard RUN              # the same files for a finished or copied run
    tensorboard --logdir runs/                 # every run side by side

One mechanism: `EventRecords` turns each event of `events.jsonl` into TensorBoard
records, and `TensorBoardListener` writes them; the trainer calls the listener
with every event as it happens, `export_run` feeds it the stored stream.

Tags (x axis = global optimiser step; an epoch's records sit at the step that ends it):
- `loss/total`, `loss/<part>` (each named loss term), `lr`, `throughput/images_per_s` (batch events);
- `<split>/<standard|boundary|robust>_error/{avg,worst,<NN>_<class>}` (%), `<split>/mean_steps/<NN>_<class>`,
  `<split>/target_kl`, `<split>/steps_to_flip/<NN>_<class>` (histogram of PGD steps to the first
  misclassification), `<split>/adv_confusion` (heat map image), `method/<name>` (e.g. FRL's multipliers);
  split = val (each epoch) or test (the final evaluation);
- `train_attack/mean_steps/<NN>_<class>`, `train_attack/target_kl`, `train_attack/steps_to_flip/<NN>_<class>`,
  `train_attack/target_confusion` (image): the training attack over each whole epoch.

Needs the `tensorboard` package (`pip install 'battui[tensorboard]'`); without it a `UserError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from battui.engine.metrics import kl_to_uniform, mean_steps, target_distribution
from battui.engine.rundir import RunDir
from battui.errors import UserError

MISSING = ("TensorBoard logging needs the tensorboard package: pip install 'battui[tensorboard]' "
           "(or pip install tensorboard)")
ERRORS = ("standard", "boundary", "robust")


def summary_writer_class():
    """torch's SummaryWriter, or a one-line `UserError` when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(MISSING) from None
    return SummaryWriter


@dataclass
class Record:
    kind: str  # scalar | histogram | image
    tag: str
    value: Any  # float; histogram: counts per step 0..K; image: HxWx3 uint8 array
    step: int


def class_tag(index: int, name: str) -> str:
    """`03_cat`: sorted in class order in TensorBoard, no `/` (it would nest the tag)."""
    clean = re.sub(r"[^\w.-]+", "_", str(name)).strip("_") or "class"
    return f"{index:02d}_{clean}"


def confusion_image(confusion: list[list[int]], classes: list[str], title: str):
    """The `battui figures` heat map, rendered to an RGB array (one mechanism for both)."""
    import numpy as np

    from battui.figures.style import styled
    from battui.figures.targets import confusion_figure

    fig = confusion_figure(confusion, classes, title, dpi=110)
    with styled():
        fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


@dataclass
class EventRecords:
    """event dict -> TensorBoard records; remembers the class names and the batches per epoch."""

    classes: list[str] = field(default_factory=list)
    batches_per_epoch: int = 1
    images: bool = True

    def __call__(self, event: dict) -> list[Record]:
        handler = getattr(self, "_" + str(event.get("type", "")), None)
        return handler(event) if handler is not None else []

    def _run_started(self, e: dict) -> list[Record]:
        self.classes = [str(c) for c in e["classes"]]
        self.batches_per_epoch = max(1, int(e.get("batches_per_epoch", 1)))
        return []

    def _epoch_step(self, e: dict) -> int:
        return (int(e["epoch"]) + 1) * self.batches_per_epoch

    def _names(self, k: int) -> list[str]:
        names = self.classes if len(self.classes) == k else [str(i) for i in range(k)]
        return [class_tag(i, n) for i, n in enumerate(names)]

    def _batch(self, e: dict) -> list[Record]:
        step = int(e["step"])
        out = [Record("scalar", "loss/total", float(e["loss"]), step)]
        out += [Record("scalar", f"loss/{name}", float(v), step) for name, v in (e.get("parts") or {}).items()
                if name != "loss"]
        out.append(Record("scalar", "lr", float(e.get("lr", 0.0)), step))
        out.append(Record("scalar", "throughput/images_per_s", float(e.get("images_per_s", 0.0)), step))
        return out

    def _attack_records(self, prefix: str, step_hist: list[list[int]], confusion: list[list[int]], step: int,
                        title: str) -> list[Record]:
        names = self._names(len(step_hist))
        out = []
        for name, row, mean in zip(names, step_hist, mean_steps(step_hist)):
            if mean is not None:
                out.append(Record("scalar", f"{prefix}/mean_steps/{name}", float(mean), step))
                out.append(Record("histogram", f"{prefix}/steps_to_flip/{name}", [int(c) for c in row[:-1]], step))
        out.append(Record("scalar", f"{prefix}/target_kl", kl_to_uniform(target_distribution(confusion)), step))
        if self.images:
            classes = self.classes if len(self.classes) == len(confusion) else [str(i) for i in range(len(confusion))]
            name = "target_confusion" if prefix == "train_attack" else "adv_confusion"
            out.append(Record("image", f"{prefix}/{name}", confusion_image(confusion, classes, title), step))
        return out

    def _eval(self, e: dict) -> list[Record]:
        split, step = str(e.get("split", "val")), self._epoch_step(e)
        names = self._names(len(e["robust"]))
        out = []
        for kind in ERRORS:
            out.append(Record("scalar", f"{split}/{kind}_error/avg", float(e["avg"][kind]), step))
            out.append(Record("scalar", f"{split}/{kind}_error/worst", float(e["worst"][kind]), step))
            out += [Record("scalar", f"{split}/{kind}_error/{n}", float(v), step) for n, v in zip(names, e[kind])]
        out += [Record("scalar", f"method/{k}", float(v), step) for k, v in (e.get("method") or {}).items()
                if isinstance(v, (int, float))]
        return out + self._attack_records(split, e["step_hist"], e["adv_confusion"], step,
                                          f"{split}, epoch {int(e['epoch']) + 1}")

    def _train_attack(self, e: dict) -> list[Record]:
        if e.get("partial"):
            return []  # the whole epoch's counts come at its end
        return self._attack_records("train_attack", e["step_hist"], e["target_confusion"], self._epoch_step(e),
                                    f"training attack, epoch {int(e['epoch']) + 1}")


def write_record(writer, record: Record, wall_time: float | None = None) -> None:
    if record.kind == "scalar":
        writer.add_scalar(record.tag, record.value, record.step, walltime=wall_time)
    elif record.kind == "histogram":
        counts = record.value
        if not any(counts):
            return
        used = [s for s, c in enumerate(counts) if c]
        writer.add_histogram_raw(
            record.tag, min=used[0], max=used[-1], num=sum(counts), sum=sum(s * c for s, c in enumerate(counts)),
            sum_squares=sum(s * s * c for s, c in enumerate(counts)),
            bucket_limits=[s + 0.5 for s in range(len(counts))], bucket_counts=counts, global_step=record.step,
            walltime=wall_time)
    elif record.kind == "image":
        writer.add_image(record.tag, record.value, record.step, walltime=wall_time, dataformats="HWC")


class TensorBoardListener:
    """A trainer listener writing each event's records under `log_dir` (created on the first event).

    Flushes at the end of every epoch (so a live `tensorboard --logdir` sees it) and
    closes the files when the run finishes.
    """

    def __init__(self, log_dir: str | Path, *, images: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.records = EventRecords(images=images)
        self.writer = None
        self.counts: dict[str, int] = {"scalar": 0, "histogram": 0, "image": 0}
        self._writer_class = summary_writer_class()

    def __call__(self, event: dict) -> None:
        records = self.records(event)
        if self.writer is None and (records or event.get("type") == "run_started"):
            self.writer = self._writer_class(log_dir=str(self.log_dir), flush_secs=30)
        for record in records:
            write_record(self.writer, record, event.get("time"))
            self.counts[record.kind] += 1
        if self.writer is not None and event.get("type") in ("eval", "run_finished"):
            self.writer.flush()
        if event.get("type") == "run_finished":
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, *, force: bool = False) -> tuple[Path, dict]:
    """Write a run's TensorBoard files from its events.jsonl; returns (folder, records written per kind)."""
    from battui.engine.events import read_events

    run = Path(run_dir)
    events_path = RunDir(run).events if run.is_dir() else run
    if not events_path.is_file():
        raise UserError(f"{run} is not a run folder: it has no events.jsonl")
    out = Path(out_dir) if out_dir else RunDir(events_path.parent).tensorboard
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for the TensorBoard files")
    old = sorted(out.glob("events.out.tfevents.*")) if out.is_dir() else []
    if old and not force:
        raise UserError(f"{out} already holds TensorBoard files; pass --force to replace them, or -o DIR")
    listener = TensorBoardListener(out)  # checks for tensorboard before anything is removed
    events = read_events(events_path)
    if not any(e.get("type") == "run_started" for e in events):
        raise UserError(f"{events_path} has no run_started event; is it a battui run?")
    for path in old:
        path.unlink()
    for event in events:
        listener(event)
    listener.close()
    return out, listener.counts
