"""Realistic, fully deterministic event streams for dashboard and report tests.

    from tests.support.events import generate_events, write_events
    events = generate_events(epochs=3)                       # digits-like, 10 classes, finished
    events = generate_events(classes=cifar100_classes(), finished=None)   # 100 classes, still running
    write_events(tmp_path / "events.jsonl", events)

The dicts have exactly the fields `battui.engine.events` writes. Numbers come
from a seeded `random.Random`, times from a fixed origin, so the same arguments
always give the same stream (and the same dashboard snapshot).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
T0 = 1_700_000_000.0


def cifar100_classes() -> list[str]:
    """100 distinct, CIFAR-100-like names (fine for layout tests)."""
    stems = ["apple", "bear", "bottle", "castle", "cloud", "dolphin", "maple", "rocket", "tulip", "whale"]
    return [f"{stem}_{i}" for i in range(10) for stem in stems]


def _difficulty(k: int, rng: random.Random) -> list[float]:
    """Per-class hardness in [0, 1]; a few classes are much harder (the robust-fairness gap)."""
    return [min(1.0, 0.15 + 0.7 * ((i * 7919) % k) / max(1, k - 1) * rng.uniform(0.8, 1.0)) for i in range(k)]


def _step_hist(k: int, steps: int, hard: list[float], per_class: int, rng: random.Random) -> list[list[int]]:
    rows = []
    for c in range(k):
        never = int(per_class * (1.0 - hard[c]) * 0.6)
        left = per_class - never
        peak = max(0, min(steps, int((1.0 - hard[c]) * steps)))
        weights = [1.0 / (1 + abs(s - peak)) + rng.random() * 0.05 for s in range(steps + 1)]
        total = sum(weights)
        row = [int(left * w / total) for w in weights]
        row[peak] += left - sum(row)
        rows.append(row + [never])
    return rows


def _confusion(k: int, hard: list[float], per_class: int, rng: random.Random) -> list[list[int]]:
    # Adversarial targets drift to a few "attractor" classes, as the paper observes.
    attract = [1.0 + 4.0 * (((j * 31) % k) < max(1, k // 5)) for j in range(k)]
    rows = []
    for c in range(k):
        flipped = int(per_class * hard[c] * 0.8)
        weights = [0.0 if j == c else attract[j] * (0.5 + rng.random()) for j in range(k)]
        total = sum(weights)
        row = [int(flipped * w / total) for w in weights]
        row[c] = per_class - sum(row)
        rows.append(row)
    return rows


def _eval(epoch: int, k: int, steps: int, hard: list[float], progress: float, rng: random.Random) -> dict[str, Any]:
    per_class = 50
    standard = [round(100 * min(0.9, h * 0.35 * (1.2 - progress) + rng.random() * 0.02), 1) for h in hard]
    boundary = [round(100 * min(0.9, h * 0.45 * (1.1 - 0.5 * progress) + rng.random() * 0.02), 1) for h in hard]
    robust = [round(s + b, 1) for s, b in zip(standard, boundary, strict=True)]
    per = {"standard": standard, "boundary": boundary, "robust": robust}
    return {
        "type": "eval",
        "time": 0.0,
        "epoch": epoch,
        "split": "val",
        "attack": {"name": "pgd", "eps": 0.2, "step_size": 0.05, "steps": 20, "restarts": 1},
        "n": per_class * k,
        "counts": [per_class] * k,
        **per,
        "avg": {name: round(sum(v) / k, 4) for name, v in per.items()},
        "worst": {name: max(v) for name, v in per.items()},
        "adv_confusion": _confusion(k, hard, per_class, rng),
        "step_hist": _step_hist(k, 20, hard, per_class, rng),
        "method": {},
    }


def generate_events(
    *,
    classes: list[str] | None = None,
    epochs: int = 3,
    total_epochs: int | None = None,
    batches: int = 12,
    attack_steps: int = 10,
    log_every: int = 3,
    seed: int = 0,
    finished: str | None = "completed",
    method: str = "bat",
    dataset: str = "cifar10",
    model: str = "resnet18",
    preset: str = "cifar10-resnet18",
    device: str = "cuda:0",
) -> list[dict[str, Any]]:
    """A run's stream: `epochs` epochs done out of `total_epochs` (default: `epochs`).

    `finished` is the `run_finished` status, or None for a run still going.
    """
    rng = random.Random(seed)
    classes = list(classes or CIFAR10)
    k = len(classes)
    total_epochs = total_epochs or epochs
    hard = _difficulty(k, rng)
    name = f"{preset}-{method}-20231114-221320"
    events: list[dict[str, Any]] = [
        {
            "type": "run_started", "run_name": name, "run_dir": f"runs/{name}", "preset": preset,
            "method": method, "dataset": dataset, "model": model, "device": device, "classes": classes,
            "epochs": total_epochs, "batches_per_epoch": batches, "attack_steps": attack_steps,
            "train_size": batches * 128, "eval_size": 50 * k, "start_epoch": 0, "world_size": 1,
            "seed": seed, "config": {},
        }
    ]
    step = 0
    elapsed = 0.0
    for epoch in range(epochs):
        for b in range(1, batches + 1):
            step += 1
            elapsed += 0.25
            progress = step / (total_epochs * batches)
            if b % log_every == 0 or b == batches:
                ce = 2.2 * (1.0 - 0.6 * progress) + rng.uniform(-0.05, 0.05)
                kl = 0.4 * (1.0 - 0.3 * progress) + rng.uniform(-0.02, 0.02)
                uni = 0.1 + rng.uniform(0.0, 0.02)
                lr = 0.1 if progress < 0.5 else 0.01
                events.append({
                    "type": "batch", "epoch": epoch, "batch": b, "batches": batches, "step": step,
                    "loss": round(ce + 6 * kl + uni, 4), "parts": {"ce": round(ce, 4), "kl": round(kl, 4),
                                                                  "uniform": round(uni, 4)},
                    "lr": lr, "images_per_s": round(512.0 + 10 * (step % 7), 1), "elapsed": round(elapsed, 2),
                })
            if b % (2 * log_every) == 0 or b == batches:
                events.append({
                    "type": "train_attack", "epoch": epoch, "batch": b, "batches": batches,
                    "partial": b != batches,
                    "step_hist": _step_hist(k, attack_steps, hard, 12 * b, rng),
                    "target_confusion": _confusion(k, hard, 12 * b, rng),
                })
        events.append(_eval(epoch, k, attack_steps, hard, (epoch + 1) / total_epochs, rng))
        events.append({"type": "checkpoint", "epoch": epoch + 1, "path": f"runs/{name}/checkpoints/last.pt",
                       "kind": "last", "metric": None})
    if finished:
        events.append({"type": "run_finished", "status": finished, "reason": "" if finished == "completed"
                       else "stopped from the dashboard", "epoch": epochs})
    for i, event in enumerate(events):
        event["time"] = T0 + i * 0.5
    return events


def write_events(path: str | Path, events: list[dict[str, Any]]) -> Path:
    """Write `events` as an events.jsonl file (creating parent folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for event in events:
            fh.write(json.dumps(event) + "\n")
    return path
