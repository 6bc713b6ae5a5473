"""CFA, DAFA and WAT: each update rule against values worked out by hand, plus
loss / perturbation / checkpoint checks on a tiny model (3x8x8 inputs)."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from battui.attacks import kl_logits, pgd
from battui.methods.cfa import CFA
from battui.methods.dafa import DAFA, dafa_weights
from battui.methods.wat import WAT

K = 4
EPS, STEP, STEPS = 0.1, 0.03, 5


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, K)).double()


def tiny_data(n: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.arange(n) % K
    return x, y


class Recorder(nn.Module):
    """Keeps the inputs of train-mode forwards (the methods' loss passes)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.train_inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.train_inputs.append(x.detach().clone())
        return self.inner(x)


def roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def loss_and_reference(method, x, y, seed: int, eps, step):
    """The method's loss on a tiny model, and a copy's clean and adversarial logits
    from the same start noise (TRADES' KL attack with per-sample ``eps``, ``step``)."""
    model = tiny_model()
    ref = copy.deepcopy(model)  # BatchNorm running stats move in the loss passes
    torch.manual_seed(seed)
    out = method.loss(model, x, y)
    torch.manual_seed(seed)
    res = pgd(ref, x, y, eps=eps, step_size=step, steps=STEPS, objective="kl", start="gaussian")
    ref.train()
    return out, ref(x), ref(res.x_last)


def check_loss_and_ball(method, class_eps: torch.Tensor) -> None:
    """Finite loss with a grad; x_adv (second train-mode input) in B(x, eps_y) and [0, 1]."""
    model = Recorder(tiny_model())
    x, y = tiny_data()
    out = method.loss(model, x, y)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert out.attack.steps_to_flip.shape == y.shape and out.attack.adv_pred.shape == y.shape
    assert math.isclose(sum(out.parts.values()), float(out.loss.detach()), rel_tol=1e-9)
    x_in, x_adv = model.train_inputs
    assert torch.equal(x_in, x)
    delta = (x_adv - x).abs().flatten(1).max(dim=1).values
    assert (delta <= class_eps[y].to(delta) + 1e-12).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    return x, y, delta


# ---------------------------------------------------------------- CFA
def cfa(**kw) -> CFA:
    return CFA(**{"eps": EPS, "step_size": STEP, "steps": STEPS, "num_classes": K, **kw})


def test_cfa_eps_and_beta_from_per_class_accuracy():
    m = cfa(warmup=0.1)  # begin = round(0.1 * 20) = 2
    m.start_epoch(0, 20)
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3])
    ok = torch.tensor([1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0], dtype=torch.bool)
    m.observe(y[:8], ok[:8])
    m.observe(y[8:], ok[8:])
    acc = torch.tensor([3 / 5, 2 / 2, 1 / 4, 3 / 4], dtype=torch.float64)
    m.start_epoch(1, 20)  # still warming up: plain TRADES budget
    torch.testing.assert_close(m.train_acc, acc)
    assert torch.equal(m.class_eps, torch.full((K,), EPS, dtype=torch.float64))
    assert torch.equal(m.class_beta, torch.full((K,), 6.0, dtype=torch.float64))
    m.observe(y, ok)
    m.start_epoch(2, 20)
    # eps_k = (0.5 + A_k) * eps, beta_k = (0.5 + A_k) * 6
    torch.testing.assert_close(m.class_eps, torch.tensor([1.1, 1.5, 0.75, 1.25], dtype=torch.float64) * EPS)
    torch.testing.assert_close(m.class_beta, torch.tensor([6.6, 9.0, 4.5, 7.5], dtype=torch.float64))
    before = m.class_eps.clone()
    m.start_epoch(2, 20)  # resumed inside epoch 2: nothing recomputed, nothing reset
    assert torch.equal(m.class_eps, before) and m.measured_epochs == 2


def test_cfa_loss_is_the_calibrated_trades_mix():
    m = cfa(warmup=0.0)
    m.start_epoch(0, 10)
    x, y = tiny_data()
    m.observe(y, y % 2 == 0)  # A = [1, 0, 1, 0]
    m.start_epoch(1, 10)
    eps_y = torch.tensor([1.5, 0.5, 1.5, 0.5], dtype=torch.float64)[y] * EPS
    out, logits, logits_adv = loss_and_reference(m, x, y, 5, eps_y, STEP)
    beta = torch.tensor([9.0, 3.0, 9.0, 3.0], dtype=torch.float64)[y]
    want = (F.cross_entropy(logits, y, reduction="none") / (1 + beta)
            + kl_logits(logits, logits_adv, reduction="none") * beta / (1 + beta)).mean()
    torch.testing.assert_close(out.loss, want)
    # the step's own adversarial accuracy is counted for the next epoch
    assert float(m._seen.sum()) == len(y)


