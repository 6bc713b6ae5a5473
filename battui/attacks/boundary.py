"""BAT's boundary examples (paper Algorithm 1, docs/DESIGN.md section 3.1)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from battui.attacks.pgd import run_pgd


@dataclass
class BoundaryExamples:
    """The two boundary examples per sample and how far the attack went.

    x_clean: last iterate still classified correctly (x if the start point
        x + xi * N(0, I) was already misclassified).
    x_adv: first misclassified iterate, one attack step after x_clean
        (x if the start point was already misclassified; x^steps if never).
    steps_to_flip: LongTensor [B]; 0..steps, -1 = never misclassified.
    adv_pred: LongTensor [B]; eval-mode prediction on the attack's last
        evaluated iterate (on x^steps for samples never stopped).
    """

    x_clean: Tensor
    x_adv: Tensor
    steps_to_flip: Tensor
    adv_pred: Tensor


def boundary_examples(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    step_size: float | Tensor,
    steps: int,
    xi: float = 0.001,
) -> BoundaryExamples:
    r"""One early-stopped TRADES-KL attack that yields both boundary examples.

    x~ = clip(x + xi * N(0, I)); for k = 0..steps-1, for every active sample:
    if argmax f(x~) != y the sample stops (steps_to_flip = k), else
    x_clean = x~ and x~ = Proj_B(x, eps)(x~ + step * sign(grad KL(p(x) || p(x~)))),
    x_adv = x~. Samples never stopped get one forward on x^steps for their
    prediction; if that one is misclassified steps_to_flip = steps, else -1.

    Stopped samples leave the batch: they cost no further forward or backward.

    Arguments:
        model: logits model, run in eval mode (modes restored afterwards).
        x: images in [0, 1], [B, C, H, W]. y: LongTensor [B].
        eps, step_size: float or per-sample [B] tensor. steps: int (10 in BAT).
        xi: std of the start noise (default 0.001).

    Example::

        be = boundary_examples(model, x, y, 8/255, 2/255, 10)
        loss = F.cross_entropy(model(be.x_clean), y)
    """
    t = run_pgd(
        model, x, y, eps=eps, step_size=step_size, steps=steps, objective="kl",
        start="gaussian", xi=xi, stop_after_flip=0, record_boundary=True,
    )
    return BoundaryExamples(t.x_clean, t.x_first_adv, t.steps_to_flip, t.adv_pred)
