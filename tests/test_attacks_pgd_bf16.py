"""bf16 autocast and the TRADES-family start x + 0.001 * N(0, I): the start is below
bf16's resolution, so `pgd` computes p(x) and the first step in fp32 under autocast.

    .venv/bin/pytest tests/test_attacks_pgd_bf16.py -q
"""

from __future__ import annotations

import torch

from battui.attacks import pgd
from tests.support.tiny_problem import tiny_batch, tiny_mlp


def _one_step(model, x, y, **kw):
    torch.manual_seed(11)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=kw.pop("bf16")):
        return pgd(model, x, y, eps=0.1, step_size=0.02, steps=1, objective="kl", start="gaussian", **kw)


def test_first_trades_step_under_bf16_is_the_fp32_step():
    model = tiny_mlp().float()
    x, y = tiny_batch(model.double())
    model, x = model.float(), x.float() * 0.5 + 0.5  # pixels in [0.5, 1]: bf16 spacing 2**-8 > 0.001
    fp32 = _one_step(model, x, y, bf16=False)
    battui = _one_step(model, x, y, bf16=True)  # default: the start's step in fp32
    plain = _one_step(model, x, y, bf16=True, precise_start=False)
    assert torch.equal(battui.x_last, fp32.x_last)
    # every step under bf16 takes another first step on a good share of the pixels
    changed = (plain.x_last != fp32.x_last).float().mean()
    assert changed > 0.05, float(changed)


def test_uniform_start_keeps_bf16_steps():
    model = tiny_mlp().float()
    x, y = tiny_batch(model.double())
    model, x = model.float(), x.float()
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = pgd(model, x, y, eps=0.1, step_size=0.02, steps=2)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = pgd(model, x, y, eps=0.1, step_size=0.02, steps=2, precise_start=False)
    assert torch.equal(auto.x_last, plain.x_last)  # PGD's uniform start is coarse enough for bf16
