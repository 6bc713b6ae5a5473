"""Evaluate a checkpoint on its dataset's test split, with a cache next to the checkpoint.

    spec = attack_spec(cfg, attack="pgd", steps=20)
    record = evaluate_checkpoint("runs/digits-cnn-bat-.../", spec, device="cpu")
    record["result"]["worst"]["robust"], record["target"]["kl_to_uniform"]

The checkpoint is rebuilt with `model_from_checkpoint` (weights_only loading),
the test split is the one its training run held out (`build_datasets(cfg.data,
seed=cfg.train.seed)`), and the numbers come from `battui.engine.evaluate`
(counting in `battui.engine.metrics`). A finished evaluation is written to
`<checkpoint>.eval-<key>.json`, the key hashing the attack settings, the image
limit, the data split and the weights, so evaluating or comparing again is
instant and a retrained checkpoint is never served stale numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from battui.engine.evaluate import AttackSpec, evaluate
from battui.engine.metrics import kl_to_uniform, mean_steps, never_flipped, target_distribution
from battui.errors import UserError
from battui.validate import check_number

CACHE_VERSION = 1


def attack_spec(
    cfg,
    *,
    attack: str | None = None,
    eps: float | None = None,
    step_size: float | None = None,
    steps: int | None = None,
    restarts: int | None = None,
    seed: int = 0,
) -> AttackSpec:
    """The evaluation attack: the checkpoint config's `eval` section, then any explicit override."""
    name = (attack or cfg.eval.attack or "pgd").lower()
    if name not in ("pgd", "autoattack"):
        raise UserError(f"unknown attack '{name}'; use pgd or autoattack")
    spec = AttackSpec(
        name=name,
        eps=float(cfg.eval.eps if eps is None else eps),
        step_size=float(cfg.eval.step_size if step_size is None else step_size),
        steps=int(cfg.eval.steps if steps is None else steps),
        restarts=int(cfg.eval.restarts if restarts is None else restarts),
        seed=int(seed),
    )
    from battui.validate import check_attack_options

    check_attack_options(eps=spec.eps, step_size=spec.step_size, steps=spec.steps, restarts=spec.restarts,
                         prefix="the attack's ")
    return spec


