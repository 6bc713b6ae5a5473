"""DDP through torchrun on CPU (gloo): two ranks train synthetic-tiny, only rank 0 writes,
and evaluation covers each split exactly once.

    .venv/bin/pytest tests/test_ddp.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from battui.config import load_config
from battui.data import build_datasets
from battui.engine.checkpoint import load_checkpoint
from battui.engine.events import read_events

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def test_torchrun_two_ranks_cover_eval_splits_exactly_once(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [str(TORCHRUN), "--nproc_per_node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
           "-m", "battui", "train", "--headless", "--preset", "synthetic-tiny", "--device", "cpu",
           "--epochs", "1", "--set", f"run.root={tmp_path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
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
