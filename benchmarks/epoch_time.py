"""battui's training step and epoch against a tight loop, in one process, on the same device and batches.

    python benchmarks/epoch_time.py                                    # cifar10-resnet18, pgd-at, on a GPU
    python benchmarks/epoch_time.py --method bat --bat-vs-trades       # BAT's step vs TRADES' too
    python benchmarks/epoch_time.py --preset digits-cnn --device cpu --repeats 5   # CPU: engine overhead

Three loops train the same model from the same weights over the same batches
(epoch 0 of the run's `Batches`, crop/flip included):

- tight: a hand-written PGD-10 adversarial training loop (CE, uniform start) with
  the run's speed settings (bf16 autocast and channels_last on CUDA), the batches
  already on the device, no statistics and no host reads;
- bare: the same loop calling battui's method (`method.loss`, attack included);
- battui: the engine's `train_epoch` (batches made on the fly, the attack's
  per-class counts, the non-finite check, events every `train.log_every`).

battui/tight is the whole price of battui on a GPU (target: training throughput
>= 0.9x the tight loop, i.e. ratio <= 1.11); battui/bare is the engine's overhead
over the method itself (target <= 1.10x). Then the other phases of an epoch are
timed once (validation: the method's validation and the per-epoch PGD evaluation;
checkpoint: `last.pt`), and a sync census counts host-device sync points per step
of each loop (battui.engine.syncs). Times come from CUDA events on a GPU and from
`perf_counter` after `synchronize` on a CPU; with `--repeats N` the loops alternate
N times and the median is printed. CIFAR-shaped presets train on generated images
(3x32x32, `--images` of them), so no dataset is needed; digits and synthetic
presets use their own data.
"""

from __future__ import annotations

import argparse
import copy
import platform
import resource
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from battui.config import load_config
from battui.engine.syncs import SyncCensus
from battui.engine.trainer import Trainer
from battui.methods import method_from_config

CLASSES = 10
HELD_OUT = 102  # per class, the synthetic "test" split used for validation
SYNTHETIC_FOR = ("cifar10", "cifar100", "imagenette")


class Clock:
    """Elapsed seconds of a block: CUDA events on a GPU, perf_counter after synchronize on a CPU;
    `cpu_seconds` is the process's CPU time (on a shared CPU machine, steadier than wall time)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __enter__(self):
        self.c0 = time.process_time()
        if self.cuda:
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.end.record()
            torch.cuda.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1000.0
        else:
            self.seconds = time.perf_counter() - self.t0
        self.cpu_seconds = time.process_time() - self.c0


def tight_step(model, opt, x, y, eps, step, steps, autocast) -> None:
    """PGD-`steps` adversarial training, written out: nothing read back to the host."""
    model.eval()
    delta = torch.empty_like(x).uniform_(-eps, eps)
    delta = (x + delta).clamp_(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        with autocast():
            loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + step * grad.sign()).clamp_(-eps, eps)
        delta = (x + delta).clamp_(0, 1) - x
    model.train()
    with autocast():
        loss = F.cross_entropy(model(x + delta), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bare_step(model, opt, method, x, y, autocast) -> None:
    with autocast():
        out = method.loss(model, x, y)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()


def synthetic_overrides(preset: str, images: int, held_out: int = HELD_OUT) -> list[str]:
    """Generated CIFAR-shaped data (3x32x32, `images` to train on, `held_out` per class to evaluate)
    in place of a CIFAR-shaped preset's dataset; nothing for presets with their own small data."""
    if load_config(preset).data.name not in SYNTHETIC_FOR:
        return []
    per_class = images // CLASSES + held_out
    return ["data.name=synthetic", f"data.per_class={per_class}", "data.image_size=32", "data.channels=3",
            "data.val_per_class=0", f"data.test_fraction={held_out / per_class}", "data.classes=null"]


def load_trainer(args, root: str) -> Trainer:
    overrides = [f"run.root={root}", f"run.device={args.device}", "train.epochs=2",
                 *synthetic_overrides(args.preset, args.images)]
    if args.method:
        overrides.append(f"method.name={args.method}")
    return Trainer(load_config(args.preset, [*overrides, *args.set])).prepare()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cifar10-resnet18")
    parser.add_argument("--method", default=None, help="override the preset's method")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=50_000, help="synthetic training images (CIFAR-shaped presets)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the loops N times, print medians")
    parser.add_argument("--census-steps", type=int, default=4, help="steps counted by the sync census")
    parser.add_argument("--bat-vs-trades", action="store_true", help="also time BAT's and TRADES' bare steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config override")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as root:
        trainer = load_trainer(args, root)
        return run(trainer, args)


