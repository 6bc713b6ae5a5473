"""Resume is exact and honest (issue 22, points 1-3), `battui train --resume` as a user runs it:
last.pt holds the best metric its own epoch found, an extended schedule's lr is re-derived at the
resumed epoch, and changed optimizer settings are applied (or refused in one line), never only reported.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_engine_resume.py -q
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from battui.config import load_config
from battui.engine.checkpoint import load_checkpoint
from battui.engine.events import read_events
from battui.engine.trainer import Trainer
from tests.support.cli import run_many

LR = 0.05
# synthetic-tiny with a multistep schedule whose milestone is half of the epochs: epoch index 1 of a
# 2-epoch run trains at LR * 0.1; resumed to 6 epochs the milestone moves to epoch index 3
MULTISTEP = ["train.schedule=multistep", "train.milestones=[0.5]", "train.gamma=0.1", f"train.lr={LR}",
             "eval.every=1"]


def val_metrics(run: Path) -> list[tuple[int, list[float]]]:
    """(epochs done, [worst-class robust, average robust]) of every per-epoch evaluation, in order."""
    return [(e["epoch"] + 1, [e["worst"]["robust"], e["avg"]["robust"]])
            for e in read_events(run / "events.jsonl") if e["type"] == "eval" and e["split"] != "test"]


def batch_lrs(run: Path) -> dict[int, set[float]]:
    """The lr of every logged batch, per 0-based epoch (the last start's, after a resume)."""
    out: dict[int, set[float]] = {}
    for e in read_events(run / "events.jsonl"):
        if e["type"] == "batch":
            out.setdefault(e["epoch"], set()).add(round(e["lr"], 12))
    return out


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    """A completed 2-epoch multistep run; every last.pt it saved was checked against the evaluations so far."""
    root = tmp_path_factory.mktemp("resume")
    seen: list[tuple[list[float], list[float]]] = []

    def check_last(event: dict) -> None:  # (a listener's exception would only remove it: collect, assert after)
        if event["type"] == "checkpoint" and event["kind"] == "last":
            run = Path(event["path"]).parents[1]
            seen.append((load_checkpoint(event["path"])["best_metric"], min(m for _, m in val_metrics(run))))

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        trainer = Trainer(load_config("synthetic-tiny", [*MULTISTEP, "train.epochs=2", f"run.root={root}",
                                                         "run.name=base"]), listeners=[check_last]).prepare()
        assert trainer.run() == "completed"
    assert len(seen) == 2 and all(saved == best for saved, best in seen), seen  # this epoch's evaluation included
    return root / "base"


def copy_of(run: Path, name: str) -> Path:
    dest = run.parent / name
    shutil.copytree(run, dest)
    return dest


def test_an_extended_resume_keeps_best_honest_and_trains_at_the_new_schedules_lr(two_epochs, tmp_path):
    extended = copy_of(two_epochs, "extended")
    changed = copy_of(two_epochs, "changed")
    refused = copy_of(two_epochs, "refused")
    before = {p: p.read_bytes() for p in refused.rglob("*") if p.is_file()}
    res = run_many([
        ["train", "--headless", "--resume", extended, "--epochs", "6"],
        ["train", "--headless", "--resume", changed, "--epochs", "3", "--set", "train.lr=0.5",
         "--set", "train.momentum=0.5", "--set", "train.weight_decay=0.001", "--set", "train.schedule=constant"],
        ["train", "--headless", "--resume", refused, "--epochs", "3", "--set", "train.optimizer=adam"],
    ], cwd=tmp_path, tmp=tmp_path)

    # point 2: the first resumed epoch trains at the lr of the 6-epoch schedule (milestone at epoch index 3)
    assert res[0].code == 0, res[0].err
    low = round(LR * 0.1, 12)
    assert batch_lrs(extended) == {0: {LR}, 1: {low}, 2: {LR}, 3: {low}, 4: {low}, 5: {low}}
    # point 1: best.pt is the best evaluation of all six epochs, and last.pt knows it
    metrics = val_metrics(extended)
    assert [epoch for epoch, _ in metrics] == [1, 2, 3, 4, 5, 6]
    best_epoch, best = min(metrics, key=lambda em: (em[1], em[0]))  # the first of equal metrics is kept
    assert load_checkpoint(extended / "checkpoints" / "best.pt")["epoch"] == best_epoch
    assert load_checkpoint(extended / "checkpoints" / "last.pt")["best_metric"] == best

    # point 3: the changes it reports are the ones it trains with
    assert res[1].code == 0, res[1].err
    assert "train.lr 0.05 -> 0.5" in res[1].out and "train.momentum 0.9 -> 0.5" in res[1].out
    assert batch_lrs(changed)[2] == {0.5}
    groups = load_checkpoint(changed / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert [(g["lr"], g["momentum"], g["weight_decay"]) for g in groups] == [(0.5, 0.5, 0.001)] * len(groups)

    # an optimizer change cannot be applied to last.pt's state: one line, nothing written
    line = res[2].one_line_error()
    assert "train.optimizer sgd -> adam" in line and "start a new run" in line
    assert {p: p.read_bytes() for p in refused.rglob("*") if p.is_file()} == before
