"""TensorBoard logs (`battui train --tensorboard`, `battui export tensorboard`) read back equal the events."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from battui.engine.metrics import kl_to_uniform, mean_steps, target_distribution
from battui.report.tensorboard import class_tag
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.events import CIFAR10, generate_events, write_events


def read_tb(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(s.step, s.value) for s in acc.Scalars(tag)]


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_against_events(acc: EventAccumulator, events: list[dict]) -> None:
    """Every number TensorBoard holds equals the event stream's (float32 precision)."""
    start = next(e for e in events if e["type"] == "run_started")
    per_epoch = start["batches_per_epoch"]
    classes = start["classes"]
    batches = [e for e in events if e["type"] == "batch"]
    assert scalars(acc, "loss/total") == [(e["step"], pytest.approx(e["loss"], rel=1e-6)) for e in batches]
    assert scalars(acc, "lr") == [(e["step"], pytest.approx(e["lr"], rel=1e-6)) for e in batches]
    assert scalars(acc, "throughput/images_per_s") == [(e["step"], pytest.approx(e["images_per_s"], rel=1e-6))
                                                       for e in batches]
    for part in batches[0]["parts"]:
        if part != "loss":
            assert [v for _, v in scalars(acc, f"loss/{part}")] == pytest.approx([e["parts"][part] for e in batches])
    evals = [e for e in events if e["type"] == "eval"]
    assert evals
    for split in {e["split"] for e in evals}:
        mine = [e for e in evals if e["split"] == split]
        steps = [(e["epoch"] + 1) * per_epoch for e in mine]
        for kind in ("standard", "boundary", "robust"):
            for agg in ("avg", "worst"):
                got = scalars(acc, f"{split}/{kind}_error/{agg}")
                assert got == [(s, pytest.approx(e[agg][kind], rel=1e-6, abs=1e-6)) for s, e in zip(steps, mine)]
            for c, name in enumerate(classes):
                got = [v for _, v in scalars(acc, f"{split}/{kind}_error/{class_tag(c, name)}")]
                assert got == pytest.approx([e[kind][c] for e in mine], rel=1e-6, abs=1e-6)
        assert [v for _, v in scalars(acc, f"{split}/target_kl")] == pytest.approx(
            [kl_to_uniform(target_distribution(e["adv_confusion"])) for e in mine], rel=1e-6, abs=1e-7)
        last = mine[-1]
        for c, name in enumerate(classes):
            if mean_steps(last["step_hist"])[c] is None:
                continue
            hist = acc.Histograms(f"{split}/steps_to_flip/{class_tag(c, name)}")[-1]
            assert hist.step == steps[-1]
            assert list(hist.histogram_value.bucket) == last["step_hist"][c][:-1]  # never-flipped left out
            assert hist.histogram_value.num == sum(last["step_hist"][c][:-1])
        image = acc.Images(f"{split}/adv_confusion")
        assert [i.step for i in image] == steps and image[-1].width > 200 and image[-1].height > 200
    finals = [e for e in events if e["type"] == "train_attack" and not e["partial"]]
    assert [i.step for i in acc.Images("train_attack/target_confusion")] == [(e["epoch"] + 1) * per_epoch
                                                                              for e in finals]
    for c, name in enumerate(classes):
        want = [mean_steps(e["step_hist"])[c] for e in finals]
        if None not in want:
            got = [v for _, v in scalars(acc, f"train_attack/mean_steps/{class_tag(c, name)}")]
            assert got == pytest.approx(want, rel=1e-6)


def test_export_equals_the_event_stream(tmp_path, capsys) -> None:
    events = generate_events(epochs=2, method="trades")
    write_events(tmp_path / "run" / "events.jsonl", events)
    code, out, err = run_cli(capsys, "export", "tensorboard", str(tmp_path / "run"))
    assert code == 0, err
    assert f"to {tmp_path / 'run' / 'tensorboard'}" in out
    acc = read_tb(tmp_path / "run" / "tensorboard")
    check_against_events(acc, events)
    assert class_tag(3, CIFAR10[3]) == "03_cat" and class_tag(0, "T-shirt/top") == "00_T-shirt_top"

    # Exporting again would duplicate every point: refused unless --force, which replaces the files.
    files = sorted((tmp_path / "run" / "tensorboard").iterdir())
    code, _, err = run_cli(capsys, "export", "tensorboard", str(tmp_path / "run"))
    assert_one_line_error(code, err, "already holds TensorBoard files", "--force")
    assert sorted((tmp_path / "run" / "tensorboard").iterdir()) == files
    code, _, err = run_cli(capsys, "export", "tensorboard", str(tmp_path / "run"), "--force")
    assert code == 0, err
    assert len(list((tmp_path / "run" / "tensorboard").iterdir())) == 1
    check_against_events(read_tb(tmp_path / "run" / "tensorboard"), events)

    code, _, err = run_cli(capsys, "export", "tensorboard", str(tmp_path))
    assert_one_line_error(code, err, "no events.jsonl")


def test_missing_tensorboard_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch) -> None:
    write_events(tmp_path / "run" / "events.jsonl", generate_events(epochs=1))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    code, _, err = run_cli(capsys, "export", "tensorboard", str(tmp_path / "run"))
    assert_one_line_error(code, err, "pip install 'battui[tensorboard]'")
    assert not (tmp_path / "run" / "tensorboard").exists()
    code, _, err = run_cli(capsys, "train", "--headless", "--preset", "synthetic-tiny", "--tensorboard",
                           "--set", f"run.root={tmp_path / 'runs'}")
    assert_one_line_error(code, err, "pip install 'battui[tensorboard]'")
    assert not (tmp_path / "runs").exists()


def test_train_tensorboard_live_equals_events_and_export(tmp_path, capsys) -> None:
    code, out, err = run_cli(capsys, "train", "--headless", "--preset", "synthetic-tiny", "--tensorboard",
                             "--epochs", "1", "--set", f"run.root={tmp_path / 'runs'}", "--set", "method.name=trades")
    assert code == 0, err
    run = next((tmp_path / "runs").iterdir())
    events = load(run / "events.jsonl")
    assert (run / "tensorboard").is_dir()
    assert "tensorboard: true" in (run / "config.yaml").read_text()  # --tensorboard is run.tensorboard=true
    live = read_tb(run / "tensorboard")
    check_against_events(live, events)
    assert {"val", "test"} <= {tag.split("/")[0] for tag in live.Tags()["scalars"]}

    # export of the finished run: the same records (one mechanism)
    code, _, err = run_cli(capsys, "export", "tensorboard", str(run), "-o", str(tmp_path / "again"))
    assert code == 0, err
    again = read_tb(tmp_path / "again")
    assert again.Tags()["scalars"] == live.Tags()["scalars"]
    for tag in live.Tags()["scalars"]:
        assert scalars(again, tag) == scalars(live, tag)
