"""FRL (Reweight + Remargin): multiplier updates by hand, validation errors on a
model whose attack outcome is known in closed form, and the weighted loss."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from battui.methods import build_method
from tests.support.tiny_problem import K, reference_pgd, start_noise, tiny_batch, tiny_mlp


def _frl(**kw):
    params = dict(num_classes=3, eps=0.1, tau=0.05, rate=0.05, rate2=0.2, lim=0.5)
    params.update(kw)
    return build_method("frl", **params)


def test_update_matches_hand_computed_values():
    frl = _frl()
    frl.update(torch.tensor([0.1, 0.2, 0.6]), torch.tensor([0.3, 0.1, 0.2]))
    # mean(e0) = 0.3: g0 = (-0.25, -0.15, 0.25); lambda0 = clamp(0.05 * g0, 0) = (0, 0, 0.0125)
    # mean(e1) = 0.2: g1 = (0.05, -0.15, -0.05); lambda1 = clamp(2 * 0.05 * g1, 0) = (0.005, 0, 0)
    # lambda2 = 0.2 * g1 = (0.01, -0.03, -0.01)
    torch.testing.assert_close(frl.lambda0, torch.tensor([0.0, 0.0, 0.0125], dtype=torch.float64))
    torch.testing.assert_close(frl.lambda1, torch.tensor([0.005, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(frl.lambda2, torch.tensor([0.01, -0.03, -0.01], dtype=torch.float64))
    w0, w1 = frl.weights
    # w_i = 1/3 + 2/3 lambda_i - 1/3 sum_{j != i} lambda_j
    torch.testing.assert_close(w0, torch.tensor([1 / 3 - 0.0125 / 3, 1 / 3 - 0.0125 / 3, 1 / 3 + 2 / 3 * 0.0125],
                                                dtype=torch.float64))
    torch.testing.assert_close(w1, torch.tensor([1 / 3 + 2 / 3 * 0.005, 1 / 3 - 0.005 / 3, 1 / 3 - 0.005 / 3],
                                                dtype=torch.float64))
    # eps_i = 0.1 * clamp(exp(2 lambda2_i), 0.98, 2.5): exp(-0.06) = 0.94 is clamped to 0.98
    torch.testing.assert_close(frl.eps_per_class,
                               torch.tensor([0.1 * math.exp(0.02), 0.098, 0.1 * math.exp(-0.02)], dtype=torch.float64))
    # a second update accumulates
    frl.update(torch.tensor([0.1, 0.2, 0.6]), torch.tensor([0.3, 0.1, 0.2]))
    torch.testing.assert_close(frl.lambda0, torch.tensor([0.0, 0.0, 0.025], dtype=torch.float64))
    torch.testing.assert_close(frl.lambda2, torch.tensor([0.02, -0.06, -0.02], dtype=torch.float64))


def test_update_rescales_to_lim_and_clamps_eps():
    frl = _frl(lim=0.02, rate2=10.0)
    frl.update(torch.tensor([0.9, 0.0, 0.0]), torch.tensor([0.0, 0.0, 0.9]))
    # g0 = (0.55, -0.35, -0.35): 0.05 * g0 = (0.0275, ...) -> clamp -> sum 0.0275 > 0.02 -> (0.02, 0, 0)
    torch.testing.assert_close(frl.lambda0, torch.tensor([0.02, 0.0, 0.0], dtype=torch.float64))
    # g1 = (-0.35, -0.35, 0.55): 0.1 * g1 = (.., .., 0.055) -> rescaled to (0, 0, 0.02)
    torch.testing.assert_close(frl.lambda1, torch.tensor([0.0, 0.0, 0.02], dtype=torch.float64))
    # lambda2 = 10 * g1 = (-3.5, -3.5, 5.5): exp(2 * ...) clamped to 0.98 and 2.5
    torch.testing.assert_close(frl.eps_per_class, torch.tensor([0.098, 0.098, 0.25], dtype=torch.float64))


def _identity_problem():
    """logits = x (3 features, 3 classes). CE-PGD moves x_y down and every other
    feature up by eps, so a correctly classified sample flips iff its margin
    x_y - max_{j != y} x_j < 2 eps. With eps = 0.1: margin 0.05 flips, 0.3 does not."""
    model = nn.Linear(3, 3, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    rows, labels = [], []

    def add(label, peak, margin):
        x = torch.full((3,), 0.4, dtype=torch.float64)
        x[peak] += margin
        rows.append(x)
        labels.append(label)

    # class 0: 1 clean-wrong, 1 flips, 2 robust -> e0 = 1/4, e1 = 1/4
    add(0, 1, 0.3), add(0, 0, 0.05), add(0, 0, 0.3), add(0, 0, 0.3)
    # class 1: 3 flip, 1 robust -> e0 = 0, e1 = 3/4
    add(1, 1, 0.05), add(1, 1, 0.05), add(1, 1, 0.05), add(1, 1, 0.3)
    # class 2: 2 clean-wrong, 2 robust -> e0 = 1/2, e1 = 0
    add(2, 0, 0.3), add(2, 1, 0.3), add(2, 2, 0.3), add(2, 2, 0.3)
    return model, torch.stack(rows), torch.tensor(labels)


def test_end_epoch_measures_per_class_errors_and_updates():
    model, x, y = _identity_problem()
    frl = _frl(step_size=0.05)
    assert frl.needs_validation
    model.train()
    perm = torch.randperm(len(y))
    batches = [(x[perm[:5]], y[perm[:5]]), (x[perm[5:]], y[perm[5:]])]
    log = frl.end_epoch(model, batches)
    assert model.training
    e0 = torch.tensor([0.25, 0.0, 0.5], dtype=torch.float64)
    e1 = torch.tensor([0.25, 0.75, 0.0], dtype=torch.float64)
    g0 = e0 - e0.mean() - 0.05
    g1 = e1 - e1.mean() - 0.05
    torch.testing.assert_close(frl.lambda0, (0.05 * g0).clamp(min=0))
    torch.testing.assert_close(frl.lambda1, (0.1 * g1).clamp(min=0))
    torch.testing.assert_close(frl.lambda2, 0.2 * g1)
    assert log["val_clean_error"] == pytest.approx(0.25)
    assert log["val_boundary_error"] == pytest.approx(1 / 3)
    assert log["val_worst_boundary_error"] == pytest.approx(0.75)


def test_loss_is_the_weighted_trades_formula_with_per_class_eps():
    model = tiny_mlp()
    x, y = tiny_batch(model)
    frl = build_method("frl", num_classes=K, eps=0.1, steps=6, beta=1.5)
    lam0 = torch.tensor([0.1, 0.0, 0.2, 0.0], dtype=torch.float64)
    lam1 = torch.tensor([0.0, 0.15, 0.0, 0.05], dtype=torch.float64)
    lam2 = torch.tensor([0.3, -0.2, 0.0, 0.1], dtype=torch.float64)
    frl.load_state_dict({"lambda0": lam0, "lambda1": lam1, "lambda2": lam2})
    scale = torch.exp(2 * lam2).clamp(0.98, 2.5)
    eps_sample = (0.1 * scale)[y]
    step = float(0.1 * scale.max()) / 4
    noise = start_noise(x, "gaussian", seed=12, eps=0.1)
    ref = reference_pgd(model, x, y, eps_sample, step, 6, objective="kl", noise=noise)
    torch.manual_seed(12)
    out = frl.loss(model, x, y)
    w0 = (0.25 + lam0 - lam0.sum() / 4)[y]
    w1 = (0.25 + lam1 - lam1.sum() / 4)[y]
    nat, adv = model(x), model(ref["x_adv"])
    ce = -torch.log_softmax(nat, 1).gather(1, y[:, None]).squeeze(1)
    p = torch.softmax(nat, 1)
    kl = (p * (torch.log_softmax(nat, 1) - torch.log_softmax(adv, 1))).sum(1)
    expected = (w0 * ce + 1.5 * w1 * kl).sum() / (w0 + w1).sum()
    torch.testing.assert_close(out.loss, expected)
    assert ((ref["x_adv"] - x).abs().amax(dim=(1, 2, 3)) <= eps_sample + 1e-12).all()


def test_state_round_trips_through_weights_only_load():
    frl = _frl()
    frl.update(torch.tensor([0.1, 0.2, 0.6]), torch.tensor([0.3, 0.1, 0.2]))
    buf = io.BytesIO()
    torch.save({"method": frl.state_dict()}, buf)
    buf.seek(0)
    fresh = _frl()
    fresh.load_state_dict(torch.load(buf, weights_only=True)["method"])
    for key in ("lambda0", "lambda1", "lambda2"):
        assert torch.equal(getattr(fresh, key), getattr(frl, key))
    with pytest.raises(ValueError, match="lambda0"):
        build_method("frl", num_classes=10).load_state_dict(frl.state_dict())


def test_start_training_is_the_first_update():
    """The reference updates before each epoch's training, the first included: `start_training`."""
    model, x, y = _identity_problem()
    first, later = _frl(step_size=0.05), _frl(step_size=0.05)
    torch.manual_seed(0)
    first.start_training(model, [(x, y)])
    torch.manual_seed(0)
    later.end_epoch(model, [(x, y)])
    assert float(first.lambda2.abs().sum()) > 0
    for name in ("lambda0", "lambda1", "lambda2"):
        assert torch.equal(getattr(first, name), getattr(later, name))
