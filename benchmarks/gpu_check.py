"""The GPU acceptance check (issue 23): what battui does on a CUDA device, in one run, no dataset needed.

    python benchmarks/gpu_check.py                          # cifar10-resnet18 on cuda, a few minutes
    python benchmarks/gpu_check.py --out /tmp/check         # writes /tmp/check/gpu_check.{md,json}
    python benchmarks/gpu_check.py --device cpu --quick     # the same code paths, tiny, seconds (the suite runs it)

Every part trains cifar10-resnet18 (the paper's setting, the preset's speed settings: bf16
autocast where the GPU has it natively, channels_last on CUDA; the report names what was
resolved) on generated CIFAR-shaped images (3x32x32, `benchmarks/epoch_time.py`'s
`synthetic_overrides`), in this order:

1. cudnn: BAT's first epoch twice from the same weights on a fresh process (nothing autotuned
   yet); the first minus the second is the cuDNN autotuning cost of the early-stopping attack's
   batch sizes (cudnn.benchmark is on for non-deterministic CUDA runs), with the sizes it saw.
2. methods: a few training steps of every registered method (FAAL starts from, and ABSLD
   distils, an untrained network's checkpoint): finite weights, ms per step, peak memory.
3. loops: PGD-AT, TRADES and BAT without and with `train.compile`, `epoch_time.Loops`: battui's
   `train_epoch` against the tight PGD loop and the bare method loop (medians after a warm-up
   pass, kept as its own time: compilation, autotuning), dynamo's compiled frames after the
   warm-up (0: no recompiles), the sync census per step (`engine/syncs.py`; on CUDA it also sees
   host<->device copies), peak memory.
4. eval: a 1-epoch run whose final test evaluation must equal `battui eval` of its last.pt.

Exit status 0 when every check passed (finite weights everywhere, no recompile after the warm-up,
the two evaluations equal), 1 otherwise; the report says which failed. Ratios are printed, never
judged against a time: targets (battui/tight <= 1.11) are for a person to read.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch._dynamo

from battui.config import load_config
from battui.engine import setup
from battui.engine.events import read_events
from battui.engine.trainer import Trainer
from battui.methods import METHODS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import Clock, Loops, first_batches, synthetic_overrides  # noqa: E402

PRESET = "cifar10-resnet18"
LOOP_METHODS = ("pgd-at", "trades", "bat")
EVAL_KEYS = ("n", "counts", "standard", "boundary", "robust", "adv_confusion", "step_hist")
# --quick: the same code paths at a size a 2-core CPU runs in seconds
# (the 2-conv cnn in place of resnet18: dynamo traces resnet18 for seconds per mode on a CPU)
QUICK = {"images": 32, "held_out": 2, "steps": 1, "repeats": 1, "census": 1, "backend": "eager",
         "set": ["model.name=cnn", "model.depth=2", "model.width=8", "attack.steps=2", "eval.steps=2",
                 "train.batch_size=16", "eval.batch_size=32"]}
FULL = {"images": 1024, "held_out": 20, "steps": 3, "repeats": 2, "census": 4, "backend": setup.COMPILE_BACKEND,
        "set": []}


class Check:
    """The run's settings, the trainers it builds and the report it fills."""

    def __init__(self, args, root: str) -> None:
        self.args, self.root = args, root
        self.size = QUICK if args.quick else FULL
        self.device = torch.device(args.device if args.device != "auto" else
                                   ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        self.failures: list[str] = []
        self.count = 0

    def trainer(self, method: str, *extra: str) -> Trainer:
        self.count += 1
        overrides = [f"run.root={self.root}", f"run.name=r{self.count}", f"run.device={self.device}",
                     f"method.name={method}", "train.epochs=2",
                     *synthetic_overrides(PRESET, self.size["images"], self.size["held_out"]),
                     *self.size["set"], *self.args.set, *extra]
        return Trainer(load_config(PRESET, overrides)).prepare()

    def peak_mib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2**20 if self.cuda else None

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def fail(self, what: str) -> None:
        self.failures.append(what)


def finite(trainer: Trainer) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())


def cudnn_warmup(check: Check) -> dict:
    trainer = check.trainer("bat")
    sizes: set[int] = set()
    hook = trainer.model.register_forward_pre_hook(lambda _m, inputs: sizes.add(int(inputs[0].shape[0])))
    bench = Loops(trainer)  # its reset() restores the starting weights
    seconds = []
    for _ in range(2):
        bench.reset()
        with Clock(trainer.device) as c:
            trainer.train_epoch(0)
        seconds.append(c.seconds)
    hook.remove()
    trainer.lock.release()
    return {"cudnn_benchmark": bool(torch.backends.cudnn.benchmark), "first_epoch_s": seconds[0],
            "second_epoch_s": seconds[1], "warmup_s": seconds[0] - seconds[1], "batches": len(trainer.train_batches),
            "batch_sizes_seen": sorted(sizes)}


