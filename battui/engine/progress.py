"""How far a run is and how long it has left, counted over the whole run (resumes included).

    fraction, eta = run_progress(epoch=3, batch=10, batches=50, epochs=10,
                                 start_epoch=2, start_batch=0, elapsed=120.0)

`epoch` is 0-based and `batch` counts the batches done in it; `start_*` is
where this process (a resume) began and `elapsed` the seconds it has trained
since, so the rate comes from this process's own batches only.
"""

from __future__ import annotations


def run_progress(epoch: int, batch: int, batches: int, epochs: int, start_epoch: int = 0, start_batch: int = 0,
                 elapsed: float = 0.0) -> tuple[float, float | None]:
    """(fraction of all the run's batches done, seconds left or None before a rate is known)."""
    if epochs <= 0 or batches <= 0:
        return 0.0, None
    total = epochs * batches
    done = max(0, min(total, epoch * batches + batch))
    start = min(done, start_epoch * batches + start_batch)
    eta = elapsed * (total - done) / (done - start) if done > start and elapsed > 0 else None
    return done / total, eta
