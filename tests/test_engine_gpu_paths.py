"""The CUDA paths checked on the CPU (issue 23): bounded batch shapes of the early-stopping
attacks, torch.compile without recompiles, amp=auto's precision, method validation in fp32,
--detach before the GPU is touched."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from battui.attacks import pgd
from battui.config import load_config
from battui.engine.trainer import Trainer
from battui.methods import bat as bat_module


def tiny(tmp_path: Path, *overrides: str):
    return load_config("synthetic-tiny", [f"run.root={tmp_path / 'runs'}", *overrides])


def epoch_batch_sizes(tmp_path: Path, method: str) -> tuple[set[int], int]:
    """The distinct batch sizes the model sees in one training epoch of batch 128, and the images trained."""
    trainer = Trainer(tiny(tmp_path, f"method.name={method}", "data.per_class=50", "train.batch_size=128",
                           f"run.name={method}-{len(list(tmp_path.glob('runs/*')))}")).prepare()
    sizes: set[int] = set()
    hook = trainer.model.register_forward_pre_hook(lambda _m, inputs: sizes.add(inputs[0].shape[0]))
    try:
        assert trainer.train_epoch(0) is None
    finally:
        hook.remove()
        trainer.lock.release()
    return sizes, trainer.train_size


@pytest.mark.parametrize("method", ["bat", "fat"])
def test_early_stopping_attacks_show_a_bounded_set_of_batch_sizes(tmp_path, monkeypatch, method):
    sizes, n = epoch_batch_sizes(tmp_path, method)
    last = n % 128
    assert last and last % 16  # the epoch ends with a shorter batch, not a multiple of the bucket
    # the buckets of 128 (multiples of 16) and the last batch itself: at most 9 sizes
    assert sizes <= set(range(16, 129, 16)) | {last}, sorted(sizes)
    assert len(sizes) <= 9
    if method == "bat":  # exact compaction, as before the buckets: many more sizes on the same epoch
        monkeypatch.setattr(bat_module, "pgd", functools.partial(pgd, bucket=1))
        exact, _ = epoch_batch_sizes(tmp_path, method)
        assert len(exact) > len(sizes), (sorted(exact), sorted(sizes))
        assert not exact <= set(range(16, 129, 16)) | {last}


@pytest.mark.parametrize("method", ["pgd-at", "trades", "bat"])
def test_compiled_model_does_not_recompile_after_the_first_epoch(tmp_path, monkeypatch, one_thread, method):
    """Dynamo's count of compiled frames (first compiles and recompiles alike) after epoch 1's
    checkpoint and at the end of the run (epoch 2, final test eval): equal. The eager backend
    traces and guards exactly as inductor does, without the code generation."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from battui.engine import setup

    monkeypatch.setattr(setup, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    counters.clear()
    after_epoch: list[int] = []

    def listen(event: dict) -> None:
        if event["type"] == "checkpoint" and event["kind"] == "last":
            after_epoch.append(counters["frames"]["ok"])

    cfg = tiny(tmp_path, f"method.name={method}", "train.compile=true", "train.epochs=2", "data.per_class=6",
               "data.val_per_class=2", "attack.steps=2", "eval.steps=2", "train.batch_size=16")
    try:
        trainer = Trainer(cfg, listeners=[listen]).prepare()
        assert trainer.run_model is not trainer.model  # compiled
        assert trainer.run().value == "completed"
        assert after_epoch[0] > 0 and after_epoch == [after_epoch[0]] * 2, after_epoch
        assert counters["frames"]["ok"] == after_epoch[0]  # the final test evaluation compiled nothing either
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("amp, capability, expected", [
    ("auto", None, ("fp32", "train.amp=auto, not a CUDA device")),
    ("auto", (9, 0), ("bf16", "train.amp=auto, native bf16 (capability 9.0)")),
    ("auto", (7, 0), ("fp32", "train.amp=auto, no native bf16 (capability 7.0 < 8.0)")),
    ("false", (9, 0), ("fp32", "train.amp=false")),
    ("true", None, ("bf16", "train.amp=true")),
])
def test_resolved_precision_says_why(monkeypatch, amp, capability, expected):
    import torch

    from battui.engine.setup import SpeedSettings, resolve_precision

    device = torch.device("cpu" if capability is None else "cuda:0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _device=None: capability)
    assert resolve_precision(amp, device) == expected
    speed = SpeedSettings(precision=expected[0], precision_reason=expected[1])
    assert speed.precision_note == f"{expected[0]} ({expected[1]})"


def test_method_validation_runs_in_fp32_and_the_precision_is_shown(tmp_path, monkeypatch, one_thread):
    """CFA with bf16 training (train.amp=true on the CPU): its loss runs under autocast, its
    validation attacks (start_training, end_epoch) without; env.json, the headless header line and
    the dashboard name the training precision and why."""
    import torch

    from battui.engine.events import read_events
    from battui.engine.headless import EventLines
    from battui.methods.cfa import CFA
    from battui.tui.app import DashboardApp
    from battui.tui.feeds import ReplayFeed
    from tests.support.screen import screen_text, sync

    seen: dict[str, set[bool]] = {"loss": set(), "start_training": set(), "end_epoch": set()}
    for name in seen:
        original = getattr(CFA, name)

        def observed(self, *args, _name=name, _original=original, **kwargs):
            seen[_name].add(torch.is_autocast_enabled("cpu"))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(CFA, name, observed)
    trainer = Trainer(tiny(tmp_path, "method.name=cfa", "train.amp=true", "train.epochs=1", "data.per_class=10",
                           "data.val_per_class=4", "attack.steps=2", "eval.steps=2")).prepare()
    assert trainer.run().value == "completed"
    assert seen == {"loss": {True}, "start_training": {False}, "end_epoch": {False}}

    note = "bf16 (train.amp=true)"
    env = json.loads((trainer.run_dir / "env.json").read_text())
    assert (env["numerics"]["precision"], env["numerics"]["precision_reason"]) == ("bf16", "train.amp=true")
    events = read_events(trainer.events_path)
    header = EventLines()(events[0])
    assert header.startswith(f"run {trainer.run_dir}: cfa on synthetic (cnn), device cpu, {note}; "), header

    @sync
    async def dashboard() -> str:
        app = DashboardApp(ReplayFeed(events))
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause(0.2)
            return screen_text(app)

    assert f"cfa · synthetic · cnn · cpu · {note}" in dashboard()


def test_detach_builds_nothing_on_the_device_before_handing_over(tmp_path, monkeypatch, capsys):
    """`train --detach` in a process whose device is `meta` (standing in for a GPU): the run
    directory is written for that device, while the data, model and counters stay on the CPU
    until the background process builds them. A plain prepare() on the same device puts them there."""
    import torch

    from battui.cli import train as train_cli
    from battui.engine import trainer as trainer_module
    from tests.support.cli import run_cli

    monkeypatch.setattr(trainer_module, "resolve_device", lambda spec: (torch.device("meta"), "device meta"))
    handed: list[Trainer] = []
    monkeypatch.setattr(train_cli, "_detach", lambda trainer: handed.append(trainer) or 0)

    def devices(trainer: Trainer) -> set[str]:
        tensors = [*trainer.model.parameters(), *trainer.model.buffers(), trainer.train_batches.images,
                   trainer.val_batches.images, trainer.test_batches.images]
        return {t.device.type for t in tensors}

    code, out, err = run_cli(capsys, "train", "--detach", "--preset", "synthetic-tiny", "--set",
                             f"run.root={tmp_path / 'runs'}", "--run-name", "handed")
    assert code == 0, err
    (trainer,) = handed
    trainer.lock.release()
    assert devices(trainer) == {"cpu"}
    env = json.loads((tmp_path / "runs" / "handed" / "env.json").read_text())
    assert env["device"] == "meta" and env["numerics"]["device"] == "meta"
    assert sorted(p.name for p in (tmp_path / "runs" / "handed").iterdir()) == ["config.yaml", "env.json", "train.lock"]

    staying = Trainer(tiny(tmp_path, "run.name=staying")).prepare()
    staying.lock.release()
    assert devices(staying) == {"meta"}
