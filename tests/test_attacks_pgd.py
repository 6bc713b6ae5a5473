"""The one PGD loop (`pgd`) and BAT's boundary examples from it, against a plain reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from battui.attacks import PGDResult, kl_logits, kl_uniform, per_class_mean, pgd
from tests.support.tiny_problem import CountingModel, reference_pgd, start_noise

EPS, STEP, STEPS = 0.12, 0.02, 8


def _in_ball(x_adv, x, eps):
    e = torch.as_tensor(eps, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    assert ((x_adv - x).abs() <= e + 1e-12).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("objective,start", [("ce", "uniform"), ("kl", "gaussian"), ("ce", "none")])
def test_pgd_matches_plain_reference(problem, objective, start):
    model, x, y = problem
    noise = start_noise(x, start, seed=3, eps=EPS)
    ref = reference_pgd(model, x, y, EPS, STEP, STEPS, objective=objective, noise=noise)
    torch.manual_seed(3)
    res = pgd(model, x, y, eps=EPS, step_size=STEP, steps=STEPS, objective=objective, start=start)
    assert isinstance(res, PGDResult)
    assert res.x_last_correct is None and res.x_first_misclassified is None
    torch.testing.assert_close(res.x_last, ref["x_adv"], rtol=0, atol=1e-12)
    assert torch.equal(res.steps_to_flip, ref["steps_to_flip"])
    assert torch.equal(res.pred_last, ref["adv_pred"])
    assert torch.equal(res.correct_steps, ref["kappa"])
    assert res.steps_to_flip.dtype == torch.long and res.pred_last.dtype == torch.long
    # the problem is built so that every kind of outcome occurs
    stf = res.steps_to_flip
    assert (stf == 0).any() and (stf > 0).any() and (stf == -1).any()
    assert ((stf >= -1) & (stf <= STEPS)).all()
    _in_ball(res.x_last, x, EPS)


@pytest.mark.parametrize("tau", [0, 1, 3])
def test_early_stop_matches_reference_counter(problem, tau):
    model, x, y = problem
    eps = torch.linspace(0.1, 0.4, x.shape[0], dtype=x.dtype)  # per-sample budgets
    noise = start_noise(x, "uniform", seed=5, eps=eps)
    ref = reference_pgd(model, x, y, eps, STEP, STEPS, noise=noise, stop_after_flip=tau)
    torch.manual_seed(5)
    res = pgd(model, x, y, eps=eps, step_size=STEP, steps=STEPS, stop_after_flip=tau)
    torch.testing.assert_close(res.x_last, ref["x_adv"], rtol=0, atol=1e-12)
    assert torch.equal(res.steps_to_flip, ref["steps_to_flip"])
    assert torch.equal(res.pred_last, ref["adv_pred"])
    _in_ball(res.x_last, x, eps)
    # a stopped sample returns a misclassified iterate
    stopped = (res.steps_to_flip >= 0) & (res.steps_to_flip + tau < STEPS)
    with torch.no_grad():
        assert (model(res.x_last[stopped]).argmax(1) != y[stopped]).all()


def test_pred_last_is_the_prediction_on_x_last(problem):
    model, x, y = problem
    res = pgd(model, x, y, eps=EPS, step_size=STEP, steps=STEPS, stop_after_flip=0)
    with torch.no_grad():
        assert torch.equal(model(res.x_last).argmax(1), res.pred_last)


def test_attack_restores_modes_and_leaves_no_param_grads(problem):
    model, x, y = problem
    model = nn.Sequential(nn.Dropout(0.5), model)  # dropout would change the answer in train mode
    model.train()
    model[1][1].eval()  # a mixed-mode model keeps each module's own flag
    with torch.no_grad():  # callers may hold a no_grad context
        a = pgd(model, x, y, eps=EPS, step_size=STEP, steps=3, start="none")
    b = pgd(model, x, y, eps=EPS, step_size=STEP, steps=3, start="none")
    assert torch.equal(a.x_last, b.x_last)  # eval mode: deterministic, and grads worked under no_grad
    assert model.training and model[0].training and not model[1][1].training and model[1][0].training
    assert all(p.grad is None for p in model.parameters())


def test_ddp_style_wrapper_is_unwrapped(problem):
    model, x, y = problem

    class Wrapper(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, z):
            raise AssertionError("the attack must run on .module")

    torch.manual_seed(0)
    a = pgd(Wrapper(model), x, y, eps=EPS, step_size=STEP, steps=3)
    torch.manual_seed(0)
    b = pgd(model, x, y, eps=EPS, step_size=STEP, steps=3)
    assert torch.equal(a.x_last, b.x_last)


def test_pgd_without_random_start_is_deterministic_ce_pgd(problem):
    model, x, y = problem
    ref = reference_pgd(model, x, y, EPS, STEP, 4, objective="ce")
    out = pgd(model, x, y, eps=EPS, step_size=STEP, steps=4, start="none")
    torch.testing.assert_close(out.x_last, ref["x_adv"], rtol=0, atol=1e-12)


# ---------------------------------------------------------------- BAT boundary examples


def boundary_examples(model, x, y, bucket=None):
    """Algorithm 1 as BAT runs it: the early-stopped KL attack with the boundary pair recorded."""
    return pgd(model, x, y, eps=EPS, step_size=STEP, steps=STEPS, objective="kl", start="gaussian",
               stop_after_flip=0, record_boundary=True, bucket=bucket)


def test_boundary_examples_match_design_3_1(problem):
    model, x, y = problem
    noise = start_noise(x, "gaussian", seed=7, eps=EPS)
    ref = reference_pgd(model, x, y, EPS, STEP, STEPS, objective="kl", noise=noise, stop_after_flip=0)
    torch.manual_seed(7)
    be = boundary_examples(model, x, y)
    assert torch.equal(be.steps_to_flip, ref["steps_to_flip"])
    torch.testing.assert_close(be.x_last_correct, ref["x_clean"], rtol=0, atol=1e-12)
    torch.testing.assert_close(be.x_first_misclassified, ref["x_first"], rtol=0, atol=1e-12)
    stf = be.steps_to_flip
    assert (stf == 0).any() and (stf > 0).any() and (stf == -1).any()


def test_boundary_examples_properties(problem):
    """Checked from the outputs alone, with the model and the formula."""
    model, x, y = problem
    torch.manual_seed(11)
    be = boundary_examples(model, x, y)
    stf = be.steps_to_flip
    _in_ball(be.x_last_correct, x, EPS)
    _in_ball(be.x_first_misclassified, x, EPS)
    model.eval()
    with torch.no_grad():
        pred_clean = model(be.x_last_correct).argmax(1)
        pred_adv = model(be.x_first_misclassified).argmax(1)
        p0 = F.softmax(model(x), 1)
    at_start = stf == 0
    # flipped at the start point: both are x itself (Algorithm 1, lines 3 and 7)
    assert torch.equal(be.x_last_correct[at_start], x[at_start])
    assert torch.equal(be.x_first_misclassified[at_start], x[at_start])
    # every other x_clean is classified correctly; every flipped x_adv is not
    assert (pred_clean[~at_start] == y[~at_start]).all()
    flipped = stf > 0
    assert (pred_adv[flipped] != y[flipped]).all()
    assert (pred_adv[stf == -1] == y[stf == -1]).all()
    # x_adv is exactly one KL attack step from x_clean
    xc = be.x_last_correct[~at_start].clone().requires_grad_(True)
    kl = (p0[~at_start] * (p0[~at_start].log() - F.log_softmax(model(xc), 1))).sum()
    (g,) = torch.autograd.grad(kl, xc)
    xs = x[~at_start]
    one_step = torch.min(torch.max(xc.detach() + STEP * g.sign(), (xs - EPS).clamp(min=0)), (xs + EPS).clamp(max=1))
    torch.testing.assert_close(be.x_first_misclassified[~at_start], one_step, rtol=0, atol=1e-12)
    gap = (be.x_first_misclassified[~at_start] - be.x_last_correct[~at_start]).abs().amax(dim=(1, 2, 3))
    assert (gap <= STEP + 1e-12).all()


@pytest.mark.parametrize("bucket", [1, 3])
def test_boundary_examples_spend_no_model_evaluation_on_stopped_samples(problem, bucket):
    model, x, y = problem
    counted = CountingModel(model)
    torch.manual_seed(7)
    be = boundary_examples(counted, x, y, bucket=bucket)
    stf = be.steps_to_flip
    n = x.shape[0]

    def size(active: int) -> int:  # the active set in whole buckets, never more than the batch
        return min(n, math.ceil(active / bucket) * bucket)

    # forward 0: p(x) for the KL target; then iterate k sees the samples not stopped
    # before k (padded to whole buckets); then one forward on the samples that ran every step
    alive = [int(((stf == -1) | (stf >= k)).sum()) for k in range(STEPS)]
    expected = [n] + [size(a) for a in alive if a > 0]
    survivors = int(((stf == -1) | (stf == STEPS)).sum())
    if survivors:
        expected.append(size(survivors))
    assert counted.forward_sizes == expected
    # backward passes only for the attacked iterates, of the same sizes
    assert counted.backward_sizes == [size(a) for a in alive if a > 0]
    assert sum(counted.forward_sizes) < n * (STEPS + 2)
    assert sum(alive) < n * STEPS  # early stopping saved work on this batch


@pytest.mark.parametrize("bucket", [3, 16, None])
@pytest.mark.parametrize("kind", ["bat", "fat"])
def test_buckets_do_not_change_the_attack(problem, bucket, kind):
    """Padding rows are masked out of the loss and every record: any bucket gives exact compaction's results."""
    model, x, y = problem
    args = (dict(objective="kl", start="gaussian", stop_after_flip=0, record_boundary=True) if kind == "bat"
            else dict(objective="ce", start="uniform", stop_after_flip=1, omega=0.01))
    runs = []
    for b in (1, bucket):
        torch.manual_seed(3)
        runs.append(pgd(model, x, y, eps=EPS, step_size=STEP, steps=STEPS, bucket=b, **args))
    exact, padded = runs
    assert (exact.steps_to_flip >= 0).any() and (exact.steps_to_flip == -1).any()
    for field in ("x_last", "pred_last", "steps_to_flip", "correct_steps", "x_last_correct", "x_first_misclassified"):
        a, b = getattr(exact, field), getattr(padded, field)
        assert (a is None and b is None) or torch.equal(a, b), field


