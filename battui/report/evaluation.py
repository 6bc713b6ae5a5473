"""Evaluate a checkpoint on its dataset's test split, with a cache next to the checkpoint.

    spec = attack_spec(cfg, attack="pgd", steps=20)
    record = evaluate_checkpoint("runs/digits-cnn-bat-.../", spec, device="cpu")
    record["result"]["worst"]["robust"], record["target"]["kl_to_uniform"]

The checkpoint is rebuilt by `battui.report.foreign.open_for_eval` (weights_only
loading; battui's own checkpoints from their config, weights saved by other code
from `--model`/`--dataset`), the test split is the one its training run held out (`build_datasets(cfg.data,
seed=cfg.train.seed)`), and the numbers come from `battui.engine.evaluate`
(counting in `battui.engine.metrics`). A finished evaluation is written to
`<checkpoint>.eval-<key>.json`, the key hashing the attack settings, the image
limit, the data split and the weights, so evaluating or comparing again is
instant and a retrained checkpoint is never served stale numbers. The record keeps
every image's outcome (`result["outcomes"]`, `battui.engine.evaluate`) and the
identity of the images evaluated (`images`), so `battui.report.stats` computes
intervals and paired tests from the cache; a cache written before outcomes were kept
(version 2) is re-evaluated, and the record says so (`reevaluated`).
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

from battui.config import EvalAttack
from battui.engine.evaluate import attack_record, eval_attack, evaluate
from battui.engine.metrics import kl_to_uniform, mean_steps, never_flipped, target_distribution
from battui.errors import UserError, check_number
from battui.report.foreign import Foreign, open_config, open_for_eval

CACHE_VERSION = 3  # 2: precision, AutoAttack from pyautoattack with its per-attack breakdown; 3: per-image outcomes
KEY_VERSION = 2  # hashed into the file name: a version-2 file is found, then re-evaluated in place
STALE = {2: "its cached evaluation (cache version 2) kept no per-image outcomes"}


def attack_spec(
    cfg,
    *,
    attack: str | None = None,
    eps: float | None = None,
    step_size: float | None = None,
    steps: int | None = None,
    restarts: int | None = None,
    seed: int | None = None,
    precision: str | None = None,
) -> EvalAttack:
    """The evaluation attack: the checkpoint config's `eval` section (precision: fp32 unless
    `eval.amp`), then any explicit override; bounds checked (`validate.check_attack_options`)."""
    from battui.validate import check_attack_options

    spec = eval_attack(cfg.eval, attack=attack, eps=eps, step_size=step_size, steps=steps, restarts=restarts,
                       seed=seed, precision=precision)
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


def _cache_key(spec: EvalAttack, limit: int, data: dict, cfg, whash: str, foreign: dict | None = None) -> str:
    data_key = {"on_device": "auto", **cfg.data.__dict__}  # the retired data.on_device kept: old caches stay valid
    blob = json.dumps(
        {"v": KEY_VERSION, "attack": attack_record(spec), "limit": int(limit), "data": data_key,
         "split_seed": data["split_seed"], "weights": whash, **({"foreign": foreign} if foreign else {})},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _read_cache(path: Path) -> dict | None:
    """The cached record, or None; a record of an older version is returned for `STALE` to explain."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("cache_version") in (CACHE_VERSION, *STALE) else None


def images_identity(split, limit: int) -> str:
    """sha256 (16 hex) of the test images and labels and the limit: equal means the same images, in the
    same order (`--limit` takes the first N of a fixed shuffle), so per-image outcomes pair up."""
    h = hashlib.sha256()
    for t in (split.images, split.labels):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(str(int(limit)).encode())
    return h.hexdigest()[:16]


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