def methods_steps(check: Check) -> dict:
    out: dict = {}
    start: Path | None = None
    for name in METHODS:
        extra = []
        if name == "faal":
            extra = [f"train.init_from={start}"]
        elif name == "absld":
            extra = [f"method.teacher={start}"]
        check.reset_peak()
        try:
            trainer = check.trainer(name, *extra)
            if start is None:  # the first method's untrained network: FAAL's start, ABSLD's teacher
                trainer.save_last(epoch_done=0)
                start = trainer.checkpoint_dir / "last.pt"
            trainer.train_batches = first_batches(trainer.train_batches, check.size["steps"])
            with Clock(trainer.device) as c:
                outcome = trainer.train_epoch(0)
            trainer.lock.release()
            ok = outcome is None and finite(trainer)
            out[name] = {"ok": ok, "steps": len(trainer.train_batches),
                         "ms_per_step": 1000 * c.seconds / len(trainer.train_batches), "peak_mib": check.peak_mib()}
        except Exception as exc:  # one broken method must not hide the others
            ok = False
            out[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300],
                         "traceback": traceback.format_exc()[-2000:]}
        if not ok:
            check.fail(f"methods: {name} did not train to finite weights")
    return out


def compiled_frames() -> int:
    from torch._dynamo.utils import counters

    return int(counters["frames"]["ok"])


def loops(check: Check) -> dict:
    out: dict = {}
    for compiled in (False, True):
        for name in LOOP_METHODS:
            key = f"{name}{' compile' if compiled else ''}"
            check.reset_peak()
            torch._dynamo.reset()  # each compiled model from scratch, far from dynamo's recompile limit
            trainer = check.trainer(name, f"train.compile={str(compiled).lower()}")
            bench = Loops(trainer)
            warmup = bench.warm_up()
            frames = [compiled_frames()]
            timed = bench.timed(check.size["repeats"])
            med = {k: statistics.median(v) for k, v in timed["times"].items()}
            frames.append(compiled_frames())
            counts, kinds, n = bench.census(check.size["census"])
            trainer.lock.release()
            steps = len(bench.batches)
            record = {
                "ms_per_step": {k: 1000 * v / steps for k, v in med.items()},
                "warmup_s": warmup, "battui_over_tight": med["battui"] / med["tight"],
                "battui_over_bare": med["battui"] / med["bare"], "steps": steps,
                "repeats": check.size["repeats"], "peak_mib": check.peak_mib(),
                "frames_compiled_after_warmup": frames[1] - frames[0] if compiled else None,
                "syncs_per_step": counts, "sync_kinds_battui": kinds, "census_steps": n,
                "finite": finite(trainer),
            }
            out[key] = record
            if not record["finite"]:
                check.fail(f"loops: {key} ended with non-finite weights")
            if compiled and record["frames_compiled_after_warmup"]:
                check.fail(f"loops: {key} recompiled {record['frames_compiled_after_warmup']} times after warm-up")
    return out


def final_eval(check: Check) -> dict:
    from battui.cli import main as battui

    trainer = check.trainer("pgd-at", "train.epochs=1")
    check.reset_peak()
    status = trainer.run()
    final = [e for e in read_events(trainer.events_path) if e["type"] == "eval" and e["split"] == "test"][-1]
    report = Path(check.root) / "eval.json"
    try:
        battui(["eval", str(trainer.checkpoint_dir / "last.pt"), "--no-cache", "--device", str(check.device),
                "-f", "json", "-o", str(report)])
    except SystemExit as exc:
        if exc.code:
            check.fail(f"eval: battui eval exited {exc.code}")
            return {"status": status.value, "equal": False}
    record = json.loads(report.read_text())
    differ = [k for k in EVAL_KEYS if record["result"][k] != final[k]]
    if record["attack"] != final["attack"]:
        differ.append("attack")
    equal = status.value == "completed" and not differ
    if not equal:
        check.fail(f"eval: the run ({status}) and battui eval differ in {differ}")
    return {"status": status.value, "equal": equal, "differ": differ, "n": final["n"],
            "robust_avg": final["avg"]["robust"], "standard_avg": final["avg"]["standard"],
            "attack": final["attack"], "peak_mib": check.peak_mib()}


