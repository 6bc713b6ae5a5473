"""Standard AutoAttack (Croce & Hein, ICML 2020) through the authors' own package, `pyautoattack`.

    out = run_autoattack(model, x, y, eps=8/255, seed=0, batch_size=500)
    out.adv_pred                    # the model's prediction on each adversarial example
    out.breakdown["robust_after"]   # {"apgd-ce": 5321, "apgd-t": 5190, "fab-t": 5188, "square": 5187}

`version="standard"` exactly as the authors define it: APGD-CE (100 iterations),
APGD-T (100 iterations, 9 target classes), FAB-T (9 target classes), Square
(5000 queries), each run on the points the previous ones left robust. This is
the attack of the RobustBench leaderboard and of most papers since 2020;
re-implementations (torchattacks' AutoAttack runs 10 iterations and n_classes-1
targets) give other numbers.

The package reports its per-attack robust accuracy only through its logger
(`auto-attack`): a line per batch, "<attack> - i/n - k out of m successfully
perturbed". `run_autoattack` listens to that logger for the per-attack breakdown
(exact counts) and for progress; its warnings (zero gradients, Square beating
the gradient attacks, ...) are kept in the breakdown.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

from battui.errors import UserError

ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
LABELS = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square"}
TARGETS = 9  # APGD-T and FAB-T target the 9 most likely other classes
_BATCH_LINE = re.compile(r"^(\S+) - (\d+)/(\d+) - (\d+) out of (\d+) successfully perturbed$")


def implementation() -> str:
    """`pyautoattack 0.2.0`: the package and version that runs `--attack autoattack`."""
    try:
        import pyautoattack
    except ImportError:
        raise UserError("--attack autoattack needs the `pyautoattack` package (pip install pyautoattack)") from None
    return f"pyautoattack {pyautoattack.__version__}"


def check_classes(num_classes: int) -> None:
    """Standard AutoAttack targets 9 classes: it needs at least 10."""
    if num_classes < TARGETS + 1:
        raise UserError(f"standard AutoAttack targets {TARGETS} other classes (APGD-T, FAB-T) and needs at least "
                        f"{TARGETS + 1} classes; this dataset has {num_classes}: use --attack pgd")


@dataclass(frozen=True)
class ReducedBudget:
    """TESTS ONLY: fewer iterations and queries, so a CPU test can run all four attacks in seconds.

    An evaluation run with it is labelled `reduced budget (tests only)`, never `standard`.
    """

    apgd_iter: int = 10
    fab_iter: int = 10
    square_queries: int = 100


@dataclass
class AutoAttackOutcome:
    x_adv: Tensor
    adv_pred: Tensor
    breakdown: dict = field(default_factory=dict)


class _Listener(logging.Handler):
    """Reads the package's log: per-attack perturbed counts, progress, warnings."""

    def __init__(self, progress: Callable[[str, int, int], None] | None) -> None:
        super().__init__(logging.DEBUG)
        self.progress = progress
        self.started: list[str] = []
        self.broken = {a: 0 for a in ATTACKS}
        self.done = {a: 0 for a in ATTACKS}
        self.total = {a: 0 for a in ATTACKS}
        self.warnings: list[str] = []
        self.robust = 0  # points still robust when the current attack started
        self.skipped = False

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().strip()
        if record.levelno >= logging.WARNING:
            if text not in self.warnings:
                self.warnings.append(text)
            return
        if text.startswith("running "):
            attack = text.removeprefix("running ").strip()
            if self.started:
                self.robust -= self.broken[self.started[-1]]
            self.started.append(attack)
            self.total[attack] = self.robust
            if self.robust > 0:
                self._tell(attack)
        elif text.startswith("no robust datapoints left"):
            # the package logs "running <attack>" before it finds nothing left to attack
            if self.started and self.done[self.started[-1]] == 0:
                self.started.pop()
            self.skipped = True
        elif (m := _BATCH_LINE.match(text)) and m.group(1) in self.broken:
            attack = m.group(1)
            self.broken[attack] += int(m.group(4))
            self.done[attack] += int(m.group(5))
            self._tell(attack)

    def _tell(self, attack: str) -> None:
        if self.progress is not None:
            self.progress(LABELS.get(attack, attack), self.done.get(attack, 0), self.total.get(attack, 0))


def run_autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    seed: int,
    batch_size: int,
    clean_correct: int,
    progress: Callable[[str, int, int], None] | None = None,
    reduced_for_tests: ReducedBudget | None = None,
) -> AutoAttackOutcome:
    """Run standard Linf AutoAttack on (x, y); `clean_correct` = how many of x the model classifies right.

    Returns the adversarial examples, the model's predictions on them (the
    package's own, from the last attack that broke each point; the clean
    prediction for points it never broke) and the breakdown: `n`, `clean`,
    `robust_after` (points still robust after each attack, in order), `skipped`,
    `warnings`, `implementation` and `version`.
    """
    name = implementation()
    from pyautoattack import AutoAttack

    device = x.device
    adversary = AutoAttack(model, norm="Linf", eps=float(eps), seed=int(seed), version="standard", device=device)
    version = "standard"
    if reduced_for_tests is not None:
        adversary.apgd.n_iter = adversary.apgd_targeted.n_iter = reduced_for_tests.apgd_iter
        adversary.fab.n_iter = reduced_for_tests.fab_iter
        adversary.square.n_queries = reduced_for_tests.square_queries
        version = "reduced budget (tests only)"
    listener = _Listener(progress)
    listener.robust = int(clean_correct)
    logger = adversary.logger
    saved = (logger.level, logger.propagate)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # its per-batch lines are ours to show, not the root logger's
    logger.addHandler(listener)
    try:
        x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=int(batch_size))
    finally:
        logger.removeHandler(listener)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    final = int((y_adv == y).sum())
    start = final + sum(listener.broken.values())
    ran = listener.started
    if ran != list(ATTACKS[: len(ran)]) or (len(ran) < len(ATTACKS) and not listener.skipped):
        raise RuntimeError(f"{name} ran {listener.started}, expected {list(ATTACKS)}: its log format is not "
                           "the one battui reads; the per-attack breakdown would be wrong")
    robust, after = start, {}
    for attack in ATTACKS:
        robust -= listener.broken[attack]
        after[attack] = robust
    breakdown = {
        "implementation": name,
        "version": version,
        "attacks": list(ATTACKS),
        "n": int(len(y)),
        "clean": start,
        "robust_after": after,
        "skipped": [a for a in ATTACKS if a not in listener.started],
        "warnings": listener.warnings,
    }
    return AutoAttackOutcome(x_adv=x_adv.detach(), adv_pred=y_adv.detach(), breakdown=breakdown)


def empty_breakdown() -> dict:
    """The breakdown of zero images."""
    return {"implementation": implementation(), "version": "standard", "attacks": list(ATTACKS), "n": 0, "clean": 0,
            "robust_after": dict.fromkeys(ATTACKS, 0), "skipped": list(ATTACKS), "warnings": []}


def breakdown_rows(breakdown: dict) -> list[tuple[str, int, float]]:
    """(stage, robust points, robust accuracy %) for clean and after each attack."""
    n = max(1, breakdown["n"])
    rows = [("clean", breakdown["clean"], 100.0 * breakdown["clean"] / n)]
    for attack in breakdown["attacks"]:
        left = breakdown["robust_after"][attack]
        label = LABELS.get(attack, attack) + (" (skipped: nothing left)" if attack in breakdown["skipped"] else "")
        rows.append((f"after {label}", left, 100.0 * left / n))
    return rows

