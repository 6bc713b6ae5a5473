"""Faults of the machine while a run writes its files: one line each, never a traceback.

    try:
        save_checkpoint(run.last, payload)          # raises WriteFault(path, OSError) when the write fails
    except WriteFault as fault:
        print(fault.describe(run_dir, saved=(2, 0)))
    # cannot write runs/x/checkpoints/last.pt: No space left on device (1.2 MB free there);
    # checkpoints/last.pt of epoch 2 is intact; free some space, then continue with `battui train --resume runs/x`

    low_space_warning(run_dir, checkpoint_bytes)    # a line when the free space holds fewer than 3 checkpoints

A failed checkpoint write leaves no partial file (its temporary copy is removed) and the
previous `last.pt` as it was; a failed event write leaves at most a torn last line, which
a resume drops (`runfiles.repair_events_tail`).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

CHECKPOINTS_KEPT = 3  # last.pt, best.pt and the temporary copy a save writes before its rename
_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class WriteFault(Exception):
    """Writing `path` failed with `error` (disk full, permission, the folder removed)."""

    def __init__(self, path: str | Path, error: OSError) -> None:
        self.path, self.error = Path(path), error
        super().__init__(f"cannot write {path}: {error.strerror or error}")

    @classmethod
    def from_exception(cls, path: str | Path, exc: BaseException) -> WriteFault | None:
        """The fault behind `exc`: an OSError, or torch.save's RuntimeError raised over one (None otherwise)."""
        cause = exc if isinstance(exc, OSError) else exc.__context__ or exc.__cause__
        return cls(path, cause) if isinstance(cause, OSError) else None

    def describe(self, run_dir: str | Path, saved: tuple[int, int] | None) -> str:
        """One line: the file, why, the free space, what is intact, and how to continue.

        `saved` is (epochs, batches) of the `last.pt` on disk, or None when none was saved yet.
        """
        run_dir = Path(run_dir)
        head = f"cannot write {self.path}: {self.error.strerror or self.error}"
        if not run_dir.is_dir():
            return (f"{head}; the run folder {run_dir} was removed while the run trained, so nothing of it is "
                    "left to continue; start a new run")
        free = free_bytes(run_dir)
        where = f" ({format_bytes(free)} free there)" if free is not None else ""
        if saved is None:
            intact = "no last.pt was saved yet"
        else:
            epochs, batch = saved
            at = f"epoch {epochs + 1} batch {batch}" if batch else f"epoch {epochs}"
            intact = f"checkpoints/last.pt of {at} is intact"
        if self.error.errno in _SPACE:
            todo = "free some space"
        elif self.error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            todo = f"make {run_dir} writable"
        else:
            todo = "fix that"
        return f"{head}{where}; {intact}; {todo}, then continue with `battui train --resume {run_dir}`"


def free_bytes(path: str | Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def low_space_warning(run_dir: str | Path, checkpoint_bytes: int) -> str | None:
    """A warning when the run folder's disk has room for fewer than `CHECKPOINTS_KEPT` checkpoints."""
    free = free_bytes(run_dir)
    need = CHECKPOINTS_KEPT * checkpoint_bytes
    if free is None or free >= need:
        return None
    return (f"only {format_bytes(free)} free under {run_dir}; a checkpoint takes about "
            f"{format_bytes(checkpoint_bytes)} and a run keeps up to {CHECKPOINTS_KEPT} at once (last.pt, best.pt "
            "and the copy being written): a save may fail; free some space or set run.root elsewhere")
