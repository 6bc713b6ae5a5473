"""Training throughput with the live dashboard vs headless, on the same preset, in one process.

    python benchmarks/dashboard_overhead.py                      # digits-cnn, 4 epochs, 4 rounds
    python benchmarks/dashboard_overhead.py --epochs 8 --rounds 3 --size 160x48

Each round trains the preset from scratch twice: once headless (a Trainer with
no listeners) and once driving the dashboard (`DashboardApp` with a `LiveFeed`,
under Textual's headless `run_test()` at the given terminal size, redrawing at
its normal rate). Reported: the best wall time of each, images/s, and the ratio
dashboard / headless throughput. Acceptance (issue 5): ratio >= 0.95.
Measured on 2 CPU cores (digits-cnn, 4 epochs, 80x24), quiet machine (load < 1), torch 2.15:
  headless 540 img/s, dashboard 532 img/s -> best-vs-best 0.985, median of 4 rounds 0.978.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from battui.config import load_config
from battui.engine.control import RunControl
from battui.engine.trainer import Trainer
from battui.tui.app import DashboardApp
from battui.tui.feeds import LiveFeed


def make_trainer(preset: str, epochs: int, root: Path, name: str) -> Trainer:
    cfg = load_config(preset, [f"train.epochs={epochs}", "run.device=cpu"])
    return Trainer(cfg, run_dir=root / name, control=RunControl()).prepare()


def images(trainer: Trainer) -> int:
    return trainer.parts.train_size * (trainer.cfg.train.epochs - trainer.start.epoch)


def headless(trainer: Trainer) -> float:
    start = time.perf_counter()
    status = trainer.run()
    assert status == "completed", status
    return time.perf_counter() - start


async def with_dashboard(trainer: Trainer, size: tuple[int, int]) -> tuple[float, int]:
    timed: dict[str, float] = {}
    run = trainer.run

    def run_timed() -> str:  # the same span headless() measures, taken on the training thread
        start = time.perf_counter()
        status = run()
        timed["run"] = time.perf_counter() - start
        return status

    trainer.run = run_timed
    app = DashboardApp(LiveFeed(trainer, trainer.control))
    async with app.run_test(size=size) as pilot:
        while app.feed.result is None:  # the training worker runs; the app redraws at its own pace
            await pilot.pause(0.2)
        await pilot.pause(0.3)  # let the last events reach the screen
        assert app.feed.result == "completed", app.feed.result
        return timed["run"], app.state.events_seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="digits-cnn")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--size", default="80x24", help="terminal size WxH for the dashboard")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    print(f"# {args.preset}, {args.epochs} epochs, {args.rounds} rounds, dashboard at {args.size}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    best_h, best_d, n_images, events = float("inf"), float("inf"), 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ratios = []
        for r in range(args.rounds):
            times = {}
            # Alternate which goes first so drift in machine load does not favour one side.
            for kind in (("headless", "dashboard") if r % 2 == 0 else ("dashboard", "headless")):
                trainer = make_trainer(args.preset, args.epochs, root, f"{kind}-{r}")
                n_images = images(trainer)
                if kind == "headless":
                    times[kind] = headless(trainer)
                else:
                    times[kind], events = asyncio.run(with_dashboard(trainer, size))
            t_h, t_d = times["headless"], times["dashboard"]
            best_h, best_d = min(best_h, t_h), min(best_d, t_d)
            ratios.append(t_h / t_d)
            print(f"round {r + 1}: headless {t_h:6.2f}s  dashboard {t_d:6.2f}s  ratio {t_h / t_d:.3f}  "
                  f"({events} events shown)")
    print(f"headless:  {best_h:6.2f}s  {n_images / best_h:8.0f} img/s")
    print(f"dashboard: {best_d:6.2f}s  {n_images / best_d:8.0f} img/s")
    print(f"throughput ratio dashboard/headless: best-vs-best {best_h / best_d:.3f}, "
          f"median of rounds {statistics.median(ratios):.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