def environment(check: Check) -> dict:
    trainer = check.trainer("pgd-at")
    trainer.lock.release()
    dev = check.device
    return {"device": str(dev), "name": torch.cuda.get_device_name(dev) if check.cuda else platform.machine(),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(dev))) if check.cuda else None,
            "torch": torch.__version__, "cuda": torch.version.cuda if check.cuda else None,
            "cudnn": torch.backends.cudnn.version() if check.cuda else None, "python": platform.python_version(),
            "precision": trainer.speed.precision_note, "channels_last": trainer.speed.channels_last,
            "compile_backend": setup.COMPILE_BACKEND, "quick": bool(check.args.quick),
            "images": check.size["images"], "batch_size": trainer.cfg.train.batch_size,
            "attack_steps": trainer.attack_steps, "overrides": [*check.size["set"], *check.args.set]}


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# battui GPU check: {env['name']} ({env['device']})", "",
             f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, python {env['python']}; "
             f"{PRESET} on {env['images']} generated 3x32x32 images, batch {env['batch_size']}, "
             f"PGD-{env['attack_steps']}; training precision {env['precision']}, channels_last "
             f"{env['channels_last']}, compile backend {env['compile_backend']}"
             + (" (--quick: a smoke run, not a measurement)" if env["quick"] else "") + ".", "",
             f"Result: {'PASS' if not report['failures'] else 'FAIL'} in {report['seconds']:.0f} s ("
             + ", ".join(f"{k} {v:.0f} s" for k, v in report["part_seconds"].items()) + ")"
             + "".join(f"\n- {f}" for f in report["failures"]), "", "## cuDNN warm-up of BAT's first epoch", ""]
    c = report["cudnn"]
    lines += [f"cudnn.benchmark {c['cudnn_benchmark']}: first epoch {c['first_epoch_s']:.2f} s, second "
              f"{c['second_epoch_s']:.2f} s, warm-up {c['warmup_s']:.2f} s over {c['batches']} batches; "
              f"batch sizes seen: {c['batch_sizes_seen']}", "", "## Every method, a few steps", "",
              "| method | ok | ms/step | peak MiB |", "|---|---|---|---|"]
    for name, m in report["methods"].items():
        if "error" in m:
            lines.append(f"| {name} | no: {m['error']} | | |")
        else:
            lines.append(f"| {name} | {'yes' if m['ok'] else 'no'} | {m['ms_per_step']:.1f} | {_mib(m['peak_mib'])} |")
    lines += ["", "## battui against the tight loop", "",
              "| run | tight ms/step | bare ms/step | battui ms/step | battui/tight | battui/bare | warm-up s "
              "(tight, bare, battui) | recompiles after warm-up | syncs/step (tight, bare, battui) | peak MiB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in report["loops"].items():
        ms, w, s = r["ms_per_step"], r["warmup_s"], r["syncs_per_step"]
        frames = "-" if r["frames_compiled_after_warmup"] is None else r["frames_compiled_after_warmup"]
        lines.append(f"| {key} | {ms['tight']:.1f} | {ms['bare']:.1f} | {ms['battui']:.1f} | "
                     f"{r['battui_over_tight']:.3f} | {r['battui_over_bare']:.3f} | "
                     f"{w['tight']:.1f}, {w['bare']:.1f}, {w['battui']:.1f} | {frames} | "
                     f"{s['tight']:.1f}, {s['bare']:.1f}, {s['battui']:.1f} | {_mib(r['peak_mib'])} |")
    lines += ["", "Sync kinds of battui's steps: " + "; ".join(f"{k}: {r['sync_kinds_battui']}"
                                                               for k, r in report["loops"].items()), ""]
    e = report["eval"]
    lines += ["## A 1-epoch run against `battui eval` of its last.pt", "",
              f"run {e['status']}; final test evaluation equal to battui eval: {e['equal']}"
              + (f" (n {e['n']}, average robust error {e['robust_avg']:.1f}%, standard {e['standard_avg']:.1f}%)"
                 if "n" in e else ""), "",
              f"Peak host memory {report['host_peak_mib']:.0f} MiB"
              + (f", peak GPU memory {report['gpu_peak_mib']:.0f} MiB" if report["gpu_peak_mib"] else "") + ".", ""]
    return "\n".join(lines)


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, cpu or auto")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, eager compile backend: a smoke run")
    parser.add_argument("--out", default="gpu_check", help="folder for gpu_check.md and gpu_check.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config override")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        check = Check(args, root)
        setup.COMPILE_BACKEND = check.size["backend"]
        report: dict = {"part_seconds": {}}
        for part, fn in (("cudnn", cudnn_warmup), ("environment", environment), ("methods", methods_steps),
                         ("loops", loops), ("eval", final_eval)):  # cudnn first: nothing autotuned yet
            t0 = time.perf_counter()
            report[part] = fn(check)
            report["part_seconds"][part] = time.perf_counter() - t0
    report["failures"] = check.failures
    report["seconds"] = time.perf_counter() - started
    report["host_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peaks = [r.get("peak_mib") for part in ("methods", "loops") for r in report[part].values()]
    peaks = [p for p in [*peaks, report["eval"].get("peak_mib")] if p is not None]
    report["gpu_peak_mib"] = max(peaks) if peaks else None  # the largest of the parts' peaks
    text = markdown(report)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(text)
    print(text)
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
