"""Host-device sync points per training step of every method, through the real engine.

    python benchmarks/sync_census.py                             # synthetic-tiny, every method, CPU
    python benchmarks/sync_census.py --preset digits-cnn --method bat --device cuda

Runs one epoch of `train_epoch` under `census_per_batch` (battui.engine.syncs) with the
events pushed to the epoch's end, starts a new census segment at every batch, and
prints per method the sync points of each step (the last one writes the epoch's
batch event) and their kinds. On a CPU the same aten operations run as on CUDA,
so the counts hold there too, except host<->device copies, which only a GPU run shows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter

from battui.config import load_config
from battui.engine.syncs import census_per_batch
from battui.engine.trainer import Trainer
from battui.methods import METHODS


def step_census(preset: str, method: str, device: str, extra: list[str], evaluation: bool = False) -> list[Counter]:
    """One Counter of sync kinds per training step of epoch 0 (or per batch of the
    per-epoch PGD evaluation of the validation split, with `evaluation`)."""
    with tempfile.TemporaryDirectory() as root:
        cfg = load_config(preset, [f"run.root={root}", f"method.name={method}", f"run.device={device}",
                                   "train.log_every=1000000", "train.attack_stats_every=1000000", *extra])
        trainer = Trainer(cfg).prepare()
        with census_per_batch() as census:
            if evaluation:
                trainer.evaluate(trainer.parts.val_batches, trainer.parts.val_name, 0)
            else:
                trainer.train_epoch(0)
    return census.segments[1:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="synthetic-tiny")
    p.add_argument("--method", action="append", default=None, help="repeatable (default: every method)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    steps = load_config(args.preset).attack.steps
    print(f"preset {args.preset}, attack steps {steps}; sync points per training step (last: writes an event)")
    for method in args.method or METHODS:
        segments = step_census(args.preset, method, args.device, args.set)
        kinds = dict(sum(segments[:-1], start=Counter()))
        print(f"  {method:<8} {[sum(s.values()) for s in segments]}  {kinds}")
    segments = step_census(args.preset, "pgd-at", args.device, [*args.set, "eval.batch_size=16"], evaluation=True)
    kinds = dict(sum(segments[:-1], start=Counter()))
    print(f"PGD-{load_config(args.preset).eval.steps} evaluation, per batch of 16 (last: sums and reads the counts): "
          f"{[sum(s.values()) for s in segments]}  {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
