"""Adversarial attacks: one Linf PGD loop (``pgd``, returning ``PGDResult``) that
every method, BAT's boundary examples and the evaluation share; AutoAttack in
``battui.attacks.autoattack``."""

from battui.attacks.losses import class_sums, kl_logits, kl_uniform, per_class_mean, sum_over_ranks
from battui.attacks.pgd import PGDResult, bucket_rows, eval_mode, pgd, runnable, unwrap

__all__ = [
    "PGDResult",
    "bucket_rows",
    "class_sums",
    "eval_mode",
    "kl_logits",
    "kl_uniform",
    "per_class_mean",
    "pgd",
    "runnable",
    "sum_over_ranks",
    "unwrap",
]
