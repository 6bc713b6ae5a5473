"""DDP through torchrun on CPU (gloo): two ranks train synthetic-tiny, only rank 0 writes,
evaluation and the methods' validation cover each split exactly once, and
train.batch_size is the global batch (split over the ranks; exit 2 unless it divides).

    .venv/bin/pytest tests/test_engine_ddp.py -q
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import torch

from battui.config import load_config
from battui.data import build_datasets
from battui.engine.checkpoint import load_checkpoint
from battui.engine.events import read_events
from tests.support import ROOT
from tests.support.cli import child_env

TORCHRUN = Path(sys.executable).with_name("torchrun")


def torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(TORCHRUN), "--nproc_per_node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
           "-m", "battui", "train", "--headless", "--preset", "synthetic-tiny", "--device", "cpu",
           "--epochs", "1", "--set", f"run.root={tmp_path}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=180)


def test_torchrun_two_ranks_cover_eval_splits_exactly_once(tmp_path):
    out = torchrun(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1  # rank 1 created nothing of its own
    events = read_events(runs[0] / "events.jsonl")
    assert [e["type"] for e in events].count("run_started") == 1
    assert events[0]["world_size"] == 2 and events[-1]["status"] == "completed"

    cfg = load_config("synthetic-tiny")
    splits = build_datasets(cfg.data, seed=cfg.train.seed)
    evals = {e["split"]: e for e in events if e["type"] == "eval"}
    for name, split in (("val", splits.val), ("test", splits.test)):
        assert evals[name]["n"] == len(split)
        assert evals[name]["counts"] == torch.bincount(split.labels, minlength=splits.num_classes).tolist()
        assert sum(map(sum, evals[name]["adv_confusion"])) == len(split)
    # training-attack counts are summed over both ranks (each sees ceil(N / 2) samples)
    full = [e for e in events if e["type"] == "train_attack" and not e["partial"]][0]
    assert sum(map(sum, full["step_hist"])) == 2 * -(-len(splits.train) // 2)
    ckpt = load_checkpoint(runs[0] / "checkpoints" / "last.pt")
    assert not any(k.startswith("module.") for k in ckpt["model"])
    # the preset's batch (32) is the global one: 16 per rank and step
    assert cfg.train.batch_size == 32
    assert events[0]["batches_per_epoch"] == math.ceil(math.ceil(len(splits.train) / 2) / 16)


def test_torchrun_method_validation_is_sharded_and_summed(tmp_path):
    out = torchrun(tmp_path, "--method", "frl", "--set", "train.batch_size=64")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = next(tmp_path.iterdir())
    events = read_events(run / "events.jsonl")
    cfg = load_config("synthetic-tiny")
    splits = build_datasets(cfg.data, seed=cfg.train.seed)
    assert events[0]["batches_per_epoch"] == math.ceil(math.ceil(len(splits.train) / 2) / 32)
    info = [e for e in events if e["type"] == "eval" and e["split"] == "val"][0]["method"]
    # each rank validated its half and the sums were all-reduced: every sample once
    assert info["val_samples"] == len(splits.val)
    # FRL's clean error per class from the rank-summed counts equals one pass over the whole
    # split with the same weights (validation ran after the only epoch; last.pt holds them)
    from battui.models import build_model, model_options

    model = build_model(cfg.model.name, num_classes=splits.num_classes, in_channels=splits.in_channels,
                        **model_options(cfg.model))
    model.load_state_dict(load_checkpoint(run / "checkpoints" / "last.pt")["model"])
    model.eval()
    with torch.no_grad():
        wrong = (model(splits.val.images.float() / 255 if splits.val.images.dtype == torch.uint8
                       else splits.val.images).argmax(1) != splits.val.labels).double()
    per_class = [wrong[splits.val.labels == c].mean().item() for c in range(splits.num_classes)]
    assert math.isclose(info["val_clean_error"], sum(per_class) / len(per_class), abs_tol=1e-6)
    assert math.isclose(info["val_worst_clean_error"], max(per_class), abs_tol=1e-6)


def test_global_batch_must_divide_over_the_ranks(tmp_path):
    cmd = [sys.executable, "-m", "battui", "train", "--headless", "--preset", "synthetic-tiny", "--device", "cpu",
           "--set", "train.batch_size=33", "--set", f"run.root={tmp_path / 'runs'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(WORLD_SIZE="2", RANK="0"),
                         cwd=ROOT, timeout=120)
    assert out.returncode == 2
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert len(lines) == 1 and "global batch" in lines[0] and "2 ranks" in lines[0], lines
    assert "Traceback" not in out.stderr and not (tmp_path / "runs").exists()
