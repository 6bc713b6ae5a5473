"""Training methods: registry, shared contract, and each loss against its
formula written out here with an independent (plain, uncompacted) attack."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from battui.methods import METHODS, Method, MethodOutput, build_method, method_params
from battui.methods.bat import TABLE2
from battui.methods.gairat import gair_weights
from tests.support.tiny_problem import K, reference_pgd, start_noise, tiny_mlp

EPS, STEP, STEPS = 0.12, 0.02, 8
PAPER_METHODS = ("pgd-at", "trades", "frl", "fat", "gairat", "bat")
ATTACK = dict(eps=EPS, step_size=STEP, steps=STEPS)


def _log_p(logits):
    return logits - logits.exp().sum(1, keepdim=True).log()


def _kl(p_logits, q_logits):
    """KL(p || q) per sample, written out."""
    lp, lq = _log_p(p_logits), _log_p(q_logits)
    return (lp.exp() * (lp - lq)).sum(1)


def _ce(logits, y):
    return -_log_p(logits).gather(1, y[:, None]).squeeze(1)


def _kl_u_p(logits):  # KL(U || p)
    k = logits.shape[1]
    return ((1 / k) * (math.log(1 / k) - _log_p(logits))).sum(1)


def _kl_p_u(logits):  # KL(p || U)
    lp = _log_p(logits)
    return (lp.exp() * (lp - math.log(1 / logits.shape[1]))).sum(1)


# ---------------------------------------------------------------- registry


def test_registry_names_and_params():
    assert METHODS[:6] == PAPER_METHODS  # later issues may register more
    for name in METHODS:
        params = method_params(name)
        assert params["eps"] == pytest.approx(8 / 255) and params["step_size"] == pytest.approx(2 / 255)
        assert params["steps"] == 10
        assert all(v is not None for v in params.values())
        method = build_method(name, **params)  # defaults round-trip
        assert isinstance(method, Method) and method.name == name
    assert method_params("bat")["target_on"] == ("clean", "adv")
    assert method_params("frl")["num_classes"] == 10
    assert "num_classes" not in method_params("bat")


def test_unknown_method_or_param_lists_valid_names():
    with pytest.raises(ValueError, match="pgd-at, trades, frl, fat, gairat, bat"):
        build_method("mart")
    with pytest.raises(ValueError, match="beta"):
        build_method("trades", gamma=1.0)
    with pytest.raises(ValueError):
        method_params("nope")
    with pytest.raises(ValueError, match="uniform_kl"):
        build_method("bat", uniform_kl="both")
    with pytest.raises(ValueError, match="target_on"):
        build_method("bat", target_on=("clean", "nat"))


# ---------------------------------------------------------------- shared contract


@pytest.mark.parametrize("name", METHODS)
def test_every_method_honours_the_contract(problem, name):
    model, x, y = problem
    extra = {"num_classes": K} if "num_classes" in method_params(name) else {}
    method = build_method(name, **ATTACK, **extra)
    if method.teacher_from:  # ABSLD distils a teacher, which the engine loads and hands over
        method.use_teacher(tiny_mlp(seed=5))
    method.start_epoch(9, 10)

    class DDPLike(nn.Module):  # the attack runs on .module, the loss on the wrapper
        def __init__(self, module):
            super().__init__()
            self.module = module
            self.calls = 0

        def forward(self, z):
            self.calls += 1
            return self.module(z)

    wrapped = DDPLike(model)
    model.eval()
    out = method.loss(wrapped, x, y)
    assert isinstance(out, MethodOutput)
    assert out.loss.dim() == 0 and out.loss.requires_grad
    assert model.training  # train mode for the loss
    assert all(p.grad is None for p in model.parameters())  # the attack leaked no grads
    assert 1 <= wrapped.calls <= 3  # only loss forwards go through the wrapper
    assert sum(out.parts.values()) == pytest.approx(out.loss.item(), rel=1e-9)
    assert all(isinstance(v, float) for v in out.parts.values())
    stf, pred = out.attack.steps_to_flip, out.attack.adv_pred
    assert stf.shape == pred.shape == (x.shape[0],) and stf.dtype == pred.dtype == torch.long
    assert ((stf >= -1) & (stf <= STEPS)).all() and not stf.requires_grad
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    state = method.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    method.load_state_dict(torch.load(buf, weights_only=True))


# ---------------------------------------------------------------- losses vs formulas


def test_pgd_at_loss(problem):
    model, x, y = problem
    noise = start_noise(x, "uniform", seed=1, eps=EPS)
    ref = reference_pgd(model, x, y, EPS, STEP, STEPS, noise=noise)
    torch.manual_seed(1)
    out = build_method("pgd-at", **ATTACK).loss(model, x, y)
    expected = _ce(model(ref["x_adv"]), y).mean()
    torch.testing.assert_close(out.loss, expected)
    assert torch.equal(out.attack.steps_to_flip, ref["steps_to_flip"])


@pytest.mark.parametrize("beta", [1.0, 6.0])
def test_trades_loss(problem, beta):
    model, x, y = problem
    noise = start_noise(x, "gaussian", seed=2, eps=EPS)
    ref = reference_pgd(model, x, y, EPS, STEP, STEPS, objective="kl", noise=noise)
    torch.manual_seed(2)
    out = build_method("trades", beta=beta, **ATTACK).loss(model, x, y)
    nat = model(x)
    expected = _ce(nat, y).mean() + beta * _kl(nat, model(ref["x_adv"])).mean()
    torch.testing.assert_close(out.loss, expected)
    assert torch.equal(out.attack.adv_pred, ref["adv_pred"])


def _bat_expected(model, x, y, ref_stop, ref_full, *, beta, alpha, uniform, source, target_on):
    nat = model(x)
    kl_u = _kl_u_p if uniform == "paper" else _kl_p_u
    if source == "boundary":
        loss = _ce(model(ref_stop["x_clean"]), y).mean() + beta * _kl(nat, model(ref_stop["x_first"])).mean()
    else:
        loss = _ce(nat, y).mean() + beta * _kl(nat, model(ref_full["x_adv"])).mean()
    pair = ref_full if (source == "fixed" or "fixed_adv" in target_on) else ref_stop
    for which in target_on:
        z = ref_full["x_adv"] if which == "fixed_adv" else pair["x_clean" if which == "clean" else "x_first"]
        loss = loss + alpha * kl_u(model(z)).mean()
    return loss


@pytest.mark.parametrize("no", sorted(TABLE2))
def test_bat_loss_eq7_and_table2_ablations(problem, no):
    model, x, y = problem
    noise = start_noise(x, "gaussian", seed=4, eps=EPS)
    ref_stop = reference_pgd(model, x, y, EPS, STEP, STEPS, objective="kl", noise=noise, stop_after_flip=0)
    ref_full = reference_pgd(model, x, y, EPS, STEP, STEPS, objective="kl", noise=noise)
    # the boundary pair does not depend on whether samples stop
    torch.testing.assert_close(ref_stop["x_clean"], ref_full["x_clean"], rtol=0, atol=0)
    torch.testing.assert_close(ref_stop["x_first"], ref_full["x_first"], rtol=0, atol=0)
    torch.manual_seed(4)
    method = build_method("bat", beta=6.0, alpha=1.5, **TABLE2[no], **ATTACK)
    out = method.loss(model, x, y)
    expected = _bat_expected(model, x, y, ref_stop, ref_full, beta=6.0, alpha=1.5, uniform="paper", **TABLE2[no])
    torch.testing.assert_close(out.loss, expected)
    assert torch.equal(out.attack.steps_to_flip, ref_stop["steps_to_flip"])
    assert method.early_stop == (no in (1, 2, 3, 5))


def test_bat_code_variant_uses_kl_p_to_uniform(problem):
    model, x, y = problem
    noise = start_noise(x, "gaussian", seed=6, eps=EPS)
    ref = reference_pgd(model, x, y, EPS, STEP, STEPS, objective="kl", noise=noise, stop_after_flip=0)
    torch.manual_seed(6)
    out = build_method("bat", uniform_kl="code", **ATTACK).loss(model, x, y)
    expected = _bat_expected(model, x, y, ref, None, beta=6.0, alpha=1.0, uniform="code",
                             source="boundary", target_on=("clean", "adv"))
    torch.testing.assert_close(out.loss, expected)
    assert set(out.parts) == {"source_ce", "source_kl", "target_clean", "target_adv"}


def test_bat_gradient_flows_through_clean_prediction(problem):
    """p(x) in the KL term is not detached (as TRADES): with beta only, the loss
    still depends on f(x)."""
    model, x, y = problem
    method = build_method("bat", alpha=0.0, **ATTACK)
    torch.manual_seed(0)
    out = method.loss(model, x, y)
    assert out.parts["source_kl"] > 0
    out.loss.backward()
    assert model[1].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- FAT


def test_fat_tau_schedule():
    fat = build_method("fat")
    taus = []
    for epoch in range(120):
        fat.start_epoch(epoch, 120)
        taus.append(fat.tau)
    # the reference (1-based epochs): tau 0 through epoch 50, 1 through 90, then 2
    assert taus == [0] * 50 + [1] * 40 + [2] * 30
    fixed = build_method("fat", tau_schedule=(3,), tau_milestones=())
    fixed.start_epoch(100, 120)
    assert fixed.tau == 3


def test_fat_with_large_tau_is_plain_pgd(problem):
    model, x, y = problem
    fat = build_method("fat", tau_schedule=(STEPS + 1,), tau_milestones=(), omega=0.0, **ATTACK)
    torch.manual_seed(8)
    out_fat = fat.loss(model, x, y)
    torch.manual_seed(8)
    out_pgd = build_method("pgd-at", **ATTACK).loss(model, x, y)
    torch.testing.assert_close(out_fat.loss, out_pgd.loss, rtol=0, atol=0)
    assert torch.equal(out_fat.attack.adv_pred, out_pgd.attack.adv_pred)


def test_fat_tau_early_stop_matches_reference(problem):
    model, x, y = problem
    fat = build_method("fat", omega=0.0, **ATTACK)
    fat.start_epoch(0, 120)
    assert fat.tau == 0
    noise = start_noise(x, "uniform", seed=9, eps=EPS)
    ref = reference_pgd(model, x, y, EPS, STEP, STEPS, noise=noise, stop_after_flip=0)
    torch.manual_seed(9)
    out = fat.loss(model, x, y)
    torch.testing.assert_close(out.loss, _ce(model(ref["x_adv"]), y).mean())


# ---------------------------------------------------------------- GAIRAT


def test_gairat_weights_formula():
    kappa = torch.tensor([0, 3, 5, 10])
    raw = torch.tensor([(math.tanh(-1 + 5 * (1 - 2 * k / 10)) + 1) / 2 for k in (0, 3, 5, 10)],
                       dtype=torch.float32)
    torch.testing.assert_close(gair_weights(kappa, 10, -1.0), raw * 4 / raw.sum())
    w = gair_weights(kappa, 10, -1.0)
    assert w.mean().item() == pytest.approx(1.0) and (w[:-1] > w[1:]).all()


def test_gairat_loss_and_warmup(problem):
    model, x, y = problem
    gairat = build_method("gairat", **ATTACK)
    noise = start_noise(x, "uniform", seed=10, eps=EPS)
    ref = reference_pgd(model, x, y, EPS, STEP, STEPS, noise=noise)
    ce = _ce(model(ref["x_adv"]), y)

    gairat.start_epoch(3, 10)  # warm-up: the first half
    torch.manual_seed(10)
    torch.testing.assert_close(gairat.loss(model, x, y).loss, ce.mean())

    gairat.start_epoch(4, 10)  # (epoch + 1) >= 0.5 * total: reweighted
    torch.manual_seed(10)
    out = gairat.loss(model, x, y)
    kappa = ref["kappa"].double()
    w = (torch.tanh(-1 + (STEPS // 2 - kappa) * 5 / (STEPS // 2)) + 1) / 2
    w = w * len(w) / w.sum()
    torch.testing.assert_close(out.loss, (ce * w).mean())
    assert not torch.allclose(out.loss, ce.mean())