def test_cfa_loss_grad_and_per_class_ball():
    m = cfa(warmup=0.0)
    m.start_epoch(0, 10)
    m.observe(torch.arange(K), torch.tensor([True, False, True, True]))
    m.start_epoch(1, 10)
    x, y, delta = check_loss_and_ball(m, m.class_eps)
    # class 0 (A = 1) may go beyond the base eps, class 1 (A = 0) stays at half of it
    assert delta[y == 0].max() > EPS and delta[y == 1].max() <= 0.5 * EPS + 1e-12


def test_fawa_accepts_rejects_and_averages():
    m = cfa(fawa_threshold=0.24, fawa_decay=0.88)
    model = tiny_model()
    assert m.averaged_state() is None
    assert not m.fawa_update(model, 0.2) and m.averaged_state() is None
    theta1 = {k: v.clone() for k, v in model.state_dict().items()}
    assert m.fawa_update(model, 0.24)  # first accepted: the average is the model
    for k, v in theta1.items():
        assert torch.equal(m.averaged_state()[k], v)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[2].running_mean.add_(2.0)
    model[2].num_batches_tracked += 7
    theta2 = {k: v.clone() for k, v in model.state_dict().items()}
    assert m.fawa_update(model, 0.5)
    avg = m.averaged_state()
    for k in theta1:
        if theta1[k].is_floating_point():
            torch.testing.assert_close(avg[k], 0.88 * theta1[k] + 0.12 * theta2[k])
        else:
            assert torch.equal(avg[k], theta2[k])  # integer buffers: latest
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-3.0)
    assert not m.fawa_update(model, 0.1)  # rejected: unchanged
    for k in avg:
        assert torch.equal(m.averaged_state()[k], avg[k])
    assert m.fawa_count == 2


def test_cfa_end_epoch_threshold_decides():
    model = tiny_model()
    x, y = tiny_data()
    batches = [(x[:12], y[:12]), (x[12:], y[12:])]
    keen, strict = cfa(fawa_threshold=0.0), cfa(fawa_threshold=1.01)
    keen.start_training(model, batches)  # FAWA averages trained weights only: nothing before training
    assert keen.averaged_state() is None and keen.fawa_count == 0
    keen.loss(model, x, y), strict.loss(model, x, y)
    out = keen.end_epoch(model, batches)
    assert out["fawa_accepted"] == 1.0 and keen.averaged_state() is not None
    assert 0.0 <= out["val_worst_robust_acc"] <= out["val_robust_acc"] <= 1.0
    assert strict.end_epoch(model, batches)["fawa_accepted"] == 0.0 and strict.averaged_state() is None
    model.load_state_dict(keen.averaged_state())  # what the engine does at the end


def test_cfa_state_roundtrip():
    m = cfa(warmup=0.0, fawa_threshold=0.0)
    m.start_epoch(0, 4)
    check_loss_and_ball(m, m.class_eps)
    m.start_epoch(1, 4)
    m.fawa_update(tiny_model(), 1.0)
    m.observe(torch.arange(K), torch.tensor([True, False, False, True]))  # mid-epoch counts
    state = roundtrip(m.state_dict())
    n = cfa()
    n.load_state_dict(state)
    for a in ("class_eps", "class_beta", "train_acc", "_hits", "_seen"):
        assert torch.equal(getattr(n, a).cpu().double(), getattr(m, a).cpu().double())
    assert (n.epoch, n.measured_epochs, n.fawa_count) == (m.epoch, m.measured_epochs, m.fawa_count)
    for k, v in m.averaged_state().items():
        assert torch.equal(n.averaged_state()[k], v)
    n.start_epoch(2, 4), m.start_epoch(2, 4)
    assert torch.equal(n.class_eps, m.class_eps)


# ---------------------------------------------------------------- DAFA
SIM = torch.tensor([[0.50, 0.30, 0.20],
                    [0.10, 0.80, 0.10],
                    [0.25, 0.05, 0.70]], dtype=torch.float64)


