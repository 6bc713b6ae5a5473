"""TRIX, FAAL and ABSLD (docs/DESIGN.md section 3.6): each one's math against an independent
computation (written-out formulas, a plain attack loop, scipy's SLSQP for FAAL's weights),
their dependencies in `battui table`, and the refusals of a missing start or teacher."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

from battui.config import load_config
from battui.methods import build_method, method_from_config
from battui.methods.absld import temperature_step
from battui.methods.faal import dro_weights
from battui.methods.trix import trix_weights
from battui.report.runs import MethodRow, TablePlan
from battui.report.sweep import plan_table
from tests.support.checkpoints import make_checkpoint, tiny_config
from tests.support.cli import run_many
from tests.support.tiny_problem import K, start_noise, tiny_mlp

EPS, STEP, STEPS = 0.12, 0.02, 6
ATTACK = dict(eps=EPS, step_size=STEP, steps=STEPS)


def _plain_attack(model, x, y, eps, step, noise, *, target_probs=None, targets=None, objective="kl"):
    """Plain PGD, full batch, per-sample eps/step [B]: ascend KL(target_probs || p(x')) (or CE),
    except samples with targets >= 0, which step *against* the gradient of CE(f(x'), target)."""
    model.eval()
    e, s = eps.view(-1, 1, 1, 1), step.view(-1, 1, 1, 1)
    cur = torch.min(torch.max(x + noise, x - e), x + e).clamp(0, 1)
    sign = torch.ones(len(y), dtype=x.dtype) if targets is None else torch.where(targets >= 0, -1.0, 1.0).to(x.dtype)
    for _ in range(STEPS):
        cur = cur.detach().requires_grad_(True)
        logits = model(cur)
        if objective == "ce":
            per = F.cross_entropy(logits, y, reduction="none")
        else:
            per = (target_probs * (target_probs.log() - F.log_softmax(logits, 1))).sum(1)
        if targets is not None:
            per = torch.where(targets >= 0, F.cross_entropy(logits, targets.clamp(min=0), reduction="none"), per)
        grad, = torch.autograd.grad(per.mean(), cur)
        cur = cur.detach() + s * sign.view(-1, 1, 1, 1) * grad.sign()
        cur = torch.min(torch.max(cur, x - e), x + e).clamp(0, 1)
    model.train()
    return cur.detach()


# ---------------------------------------------------------------- TRIX


def _trix_weights_loop(sim: np.ndarray, lam: float) -> np.ndarray:
    """The public code's double loop, transcribed."""
    k = len(sim)
    w = np.ones(k)
    for i in range(k):
        for j in range(k):
            if i != j:
                w[i] += lam * sim[i, j] * sim[j, j] if sim[i, i] < sim[j, j] else -lam * sim[j, i] * sim[i, i]
    return w


def test_trix_weights_follow_the_code_and_differ_from_dafa():
    rng = np.random.default_rng(0)
    sim = rng.dirichlet(np.ones(5), size=5)
    sim[1, 1] = sim[3, 3]  # a tie takes the subtraction branch
    got = trix_weights(torch.tensor(sim), 0.7).numpy()
    np.testing.assert_allclose(got, _trix_weights_loop(sim, 0.7), rtol=1e-12)
    trix = build_method("trix", num_classes=5)
    dafa = build_method("dafa", num_classes=5)
    assert not torch.allclose(trix.class_weights(torch.tensor(sim)), dafa.class_weights(torch.tensor(sim)))


def test_trix_targets_the_strong_classes_and_steps_toward_the_target(problem):
    model, x, y = problem
    trix = build_method("trix", num_classes=K, **ATTACK)
    trix.start_epoch(0, 10)
    torch.manual_seed(3)
    opts = trix.attack_options(model, x, y)
    noise = 0.001 * torch.randn_like(x)
    # the mask by hand: batch-mean clean softmax per class, +1e-8 on the diagonal, weights with lambda 1
    with torch.no_grad():
        p = F.softmax(model.eval()(x), 1)
    sim = np.zeros((K, K))
    for c in range(K):
        if (y == c).any():
            sim[c] = p[y == c].mean(0).numpy()
    v = _trix_weights_loop(sim + 1e-8 * np.eye(K), 1.0)[y.numpy()]
    targeted = torch.from_numpy(v < v.mean())
    t = opts["targets"]
    assert 0 < int(targeted.sum()) < len(y)
    assert torch.equal(t >= 0, targeted) and bool((t[targeted] != y[targeted]).all())
    torch.testing.assert_close(opts["p0"], p)
    # the attack: targeted samples descend CE toward t, the others ascend KL(P || p(x')); then DAFA's loss (W = 1)
    torch.manual_seed(3)
    out = trix.loss(model, x, y)
    full = torch.full((len(y),), 1.0, dtype=x.dtype)
    x_adv = _plain_attack(model, x, y, EPS * full, STEP * full, noise, target_probs=p, targets=t)
    nat = model(x)
    expected = F.cross_entropy(nat, y) + 6.0 * (F.softmax(nat, 1) * (F.log_softmax(nat, 1)
                                                - F.log_softmax(model(x_adv), 1))).sum(1).mean()
    torch.testing.assert_close(out.loss, expected)
    # sign check: the targeted samples moved toward their target (CE to t fell), as the code's -sign(grad)
    with torch.no_grad():
        before = F.cross_entropy(model(x), t.clamp(min=0), reduction="none")[targeted]
        after = F.cross_entropy(model(x_adv), t.clamp(min=0), reduction="none")[targeted]
    assert float((after - before).mean()) < 0


# ---------------------------------------------------------------- FAAL


def _slsqp(a: np.ndarray, r: float) -> np.ndarray:
    """The same problem by scipy's SLSQP over p = softmax(u) (so the simplex holds), best of a few starts."""
    k = len(a)

    def soft(u):
        e = np.exp(u - u.max())
        return e / e.sum()

    cons = [{"type": "ineq", "fun": lambda u: r - np.mean(np.log(1 / k / soft(u)))}]
    best = None
    for start in range(4):
        u0 = np.random.default_rng(start).normal(size=k) * 0.1 * start
        res = minimize(lambda u: -(a @ soft(u)), u0, constraints=cons, method="SLSQP",
                       options={"ftol": 1e-15, "maxiter": 2000})
        if cons[0]["fun"](res.x) > -1e-9 and (best is None or res.fun < best.fun):
            best = res
    assert best is not None
    return soft(best.x)


@pytest.mark.parametrize("case", range(6))
def test_faal_closed_form_weights_match_an_iterative_solver(case):
    rng = np.random.default_rng(case)
    k = int(rng.integers(2, 8))
    a = rng.normal(size=k) * rng.integers(1, 30)
    r = (0.05, 0.5, 2.0)[case % 3]
    p = dro_weights(torch.tensor(a), r).numpy()
    ref = _slsqp(a, r)
    assert p.sum() == pytest.approx(1.0) and (p > 0).all()
    assert np.mean(np.log(1 / k / p)) == pytest.approx(r, rel=1e-9)  # the constraint is tight
    assert a @ p == pytest.approx(a @ ref, rel=1e-7, abs=1e-9)
    np.testing.assert_allclose(p, ref, atol=1e-5)


def test_faal_weights_are_uniform_only_for_equal_count_weighted_margins():
    torch.testing.assert_close(dro_weights(torch.full((4,), 0.3, dtype=torch.float64), 0.5),
                               torch.full((4,), 0.25, dtype=torch.float64))
    faal = build_method("faal", num_classes=3)
    y = torch.tensor([0, 0, 0, 1, 2])  # equal margins, unequal counts
    logits = torch.tensor([[0.0, 1.0, 0.0]] * 3 + [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    p = faal.class_weights(logits, y)
    assert p[0] > p[1] and p[1] == pytest.approx(float(p[2]))


def test_faal_loss_is_the_weighted_ce_of_the_code(problem):
    model, x, y = problem
    faal = build_method("faal", num_classes=K, **ATTACK)
    noise = start_noise(x, "uniform", seed=5, eps=EPS)
    torch.manual_seed(5)
    out = faal.loss(model, x, y)
    full = torch.full((len(y),), 1.0, dtype=x.dtype)
    x_adv = _plain_attack(model, x, y, EPS * full, STEP * full, noise, objective="ce")
    z = model(x_adv)
    prob = F.softmax(z, 1).detach()
    margin = torch.stack([(prob[i].clone().index_fill_(0, y[i], -1).max() - prob[i, y[i]]) for i in range(len(y))])
    a = np.array([float((y == c).sum()) * (float(margin[y == c].mean()) if (y == c).any() else -1.0)
                  for c in range(K)])
    p = torch.from_numpy(_slsqp(a, 0.5))
    expected = (K / len(y)) * (p[y] * F.cross_entropy(z, y, reduction="none")).sum()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- ABSLD


def test_absld_temperature_update_and_its_rate_decay():
    tau = torch.ones(4, dtype=torch.float64)
    sums = torch.tensor([1.0, 2.0, 3.0, 10.0], dtype=torch.float64)
    gap = sums - 4.0
    torch.testing.assert_close(temperature_step(tau, sums, 0.1, 0.5, 5.0), (1 - 0.1 * gap / 6.0).clamp(0.5, 5))
    torch.testing.assert_close(temperature_step(tau, torch.full((4,), 2.0, dtype=torch.float64), 0.1, 0.5, 5.0), tau)
    absld = build_method("absld", num_classes=4, lr_milestones=[0.5, 0.75])
    assert [absld.rate(e, 8) for e in (3, 4, 5, 6)] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    absld._sums = torch.stack([sums, sums.flip(0)])
    absld.epoch = 3
    absld.start_epoch(4, 8)  # after epoch 4 of 8 the lr has decayed once: b = 0.01
    torch.testing.assert_close(absld.tau_adv, temperature_step(tau, sums, 0.01, 0.5, 5.0))
    assert absld.tau_adv[3] < 1 < absld.tau_adv[0]  # the hardest class gets the sharpest labels
    torch.testing.assert_close(absld.tau_nat, temperature_step(tau, sums.flip(0), 0.01, 0.5, 5.0))
    cfg = load_config("digits-cnn", ["method.name=absld", "method.teacher=t.pt"])
    assert method_from_config(cfg, num_classes=10).lr_milestones == [0.75, 0.9]


@pytest.mark.parametrize("temperatures", ["code", "separate"])
def test_absld_loss_scale_and_temperatures(problem, temperatures):
    model, x, y = problem
    teacher = tiny_mlp(seed=7)
    absld = build_method("absld", num_classes=K, temperatures=temperatures, **ATTACK)
    absld.use_teacher(teacher)
    absld.tau_adv = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    absld.tau_nat = torch.tensor([3.0, 1.0, 0.7, 1.0], dtype=torch.float64)
    torch.manual_seed(9)
    noise = 0.001 * torch.randn_like(x)
    torch.manual_seed(9)
    out = absld.loss(model, x, y)
    with torch.no_grad():
        z = teacher(x)
    ta, tn = absld.tau_adv[y][:, None], absld.tau_nat[y][:, None]
    q_adv, q_nat = (F.softmax(z / (ta * tn), 1),) * 2 if temperatures == "code" else \
        (F.softmax(z / ta, 1), F.softmax(z / tn, 1))
    full = torch.full((len(y),), 1.0, dtype=x.dtype)
    x_adv = _plain_attack(model, x, y, EPS * full, STEP * full, noise, target_probs=q_adv)
    # the code's scale: the per-sample KL (with its +1e-5 inside the log) / K, averaged over samples
    def kl_over_k(q, logits):
        return ((q * (torch.log(q + 1e-5) - F.log_softmax(logits, 1))).sum(1) / K).mean()

    expected = 5 / 6 * kl_over_k(q_adv, model(x_adv)) + 1 / 6 * kl_over_k(q_nat, model(x))
    torch.testing.assert_close(out.loss, expected.float().to(out.loss.dtype), rtol=1e-5, atol=1e-7)
    ce_adv = F.cross_entropy(model(x_adv), y, reduction="none").detach()
    for c in range(K):  # the epoch's per-class CE sums, from the update's train-mode logits
        assert float(absld._sums[0, c]) == pytest.approx(float(ce_adv[y == c].sum()), rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------- defaults, table, refusals


def test_faal_schedule_is_its_own_and_set_wins():
    cfg = load_config("digits-cnn", ["method.name=faal"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.milestones, cfg.train.weight_decay) == (2, 0.01, [0.5], 5e-4)
    assert load_config("digits-cnn", ["method.name=faal", "train.epochs=3"]).train.epochs == 3
    assert load_config("digits-cnn", ["method.name=trix"]).train.epochs == 22  # the preset's
    absld = load_config("digits-cnn", ["method.name=absld", "method.teacher=t.pt"]).train
    assert (absld.epochs, absld.weight_decay) == (22, 5e-4)  # the preset's, as every method but FAAL


def test_table_trains_faal_start_and_absld_teacher_first(tmp_path):
    plan = TablePlan("synthetic-tiny", [MethodRow("faal"), MethodRow("faal", {"loss": "trades"}),
                                        MethodRow("absld"), MethodRow("trades")],
                     seeds=1, overrides=[f"run.root={tmp_path}", "train.epochs=7"])
    runs, cells = plan_table(plan)
    by_method = {}
    for run in runs:
        by_method.setdefault(run.cfg.method.name, []).append(run)
    faal_at, faal_trades = by_method["faal"]
    (absld,), (trades,), (pgd_at,) = by_method["absld"], by_method["trades"], by_method["pgd-at"]
    assert faal_at.after is pgd_at and faal_at.cfg.train.init_from == str(pgd_at.run_dir / "checkpoints/last.pt")
    assert faal_trades.after is trades and absld.after is trades  # the table's own TRADES row is reused
    assert absld.cfg.method.params["teacher"] == str(trades.run_dir / "checkpoints/last.pt")
    assert (faal_at.cfg.train.epochs, faal_at.cfg.train.lr) == (2, 0.01) and trades.cfg.train.epochs == 7
    assert runs.index(trades) < runs.index(absld) and len(cells) == 4
    own = plan_table(TablePlan("synthetic-tiny", [MethodRow("absld", {"teacher": "mine.pt"})], seeds=1,
                               overrides=[f"run.root={tmp_path}"]))[0]
    assert [r.cfg.method.name for r in own] == ["absld"] and own[0].cfg.method.params["teacher"] == "mine.pt"


def test_missing_or_unreadable_start_and_teacher_refused_in_one_line(tmp_path):
    from battui.engine.trainer import Trainer
    from battui.errors import UserError

    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.pt").write_text("not a checkpoint\n")
    torch.save({"w": torch.zeros(2)}, work / "foreign.pt")
    train = ["train", "--headless", "--preset", "synthetic-tiny", "--set", "run.root=runs"]
    cases = [  # through the CLI: exit 2, one line
        (["--method", "faal"], "faal fine-tunes a robust model: give its checkpoint with --set train.init_from"),
        (["--method", "absld", "--set", "method.teacher=notes.pt"], "notes.pt"),
    ]
    results = run_many([[*train, *argv] for argv, _ in cases], cwd=work, tmp=tmp_path)
    for (argv, needle), res in zip(cases, results):
        assert needle in res.one_line_error(), (argv, res.err)
    in_process = [  # the same UserError path, without a process each
        (["method.name=absld"], "absld distils a robust teacher: give its checkpoint with --set method.teacher"),
        (["method.name=absld", f"method.teacher={work / 'gone.pt'}"], "gone.pt"),
        (["method.name=absld", f"method.teacher={work / 'foreign.pt'}"], "method.teacher_model=NAME"),
        (["method.name=absld", f"method.teacher={work / 'foreign.pt'}", "method.teacher_model=cnn"], "foreign.pt"),
        (["method.name=faal", f"train.init_from={work / 'gone.pt'}"], "gone.pt"),
    ]
    for sets, needle in in_process:
        with pytest.raises(UserError, match=re.escape(needle)):
            Trainer(load_config("synthetic-tiny", [f"run.root={work / 'runs'}", *sets])).prepare()
    assert sorted(p.name for p in work.iterdir()) == ["foreign.pt", "notes.pt"]  # no run folder
    for name, bad, needle in (("absld", {"temperatures": "both"}, "temperatures must be one of code, separate"),
                              ("faal", {"loss": "mart"}, "loss must be one of at, trades"),
                              ("faal", {"r": 0.0}, "r (the KL radius) must be > 0")):
        with pytest.raises(ValueError, match=re.escape(needle)):
            build_method(name, **bad)


def test_absld_reads_a_battui_or_a_foreign_teacher_and_refuses_other_classes(tmp_path):
    from battui.engine.trainer import Trainer
    from battui.errors import UserError

    cfg = tiny_config()
    ckpt = make_checkpoint(tmp_path / "teacher.pt", cfg, train_steps=3)
    state = torch.load(ckpt, weights_only=True)["model"]
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "foreign.pt")
    x = torch.rand(5, 3, 8, 8)
    outs = []
    for sets in ([f"method.teacher={ckpt}"], [f"method.teacher={tmp_path / 'foreign.pt'}", "method.teacher_model=cnn"]):
        trainer = Trainer(load_config("synthetic-tiny", ["method.name=absld", f"run.root={tmp_path}/runs", *sets]))
        trainer.prepare()
        with torch.no_grad():
            outs.append(trainer.method.teacher_net(x))
        trainer.lock.release()
    torch.testing.assert_close(outs[0], outs[1])
    other = load_config("synthetic-tiny", ["method.name=absld", f"run.root={tmp_path}/runs2", "data.classes=[0,1,2]",
                                           f"method.teacher={ckpt}"])
    with pytest.raises(UserError, match="was trained on the classes"):
        Trainer(other).prepare()
    assert not (tmp_path / "runs2").exists()
    assert math.isfinite(float(outs[0].sum()))
