"""DDP through torchrun on CPU (gloo): two ranks train synthetic-tiny with a small BatchNorm
ResNet, only rank 0 writes, evaluation and the methods' validation cover each split exactly
once with rank 0's buffers, pause / save / stop / resume are agreed across the ranks, CFA's
per-rank counts are saved summed, the final test eval equals `battui eval` of the saved
weights, and train.batch_size is the global batch (split over the ranks; exit 2 unless it divides).

    .venv/bin/pytest tests/test_engine_ddp.py -q
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from battui.config import load_config
from battui.data import build_datasets
from battui.engine.channel import send_command
from battui.engine.checkpoint import load_checkpoint
from battui.engine.events import read_events
from tests.support import ROOT
from tests.support.cli import child_env
from tests.support.processes import run_events, wait_for

TORCHRUN = Path(sys.executable).with_name("torchrun")


BN_RESNET = ("--set", "model.name=resnet18", "--set", "model.depth=0", "--set", "model.width=4")  # BatchNorm, tiny


def torchrun_cmd(tmp_path: Path, *args: str) -> list[str]:
    return [str(TORCHRUN), "--nproc_per_node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
            "-m", "battui", "train", "--headless", "--device", "cpu", "--set", f"run.root={tmp_path}", *args]


def torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = torchrun_cmd(tmp_path, "--preset", "synthetic-tiny", "--epochs", "1", *args)
    return subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=180)


def wait_for_event(run: Path, proc: subprocess.Popen, found, what: str, timeout: float = 120.0) -> list[dict]:
    """The run's events once `found(events)` holds; fails if the trainer exits first or time runs out."""
    def ready() -> bool:
        return found(run_events(run)) or proc.poll() is not None

    assert wait_for(ready, timeout=timeout), f"no {what} within {timeout} s"
    events = run_events(run)
    assert found(events), f"the trainer exited (code {proc.poll()}) before {what}: {proc.stdout.read()[-3000:]}"
    return events


