"""Epoch time of a preset and method on CIFAR-shaped synthetic data (50,000 3x32x32 images).

    python benchmarks/epoch_time.py                                   # cifar10-resnet18, pgd-at, 2 epochs
    python benchmarks/epoch_time.py --preset cifar10-wrn28-10 --method bat --epochs 3
    python benchmarks/epoch_time.py --set train.compile=true --set train.amp=false

It trains through the real engine (`Trainer`: the method's attack and loss, bf16
autocast and channels_last as configured, data held on the device, per-epoch
validation PGD) on generated images, so no dataset is needed, and prints per
epoch the training time, images/s and the validation time, plus the device and
the settings. The first epoch includes warm-up (cuDNN autotuning, compilation);
read the later ones. The run directory goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time

import torch

from battui.config import load_config
from battui.engine.trainer import Trainer

TRAIN_IMAGES = 50_000
CLASSES = 10
HELD_OUT = 102  # per class, the synthetic "test" split used for validation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cifar10-resnet18")
    parser.add_argument("--method", default=None, help="override the preset's method")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=TRAIN_IMAGES, help="training images (smoke tests: fewer)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config override")
    args = parser.parse_args(argv)

    per_class = args.images // CLASSES + HELD_OUT
    overrides = [
        "data.name=synthetic", f"data.per_class={per_class}", "data.image_size=32", "data.channels=3",
        "data.val_per_class=0", f"data.test_fraction={HELD_OUT / per_class}", "data.classes=null",
        f"train.epochs={args.epochs}", f"run.device={args.device}", "train.log_every=1000000",
        "train.attack_stats_every=1000000",
    ]
    if args.method:
        overrides.append(f"method.name={args.method}")
    marks: list[tuple[str, int, float]] = []

    def listener(event: dict) -> None:
        now = time.perf_counter()
        kind = event["type"]
        if kind == "batch" and event["batch"] == event["batches"]:
            marks.append(("trained", event["epoch"], now))
        elif kind in ("run_started", "eval") or (kind == "checkpoint" and event["kind"] == "last"):
            marks.append((kind, event.get("epoch", -1), now))

    with tempfile.TemporaryDirectory() as root:
        cfg = load_config(args.preset, [*overrides, f"run.root={root}", *args.set])
        trainer = Trainer(cfg, listeners=[listener]).prepare()
        dev = trainer.device
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"
        s = trainer.speed
        print(f"{cfg.preset} / {cfg.method.name} / {cfg.model.name} on {len(trainer.train_batches.labels)} "
              f"synthetic 3x32x32 images, batch {cfg.train.batch_size}, attack {cfg.attack.steps} steps")
        print(f"device {dev} ({name}), torch {torch.__version__}, amp(bf16)={s.amp} "
              f"channels_last={s.channels_last} compile={s.compile}, {torch.get_num_threads()} CPU threads")
        status = trainer.run()
    start = next(t for k, _, t in marks if k == "run_started")
    for epoch in range(args.epochs):
        trained = [t for k, e, t in marks if k == "trained" and e == epoch]
        evaled = [t for k, e, t in marks if k == "eval" and e == epoch]
        if not trained:
            break
        train_s = trained[0] - start
        eval_s = evaled[0] - trained[0] if evaled else 0.0
        print(f"epoch {epoch + 1}: train {train_s:8.1f} s  {len(trainer.train_batches.labels) / train_s:8.0f} img/s   "
              f"val eval ({cfg.eval.steps}-step PGD, {trainer.val_size} images) {eval_s:6.1f} s"
              + ("   (includes warm-up)" if epoch == 0 else ""))
        later = [t for k, e, t in marks if k == "checkpoint" and e == epoch + 1]
        start = later[0] if later else trained[0]
    print(f"run {status}")
    return 0 if status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