def test_dafa_weights_from_similarity_by_hand():
    # class 0 is the hardest: gains p0(1) p1(1) + p0(2) p2(2) = 0.24 + 0.14
    # class 1 is the easiest: loses p1(0) p0(0) + p1(2) p2(2) = 0.05 + 0.07
    # class 2: loses p2(0) p0(0) = 0.125 to the harder 0, gains p2(1) p1(1) = 0.04 from the easier 1
    want = torch.tensor([1.38, 0.88, 0.915], dtype=torch.float64)
    torch.testing.assert_close(dafa_weights(SIM, 1.0), want)
    torch.testing.assert_close(dafa_weights(SIM, 0.5), 1 + 0.5 * (want - 1))


def test_dafa_similarity_accumulates_and_weights_set_once_after_warmup():
    m = DAFA(eps=EPS, step_size=STEP, steps=STEPS, num_classes=3, warmup=0.5)  # warm-up ends at epoch 2
    m.start_epoch(0, 4)
    m.observe(torch.tensor([0]), torch.tensor([[0.9, 0.05, 0.05]]))
    m.start_epoch(1, 4)  # only the last warm-up epoch counts: epoch 0's sums are dropped
    y = torch.tensor([0, 0, 1, 2, 2])
    probs = torch.tensor([[0.6, 0.2, 0.2], [0.4, 0.4, 0.2],   # class 0 mean: 0.5 0.3 0.2
                          [0.1, 0.8, 0.1],                    # class 1
                          [0.3, 0.0, 0.7], [0.2, 0.1, 0.7]],  # class 2 mean: 0.25 0.05 0.7
                         dtype=torch.float64)
    m.observe(y[:3], probs[:3])
    m.observe(y[3:], probs[3:])
    torch.testing.assert_close(m.similarity(), SIM)
    assert torch.equal(m.weights, torch.ones(3, dtype=torch.float64))
    m.start_epoch(2, 4)
    torch.testing.assert_close(m.weights, torch.tensor([1.38, 0.88, 0.915], dtype=torch.float64))
    torch.testing.assert_close(m.class_eps, m.weights * EPS)
    torch.testing.assert_close(m.class_step, m.weights * STEP)
    m.observe(torch.tensor([1]), torch.tensor([[1.0, 0.0, 0.0]]))
    m.start_epoch(3, 4)  # set once: later epochs keep them
    torch.testing.assert_close(m.weights, torch.tensor([1.38, 0.88, 0.915], dtype=torch.float64))


def test_dafa_loss_grad_per_class_ball_and_weighting():
    m = DAFA(eps=EPS, step_size=STEP, steps=STEPS, num_classes=K, warmup=0.0)
    m.start_epoch(0, 2)
    assert not m.applied  # nothing measured yet
    check_loss_and_ball(m, m.class_eps)  # also records epoch 0's similarity
    m.start_epoch(1, 2)
    assert m.applied and not torch.equal(m.weights, torch.ones(K, dtype=torch.float64))
    check_loss_and_ball(m, m.class_eps)
    x, y = tiny_data()
    w = m.weights[y]
    out, logits, logits_adv = loss_and_reference(m, x, y, 3, w * EPS, w * STEP)
    want = (w * F.cross_entropy(logits, y, reduction="none")).mean() + 6.0 * kl_logits(logits, logits_adv)
    torch.testing.assert_close(out.loss, want)


def test_dafa_state_roundtrip():
    m = DAFA(eps=EPS, step_size=STEP, steps=STEPS, num_classes=3, warmup=0.5)
    m.start_epoch(1, 4)
    m.observe(torch.tensor([0, 1, 2]), SIM)
    state = roundtrip(m.state_dict())  # end of the last warm-up epoch
    n = DAFA(num_classes=3, eps=EPS, step_size=STEP, steps=STEPS, warmup=0.5)
    n.load_state_dict(state)
    torch.testing.assert_close(n.similarity(), SIM)
    n.start_epoch(2, 4)  # the resumed run sets the same weights
    torch.testing.assert_close(n.weights, dafa_weights(SIM, 1.0))
    o = DAFA(num_classes=3)
    o.load_state_dict(roundtrip(n.state_dict()))
    assert o.applied and torch.equal(o.weights, n.weights)


