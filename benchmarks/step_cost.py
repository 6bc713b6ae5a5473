"""Cost of one BAT training step relative to one TRADES step, same model and batch.

    .venv/bin/python benchmarks/step_cost.py                 # CPU, CIFAR-shaped batch of 128, ~10 min
    .venv/bin/python benchmarks/step_cost.py --device cuda --width 64

BAT runs one early-stopped attack (a sample leaves the batch at its first
misclassification) but three loss forwards (x, x_clean, x_adv, Eq. 7) against
TRADES' full 10-step attack and two loss forwards. Which is cheaper therefore
depends on how much of the attack early stopping saves, i.e. on how robust the
model is. An untrained model is fooled at step 0 by almost every sample (which
flatters BAT); a model that memorised its data is fooled by none (the worst
case for BAT). So the benchmark times real states of one adversarial training
run on data of CIFAR-10's difficulty:

- data: the synthetic CIFAR-shaped classes (3x32x32, graded difficulty) at
  ``--contrast-scale 0.3``, chosen so that an adversarially trained small
  ResNet reaches CIFAR-10's regime: PGD-10 accuracy 48-62% on its training
  data once trained (the paper's Table 1 BAT ResNet-18: 55.5% PGD-20 test
  accuracy). At the tests' scale 1 the model has 100% clean and 70% PGD-10
  accuracy after only 100 steps (``--contrast-scale 1 --at 100``), far
  easier than CIFAR-10. Clean accuracy ends at 90-95%,
  above CIFAR-10's ~87%, so fewer samples are fooled at step 0 than
  on CIFAR-10: the saving measured here is on the low side.
- model: ResNet-18 at reduced width (16), trained with FGSM-RS (Wong et al.
  2020; the cheapest adversarial training; ``--warmup-method bat`` trains
  with BAT itself) on batches of 64 from a 5,000-image pool, and timed after
  each of ``--at`` warm-up steps (one run).
- timed batch: 128 training images, as BAT attacks training batches.

For each state it prints the clean and PGD-10 accuracy, BAT's steps_to_flip
histogram, the share of attack gradient rows (forward+backward per sample and
step) that early stopping saved, and the best of 7 timings (alternated, each
from identical model, optimizer and RNG states; on a shared 2-core VM single
timings vary by up to 2x and noise only ever adds time) of, for both methods:
a full training step (attack + loss + backward + optimizer step), the attack
alone, and the loss part alone (the step with the attack's result fixed).
Then the ratio of the full steps, and the break-even saving: BAT's extra loss
time over TRADES' divided by TRADES' attack time, i.e. the share of the attack
early stopping must save for BAT's step to cost what TRADES' does.

Measured on the 2-core development VM (x86_64, torch 2.15, 2 threads), one
run each: the default command (650 s), --seed 1 (676 s), --warmup-method bat
--at 200,400 (551 s) and --at 0 --no-flip (67 s):
    model      warm-up  clean  PGD-10  saved  TRADES ms  BAT ms  BAT/TRADES  break-even
    fgsm s0        200    89%     47%    25%       1856    1761       0.95x         18%
    fgsm s0        400    51%     26%    57%       1809    1462       0.81x         15%
    fgsm s0        800    90%     52%    24%       2000    1958       0.98x         14%
    fgsm s0       1600    91%     48%    23%       2209    2110       0.95x         17%
    fgsm s1        200    96%     46%    22%       1925    2087       1.08x         10%
    fgsm s1        400    88%     27%    29%       2144    1887       0.88x         13%
    fgsm s1        800    95%     60%    17%       2266    2132       0.94x         12%
    fgsm s1       1600    91%     62%    19%       2187    1918       0.88x         12%
    bat            200   100%     52%    14%       2214    2050       0.93x         15%
    bat            400    99%     55%    13%       2049    2123       1.04x         14%
    no stop          0   100%    100%     0%       1752    1941       1.11x         16%
BAT's step costs no more than TRADES' once early stopping saves about 10-18%
of the attack (Eq. 7's third loss forward/backward): cheaper in 7 of 8
FGSM-RS-trained states, even within noise on BAT's own model (which fits this
data's clean images ~100%, so few samples are fooled at step 0), 1.11x when
nothing stops. docs/PERFORMANCE.md discusses these figures.
"""

from __future__ import annotations

import argparse
import copy
import functools
import platform
import time
from unittest import mock

import torch

