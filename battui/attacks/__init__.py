"""Adversarial attacks: one shared Linf PGD loop (``linf_pgd``), its CE
evaluation form (``pgd``) and BAT's early-stopped ``boundary_examples``."""

from battui.attacks.boundary import BoundaryExamples, boundary_examples
from battui.attacks.losses import class_sums, kl_logits, kl_uniform, per_class_mean, sum_over_ranks
from battui.attacks.pgd import AttackResult, eval_mode, linf_pgd, pgd, run_pgd, unwrap

__all__ = [
    "AttackResult",
    "BoundaryExamples",
    "boundary_examples",
    "class_sums",
    "eval_mode",
    "kl_logits",
    "kl_uniform",
    "linf_pgd",
    "per_class_mean",
    "pgd",
    "run_pgd",
    "sum_over_ranks",
    "unwrap",
]