def evaluate_checkpoint(
    path: str | Path,
    spec: EvalAttack | None = None,
    *,
    device: str | torch.device = "cpu",
    limit: int = 0,
    use_cache: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    on_clean: Callable[[int, int], None] | None = None,
    spec_overrides: dict | None = None,
    foreign: Foreign | None = None,
) -> dict[str, Any]:
    """Evaluate one checkpoint (file or run folder) on its test split; returns a JSON-ready record.

    `spec=None` builds the attack from the checkpoint's config plus `spec_overrides`
    (the keyword arguments of `attack_spec`). `foreign` says how to read a file that is
    not a battui checkpoint and carries `--set` overrides (`battui.report.foreign`).
    `on_clean(correct, n)` hears the clean accuracy before the attack starts;
    `progress(stage, done, total)` follows the attack (`battui.engine.evaluate.evaluate`).
    The record holds `checkpoint`, `label`, `dataset`, `attack` (with its precision),
    `result` (per-class standard/boundary/robust, avg, worst, counts, confusion, step
    histogram, and `autoattack`'s per-attack breakdown), `mean_steps`, `never_flipped`,
    `target`, `images` (`images_identity`), `cached`, `seconds`, and `reevaluated` (why) when an
    older cache was replaced.
    """
    from battui.data import Batches, build_datasets
    from battui.engine.setup import tune_cpu_threads

    check_number("--limit", limit, 0, None)
    opened = open_for_eval(path, foreign or Foreign(), device=device)
    cfg, ckpt_path = opened.cfg, opened.path
    if spec is None:
        spec = attack_spec(cfg, **(spec_overrides or {}))
    data = dataset_identity(cfg, {"data_info": opened.data_info})
    whash = weights_hash(opened.state)
    key = _cache_key(spec, limit, data, cfg, whash, opened.identity)
    cached = cache_path(ckpt_path, key)
    stale = None
    if use_cache and cached.exists():
        record = _read_cache(cached)
        if record is not None and record["cache_version"] == CACHE_VERSION:
            return {**record, "checkpoint": str(ckpt_path), "cached": True}
        stale = STALE[record["cache_version"]] if record is not None else None

    splits = opened.splits or build_datasets(cfg.data, seed=cfg.train.seed)
    if data["classes"] and [str(c) for c in splits.classes] != data["classes"]:
        raise UserError(
            f"{ckpt_path} was trained on classes {data['classes']} but its dataset now has {splits.classes}; "
            "check data.name / data.classes in its config"
        )
    data["classes"] = [str(c) for c in splits.classes]
    data["num_classes"] = splits.num_classes

    start = time.perf_counter()
    # with a limit, a fixed shuffle makes the first N images a sample of every class
    batches = Batches(splits.test, cfg.eval.batch_size, device=device, shuffle=bool(limit), seed=0)
    # the same CPU thread rule as training, so a run's test evaluation and this one compute alike
    threads = tune_cpu_threads(torch.device(device), splits.in_channels * splits.image_size ** 2)
    try:
        result = evaluate(opened.model, batches, num_classes=splits.num_classes, spec=spec, limit=limit,
                          progress=progress, on_clean=on_clean, keep_outcomes=True)
    finally:
        torch.set_num_threads(threads)
    record = {
        "cache_version": CACHE_VERSION,
        "checkpoint": str(ckpt_path),
        "label": opened.label,
        "method": opened.method,
        "preset": cfg.preset,
        "epoch": opened.epoch,
        "dataset": data,
        "split": "test",
        "limit": int(limit),
        "attack": result["attack"],
        "weights_hash": whash,
        "images": images_identity(splits.test, limit),
        "result": result,
        **summarize(result),
        "seconds": round(time.perf_counter() - start, 3),
        "cached": False,
    }
    if opened.identity:
        record["foreign"] = opened.identity
    if use_cache:
        _write_cache(cached, record)
    if stale:  # said by this call's report only, not by the cache it rewrote
        record["reevaluated"] = f"re-evaluated: {stale}"
    return record


def checkpoint_identity(path: str | Path, foreign: Foreign | None = None) -> dict[str, Any]:
    """`{checkpoint, dataset}` of a checkpoint without evaluating it (for refusing a compare early)."""
    from battui.data import build_datasets

    cfg, ckpt = open_config(path, foreign or Foreign())
    where = ckpt["path"]
    if ckpt.get("format") is None:  # a foreign file: the named dataset decides
        splits = build_datasets(cfg.data, seed=cfg.train.seed)
        ckpt = {"data_info": {"classes": list(splits.classes), "num_classes": splits.num_classes}}
    return {"checkpoint": where, "dataset": dataset_identity(cfg, ckpt)}


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
