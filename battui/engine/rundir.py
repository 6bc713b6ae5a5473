"""`RunDir`: every path in a run directory, named once (docs/DESIGN.md section 5.1).

    run = RunDir("runs/digits-cnn-pgd-at-20250101-120000")
    run.config, run.events, run.last, run.best, run.log, run.lock, run.control
    RunDir.of(path)            # a RunDir as is, or one made from a str / Path

Nothing here touches the disk; the modules that write a file own how it is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, path: str | Path | RunDir) -> RunDir:
        return path if isinstance(path, RunDir) else cls(Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Path:
        """The resolved config (what --resume reads back)."""
        return self.path / "config.yaml"

    @property
    def env(self) -> Path:
        """Versions, device, seed, host, argv (+ one record per resume)."""
        return self.path / "env.json"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def averaged(self) -> Path:
        """A weight-averaging method's final weights (CFA's FAWA)."""
        return self.checkpoints / "fawa.pt"

    @property
    def log(self) -> Path:
        """A detached run's (or a table job's) stdout and stderr."""
        return self.path / "train.log"

    @property
    def lock(self) -> Path:
        """The one-trainer flock, holding the live trainer's pid."""
        return self.path / "train.lock"

    @property
    def control(self) -> Path:
        """The FIFO a running trainer reads commands from."""
        return self.path / "control"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def job(self) -> Path:
        """`battui table`: how the run's job was launched."""
        return self.path / "job.json"

    @property
    def worker(self) -> Path:
        """`battui table`: where the run's worker runs."""
        return self.path / "worker.json"

    def holds_run(self) -> bool:
        """A folder with events or a config: a run (possibly still starting)."""
        return self.events.is_file() or self.config.is_file()