# ---------------------------------------------------------------- helpers


def test_kl_helpers_match_written_formulas():
    torch.manual_seed(0)
    a, b = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    p, q = a.softmax(1), b.softmax(1)
    torch.testing.assert_close(kl_logits(a, b), (p * (p / q).log()).sum(1).mean())
    torch.testing.assert_close(kl_logits(a, b, reduction="none"), (p * (p / q).log()).sum(1))
    u = torch.full_like(q, 0.25)
    torch.testing.assert_close(kl_uniform(b, "paper"), (u * (u / q).log()).sum(1).mean())
    torch.testing.assert_close(kl_uniform(b, "code"), (q * (q / u).log()).sum(1).mean())
    assert kl_uniform(torch.zeros(3, 4), "paper").abs() < 1e-7
    with pytest.raises(ValueError):
        kl_uniform(b, "other")


def test_per_class_mean():
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    v = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    out = per_class_mean(v, y, 4)
    assert out.tolist() == [0.5, 1.0, pytest.approx(2 / 3), 0.0]
    assert math.isclose(float(out[2]), 2 / 3)


def test_bad_arguments_raise(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match="objective"):
        pgd(model, x, y, eps=EPS, step_size=STEP, steps=1, objective="cw")
    with pytest.raises(ValueError, match="start"):
        pgd(model, x, y, eps=EPS, step_size=STEP, steps=1, start="zero")
    with pytest.raises(ValueError, match="per-sample"):
        pgd(model, x, y, eps=torch.ones(3), step_size=STEP, steps=1)