class Loops:
    """The tight, bare and battui loops over epoch 0's batches of `trainer`, from the same weights.

        bench = Loops(trainer)
        bench.time(repeats)     # {"warmup": {loop: s}, "times": {loop: [s, ...]}, "cpu_times": ..., "peak_mib": ...}
        bench.warm_up(); bench.timed(repeats)   # the same in two parts
        bench.census(n)         # sync points per step of each loop
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer, cfg, speed = trainer, trainer.cfg, trainer.parts.speed
        trainer.parts.train_batches.set_epoch(0)
        self.batches = [(speed.prepare_input(x), y) for x, y in trainer.parts.train_batches]
        self.model, self.opt = trainer.parts.run_model, trainer.parts.optimizer
        self.start_model = copy.deepcopy(trainer.parts.model.state_dict())
        self.start_opt = copy.deepcopy(self.opt.state_dict())
        self.method = method_from_config(cfg, num_classes=len(trainer.parts.classes))
        self.method.start_epoch(0, cfg.train.epochs)
        a, model, opt, method, batches = cfg.attack, self.model, self.opt, self.method, self.batches
        self.loops = {
            "tight": lambda: [tight_step(model, opt, x, y, a.eps, a.step_size, a.steps, speed.autocast)
                              for x, y in batches],
            "bare": lambda: [bare_step(model, opt, method, x, y, speed.autocast) for x, y in batches],
            "battui": lambda: trainer.train_epoch(0),
        }

    def reset(self, seed: int = 0) -> None:
        self.trainer.parts.model.load_state_dict(self.start_model)
        self.opt.load_state_dict(self.start_opt)
        torch.manual_seed(seed)

    def time(self, repeats: int) -> dict:
        """`warm_up()`, then `timed(repeats)`, in one dict."""
        return {"warmup": self.warm_up(), **self.timed(repeats)}

    def warm_up(self) -> dict[str, float]:
        """Each loop once, its seconds: cuDNN autotuning, compilation, allocator, first calls."""
        out = {}
        for key, fn in self.loops.items():
            self.reset()
            with Clock(self.trainer.parts.device) as c:
                fn()
            out[key] = c.seconds
        return out

    def timed(self, repeats: int) -> dict:
        """The loops alternating `repeats` times: seconds and process CPU seconds of each, peak GPU MiB."""
        dev = self.trainer.parts.device
        cuda = dev.type == "cuda"
        out: dict = {"times": {k: [] for k in self.loops}, "cpu_times": {k: [] for k in self.loops}, "peak_mib": {}}
        for _ in range(max(1, repeats)):
            for key, fn in self.loops.items():
                self.reset()
                if cuda:
                    torch.cuda.reset_peak_memory_stats(dev)
                with Clock(dev) as c:
                    fn()
                out["times"][key].append(c.seconds)
                out["cpu_times"][key].append(c.cpu_seconds)
                out["peak_mib"][key] = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else float("nan")
        return out

    def census(self, n: int) -> tuple[dict[str, float], dict[str, int], int]:
        """Sync points per step of each loop (the battui epoch cut to `n` batches), the battui steps'
        sync kinds, and how many battui steps were counted."""
        t = self.trainer
        return census(t, self.batches, n, self.method, self.model, self.opt, t.cfg.attack.eps,
                      t.cfg.attack.step_size, t.parts.speed)


def first_batches(batches, n: int):
    """A copy of a `Batches` that yields only its epoch-0 first `n` batches, unshuffled, on one rank."""
    short = copy.copy(batches)
    keep = batches.indices()[: n * short.batch_size]
    short.images, short.labels = short.images[keep], short.labels[keep]
    short.world_size, short.rank, short.shuffle = 1, 0, False
    return short


def run(trainer: Trainer, args) -> int:
    cfg, dev, speed = trainer.cfg, trainer.parts.device, trainer.parts.speed
    cuda = dev.type == "cuda"
    name = torch.cuda.get_device_name(dev) if cuda else (platform.processor() or platform.machine())
    bench = Loops(trainer)
    batches, a = bench.batches, cfg.attack
    n_img = sum(len(y) for _, y in batches)
    print(f"{cfg.preset} / {cfg.method.name} / {cfg.model.name}: {n_img} images {tuple(batches[0][0].shape[1:])} "
          f"in {len(batches)} batches of {cfg.train.batch_size}, attack {trainer.parts.attack_steps} steps")
    print(f"device {dev} ({name}); python {platform.python_version()}, torch {torch.__version__}"
          + (f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if cuda else "")
          + f", {torch.get_num_threads()} CPU threads; bf16={speed.amp} channels_last={speed.channels_last} "
          f"compile={speed.compile}")

    timed = bench.time(args.repeats)
    times, cpu_times, peak = timed["times"], timed["cpu_times"], timed["peak_mib"]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\ntrain phase, median of {len(times['tight'])} (ms per step, images/s, peak GPU MiB):")
    for key, label in (("tight", f"tight PGD-{a.steps} loop"), ("bare", f"bare {cfg.method.name} loop"),
                       ("battui", "battui train_epoch")):
        ms = 1000 * med[key] / len(batches)
        mem = f"{peak[key]:8.0f}" if cuda else "     n/a"
        print(f"  {label:<24} {ms:9.2f} ms  {n_img / med[key]:9.0f} img/s  {mem}   all: "
              + " ".join(f"{t:.3f}" for t in times[key]) + " s")
    print(f"  battui/tight {med['battui'] / med['tight']:.3f}x   (GPU target: throughput >= 0.9x, ratio <= 1.11)")
    print(f"  battui/bare  {med['battui'] / med['bare']:.3f}x   (engine overhead, target <= 1.10x)")
    if not cuda:
        cmed = {k: statistics.median(v) for k, v in cpu_times.items()}
        print(f"  by process CPU time: tight {1000 * cmed['tight'] / len(batches):.2f} ms, bare "
              f"{1000 * cmed['bare'] / len(batches):.2f} ms, battui {1000 * cmed['battui'] / len(batches):.2f} ms "
              f"per step; battui/tight {cmed['battui'] / cmed['tight']:.3f}x, battui/bare "
              f"{cmed['battui'] / cmed['bare']:.3f}x")

    # the other phases of an epoch, once each
    with Clock(dev) as c_val:
        info = trainer.parts.method_validation(0) if trainer.parts.method.needs_validation else {}
        trainer.emit(trainer.parts.evaluation(trainer.parts.val_batches, trainer.parts.val_name, 0, info))
    with Clock(dev) as c_ckpt:
        trainer.save_last(epoch_done=1)
    print(f"validation phase {c_val.seconds:8.2f} s  ({trainer.parts.val_size} images, PGD-{cfg.eval.steps}"
          + (", plus the method's validation" if trainer.parts.method.needs_validation else "") + ")")
    print(f"checkpoint phase {c_ckpt.seconds:8.2f} s  (last.pt)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = f", peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB" if cuda else ""
    print(f"peak host memory {rss:.0f} MiB{gpu}")

    counts, kinds, n = bench.census(args.census_steps)
    print(f"sync points per step: tight {counts['tight']:.1f}, bare {counts['bare']:.1f}, battui "
          f"{counts['battui']:.1f} ({n} steps, events only after the last, included: {kinds})")
    if args.bat_vs_trades:
        bat_vs_trades(trainer, batches, bench.model, bench.opt, bench.reset, dev, speed, args.repeats)
    return 0


def census(trainer, batches, n, method, model, opt, eps, step, speed) -> tuple[dict[str, float], dict[str, int], int]:
    """Sync points per training step of each loop (the battui epoch cut to `n` batches)."""
    few = batches[:n]
    counts = {}
    with SyncCensus() as c:
        for x, y in few:
            tight_step(model, opt, x, y, eps, step, trainer.cfg.attack.steps, speed.autocast)
    counts["tight"] = c.total / len(few)
    with SyncCensus() as c:
        for x, y in few:
            bare_step(model, opt, method, x, y, speed.autocast)
    counts["bare"] = c.total / len(few)
    short = first_batches(trainer.parts.train_batches, n)
    saved = trainer.parts.train_batches, trainer.cfg.train.log_every, trainer.cfg.train.attack_stats_every
    trainer.parts.train_batches = short
    trainer.cfg.train.log_every = trainer.cfg.train.attack_stats_every = 10**9  # events at the epoch's end only
    try:
        with SyncCensus() as c:
            trainer.train_epoch(0)
    finally:
        trainer.parts.train_batches, trainer.cfg.train.log_every, trainer.cfg.train.attack_stats_every = saved
    counts["battui"] = c.total / len(short)
    kinds = dict(sum(c.segments, start=type(c.segments[0])()))
    return counts, kinds, len(short)


def bat_vs_trades(trainer, batches, model, opt, reset, dev, speed, repeats) -> None:
    from battui.methods import build_method

    a = trainer.cfg.attack
    methods = {name: build_method(name, eps=a.eps, step_size=a.step_size, steps=a.steps) for name in ("trades", "bat")}
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(max(1, repeats)):
        for name, m in methods.items():
            reset()
            with Clock(dev) as c:
                for x, y in batches:
                    bare_step(model, opt, m, x, y, speed.autocast)
            times[name].append(c.seconds)
    med = {k: statistics.median(v) for k, v in times.items()}
    per = {k: 1000 * v / len(batches) for k, v in med.items()}
    print(f"BAT step {per['bat']:.2f} ms vs TRADES step {per['trades']:.2f} ms: "
          f"BAT/TRADES {med['bat'] / med['trades']:.3f}x "
          f"(same weights and batches; early stopping depends on how robust the model is)")


if __name__ == "__main__":
    sys.exit(main())
