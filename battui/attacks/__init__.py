"""Adversarial attacks: one Linf PGD loop (``pgd``, returning ``PGDResult``) that
every method, BAT's boundary examples and the evaluation share; AutoAttack in
``battui.attacks.autoattack``."""

from battui.attacks.losses import kl_logits, kl_uniform, per_class_mean
from battui.attacks.pgd import PGDResult, eval_mode, pgd

__all__ = [
    "PGDResult",
    "eval_mode",
    "kl_logits",
    "kl_uniform",
    "per_class_mean",
    "pgd",
]
