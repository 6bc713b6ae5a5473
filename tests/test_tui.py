"""Dashboard tests: RunState folding, panels from a generated stream, keys, live quit, watch mode.

The app is driven with `App.run_test()` and a Pilot; screens are read back as text
(`tests.support.screen.screen_text`) so assertions are about what a person would see.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from battui.engine.control import RunControl
from battui.engine.metrics import kl_to_uniform, mean_steps, target_distribution
from battui.engine.runfiles import RunFiles
from battui.errors import UserError
from battui.tui.app import DashboardApp
from battui.tui.feeds import LiveFeed, ReplayFeed, WatchFeed
from battui.tui.launch import events_file
from battui.tui.state import RunState
from battui.tui.widgets.keys import KeysScreen
from tests.support.events import CIFAR10, cifar100_classes, generate_events, write_events
from tests.support.screen import folded, screen_text, sync

# ---- RunState ------------------------------------------------------------------------------


def test_state_folds_progress_eta_and_deltas():
    events = generate_events(epochs=3, total_epochs=5, batches=12, finished=None)
    state = folded(events)
    assert state.classes == CIFAR10 and state.status == "running"
    assert state.epoch == 2 and state.batch == 12
    assert state.progress == pytest.approx(36 / 60)
    last_batch = [e for e in events if e["type"] == "batch"][-1]
    assert state.eta == pytest.approx(last_batch["elapsed"] * (1 - 0.6) / 0.6)
    evals = [e for e in events if e["type"] == "eval"]
    assert state.latest_eval is evals[-1] and state.previous_eval is evals[-2]
    assert state.eval_delta("robust")[3] == pytest.approx(evals[-1]["robust"][3] - evals[-2]["robust"][3])
    attack = [e for e in events if e["type"] == "train_attack"][-1]
    assert state.mean_steps() == mean_steps(attack["step_hist"])
    dist, kl, source = state.targets("eval")
    assert source == "eval" and kl == pytest.approx(kl_to_uniform(target_distribution(evals[-1]["adv_confusion"])))
    assert len(state.loss_history) == len([e for e in events if e["type"] == "batch"])


def test_state_progress_and_eta_count_the_whole_run_after_a_resume():
    events = generate_events(epochs=5, total_epochs=5, batches=12, finished=None)
    start = dict(events[0], start_epoch=2, start_batch=6)  # resumed mid-epoch 3: elapsed restarts there
    later = [e for e in events if e["type"] == "batch" and (2, 6) < (e["epoch"], e["batch"]) <= (3, 9)]
    state = folded([start] + [dict(e, elapsed=e["elapsed"] - 7.0) for e in later])
    last = later[-1]
    done, since = last["epoch"] * 12 + last["batch"], last["epoch"] * 12 + last["batch"] - 30
    assert state.progress == pytest.approx(done / 60) == pytest.approx(45 / 60) and state.epoch == 3
    assert state.eta == pytest.approx((last["elapsed"] - 7.0) / since * (60 - done))
    fresh = folded([start])
    assert fresh.progress == pytest.approx(30 / 60) and fresh.eta is None  # not 0% after a resume


def test_state_finished_and_test_split_deltas():
    events = generate_events(epochs=2, finished="interrupted")
    test_eval = dict(events[-3], split="test")  # a final test eval is not compared with val
    state = folded(events[:-1] + [test_eval, events[-1]])
    assert state.status == "interrupted" and state.eta is None
    assert state.previous_eval is None and state.eval_delta("robust")[0] is None


# ---- screens from a replayed stream ----------------------------------------------------------


@sync
async def test_narrow_screen_shows_errors_and_tabs_through_panels():
    events = generate_events(epochs=3, total_epochs=5, finished=None)
    app = DashboardApp(ReplayFeed(events))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        text = screen_text(app)
        ev = [e for e in events if e["type"] == "eval"][-1]
        worst = max(range(10), key=lambda c: ev["robust"][c])
        assert "epoch 3/5" in text and "60%" in text and "ETA 0:06" in text
        assert all(name in text for name in CIFAR10)
        assert f"▲{CIFAR10[worst]}" in text and f"{ev['robust'][worst]:6.1f}" in text
        assert f"{ev['avg']['robust']:.1f}" in text
        delta = ev["robust"][worst] - [e for e in events if e["type"] == "eval"][-2]["robust"][worst]
        assert f"{delta:+.1f}" in text
        await pilot.press("2")
        text = screen_text(app)
        assert "steps to flip" in text and f"{RunState.mean_steps(app.state)[0]:5.2f}" in text
        await pilot.press("tab")
        text = screen_text(app)
        assert f"KL(q‖U) = {app.state.targets('eval')[1]:.3f}" in text
        await pilot.press("tab")
        assert "rob worst %" in screen_text(app)
        await pilot.press("tab")
        assert app.active == 0 and "standard + boundary" in screen_text(app)


@sync
async def test_wide_screen_shows_all_panels_at_once():
    app = DashboardApp(ReplayFeed(generate_events(epochs=2, finished="completed")))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.3)
        text = screen_text(app)
        for marker in ("standard + boundary", "steps to flip", "KL(q‖U)", "rob avg %", "✔ completed"):
            assert marker in text


@sync
async def test_keys_pick_sort_help_and_watch_mode_has_no_pause():
    app = DashboardApp(ReplayFeed(generate_events(epochs=2)))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.2)
        await pilot.press("j", "j")
        assert app.view.selected == 2
        assert "class 2 bird" in screen_text(app)
        await pilot.press("k")
        assert app.view.selected == 1
        await pilot.press("o")
        assert app.view.sort == "robust"
        await pilot.press("question_mark")
        assert isinstance(app.screen, KeysScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, KeysScreen)
        assert app.check_action("pause", ()) is False and app.check_action("save", ()) is False
        await pilot.press("q")
    assert app.return_code == 0


@sync
async def test_hundred_classes_start_worst_first_and_scroll_to_the_pick():
    events = generate_events(classes=cifar100_classes(), epochs=2, finished=None)
    app = DashboardApp(ReplayFeed(events))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        ev = [e for e in events if e["type"] == "eval"][-1]
        worst = max(range(100), key=lambda c: (ev["robust"][c], -c))
        assert app.view.sort == "robust" and app.view.selected == worst
        text = screen_text(app)
        assert f"▸▲{cifar100_classes()[worst]}" in text, text
        assert text.count("\n") == 23  # one screen: a scrolling list, not 100 bars
        await pilot.press(*["j"] * 12)
        await pilot.pause(0.2)
        picked = cifar100_classes()[app.view.selected]
        assert f"▸ {picked}" in screen_text(app)
        await pilot.press("3")
        assert "classes most involved" in screen_text(app)


# ---- live mode with a fake trainer that keeps the Trainer contract ---------------------------


class FakeTrainer:
    """Loops over batches, emits events to listeners, honours control like the real loop."""

    def __init__(self, run_dir: Path, control, batches: int = 10_000):
        self.run_dir = run_dir
        self.events_path = run_dir / "events.jsonl"
        self.control = control
        self.listeners: list = []
        self.batches = batches
        self.saved: list[str] = []
        self.files = RunFiles(run_dir)  # the lock a detach hands over (none here)

    def emit(self, event: dict) -> None:
        for listener in self.listeners:
            listener(event)

    def save(self, kind: str) -> None:
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "checkpoints" / "last.pt").write_bytes(b"weights")
        self.saved.append(kind)
        self.emit({"type": "checkpoint", "time": 0.0, "epoch": 0, "path": "checkpoints/last.pt", "kind": kind})

    def run(self) -> str:
        self.emit(generate_events(epochs=1)[0])
        for b in range(1, self.batches + 1):
            while self.control.pause.is_set() and not self.control.stop.is_set():
                time.sleep(0.01)
            time.sleep(0.002)
            self.emit({"type": "batch", "time": 0.0, "epoch": 0, "batch": b, "batches": self.batches, "step": b,
                       "loss": 1.0, "parts": {}, "lr": 0.1, "images_per_s": 100.0, "elapsed": b * 0.002})
            if self.control.save_now.is_set():
                self.control.save_now.clear()
                self.save("manual")
            if self.control.stop.is_set():
                self.save("last")
                self.emit({"type": "run_finished", "time": 0.0, "status": "interrupted",
                           "reason": self.control.stop_reason, "epoch": 0})
                return "interrupted"
        return "completed"


@sync
async def test_quit_while_training_stops_the_worker_and_leaves_a_checkpoint(tmp_path):
    control = RunControl()
    trainer = FakeTrainer(tmp_path, control)
    app = DashboardApp(LiveFeed(trainer, control))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        assert app.state.step > 0 and app.state.status == "running"
        await pilot.press("p")
        assert control.pause.is_set() and app.status()[0] == "paused"
        await pilot.press("s")
        await pilot.press("p")
        assert not control.pause.is_set()
        await pilot.pause(0.2)
        assert "manual" in trainer.saved
        await pilot.press("q")  # asks first
        await pilot.pause(0.2)
        assert not control.stop.is_set() and "Stop training?" in screen_text(app)
        await pilot.press("y")
        await pilot.pause(0.5)
    assert control.stop.is_set() and control.stop_reason == "stopped from the dashboard (q)"
    assert trainer.saved[-1] == "last" and (tmp_path / "checkpoints" / "last.pt").is_file()
    assert app.feed.result == "interrupted" and app.return_code == 0


@sync
async def test_real_trainer_quit_writes_last_checkpoint(tmp_path):
    from battui.config import load_config
    from battui.engine.control import RunControl
    from battui.engine.trainer import Trainer

    cfg = load_config("synthetic-tiny", ["train.epochs=50", "run.device=cpu"])
    control = RunControl()
    trainer = Trainer(cfg, run_dir=tmp_path / "run", control=control)
    app = DashboardApp(LiveFeed(trainer, control))
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(100):
            await pilot.pause(0.1)
            if app.state.step >= 3:
                break
        assert app.state.classes and app.state.step >= 3
        await pilot.press("q", "y")
        for _ in range(100):
            await pilot.pause(0.1)
            if app.feed.result is not None:
                break
    assert app.feed.result == "interrupted"
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    finished = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()][-1]
    assert finished["type"] == "run_finished" and finished["status"] == "interrupted"


# ---- watch mode ------------------------------------------------------------------------------


@sync
async def test_watch_follows_appended_events_and_notices_a_dead_writer(tmp_path):
    events = generate_events(epochs=2, total_epochs=4, finished=None)
    path = write_events(tmp_path / "events.jsonl", events[:5])
    (tmp_path / "train.lock").write_text("999999999\n")  # left by a killed trainer: no such process
    app = DashboardApp(WatchFeed(path))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.5)
        assert app.state.events_seen == 5
        with open(path, "a") as fh:
            for event in events[5:]:
                fh.write(json.dumps(event) + "\n")
            fh.write('{"type": "batch", "epo')  # half-written line: held back
        await pilot.pause(0.8)
        assert app.state.events_seen == len(events)
        assert app.state.latest_eval is not None
        await pilot.pause(1.2)
        assert app.status()[0] == "stale" and "process 999999999 is gone" in screen_text(app)
        await pilot.press("q")
    assert app.return_code == 0


def test_events_file_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no run directory"):
        events_file(tmp_path / "missing")
    with pytest.raises(UserError, match="no events.jsonl"):
        events_file(tmp_path)
    write_events(tmp_path / "events.jsonl", generate_events(epochs=1))
    assert events_file(tmp_path) == tmp_path / "events.jsonl"


def test_watch_cli_headless_log_and_bad_dir(tmp_path, capsys):
    from battui.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["watch", str(tmp_path / "missing")])
    assert exc.value.code == 2 and "no run directory" in capsys.readouterr().err
    write_events(tmp_path / "events.jsonl", generate_events(epochs=1, finished="completed"))
    try:
        main(["watch", str(tmp_path), "--headless"])
    except SystemExit as done:
        assert done.code in (0, None)
    out = capsys.readouterr().out
    assert "eval" in out and "completed" in out


@sync
async def test_help_lists_every_key_and_titles_follow_layout_switching_resizes():
    from battui.tui.widgets.keys import KEYS_COMMON, KEYS_LIVE, KEYS_WATCH

    app = DashboardApp(ReplayFeed(generate_events(epochs=2, finished=None)))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        text = screen_text(app)
        for key, what in KEYS_WATCH + KEYS_COMMON:
            assert f"{key} " in text and what in text, (key, what, text)
        await pilot.press("escape")
        for size, wide in (((160, 48), True), ((80, 24), False), ((130, 40), True)):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.3)
            titles = [panel.border_title for panel in app.panels]
            if wide:
                assert titles == ["1 class errors", "2 attack steps", "3 targets", "4 curves"], size
            else:
                assert all("│" in title for title in titles), size
    assert {key for key, _ in KEYS_LIVE} == {"q", "d", "p", "s", "x", "ctrl+c"}
    assert {b.key for b in DashboardApp.BINDINGS} >= {"q", "d", "p", "s", "x", "ctrl+c", "question_mark"}


@sync
async def test_no_color_drops_colours_but_keeps_emphasis_and_tells_bar_parts_apart(monkeypatch):
    from rich.segment import Segment
    from rich.style import Style
    from textual.filter import Monochrome, NoColor

    monkeypatch.setenv("NO_COLOR", "1")
    app = DashboardApp(ReplayFeed(generate_events(epochs=2, finished=None)))
    filters = app.get_line_filters()
    assert any(isinstance(f, NoColor) for f in filters)
    assert not any(isinstance(f, Monochrome) for f in filters)  # Textual's default: greys on greys
    nocolor = next(f for f in filters if isinstance(f, NoColor))
    (seg,) = nocolor.apply([Segment("x", Style(color="grey35", bgcolor="grey11", bold=True, reverse=True))],
                           None)
    assert seg.style.color.is_default and seg.style.bgcolor.is_default  # the terminal's own colours
    assert seg.style.bold and seg.style.reverse
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.3)
        text = screen_text(app)
        assert "boundary ▒" in text and "█▒" in text  # standard part, then boundary part

