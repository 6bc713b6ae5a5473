"""The settings that change a run's numbers, recorded in `env.json` and compared across a table's runs.

    record(speed, deterministic=True, device=torch.device("cpu"))
    # {"device": "cpu", "threads": 2, "deterministic": True, "precision": "fp32",
    #  "precision_reason": "train.amp=auto, not a CUDA device", "channels_last": False, "compile": False, "tf32": False}
    differences(["runs/a", "runs/b"])     # "threads 1 (a), 2 (b)", or "" when every run computed alike

CPU kernels sum in an order that depends on the intra-op thread count, so the same run on one
or two threads ends with different weights; bf16, TF32, channels_last, torch.compile, the
determinism flags and the device kind change them too. Each is chosen by the run's config and
the machine only (`setup.tune_cpu_threads`, `SpeedSettings.resolve`, `apply_determinism`),
never by how many runs share the machine (`battui table --jobs`, `--devices`, the launcher),
and recorded under `numerics` at every start and resume of a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from battui.engine.rundir import RunDir

KEYS = ("device", "threads", "deterministic", "precision", "channels_last", "compile", "tf32")


def record(speed, deterministic: bool, device: torch.device) -> dict[str, Any]:
    """This process's numerics settings for a run (`speed` is its `setup.SpeedSettings`)."""
    kind = device.type if device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(device)})"
    return {"device": kind, "threads": torch.get_num_threads(), "deterministic": bool(deterministic),
            "precision": "bf16" if speed.amp else "fp32", "precision_reason": speed.precision_reason,
            "channels_last": bool(speed.channels_last),
            "compile": bool(speed.compile),
            "tf32": device.type == "cuda" and not deterministic}  # apply_determinism turns it on otherwise


def of_run(run_dir: Path) -> list[dict[str, Any]]:
    """The numerics of each start and resume of a run, as env.json recorded them (none for older runs)."""
    try:
        env = json.loads(RunDir(run_dir).env.read_text())
    except (OSError, ValueError):
        return []
    starts = [env, *env.get("resumes", [])] if isinstance(env, dict) else []
    return [s["numerics"] for s in starts if isinstance(s, dict) and isinstance(s.get("numerics"), dict)]


def _value(starts: list[dict[str, Any]], key: str) -> str:
    seen = list(dict.fromkeys(str(s.get(key)) for s in starts))
    return "/".join(seen)  # a run resumed with another setting shows both, e.g. "1/2"


def differences(run_dirs: Iterable[str | Path]) -> str:
    """'' when every run that recorded its numerics computed alike, else each differing setting
    with its values and the runs (folder names) that had each: "threads 1 (a, b), 2 (c)"."""
    recorded = {Path(d).name: of_run(Path(d)) for d in run_dirs}
    recorded = {label: starts for label, starts in recorded.items() if starts}
    parts = []
    for key in KEYS:
        by_value: dict[str, list[str]] = {}
        for label, starts in recorded.items():
            by_value.setdefault(_value(starts, key), []).append(label)
        if len(by_value) > 1:
            parts.append(f"{key} " + ", ".join(f"{value} ({', '.join(labels)})" for value, labels in by_value.items()))
    return "; ".join(parts)