from battui.attacks import pgd
from battui.data.synthetic import make_synthetic_pool
from battui.methods import bat as bat_module
from battui.methods import build_method
from battui.methods import trades as trades_module
from battui.models import build_model


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=128, help="timed batch size")
    p.add_argument("--size", type=int, default=32, help="image side (CIFAR: 32)")
    p.add_argument("--width", type=int, default=16, help="ResNet-18 base width (64 = the paper's)")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--step-size", type=float, default=2 / 255)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--contrast-scale", type=float, default=0.3,
                   help="synthetic data difficulty (1 = the tests' easy data; 0.3 = CIFAR-10-like robust accuracy)")
    p.add_argument("--pool-per-class", type=int, default=500, help="training images per class")
    p.add_argument("--at", default="200,400,800,1600",
                   help="comma-separated warm-up step counts at which to time (one run)")
    p.add_argument("--warmup-method", default="fgsm", choices=("fgsm", "pgd-at", "trades", "bat"),
                   help="how the timed model is trained: fgsm = FGSM-RS (fast), else that method's "
                        "10-step training")
    p.add_argument("--warmup-batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7,
                   help="timed runs per method and state, after one untimed; the best (shortest) counts")
    p.add_argument("--checkpoint", default=None,
                   help="ResNet-18 state_dict to time instead of the warm-up (a real trained model)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-flip", action="store_true",
                   help="worst case for BAT: label = the model's own prediction and a 1e-6 budget, so no "
                        "sample ever stops early (attack cost does not depend on eps)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    try:
        args.at = sorted({int(a) for a in args.at.split(",") if a.strip()})
    except ValueError:
        p.error(f"--at takes comma-separated integers, got {args.at!r}")
    if not 0 < args.contrast_scale <= 1:
        p.error(f"--contrast-scale must be in (0, 1], got {args.contrast_scale}")
    if not args.at or args.at[0] < 0:
        p.error("--at needs at least one warm-up step count >= 0")
    return args


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(method, model, opt, x, y) -> None:
    out = method.loss(model, x, y)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()


def measure(model, opt, x, y, args, device) -> dict:
    """Everything printed for one model state; leaves model and optimizer as found."""
    attack = dict(eps=args.eps, step_size=args.step_size, steps=args.steps)
    if args.no_flip:
        with torch.no_grad():
            model.eval()
            y = model(x).argmax(1)
        attack["eps"] = 1e-6
    with torch.no_grad():
        model.eval()
        clean_acc = (model(x).argmax(1) == y).float().mean().item()
    robust_acc = (pgd(model, x, y, **attack).pred_last == y).float().mean().item()

    methods = {"trades": build_method("trades", **attack), "bat": build_method("bat", **attack)}
    methods["bat-exact"] = methods["bat"]  # BAT with the attack's exact compaction (bucket=1, every batch size)
    bat_attack = dict(attack, objective="kl", start="gaussian", stop_after_flip=0, record_boundary=True)
    attacks = {
        "trades": lambda: pgd(model, x, y, **attack, objective="kl", start="gaussian"),
        "bat": lambda: pgd(model, x, y, **bat_attack),
        "bat-exact": lambda: pgd(model, x, y, **bat_attack, bucket=1),
    }

    # Attack work: the rows of every forward with a grad-carrying input (forward+backward rows).
    rows = {"trades": 0, "bat": 0}
    counting = "bat"

    def count(_module, inputs):
        if inputs[0].requires_grad:
            rows[counting] += inputs[0].shape[0]

    handle = model.register_forward_pre_hook(count)
    torch.manual_seed(1)
    be = attacks["bat"]()
    counting = "trades"
    torch.manual_seed(1)
    kl_attack = attacks["trades"]()
    handle.remove()
    stf = be.steps_to_flip.cpu()
    hist = [int((stf == k).sum()) for k in range(args.steps + 1)] + [int((stf == -1).sum())]

    # The loss part alone: the method's step with its attack replaced by the result computed above.
    fixed_attack = {
        "trades": mock.patch.object(trades_module, "pgd", lambda *a, **k: kl_attack),
        "bat": mock.patch.object(bat_module, "pgd", lambda *a, **k: be),
    }

    def run(kind: str, name: str) -> None:
        if kind == "step" and name == "bat-exact":
            with mock.patch.object(bat_module, "pgd", functools.partial(pgd, bucket=1)):
                train_step(methods[name], model, opt, x, y)
        elif kind == "step":
            train_step(methods[name], model, opt, x, y)
        elif kind == "attack":
            attacks[name]()
        else:
            with fixed_attack[name]:
                train_step(methods[name], model, opt, x, y)

    # Alternate all six, each from the same model/optimizer/RNG state; the first
    # round warms up allocators and kernels and is not counted.
    state = copy.deepcopy((model.state_dict(), opt.state_dict()))
    keys = [(kind, name) for kind in ("step", "attack", "loss") for name in methods
            if not (kind == "loss" and name == "bat-exact")]  # the loss part does not depend on the attack's buckets
    times: dict[tuple[str, str], list[float]] = {key: [] for key in keys}
    for r in range(args.repeats + 1):
        for key in keys:
            model.load_state_dict(state[0])
            opt.load_state_dict(state[1])
            torch.manual_seed(100 + r)
            sync(device)
            t0 = time.perf_counter()
            run(*key)
            sync(device)
            if r > 0:
                times[key].append(time.perf_counter() - t0)
    model.load_state_dict(state[0])
    opt.load_state_dict(state[1])
    best = {key: min(ts) for key, ts in times.items()}
    # BAT's extra loss work over TRADES', as a share of TRADES' attack: the saving that breaks even.
    extra = best["loss", "bat"] - best["loss", "trades"]
    return dict(
        clean=clean_acc, robust=robust_acc, hist=hist, saved=1 - rows["bat"] / rows["trades"],
        steps={name: times["step", name] for name in methods}, best=best,
        ratio=best["step", "bat"] / best["step", "trades"], break_even=extra / best["attack", "trades"],
        buckets=best["step", "bat"] / best["step", "bat-exact"],
    )


def report(label: str, m: dict, args) -> None:
    print(f"\n[{label}] clean acc {m['clean']:.1%}, PGD-{args.steps} acc {m['robust']:.1%} on the timed batch")
    print(f"  BAT steps_to_flip histogram (0..{args.steps}, never): {m['hist']}")
    print(f"  early stopping saved {m['saved']:.1%} of the attack's forward+backward rows")
    for name in ("trades", "bat", "bat-exact"):
        runs = ", ".join(f"{t * 1000:.0f}" for t in m["steps"][name])
        loss = m["best"].get(("loss", name))
        print(f"  {name:>9} step: best {m['best']['step', name] * 1000:.0f} ms ({runs}); of which "
              f"attack alone {m['best']['attack', name] * 1000:.0f} ms"
              + ("" if loss is None else f", loss part alone {loss * 1000:.0f} ms"))
    print(f"  BAT step / TRADES step = {m['ratio']:.2f}x; break-even saving {m['break_even']:.1%} "
          f"(BAT's extra loss time / TRADES' attack time)")
    print(f"  BAT step with buckets / with exact compaction = {m['buckets']:.3f}x")


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    t_start = time.perf_counter()
    print(f"hardware: {hardware(device)}")
    print(f"model: ResNet-18 width {args.width}, timed batch {args.batch}x3x{args.size}x{args.size}, "
          f"eps {args.eps:.4f}, step {args.step_size:.4f}, {args.steps} steps; "
          f"data: synthetic, contrast scale {args.contrast_scale}, {args.pool_per_class} images per class")
    pool = make_synthetic_pool(num_classes=10, per_class=args.pool_per_class, size=args.size,
                               channels=3, seed=args.seed, contrast_scale=args.contrast_scale)
    images, labels = pool.images.float().div(255).to(device), pool.labels.to(device)
    model = build_model("resnet18", 10, 3, width=args.width).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-4)
    gen = torch.Generator().manual_seed(args.seed)
    timed = torch.randperm(len(labels), generator=gen)[: args.batch].to(device)
    x, y = images[timed], labels[timed]

    results = []
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, map_location=device, weights_only=True))
        results.append(("checkpoint", measure(model, opt, x, y, args, device)))
        report(args.checkpoint, results[-1][1], args)
    else:
        # FGSM with a random start (Wong et al. 2020), or a 10-step method, on random batches of the pool.
        if args.warmup_method == "fgsm":
            warm = build_method("pgd-at", eps=args.eps, step_size=1.25 * args.eps, steps=1)
        else:
            warm = build_method(args.warmup_method, eps=args.eps, step_size=args.step_size, steps=args.steps)
        done = 0
        for target in args.at:
            t0 = time.perf_counter()
            while done < target:
                idx = torch.randint(len(labels), (args.warmup_batch,), generator=gen).to(device)
                train_step(warm, model, opt, images[idx], labels[idx])
                done += 1
            print(f"\nwarm-up: {done} {args.warmup_method} steps of batch {args.warmup_batch} "
                  f"(+{time.perf_counter() - t0:.0f} s)", flush=True)
            results.append((str(done), measure(model, opt, x, y, args, device)))
            report(f"after {done} warm-up steps", results[-1][1], args)

    print(f"\nsummary ({time.perf_counter() - t_start:.0f} s):")
    print(f"  warm-up  clean  {f'PGD-{args.steps}':>6}  saved  TRADES ms  BAT ms  BAT/TRADES  break-even"
          "  exact ms  buckets/exact")
    for label, m in results:
        print(f"  {label:>7}  {m['clean']:5.0%}  {m['robust']:6.0%}  {m['saved']:5.0%}  "
              f"{m['best']['step', 'trades'] * 1000:9.0f}  {m['best']['step', 'bat'] * 1000:6.0f}  "
              f"{m['ratio']:9.2f}x  {m['break_even']:10.0%}  {m['best']['step', 'bat-exact'] * 1000:8.0f}"
              f"  {m['buckets']:12.3f}x")


if __name__ == "__main__":
    main()
