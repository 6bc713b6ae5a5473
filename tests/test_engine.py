"""The training engine in-process on synthetic-tiny: run dir, events, checkpoints,
stop/pause/save flags, exact mid-epoch resume, NaN handling, atomic saves, torn event lines.

    .venv/bin/pytest tests/test_engine.py -q
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from battui.config import load_config, read_config
from battui.engine import checkpoint as ckpt_mod
from battui.engine.checkpoint import load_checkpoint, save_checkpoint
from battui.engine.control import RunControl
from battui.engine.events import read_events
from battui.engine.faults import WriteFault
from battui.engine.headless import HeadlessLog
from battui.engine.setup import EpochSchedule
from battui.engine.trainer import Trainer
from battui.errors import UserError


def tiny(tmp_path: Path, *overrides: str):
    return load_config("synthetic-tiny", [f"run.root={tmp_path / 'runs'}", *overrides])


def types_of(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def test_run_writes_run_dir_events_and_checkpoints(tmp_path):
    seen: list[dict] = []
    trainer = Trainer(tiny(tmp_path), listeners=[seen.append]).prepare()
    assert trainer.run_dir.parent == tmp_path / "runs"
    assert trainer.run_dir.name.startswith("synthetic-tiny-pgd-at-")
    assert trainer.run() == "completed"

    run = trainer.run_dir
    events = read_events(run / "events.jsonl")
    assert events == seen  # listeners get exactly what the file gets
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    assert events[-1]["status"] == "completed"
    k = len(events[0]["classes"])
    evals = [e for e in events if e["type"] == "eval"]
    assert [(e["split"], e["epoch"]) for e in evals] == [("val", 0), ("val", 1), ("test", 1)]
    for e in evals:
        assert len(e["standard"]) == len(e["robust"]) == len(e["boundary"]) == len(e["counts"]) == k
        assert sum(e["counts"]) == e["n"] > 0
        for s, b, r in zip(e["standard"], e["boundary"], e["robust"], strict=True):
            assert abs(s + b - r) < 1e-9
        assert e["worst"]["robust"] == max(r for r, c in zip(e["robust"], e["counts"], strict=True) if c)
        assert len(e["adv_confusion"]) == k and len(e["step_hist"][0]) == e["attack"]["steps"] + 2
    attack = [e for e in events if e["type"] == "train_attack"]
    full = [e for e in attack if not e["partial"]]
    assert [e["epoch"] for e in full] == [0, 1] and any(e["partial"] for e in attack)
    assert sum(map(sum, full[0]["step_hist"])) == sum(map(sum, full[0]["target_confusion"])) == 220
    batches = [e for e in events if e["type"] == "batch"]
    assert len(batches) == 2 * events[0]["batches_per_epoch"]  # log_every = 1
    assert batches[-1]["step"] == 2 * events[0]["batches_per_epoch"]

    assert read_config(run / "config.yaml").to_dict() == trainer.cfg.to_dict()
    env = json.loads((run / "env.json").read_text())
    assert {"versions", "device", "seed", "host", "argv"} <= set(env)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["batch"] == 0 and last["step"] == batches[-1]["step"]
    assert {"model", "optimizer", "scheduler", "method_state", "rng", "config", "data_info", "best_metric"} <= set(last)
    assert len(last["rng"]) == 1 and set(last["rng"][0]) >= {"torch", "python", "numpy"}  # one state per rank
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    # best = lowest worst-class robust error on val, ties broken by the average
    assert best["best_metric"] == min([e["worst"]["robust"], e["avg"]["robust"]] for e in evals if e["split"] == "val")
    kinds = [e["kind"] for e in events if e["type"] == "checkpoint"]
    assert kinds.count("last") == 2 and "best" in kinds


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_stop_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    reference = Trainer(tiny(tmp_path, "run.name=ref")).prepare()
    assert reference.run() == "completed"

    control = RunControl()

    def poke(event: dict) -> None:  # what the dashboard does: set flags from outside
        if event["type"] == "batch" and (event["epoch"], event["batch"]) == (0, 1):
            control.save_now.set()
        if event["type"] == "batch" and (event["epoch"], event["batch"]) == (1, 3):
            control.request_stop("test stop")

    first = Trainer(tiny(tmp_path, "run.name=cut"), control=control, listeners=[poke]).prepare()
    assert first.run() == "interrupted"
    events = read_events(first.events_path)
    assert events[-1] == {**events[-1], "type": "run_finished", "status": "interrupted", "reason": "test stop"}
    kinds = [(e["kind"], e["epoch"]) for e in events if e["type"] == "checkpoint"]
    assert ("manual", 0) in kinds and kinds[-1] == ("last", 1)
    mid = load_checkpoint(first.checkpoint_dir / "last.pt")
    assert (mid["epoch"], mid["batch"]) == (1, 3)

    resumed = Trainer(None, resume=first.run_dir).prepare()
    assert (resumed.start_epoch, resumed.start_batch) == (1, 3)
    assert resumed.run() == "completed"
    ref_w, res_w = _final_weights(reference.run_dir), _final_weights(first.run_dir)
    for name in ref_w:
        assert torch.equal(ref_w[name], res_w[name]), name
    events = read_events(first.events_path)
    assert types_of(events).count("run_started") == 2 and events[-1]["status"] == "completed"
    # the resumed epoch's training-attack counts include the batches before the stop
    full = [e for e in events if e["type"] == "train_attack" and not e["partial"]]
    assert sum(map(sum, full[-1]["step_hist"])) == 220


def test_pause_waits_saves_on_request_and_stop_ends_the_wait(tmp_path):
    control = RunControl()
    seen: list[tuple] = []

    def listener(event: dict) -> None:
        if event["type"] == "batch" and event["batch"] == 1 and event["epoch"] == 0:
            control.pause.set()
            threading.Timer(0.3, control.pause.clear).start()
        if event["type"] == "batch" and event["batch"] == 2 and event["epoch"] == 0:
            control.pause.set()
            threading.Timer(0.2, control.save_now.set).start()  # `battui watch` s while paused
            threading.Timer(0.6, control.request_stop, args=("stop while paused",)).start()
        if event["type"] in ("paused", "resumed"):  # typed events, not message text
            seen.append((event["type"], event.get("epoch"), event.get("batch")))
        if event["type"] == "checkpoint":
            seen.append(("checkpoint", event["kind"], len(seen)))

    trainer = Trainer(tiny(tmp_path), control=control, listeners=[listener]).prepare()
    assert trainer.run() == "interrupted"
    assert seen[:4] == [("paused", 0, 1), ("resumed", None, None), ("paused", 0, 2), ("checkpoint", "manual", 3)]
    assert seen[4][:2] == ("checkpoint", "last")  # the stop, after the wait ended
    assert load_checkpoint(trainer.checkpoint_dir / "last.pt")["batch"] == 3


def test_non_finite_loss_fails_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny(tmp_path)).prepare()
    real_loss = trainer.method.loss
    calls = []

    def loss(model, x, y):
        out = real_loss(model, x, y)
        calls.append(1)
        if len(calls) == 10:  # step 10: epoch 2, batch 3
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(trainer.method, "loss", loss)
    assert trainer.run() == "failed"
    events = read_events(trainer.events_path)
    assert events[-1]["status"] == "failed" and "epoch 2 batch 3" in events[-1]["reason"]
    assert any(e["type"] == "message" and e["level"] == "error" for e in events)
    last = load_checkpoint(trainer.checkpoint_dir / "last.pt")
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values())


def test_huge_learning_rate_fails_cleanly(tmp_path):
    trainer = Trainer(tiny(tmp_path, "train.lr=1.0e+30")).prepare()
    assert trainer.run() == "failed"
    final = read_events(trainer.events_path)[-1]
    assert final["type"] == "run_finished" and "non-finite" in final["reason"] and "batch" in final["reason"]
    assert not (trainer.checkpoint_dir / "last.pt").exists()


def test_crash_during_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    config = tiny(tmp_path).to_dict()  # load_checkpoint refuses a battui checkpoint without a usable config
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": config, "epoch": 1})

    def torn_save(obj, fh, *a, **kw):
        fh.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", torn_save)
    with pytest.raises(WriteFault, match="disk full"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "config": config, "epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_truncated_event_line_is_skipped_and_repaired_on_resume(tmp_path):
    trainer = Trainer(tiny(tmp_path, "train.epochs=1")).prepare()
    assert trainer.run() == "completed"
    n = len(read_events(trainer.events_path))
    with open(trainer.events_path, "a") as fh:
        fh.write('{"type":"batch","epoch":0,"ba')  # a crash in the middle of a write
    assert len(read_events(trainer.events_path)) == n

    with pytest.raises(UserError, match="already trained"):
        Trainer(None, resume=trainer.run_dir).prepare()
    from battui.engine.runs import resume_config

    resumed = Trainer(resume_config(trainer.run_dir, ["train.epochs=2"]), resume=trainer.run_dir).prepare()
    assert resumed.run() == "completed"
    lines = trainer.events_path.read_text().splitlines()
    assert all(json.loads(line)["type"] for line in lines)  # every line whole again
    events = read_events(trainer.events_path)
    assert events[-1]["status"] == "completed" and events[-1]["epoch"] == 2


def test_bad_input_raises_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Trainer(tiny(tmp_path, "train.init_from=nowhere.pt")).prepare()
    with pytest.raises(UserError, match="train.schedule"):
        Trainer(tiny(tmp_path, "train.schedule=sometimes")).prepare()
    assert not (tmp_path / "runs").exists()


def test_init_from_and_method_state_frl(tmp_path):
    base = Trainer(tiny(tmp_path, "train.epochs=1")).prepare()
    assert base.run() == "completed"
    source = base.checkpoint_dir / "best.pt"
    frl = Trainer(tiny(tmp_path, "method.name=frl", "train.epochs=1", f"train.init_from={source}",
                       "method.val_steps=2")).prepare()
    before = {k: v.clone() for k, v in frl.model.state_dict().items()}
    want = load_checkpoint(source)["model"]
    assert all(torch.equal(before[k].cpu(), want[k]) for k in want)
    assert frl.run() == "completed"
    evals = [e for e in read_events(frl.events_path) if e["type"] == "eval" and e["split"] == "val"]
    assert "w0_max" in evals[0]["method"]
    state = load_checkpoint(frl.checkpoint_dir / "last.pt")["method_state"]
    assert set(state) == {"lambda0", "lambda1", "lambda2"}


def test_epoch_schedule():
    cfg = load_config("synthetic-tiny", ["train.epochs=8", "train.schedule=multistep", "train.gamma=0.1"])
    sched = EpochSchedule(cfg.train)
    assert [sched(e) for e in (0, 3, 4, 5, 6, 7)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = EpochSchedule(load_config("synthetic-tiny", ["train.epochs=4", "train.schedule=cosine"]).train)
    assert cos(0) == 1.0 and cos(2) == pytest.approx(0.5)


def test_headless_log_lines():
    out: list[str] = []

    class Sink:
        def write(self, text):
            out.append(text)

        def flush(self):
            pass

    log = HeadlessLog(stream=Sink())
    log({"type": "run_started", "run_dir": "runs/x", "method": "bat", "dataset": "digits", "model": "cnn",
         "device": "cpu", "epochs": 3, "batches_per_epoch": 9, "train_size": 100, "eval_size": 20,
         "classes": ["a", "b"], "world_size": 1, "start_epoch": 0})
    log({"type": "batch", "epoch": 0, "batch": 5, "batches": 9, "loss": 1.5, "parts": {"ce": 1.0, "kl": 0.5},
         "lr": 0.1, "images_per_s": 321.0, "elapsed": 75.0})
    log({"type": "eval", "split": "val", "epoch": 0, "n": 20, "attack": {"name": "pgd", "steps": 20},
         "avg": {"standard": 10.0, "robust": 30.0, "boundary": 20.0},
         "worst": {"standard": 20.0, "robust": 50.0, "boundary": 30.0}, "robust": [10.0, 50.0]})
    text = "".join(out)
    assert "bat on digits" in text and "epoch 1/3 batch 5/9 loss 1.5000 (ce 1.0000 kl 0.5000)" in text
    assert "[0:01:15]" in text and "robust avg 30.0% worst 50.0% (class b)" in text


def test_weight_averaging_method_ends_with_its_average(tmp_path):
    """CFA's FAWA: the run saves the average as fawa.pt and tests those weights; last.pt keeps the raw ones."""
    trainer = Trainer(tiny(tmp_path, "method.name=cfa", "method.num_classes=10", "method.fawa_threshold=0.0",
                           "train.epochs=2"))
    assert trainer.run() == "completed"
    averaged = trainer.method.averaged_state()
    assert averaged is not None
    fawa = load_checkpoint(trainer.checkpoint_dir / "fawa.pt")["model"]
    last = load_checkpoint(trainer.checkpoint_dir / "last.pt")["model"]
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(fawa[name], value.cpu())
    assert any(not torch.equal(fawa[k], last[k]) for k in fawa if fawa[k].is_floating_point())
    kinds = [e["kind"] for e in read_events(trainer.events_path) if e["type"] == "checkpoint"]
    assert "averaged" in kinds


