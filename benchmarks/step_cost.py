"""Cost of one BAT training step relative to one TRADES step, same model and batch.

    .venv/bin/python benchmarks/step_cost.py                 # CPU, CIFAR-shaped batch of 128
    .venv/bin/python benchmarks/step_cost.py --device cuda --width 64

BAT runs one early-stopped attack (samples leave the batch at their first
misclassification) but three loss forwards (x, x_clean, x_adv) against TRADES'
full 10-step attack and two loss forwards. Whether BAT is cheaper therefore
depends on how many attack steps early stopping saves, which depends on how
robust the model is: an untrained model is fooled at step 0 by almost every
sample, which would flatter BAT. So the model (ResNet-18 at reduced width) is
first adversarially warmed up on the synthetic CIFAR-shaped data (classes of
graded difficulty), and the printout shows the per-step survival of the
attack next to the timings. Pass --checkpoint to time a real trained model.

Printed: hardware, model, the steps_to_flip histogram, the share of attack
gradient rows (forward+backward per sample and step) that early stopping
saved, median times of a full training step (attack + loss + backward +
optimizer step) for both methods measured alternately from identical model and
optimizer states, and their ratio.

Measured (2-core x86_64 CPU, torch 2.15, ResNet-18 width 16, batch 128x3x32x32,
10 steps; the ratio depends on how much of the attack early stopping saves,
i.e. on the model's state):
  --warmup-steps 60 --repeats 5: clean 47%, PGD-10 12%; saved 61.0% -> BAT/TRADES 0.75x
  --warmup-steps 90:             clean 100%, PGD-10 74%; saved 9.5% -> 1.26x (noisy)
  --warmup-steps 300:            clean 100%, PGD-10 99%; saved 0%   -> 1.11x
  --no-flip (no sample stops, BAT's worst case):        saved 0%   -> 1.19x
BAT pays one more loss forward/backward (x_clean) than TRADES, so it is cheaper
once early stopping saves roughly 15% of the attack's gradient work. Time a real
trained model with --checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch

from battui.attacks import boundary_examples, linf_pgd
from battui.data.synthetic import make_synthetic_pool
from battui.methods import build_method
from battui.models import build_model


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32, help="image side (CIFAR: 32)")
    p.add_argument("--width", type=int, default=16, help="ResNet-18 base width (64 = the paper's)")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--step-size", type=float, default=2 / 255)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup-steps", type=int, default=30, help="FGSM-RS adversarial training steps before timing")
    p.add_argument("--warmup-batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--checkpoint", default=None, help="model state_dict to time instead of the warm-up")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-flip", action="store_true",
                   help="worst case for BAT: label = the model's own prediction and a 1e-6 budget, so no "
                        "sample ever stops early (attack cost does not depend on eps)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def timed_step(method, model, opt, x, y, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = method.loss(model, x, y)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    pool = make_synthetic_pool(num_classes=10, per_class=max(args.batch, 64), size=args.size,
                               channels=3, seed=args.seed)
    images, labels = pool.images.float().div(255), pool.labels
    model = build_model("resnet18", 10, 3, width=args.width).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-4)
    attack = dict(eps=args.eps, step_size=args.step_size, steps=args.steps)

    def batch(i: int, size: int = args.batch) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(args.seed * 1000 + i)
        idx = torch.randperm(len(labels), generator=g)[:size]
        return images[idx].to(device), labels[idx].to(device)

    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, map_location=device, weights_only=True))
    else:
        # FGSM with a random start (Wong et al. 2020): the cheapest adversarial training.
        warm = build_method("pgd-at", eps=args.eps, step_size=1.25 * args.eps, steps=1)
        t0 = time.perf_counter()
        for i in range(args.warmup_steps):
            timed_step(warm, model, opt, *batch(i, args.warmup_batch), device)
        print(f"warm-up: {args.warmup_steps} FGSM-RS training steps of batch {args.warmup_batch} "
              f"in {time.perf_counter() - t0:.0f} s")

    x, y = batch(10_000)
    if args.no_flip:
        with torch.no_grad():
            model.eval()
            y = model(x).argmax(1)
        attack["eps"] = args.eps = 1e-6
    with torch.no_grad():
        model.eval()
        clean_acc = (model(x).argmax(1) == y).float().mean().item()
    robust_acc = (linf_pgd(model, x, y, **attack).adv_pred == y).float().mean().item()

    # Attack work: count the rows of every forward with a grad-carrying input (fwd+bwd rows).
    rows = {"grad": 0, "nograd": 0}

    def count(_module, inputs):
        rows["grad" if inputs[0].requires_grad else "nograd"] += inputs[0].shape[0]

    handle = model.register_forward_pre_hook(count)
    torch.manual_seed(1)
    be = boundary_examples(model, x, y, args.eps, args.step_size, args.steps)
    bat_rows = dict(rows)
    rows.update(grad=0, nograd=0)
    torch.manual_seed(1)
    linf_pgd(model, x, y, **attack, objective="kl", start="gaussian")
    trades_rows = dict(rows)
    handle.remove()
    stf = be.steps_to_flip.cpu()
    hist = [int((stf == k).sum()) for k in range(args.steps + 1)] + [int((stf == -1).sum())]
    alive = [int(((stf == -1) | (stf >= k)).sum()) for k in range(args.steps)]
    saved = 1 - bat_rows["grad"] / trades_rows["grad"]

    # Full training steps, alternating, each from the same model/optimizer state.
    state = copy.deepcopy((model.state_dict(), opt.state_dict()))
    methods = {"trades": build_method("trades", **attack), "bat": build_method("bat", **attack)}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(args.repeats + 1):
        for name, method in methods.items():
            model.load_state_dict(state[0])
            opt.load_state_dict(state[1])
            torch.manual_seed(100 + r)
            t = timed_step(method, model, opt, x, y, device)
            if r > 0:  # the first round warms up allocators and kernels
                times[name].append(t)
    med = {name: statistics.median(ts) for name, ts in times.items()}

    print(f"hardware: {hardware(device)}")
    print(f"model: ResNet-18 width {args.width}, batch {args.batch}x3x{args.size}x{args.size}, "
          f"eps {args.eps:.4f}, step {args.step_size:.4f}, {args.steps} steps")
    print(f"model state: clean acc {clean_acc:.1%}, PGD-{args.steps} acc {robust_acc:.1%} on the timed batch")
    print(f"BAT steps_to_flip histogram (0..{args.steps}, never): {hist}")
    print(f"samples still attacked at step k: {alive}")
    print(f"attack fwd+bwd rows: BAT {bat_rows['grad']} vs TRADES {trades_rows['grad']} "
          f"-> early stopping saved {saved:.1%} of the attack's gradient work "
          f"(forward-only rows: BAT {bat_rows['nograd']}, TRADES {trades_rows['nograd']})")
    for name in methods:
        print(f"{name:>6} step: median {med[name] * 1000:.0f} ms over {args.repeats} "
              f"({', '.join(f'{t * 1000:.0f}' for t in times[name])})")
    print(f"BAT step / TRADES step = {med['bat'] / med['trades']:.2f}x")


if __name__ == "__main__":
    main()
