"""`-f latex`: report sections as booktabs tables, the lowest value of a column in bold as in the paper.

    battui compare a.pt b.pt -f latex -o cmp.tex        # \\usepackage{booktabs} in the preamble
    battui table --preset digits-cnn -o table1.tex      # the format follows the .tex suffix

Each section becomes a `table` float: caption = the section title, `\\toprule`,
header, `\\midrule`, rows, `\\bottomrule`, and the notes in small type under the
tabular. Text is escaped for LaTeX (`%`, `_`, `&`, ...; `±`, `λ`, `ε` as math).
"""

from __future__ import annotations

import math
from typing import Any

from battui.report.sections import MARK, Bar, Estimate, MeanStd, Section

_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "λ": r"$\lambda$", "ε": r"$\epsilon$",
    "β": r"$\beta$", "τ": r"$\tau$", "—": "---", "–": "--", "×": r"$\times$", "≤": r"$\leq$", "≥": r"$\geq$",
}


def escape(text: str) -> str:
    """Plain text -> LaTeX source that prints it."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def latex_cell(value: Any) -> str:
    if value is None:
        return "--"
    if isinstance(value, Bar):
        return escape(value.number())
    if isinstance(value, MeanStd):
        return f"{value.mean:.2f} $\\pm$ {value.std:.2f}" if value.n > 1 else f"{value.mean:.2f}"
    if isinstance(value, Estimate):
        return value.text(mark="") + (f"$^{{{MARK}}}$" if value.significant else "")
    if isinstance(value, float):
        return "--" if math.isnan(value) else f"{value:.2f}"
    return escape(str(value))


def _footnote(note: str) -> str:
    """A note; one that starts with the significance mark explains it as a footnote mark."""
    if note.startswith(MARK + " "):
        return f"$^{{{MARK}}}$" + escape(note[len(MARK):])
    return escape(note)


def _align(section: Section) -> str:
    """`l` for a column of text (or the first), `r` for numbers."""
    out = []
    for c in range(len(section.columns)):
        values = [row[c] for row in section.rows if row[c] is not None]
        text = c == 0 or (bool(values) and all(isinstance(v, str) for v in values))
        out.append("l" if text else "r")
    return "".join(out)


def to_latex(sections: list[Section]) -> str:
    """One booktabs `table` per section; needs `\\usepackage{booktabs}`."""
    out = ["% battui report; needs \\usepackage{booktabs}"]
    for section in sections:
        out += ["\\begin{table}[t]", "\\centering", "\\small", f"\\caption{{{escape(section.title)}}}",
                f"\\begin{{tabular}}{{{_align(section)}}}", "\\toprule",
                " & ".join(escape(c) for c in section.columns) + " \\\\", "\\midrule"]
        for r, row in enumerate(section.rows):
            cells = [latex_cell(v) for v in row]
            cells = [f"\\textbf{{{text}}}" if (r, c) in section.bold else text for c, text in enumerate(cells)]
            out.append(" & ".join(cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}"]
        if section.notes:
            notes = [_footnote(n) for n in section.notes]
            out.append("\\par\\smallskip{\\footnotesize " + " \\\\\n".join(notes) + "}")
        out += ["\\end{table}", ""]
    return "\n".join(out)