def test_event_lines_give_an_incomplete_event_a_short_line():
    from battui.engine.headless import EventLines

    lines = EventLines()
    assert lines({"type": "checkpoint", "kind": "last", "path": "x", "epoch": 1}) is None
    assert lines({"type": "run_finished", "status": "completed"}) == "run completed: "
    assert lines({"type": "batch", "epoch": 0, "batch": 2}) == "batch: epoch 0 batch 2"
    assert lines({"type": "no_such_type"}) is None


def test_run_dir_names_every_file_and_statuses_serialise_as_plain_strings(tmp_path):
    import ast
    import json

    from battui.engine.events import EventWriter, RunFinished, RunStatus
    from battui.engine.rundir import RunDir

    run = RunDir(tmp_path)
    assert run.last == tmp_path / "checkpoints" / "last.pt" and run.events == tmp_path / "events.jsonl"
    assert RunDir.of(run) is run and RunDir.of(str(tmp_path)) == run
    with EventWriter(run.events) as writer:
        record = writer.write(RunFinished(status="interrupted", reason="q"))
    assert record["status"] is RunStatus.INTERRUPTED and f"{record['status']}" == "interrupted"
    text = run.events.read_text()
    assert '"status":"interrupted"' in text and json.loads(text)["status"] == "interrupted"
    # No other module spells a run directory's file names (docs/DESIGN.md section 5.1).
    files = {"last.pt", "best.pt", "fawa.pt", "events.jsonl", "train.log", "train.lock", "config.yaml", "env.json",
             "job.json", "worker.json"}
    root = Path(__file__).resolve().parents[1] / "battui"
    spelled = [f"{p}:{node.lineno}" for p in root.rglob("*.py") if p.name != "rundir.py"
               for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.Constant) and node.value in files]
    assert not spelled, spelled
