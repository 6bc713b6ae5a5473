"""Adversarial attacks: one shared Linf PGD loop (``linf_pgd``), its CE
evaluation form (``pgd``) and BAT's early-stopped ``boundary_examples``."""

from battui.attacks.boundary import BoundaryExamples, boundary_examples
from battui.attacks.losses import kl_logits, kl_uniform, per_class_mean
from battui.attacks.pgd import AttackResult, eval_mode, linf_pgd, pgd, run_pgd

__all__ = [
    "AttackResult",
    "BoundaryExamples",
    "boundary_examples",
    "eval_mode",
    "kl_logits",
    "kl_uniform",
    "linf_pgd",
    "per_class_mean",
    "pgd",
    "run_pgd",
]
