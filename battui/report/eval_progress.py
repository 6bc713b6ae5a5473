"""What `battui eval/compare/table` show while an evaluation runs, on stderr.

    with EvalProgress(err_console, "runs/x/checkpoints/best.pt") as shown:
        evaluate_checkpoint(path, progress=shown.stage, on_clean=shown.clean)

The clean accuracy is printed as soon as it is known, before the attack starts
(a wrong `--normalize` shows at once). Then one bar per attack stage in a
terminal ("PGD-20", or AutoAttack's "APGD-CE", "APGD-T", "FAB-T", "Square", each
over the images still robust when it starts); in a plain log (a pipe, a file, a
batch job) one line when a stage starts, one at most every `every` seconds while
it runs, and one when it ends.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class EvalProgress:
    def __init__(self, console: Console, name: str, every: float = 30.0) -> None:
        self.console = console
        self.name = name
        self.every = every
        self.bars: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.started: dict[str, float] = {}
        self.last_line: dict[str, float] = {}

    def __enter__(self) -> EvalProgress:
        if self.console.is_terminal:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self.bars = Progress(*columns, console=self.console, transient=False)
            self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bars is not None:
            self.bars.stop()

    def _print(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    def clean(self, correct: int, n: int) -> None:
        share = 100.0 * correct / n if n else 0.0
        self._print(f"{self.name}: clean accuracy {share:.2f}% ({correct}/{n} test images); attack starting")

    def stage(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        first = stage not in self.started
        if first:
            self.started[stage] = now
        if self.bars is not None:
            if first:
                self.tasks[stage] = self.bars.add_task(f"{stage:>8}", total=max(total, 1))
            self.bars.update(self.tasks[stage], completed=done, total=max(total, 1))
            return
        if first:
            self._print(f"{self.name}: {stage} on {total} images")
            self.last_line[stage] = now
        if done >= total > 0:
            self._print(f"{self.name}: {stage} done ({done}/{total}) in {now - self.started[stage]:.1f} s")
        elif now - self.last_line[stage] >= self.every:
            self._print(f"{self.name}: {stage} {done}/{total} images, {now - self.started[stage]:.0f} s")
            self.last_line[stage] = now