def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the parameter names and raw bytes (wrapper prefixes removed)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key]
        h.update(key.removeprefix("_orig_mod.").removeprefix("module.").encode())
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous().reshape(-1)
            h.update(str(t.dtype).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def dataset_identity(cfg, ckpt: dict) -> dict[str, Any]:
    """What makes two checkpoints comparable: dataset name and class list (plus the split seed)."""
    info = ckpt.get("data_info") or {}
    return {
        "name": cfg.data.name,
        "classes": [str(c) for c in info.get("classes") or []],
        "num_classes": int(info.get("num_classes", len(info.get("classes") or []))),
        "split_seed": int(cfg.train.seed),
    }


def cache_path(ckpt_path: Path, key: str) -> Path:
    return ckpt_path.with_name(f"{ckpt_path.name}.eval-{key}.json")


def _cache_key(spec: AttackSpec, limit: int, data: dict, cfg, whash: str) -> str:
    blob = json.dumps(
        {"v": CACHE_VERSION, "attack": spec.to_dict(), "limit": int(limit), "data": cfg.data.__dict__,
         "split_seed": data["split_seed"], "weights": whash},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _read_cache(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("cache_version") == CACHE_VERSION else None


def _write_cache(path: Path, record: dict) -> bool:
    """Atomic write; a read-only checkpoint folder just means no cache."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
        os.replace(tmp, path)
        return True
    except OSError:
        return False


def summarize(result: dict) -> dict[str, Any]:
    """Source- and target-class fairness from one `evaluate` result (through metrics.py)."""
    target = target_distribution(result["adv_confusion"])
    return {
        "mean_steps": mean_steps(result["step_hist"]),
        "never_flipped": never_flipped(result["step_hist"]),
        "target": {"distribution": target, "kl_to_uniform": kl_to_uniform(target)},
    }


def method_label(cfg) -> str:
    """A short name for a checkpoint's method: `bat`, `trades(beta=6)`."""
    params = ",".join(f"{k}={v}" for k, v in sorted((cfg.method.params or {}).items()))
    return f"{cfg.method.name}({params})" if params else cfg.method.name


def evaluate_checkpoint(
    path: str | Path,
    spec: AttackSpec | None = None,
    *,
    device: str | torch.device = "cpu",
    limit: int = 0,
    use_cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
    spec_overrides: dict | None = None,
) -> dict[str, Any]:
    """Evaluate one checkpoint (file or run folder) on its test split; returns a JSON-ready record.

    `spec=None` builds the attack from the checkpoint's config plus `spec_overrides`
    (the keyword arguments of `attack_spec`). `progress(done, total)` is called per batch.
    The record holds `checkpoint`, `label`, `dataset`, `attack`, `result` (per-class
    standard/boundary/robust, avg, worst, counts, confusion, step histogram),
    `mean_steps`, `never_flipped`, `target`, `cached` and `seconds`.
    """
    from battui.data import Batches, build_datasets
    from battui.engine.checkpoint import model_from_checkpoint

    check_number("--limit", limit, 0, None)
    model, cfg, ckpt = model_from_checkpoint(path, device=device)
    ckpt_path = Path(ckpt["path"])
    if spec is None:
        spec = attack_spec(cfg, **(spec_overrides or {}))
    data = dataset_identity(cfg, ckpt)
    whash = weights_hash(ckpt["model"])
    key = _cache_key(spec, limit, data, cfg, whash)
    cached = cache_path(ckpt_path, key)
    if use_cache and cached.exists():
        record = _read_cache(cached)
        if record is not None:
            return {**record, "checkpoint": str(ckpt_path), "cached": True}

    splits = build_datasets(cfg.data, seed=cfg.train.seed)
    if data["classes"] and [str(c) for c in splits.classes] != data["classes"]:
        raise UserError(
            f"{ckpt_path} was trained on classes {data['classes']} but its dataset now has {splits.classes}; "
            "check data.name / data.classes in its config"
        )
    data["classes"] = [str(c) for c in splits.classes]
    data["num_classes"] = splits.num_classes
    total = min(len(splits.test), limit) if limit else len(splits.test)
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    start = time.perf_counter()
    # with a limit, a fixed shuffle makes the first N images a sample of every class
    batches = Batches(splits.test, cfg.eval.batch_size, device=device, shuffle=bool(limit), seed=0)
    result = evaluate(model, batches, num_classes=splits.num_classes, spec=spec, limit=limit, progress=step)
    record = {
        "cache_version": CACHE_VERSION,
        "checkpoint": str(ckpt_path),
        "label": method_label(cfg),
        "method": {"name": cfg.method.name, "params": dict(cfg.method.params or {})},
        "preset": cfg.preset,
        "epoch": ckpt.get("epoch"),
        "dataset": data,
        "split": "test",
        "limit": int(limit),
        "attack": spec.to_dict(),
        "weights_hash": whash,
        "result": result,
        **summarize(result),
        "seconds": round(time.perf_counter() - start, 3),
        "cached": False,
    }
    if use_cache:
        _write_cache(cached, record)
    return record


def checkpoint_identity(path: str | Path) -> dict[str, Any]:
    """`{checkpoint, dataset}` of a checkpoint without evaluating it (for refusing a compare early)."""
    from battui.config import config_from_dict
    from battui.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    return {"checkpoint": ckpt["path"], "dataset": dataset_identity(config_from_dict(ckpt["config"]), ckpt)}


def check_same_dataset(records: list[dict]) -> None:
    """Refuse to compare checkpoints of different datasets (name or class list).

    `records` are evaluation records or `checkpoint_identity` results.
    """
    first = records[0]
    for other in records[1:]:
        a, b = first["dataset"], other["dataset"]
        if a["name"] != b["name"] or a["classes"] != b["classes"]:
            raise UserError(
                f"cannot compare {first['checkpoint']} ({a['name']}, {len(a['classes'])} classes) with "
                f"{other['checkpoint']} ({b['name']}, {len(b['classes'])} classes): "
                "they were trained on different datasets or class lists"
            )