# ---------------------------------------------------------------- WAT
def test_wat_hedge_update_by_hand():
    m = WAT(num_classes=3, eta=0.1)
    torch.testing.assert_close(m.weights, torch.full((4,), 3 / 4, dtype=torch.float64))
    m.update(torch.tensor([1.0, 2.0, 0.5]), 1.2)
    m.update(torch.tensor([0.8, 1.5, 0.5]), 0.9)
    cum = [1.8, 3.5, 1.0, 2.1]
    z = sum(math.exp(0.1 * c) for c in cum)
    want = torch.tensor([3 * math.exp(0.1 * c) / z for c in cum], dtype=torch.float64)
    torch.testing.assert_close(m.weights, want)
    assert math.isclose(float(m.weights.sum()), 3.0) and int(m.weights.argmax()) == 1


def test_wat_loss_weights_classes_and_average_expert():
    m = WAT(eps=EPS, step_size=STEP, steps=STEPS, num_classes=K, eta=0.5)
    m.update(torch.tensor([3.0, 1.0, 0.0, 2.0]), 1.5)
    check_loss_and_ball(m, torch.full((K,), EPS, dtype=torch.float64))
    x, y = tiny_data()
    out, logits, logits_adv = loss_and_reference(m, x, y, 4, EPS, STEP)
    per = F.cross_entropy(logits, y, reduction="none") + 6.0 * kl_logits(logits, logits_adv, reduction="none")
    w = m.weights
    torch.testing.assert_close(out.loss, (w[:K][y] * per).mean() + w[K] * per.mean())


def test_wat_end_epoch_moves_weight_to_the_costliest_class():
    model = tiny_model()
    x, y = tiny_data()
    m = WAT(eps=EPS, step_size=STEP, steps=STEPS, num_classes=K, eta=1.0)
    batches = [(x[:12], y[:12]), (x[12:], y[12:])]
    m.start_training(model, batches)  # Hedge rounds follow training epochs: none before training
    assert m.rounds == 0
    m.loss(model, x, y)
    out = m.end_epoch(model, batches)
    assert m.rounds == 1 and out["w_max"] > out["w_min"]
    assert 0.0 <= out["val_worst_robust_acc"] <= out["val_robust_acc"] <= 1.0
    costs = m.cum_cost[:K]
    assert int(m.weights[:K].argmax()) == int(costs.argmax())
    torch.testing.assert_close(m.cum_cost[K], torch.tensor(out["val_loss"], dtype=torch.float64))
    n = WAT(num_classes=K)
    n.load_state_dict(roundtrip(m.state_dict()))
    assert torch.equal(n.cum_cost, m.cum_cost) and n.rounds == 1


@pytest.mark.parametrize("cls", [CFA, DAFA, WAT])
def test_wrong_shape_state_is_refused(cls):
    state = cls(num_classes=3).state_dict()
    with pytest.raises(ValueError):
        cls(num_classes=4).load_state_dict(state)


def test_validation_sums_count_what_engine_evaluate_counts():
    # the methods' one validation loop and the engine's evaluation: same attack, same seed, same batches
    from battui.config import EvalConfig
    from battui.engine.evaluate import evaluate
    from battui.methods.classwise import validation_sums

    model = tiny_model()
    x, y = tiny_data(n=30)
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    spec = EvalConfig(attack="pgd", eps=EPS, step_size=STEP, steps=STEPS, seed=3)
    ref = evaluate(model, batches, num_classes=K, spec=spec)

    def measure(x, y, res):
        with torch.no_grad():
            ok = model.eval()(x).argmax(1) == y
        return ~ok, ok & (res.pred_last != y), res.pred_last == y

    torch.manual_seed(spec.seed)
    sums = validation_sums(model, batches, K, "test", ("clean_wrong", "boundary_wrong", "hits"), measure,
                           eps=EPS, step_size=STEP, steps=STEPS, objective="ce", start="uniform")
    assert set(sums) == {"seen", "clean_wrong", "boundary_wrong", "hits"}
    assert all(t.dtype == torch.float64 and t.shape == (K,) for t in sums.values())
    assert sums["seen"].tolist() == ref["counts"]
    assert sums["hits"].tolist() == [ref["adv_confusion"][k][k] for k in range(K)]
    assert 0 < sums["hits"].sum() < sums["seen"].sum()  # the attack breaks some samples, not all
    for name, key in (("clean_wrong", "standard"), ("boundary_wrong", "boundary")):
        assert sums[name].tolist() == [round(p * n / 100) for p, n in zip(ref[key], ref["counts"])]
    with pytest.raises(ValueError, match="test: end_epoch needs a non-empty validation split"):
        validation_sums(model, [], K, "test", ("hits",), measure, eps=EPS, step_size=STEP, steps=STEPS)
