"""Tiny models, data and a plain (uncompacted, loop-per-step) PGD written out
independently of battui.attacks, for the attack and method tests.

Everything is float64 so that the library's compacted batches and the
reference's full batches give the same gradient signs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

K = 4  # classes of the tiny problem


def tiny_mlp(seed: int = 0, k: int = K) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.Tanh(), nn.Linear(16, k))
    return model.double()


def tiny_batch(model: nn.Module, n: int = 32, n_wrong: int = 4, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Inputs [n, 1, 6, 6] in [0, 1]; labels = the model's own prediction except
    ``n_wrong`` samples that get another class (so some start misclassified)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g, dtype=torch.float64)
    x[:2] = x[:2].round()  # some pixels on the [0, 1] border
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:n_wrong] = (y[:n_wrong] + 1) % model[-1].out_features
    return x, y


def start_noise(x: Tensor, start: str, seed: int, eps: Tensor | float, xi: float = 0.001) -> Tensor:
    """The start perturbation battui draws after ``torch.manual_seed(seed)``:
    uniform: U(-1, 1) * eps drawn with ``empty_like(x).uniform_(-1, 1)``;
    gaussian: xi * ``randn_like(x)``."""
    torch.manual_seed(seed)
    if start == "uniform":
        e = torch.as_tensor(eps, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return torch.empty_like(x).uniform_(-1.0, 1.0) * e
    if start == "gaussian":
        return xi * torch.randn_like(x)
    return torch.zeros_like(x)


def _col(v: Tensor | float, x: Tensor) -> Tensor:
    t = torch.as_tensor(v, dtype=x.dtype)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    return t.reshape(-1, *([1] * (x.dim() - 1)))


def reference_pgd(model, x, y, eps, step, steps, *, objective="ce", noise=None, stop_after_flip=None):
    """Plain PGD: full batch every step, masks instead of compaction.

    Returns dict(x_adv, steps_to_flip, adv_pred, kappa, x_clean, x_first) with
    x_clean / x_first the DESIGN 3.1 boundary pair (x for flips at the start).
    """
    model.eval()
    e, s = _col(eps, x), _col(step, x)
    lo, hi = (x - e).clamp(min=0), (x + e).clamp(max=1)
    cur = x + (torch.zeros_like(x) if noise is None else noise)
    cur = torch.min(torch.max(cur, lo), hi)
    with torch.no_grad():
        p0 = F.softmax(model(x), 1)
    n = x.shape[0]
    active = torch.ones(n, dtype=torch.bool)
    stf = torch.full((n,), -1)
    kappa = torch.zeros(n, dtype=torch.long)
    budget = torch.full((n,), -1 if stop_after_flip is None else stop_after_flip)
    x_adv, adv_pred = cur.clone(), torch.zeros(n, dtype=torch.long)
    x_clean, x_first, prev = x.clone(), x.clone(), x.clone()
    for k in range(steps):
        cur = cur.detach().requires_grad_(True)
        out = model(cur)
        pred = out.argmax(1)
        wrong = pred != y
        kappa += (active & ~wrong).long()
        first = active & wrong & (stf == -1)
        stf[first] = k
        if k > 0:
            x_clean[first], x_first[first] = prev[first], cur.detach()[first]
        if stop_after_flip is not None:
            stop = active & wrong & (budget == 0)
            budget = torch.where(active & wrong & ~stop, budget - 1, budget)
            x_adv[stop], adv_pred[stop] = cur.detach()[stop], pred[stop]
            active = active & ~stop
        if objective == "ce":
            loss = F.cross_entropy(out, y, reduction="sum")
        else:
            loss = (p0 * (p0.log() - F.log_softmax(out, 1))).sum()
        (grad,) = torch.autograd.grad(loss, cur)
        nxt = torch.min(torch.max(cur.detach() + s * grad.sign(), lo), hi)
        prev = torch.where(active.reshape(-1, 1, 1, 1), cur.detach(), prev)
        cur = torch.where(active.reshape(-1, 1, 1, 1), nxt, cur.detach())
    with torch.no_grad():
        pred = model(cur).argmax(1)
    never = active & (stf == -1)
    stf[never & (pred != y)] = steps
    x_adv[active], adv_pred[active] = cur[active], pred[active]
    x_clean[never], x_first[never] = prev[never], cur[never]
    model.train()
    return dict(x_adv=x_adv, steps_to_flip=stf, adv_pred=adv_pred, kappa=kappa, x_clean=x_clean, x_first=x_first)


class CountingModel(nn.Module):
    """Wraps a model; records the batch size of every forward and of every
    backward that reaches the input."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.forward_sizes: list[int] = []
        self.backward_sizes: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.forward_sizes.append(x.shape[0])
        if x.requires_grad:
            x.register_hook(lambda g: self.backward_sizes.append(g.shape[0]))
        return self.inner(x)
