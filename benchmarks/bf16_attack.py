"""Attack strength under bf16 autocast vs fp32, on the same weights.

    python benchmarks/bf16_attack.py                         # train a small model, then measure
    python benchmarks/bf16_attack.py --run runs/NAME         # a battui run's best.pt (or last.pt) and test split
    python benchmarks/bf16_attack.py --device cuda --size 32 --width 64

battui's attacks run under the training's autocast (bf16 on CUDA by default), so
the iterates x^k are rounded to bf16 at the model's first layer: ~0.002-0.004 for
pixels in [0.25, 1), while TRADES' start x + 0.001 * N(0, I) and an eps = 8/255
step of 2/255 are of the same order. This script measures what that does: for
PGD-``steps`` (CE, uniform start) and the TRADES-family attack (KL to p(x), start
x + xi * N(0, I)) it attacks the same test images with the same weights and the
same random draws in fp32, under bf16 autocast throughout, and under bf16 the way
battui runs it (``pgd``'s default: for the gaussian start, p(x) and the first
step in fp32), and judges every adversarial example in fp32. It prints the robust
error (%) of each, averaged over ``--seeds`` draws, and bf16 minus fp32: a negative
difference means bf16 made the attack weaker.

Without ``--run`` it first trains a SmallCNN with PGD-AT (eps 8/255, 10 steps) on
generated CIFAR-like images (3 x size x size, graded class contrast), so the weights
are adversarially trained and the attack's strength is in the interesting range.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext

import torch

from battui.attacks import pgd
from battui.data.synthetic import make_synthetic_pool
from battui.methods import build_method
from battui.models import build_model, model_options

EPS, STEP = 8 / 255, 2 / 255


def train_small(args) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    pool = make_synthetic_pool(10, args.per_class, size=args.size, channels=3, seed=args.seed,
                               contrast_scale=args.contrast_scale)
    x = pool.images.float().div(255).to(args.device)
    y = pool.labels.to(args.device)
    g = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(len(y), generator=g).to(args.device)
    n_test = len(y) // 5
    test, train = perm[:n_test], perm[n_test:]
    torch.manual_seed(args.seed)
    model = build_model("cnn", num_classes=10, in_channels=3).to(args.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    method = build_method("pgd-at", eps=EPS, step_size=STEP, steps=10)
    for epoch in range(args.epochs):
        order = train[torch.randperm(len(train), generator=g).to(args.device)]
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            out = method.loss(model, x[idx], y[idx])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        print(f"  trained epoch {epoch + 1}/{args.epochs}", flush=True)
    model.eval()
    return model, x[test], y[test]


def from_run(args) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from pathlib import Path

    from battui.data import build_datasets
    from battui.data.splits import as_float
    from battui.engine.checkpoint import load_checkpoint
    from battui.engine.resume import resume_config

    run = Path(args.run)
    cfg = resume_config(run)
    splits = build_datasets(cfg.data, seed=cfg.train.seed)
    ckpt_path = run / "checkpoints" / "best.pt"
    ckpt = load_checkpoint(ckpt_path if ckpt_path.exists() else run / "checkpoints" / "last.pt")
    model = build_model(cfg.model.name, num_classes=splits.num_classes, in_channels=splits.in_channels,
                        **model_options(cfg.model))
    model.load_state_dict(ckpt["model"])
    global EPS, STEP
    EPS, STEP = cfg.eval.eps, cfg.eval.step_size
    x, y = as_float(splits.test.images).to(args.device), splits.test.labels.to(args.device)
    return model.to(args.device).eval(), x, y


def robust_error(model, x, y, *, objective: str, start: str, bf16: bool, seed: int, steps: int,
                 precise_start: bool | None = None) -> float:
    torch.manual_seed(seed)
    ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    wrong = 0
    for i in range(0, len(y), 256):
        xb, yb = x[i:i + 256], y[i:i + 256]
        with ctx:
            res = pgd(model, xb, yb, eps=EPS, step_size=STEP, steps=steps, objective=objective, start=start,
                      precise_start=precise_start)
        with torch.no_grad():  # judged in fp32
            wrong += int((model(res.x_last).argmax(1) != yb).sum())
    return 100.0 * wrong / len(y)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="a battui run directory (default: train a small model here)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--per-class", type=int, default=300)
    p.add_argument("--contrast-scale", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    model, x, y = from_run(args) if args.run else train_small(args)
    with torch.no_grad():
        clean = 100.0 * float((model(x).argmax(1) != y).float().mean())
    print(f"torch {torch.__version__}, device {args.device}, {len(y)} test images {tuple(x.shape[1:])}, "
          f"eps {EPS:.4f}, step {STEP:.4f}, {args.steps} steps, clean error {clean:.1f}%")
    print(f"robust error (%), mean over {args.seeds} seeds; in brackets bf16 - fp32 (sd of the per-seed difference)")
    variants = (("fp32", False, None), ("bf16, all steps", True, False), ("bf16, battui", True, None))
    print(f"{'attack':<26}" + "".join(f"{v[0]:>24}" for v in variants))
    for name, objective, start in (("PGD (CE, uniform start)", "ce", "uniform"),
                                   ("TRADES (KL, x+0.001N)", "kl", "gaussian")):
        errs = [[robust_error(model, x, y, objective=objective, start=start, bf16=bf16, seed=s, steps=args.steps,
                              precise_start=precise) for s in range(args.seeds)] for _, bf16, precise in variants]
        cells = [f"{statistics.mean(errs[0]):.2f}"]
        for e in errs[1:]:
            diffs = [b - a for a, b in zip(errs[0], e, strict=True)]
            sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            cells.append(f"{statistics.mean(e):.2f} ({statistics.mean(diffs):+.2f}, sd {sd:.2f})")
        print(f"{name:<26}" + "".join(f"{c:>24}" for c in cells))
    print("bf16, all steps: every attack step under autocast; bf16, battui: pgd's default, which computes "
          "p(x) and the first step in fp32 for the gaussian (TRADES-family) start")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
