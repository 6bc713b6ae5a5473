"""TRIX: "Class-aware targeted attacks for robust fairness" (arXiv 2507.07768; public code
Fairness-a11y/TRIX @cdeb435, ``losses.py: mixed_trades_loss``).

DAFA with TRADES (docs/DESIGN.md section 3.3), plus a per-batch, class-aware attack: the
samples of the batch's strong classes are attacked *targeted*, the others untargeted.

Class weights (DAFA's part; set once, after the warm-up, from the mean train-mode
adversarial softmax p_i(j) of each class over the last warm-up epoch):

    W_i = 1 + lambda * sum_{j != i} [  p_i(j) p_j(j)   if p_i(i) < p_j(j)
                                     - p_j(i) p_i(i)   otherwise (ties too) ]
    eps_i = max(W_i, 0) * eps,   step_i = max(W_i, 0) * step_size

TRIX's code computes the second branch as p_j(i) p_i(i) (what the easy class i gives
class j), where DAFA's own code (rucy74/DAFA ``utils.py``, battui's `dafa`) subtracts
p_i(j) p_j(j). Every batch, from the first epoch on:

    P = softmax(f(x)) in eval mode, no grad;  Pbar = per-class batch mean of P (+1e-8 on the diagonal)
    v = the same formula on Pbar (lambda 1);  sample n targeted  iff  v_{y_n} < mean_m v_{y_m}
    t_n ~ uniform over the classes != y_n (drawn once per batch)
    x'^0 = x + xi N(0, I);  10 steps of
    x' <- clip01(Proj_{eps_{y_n}}(x' + step_{y_n} * sign grad l_n)),
        l_n = -CE(f(x'_n), t_n) if targeted else KL(P_n || p(x'_n))
    L = (1/B) sum_n W_{y_n} CE(f(x_n), y_n) + beta (1/B) sum_n KL(p(x_n) || p(x'_n))     parts ce, kl

Descending CE toward t_n is the code's ``-sign(grad)`` step on the targeted samples. The
method's docstring in the public code speaks of EMA smoothing during PGD; the code has
none (an EMA variant appears only in the rebuttal), and neither has battui.

Arguments:
    eps (float): base Linf budget. (Default: 8/255)
    step_size (float): base attack step. (Default: 2/255)
    steps (int): attack steps. (Default: 10)
    beta (float): TRADES beta. (Default: 6.0)
    lam (float): lambda of the class weights (the batch weights always use 1, as the code). (Default: 1.0)
    warmup (float): fraction of training before the class weights are set (70 of the
        code's 150 epochs). (Default: 70/150)
    xi (float): std of the start noise. (Default: 0.001)
    num_classes (int): K. (Default: 10)

The code's schedule (150 CIFAR-10 epochs, lr 0.1 with 0.01 from 140 and 0.001 from 145,
Nesterov) is not a method default: TRIX trains on the preset's schedule like DAFA.

Shape:
    x: [B, C, H, W] in [0, 1]; y: [B]; loss: scalar. State: W [K], similarity sums [K, K] (DAFA's).

Example::

    method = build_method("trix", num_classes=10)
    method.start_epoch(epoch, total_epochs)
    out = method.loss(model, x, y)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from battui.attacks import class_sums, eval_mode
from battui.methods.classwise import accumulator_dtype
from battui.methods.dafa import DAFA


def trix_weights(similarity: Tensor, lam: float) -> Tensor:
    """W_i = 1 + lam * sum_{j != i} (p_i(j) p_j(j) if p_i(i) < p_j(j) else -p_j(i) p_i(i))
    for a similarity matrix [K, K] (row i = mean softmax of class i), in its own dtype."""
    diag = similarity.diagonal()
    harder = diag[:, None] < diag[None, :]  # [i, j]: class i is the harder of the two
    gain = similarity * diag[None, :]  # p_i(j) p_j(j)
    give = similarity.T * diag[:, None]  # p_j(i) p_i(i)
    terms = torch.where(harder, gain, -give)
    terms = terms - torch.diag_embed(terms.diagonal())
    return 1.0 + lam * terms.sum(dim=1)


class TRIX(DAFA):
    name = "trix"
    label = "TRIX"

    def __init__(self, *args: Any, warmup: float = 70 / 150, **kwargs: Any) -> None:
        super().__init__(*args, warmup=warmup, **kwargs)  # DAFA's parameters; the code's 70 of 150 epochs

    def class_weights(self, similarity: Tensor) -> Tensor:
        return trix_weights(similarity.to(torch.float64), self.lam)

    def targets(self, p: Tensor, y: Tensor) -> Tensor:
        """Per-sample target classes [B] from the batch's clean softmax p [B, K]: a class != y
        drawn uniformly for the samples of the strong classes, -1 (untargeted) for the rest."""
        k = self.num_classes
        dtype = accumulator_dtype(y.device)
        pbar = class_sums(y, k, p, dtype) / class_sums(y, k, dtype=dtype).clamp(min=1)[:, None]
        pbar = pbar + 1e-8 * torch.eye(k, dtype=dtype, device=y.device)
        v = trix_weights(pbar, 1.0)[y]
        draw = (y + torch.randint(1, k, y.shape, device=y.device)) % k
        return torch.where(v < v.mean(), draw, -1)

    def attack_options(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        with eval_mode(model), torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            p = F.softmax(model(x), dim=1)  # autocast off: full precision, as pgd's own p0 under a gaussian start
        return {"p0": p, "targets": self.targets(p, y)}
