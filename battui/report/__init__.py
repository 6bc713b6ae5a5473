"""Reports in the paper's format: evaluate checkpoints, compare them, build Table 1/2.

    from battui.report import evaluate_checkpoint, compare_sections, emit
    record = evaluate_checkpoint("runs/digits-cnn-bat-.../", device="cpu")   # cached next to best.pt
    emit(eval_sections(record), record, fmt="markdown", output=None, console=console)

`evaluation` runs `battui.engine.evaluate` on a checkpoint's test split (and
caches it), `layouts` turns records into Table 1 / per-class sections,
`formats` prints them as Rich tables, Markdown, CSV or JSON, `runs` resolves and
finds the runs behind `battui table`, and `sweep` trains them as jobs (`launchers`,
`worker`, `progress`). Nothing here imports textual.
"""

from battui.report.evaluation import attack_spec, check_same_dataset, evaluate_checkpoint
from battui.report.formats import Section, emit, resolve_format
from battui.report.layouts import compare_sections, eval_sections, table_sections

__all__ = [
    "Section",
    "attack_spec",
    "check_same_dataset",
    "compare_sections",
    "emit",
    "eval_sections",
    "evaluate_checkpoint",
    "resolve_format",
    "table_sections",
]