def batch_sizes_per_rank(n: int, batch: int) -> list[int]:
    per_rank = -(-n // 2)  # training shards are padded to ceil(N / 2) samples
    return [min(batch, per_rank - i) for i in range(0, per_rank, batch)]


def test_torchrun_bn_resnet_pause_save_stop_resume_evaluates_the_saved_network(tmp_path, one_thread):
    """Two gloo ranks train a BatchNorm ResNet with CFA: pause (both ranks wait), save while paused,
    resume, stop mid-epoch, `--resume` to the end; CFA's per-rank counts are saved summed, the
    evaluations cover each split once, and the final test eval equals `battui eval` of the saved weights."""
    run = tmp_path / "ddp"
    # CFA's warm-up is a fraction of train.epochs: 0 here, so the 40-epoch run and the straight one agree
    args = ("--preset", "synthetic-tiny", "--method", "cfa", "--set", "method.warmup=0", *BN_RESNET)
    proc = subprocess.Popen(torchrun_cmd(tmp_path, *args, "--set", "run.name=ddp", "--epochs", "40"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env(), cwd=ROOT)
    try:
        wait_for_event(run, proc, lambda ev: any(e["type"] == "batch" for e in ev), "a first batch")
        send_command(run, "pause")
        wait_for_event(run, proc, lambda ev: any(e["type"] == "paused" for e in ev), "the paused event")
        send_command(run, "save")  # under DDP too: every rank waits in the pause, so every rank saves
        events = wait_for_event(run, proc, lambda ev: any(e.get("kind") == "manual" for e in ev), "the manual save")
        kinds = [e["type"] for e in events]
        paused_at = kinds.index("paused")
        assert "batch" not in kinds[paused_at:]  # nothing trained while paused
        manual = load_checkpoint(run / "checkpoints" / "last.pt")
        send_command(run, "resume")
        wait_for_event(run, proc, lambda ev: any(e["type"] == "resumed" for e in ev), "the resumed event")
        def count(kind: str) -> int:
            return sum(e["type"] == kind for e in run_events(run))

        while True:  # pause again, at a batch before an epoch's last, and stop there: the stop trains that batch
            n = count("paused") + 1
            send_command(run, "pause")
            events = wait_for_event(run, proc, lambda ev, n=n: sum(e["type"] == "paused" for e in ev) >= n, "a pause")
            paused = [e for e in events if e["type"] == "paused"][-1]
            if paused["batch"] + 1 < events[0]["batches_per_epoch"]:
                break
            n = count("resumed") + 1
            send_command(run, "resume")
            wait_for_event(run, proc, lambda ev, n=n: sum(e["type"] == "resumed" for e in ev) >= n, "a resume")
        send_command(run, "stop")
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    events = read_events(run / "events.jsonl")
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "interrupted", events[-1]
    stopped = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (stopped["epoch"], stopped["batch"]) == (paused["epoch"], paused["batch"] + 1)  # mid-epoch
    assert len(stopped["rng"]) == 2 and not torch.equal(stopped["rng"][0]["torch"], stopped["rng"][1]["torch"])

    cfg = load_config("synthetic-tiny")
    splits = build_datasets(cfg.data, seed=cfg.train.seed)
    sizes = batch_sizes_per_rank(len(splits.train), cfg.train.batch_size // 2)
    for ckpt in (manual, stopped):  # CFA's counts of the epoch so far: both ranks' samples, summed
        state = ckpt["method_state"]
        assert float(state["seen"].sum()) == 2 * sum(sizes[: ckpt["batch"]]), (ckpt["epoch"], ckpt["batch"])

    epochs = str(stopped["epoch"] + 1)
    out = subprocess.run(torchrun_cmd(tmp_path, "--resume", str(run), "--epochs", epochs),
                         capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]  # rank 1 created nothing of its own
    out = subprocess.run(torchrun_cmd(tmp_path, *args, "--set", "run.name=straight", "--epochs", epochs),
                         capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    straight = tmp_path / "straight"
    # paused, saved, stopped mid-epoch and resumed = trained straight: bit-identical weights, the same evaluations
    resumed_w, straight_w = (load_checkpoint(r / "checkpoints" / "last.pt")["model"] for r in (run, straight))
    assert resumed_w.keys() == straight_w.keys()
    assert all(torch.equal(resumed_w[k], straight_w[k]) for k in resumed_w)
    keep = ("epoch", "split", "n", "counts", "standard", "boundary", "robust", "adv_confusion", "step_hist")
    evals_of = [[{k: e[k] for k in keep} for e in read_events(r / "events.jsonl") if e["type"] == "eval"]
                for r in (run, straight)]
    assert evals_of[0] == evals_of[1] and [e["split"] for e in evals_of[1]].count("val") == int(epochs)
    events = read_events(run / "events.jsonl")
    assert events[-1]["status"] == "completed" and events[-1]["epoch"] == stopped["epoch"] + 1
    assert [e["world_size"] for e in events if e["type"] == "run_started"] == [2, 2]
    evals = {e["split"]: e for e in events if e["type"] == "eval"}
    for name, split in (("val", splits.val), ("test", splits.test)):
        assert evals[name]["n"] == len(split)
        assert evals[name]["counts"] == torch.bincount(split.labels, minlength=splits.num_classes).tolist()
        assert sum(map(sum, evals[name]["adv_confusion"])) == len(split)
    # the resumed epoch's training-attack counts: rank 0's saved sums plus both ranks' later batches
    full = [e for e in events if e["type"] == "train_attack" and not e["partial"]][-1]
    assert sum(map(sum, full["step_hist"])) == 2 * sum(sizes)
    assert events[0]["batches_per_epoch"] == len(sizes)

    final = run / "checkpoints" / ("fawa.pt" if (run / "checkpoints" / "fawa.pt").exists() else "last.pt")
    assert not any(k.startswith("module.") for k in load_checkpoint(final)["model"])
    report = tmp_path / "eval.json"
    out = subprocess.run([sys.executable, "-m", "battui", "eval", str(final), "--no-cache", "-f", "json", "-o",
                          str(report)], capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads(report.read_text())
    assert record["attack"] == evals["test"]["attack"]
    for key in ("n", "counts", "standard", "boundary", "robust", "adv_confusion", "step_hist"):
        assert record["result"][key] == evals["test"][key], key

    # the last per-epoch val eval (two ranks) = one process evaluating last.pt's weights on the val split
    from battui.data import Batches
    from battui.engine.checkpoint import model_from_checkpoint
    from battui.engine.evaluate import eval_attack, evaluate

    model, cfg, _ = model_from_checkpoint(run / "checkpoints" / "last.pt")
    alone = evaluate(model, Batches(splits.val, cfg.eval.batch_size), num_classes=splits.num_classes,
                     spec=eval_attack(cfg.eval))
    for key in ("n", "counts", "standard", "boundary", "robust", "adv_confusion", "step_hist"):
        assert alone[key] == evals["val"][key], key


def test_torchrun_method_validation_is_sharded_and_summed(tmp_path):
    # a BatchNorm ResNet: the validation's clean error matches last.pt only if every rank validated
    # with rank 0's running statistics (the ones saved)
    out = torchrun(tmp_path, "--method", "frl", "--set", "train.batch_size=64", *BN_RESNET)
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

    cfg = load_config("synthetic-tiny", ["model.name=resnet18", "model.depth=0", "model.width=4"])
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


def test_a_mid_epoch_last_pt_of_two_ranks_is_refused_by_one_process_and_nothing_changes(tmp_path, one_thread):
    import pytest

    from battui.engine.checkpoint import save_checkpoint
    from battui.engine.control import RunControl
    from battui.engine.trainer import Trainer
    from battui.errors import UserError

    control = RunControl()
    cfg = load_config("synthetic-tiny", ["train.epochs=1", f"run.root={tmp_path}", "run.name=two"])
    trainer = Trainer(cfg, control=control, listeners=[lambda e: e["type"] == "batch" and control.stop.set()])
    assert trainer.prepare().run() == "interrupted"
    run, last = tmp_path / "two", tmp_path / "two" / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    assert ckpt["batch"] == 1 and len(ckpt["rng"]) == 1
    ckpt.pop("path")
    save_checkpoint(last, {**ckpt, "rng": ckpt["rng"] * 2})  # as two ranks save it
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match=r"epoch 1 batch 1\) with the RNG states of 2 rank\(s\); resume it with 2 "
                                        r"\(this run has 1\)"):
        Trainer(None, resume=run).prepare()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
