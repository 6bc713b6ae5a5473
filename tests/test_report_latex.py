"""`-f latex`: booktabs tables with the lowest value per column in bold, for eval, compare and table."""

from __future__ import annotations

import json
import re

from battui.report.formats import Bar, MeanStd, Section, lowest_bold, resolve_format
from battui.report.latex import escape, to_latex
from battui.report.layouts import METRIC_COLUMNS, mean_std, table_sections
from tests.support.checkpoints import make_checkpoint, tiny_config
from tests.support.cli import assert_one_line_error, run_cli


def body_rows(tex: str) -> list[list[str]]:
    """The cells of every row between \\midrule and \\bottomrule."""
    rows = []
    for block in re.findall(r"\\midrule\n(.*?)\\bottomrule", tex, flags=re.S):
        rows += [[c.strip() for c in line.removesuffix(" \\\\").split(" & ")] for line in block.strip().splitlines()]
    return rows


def test_booktabs_bold_and_escapes() -> None:
    rows = [["TRADES(1/λ=6)", 12.5, MeanStd(30.0, 1.25, 3), Bar(40.0, 2.5), None],
            ["BAT_x & 100%", 10.0, MeanStd(31.0, 0.5, 3), Bar(35.0, -5.0), float("nan")]]
    section = Section("Table 1 — side by side", ["Method", "Avg. Std.", "Worst", "Rob.", "Steps"], rows,
                      bold=lowest_bold(rows, range(1, 5)), notes=["errors in %; eps 8/255"])
    tex = to_latex([section])
    assert tex.count("\\toprule") == tex.count("\\midrule") == tex.count("\\bottomrule") == 1
    assert "\\begin{tabular}{lrrrr}" in tex and "\\caption{Table 1 --- side by side}" in tex
    assert body_rows(tex) == [
        ["TRADES(1/$\\lambda$=6)", "12.50", "\\textbf{30.00 $\\pm$ 1.25}", "40.0 (+2.5)", "--"],
        ["BAT\\_x \\& 100\\%", "\\textbf{10.00}", "31.00 $\\pm$ 0.50", "\\textbf{35.0 (-5.0)}", "--"],
    ]
    assert "errors in \\%; eps 8/255" in tex
    assert escape("a\\b{c}~^$#") == "a\\textbackslash{}b\\{c\\}\\textasciitilde{}\\textasciicircum{}\\$\\#"
    assert tex.count("{") - tex.count("\\{") == tex.count("}") - tex.count("\\}")  # braces balance


def test_table_layout_in_latex_bolds_the_lowest_mean() -> None:
    stats_a = {k: mean_std([v, v + 2.0]) for k, v in zip(
        ["avg_standard", "worst_standard", "avg_boundary", "worst_boundary", "avg_robust", "worst_robust"],
        [10.0, 20.0, 30.0, 40.0, 50.0, 60.0])}
    stats_b = {k: MeanStd(m.mean - (1.0 if i % 2 else -1.0), 0.0, 1) for i, (k, m) in enumerate(stats_a.items())}
    sections = table_sections([{"cells": ["PGD-AT"], "stats": stats_a}, {"cells": ["BAT"], "stats": stats_b}],
                              title="Table 1", lead_columns=["Method"], notes=["n"])
    rows = body_rows(to_latex(sections))
    assert [r[0] for r in rows] == ["PGD-AT", "BAT"]
    for c in range(1, 7):
        a_bold, b_bold = rows[0][c].startswith("\\textbf"), rows[1][c].startswith("\\textbf")
        assert (a_bold, b_bold) == ((False, True) if (c - 1) % 2 else (True, False)), (c, rows)
    assert rows[0][1] == "\\textbf{11.00 $\\pm$ 1.41}"
    assert resolve_format(None, "table1.tex") == "latex" and resolve_format("tex", None) == "latex"


def test_compare_and_eval_as_latex(tmp_path, capsys) -> None:
    a = make_checkpoint(tmp_path / "a.pt", tiny_config(), seed=0, train_steps=30)
    b = make_checkpoint(tmp_path / "b.pt", tiny_config(("method.name=bat",)), seed=1, train_steps=5)
    code, tex, err = run_cli(capsys, "compare", str(a), str(b), "-f", "latex", "--limit", "60")
    assert code == 0, err
    code, _, err = run_cli(capsys, "compare", str(a), str(b), "-f", "json", "--limit", "60", "-o",
                           str(tmp_path / "c.json"))
    assert code == 0, err
    records = json.loads((tmp_path / "c.json").read_text())["checkpoints"]
    header = tex.split("\\midrule")[0].splitlines()[-1]
    assert header == "Method & " + " & ".join(escape(c) for c in METRIC_COLUMNS) + " \\\\"
    table1 = body_rows(tex)[:2]
    keys = [("avg", "standard"), ("worst", "standard"), ("avg", "boundary"), ("worst", "boundary"),
            ("avg", "robust"), ("worst", "robust")]
    for c, (agg, kind) in enumerate(keys, start=1):
        values = [r["result"][agg][kind] for r in records]
        for row, value in zip(table1, values):
            text = f"{value:.2f}"
            assert row[c] == (f"\\textbf{{{text}}}" if value == min(values) else text), (c, row, values)

    out = tmp_path / "eval.tex"
    code, _, err = run_cli(capsys, "eval", str(a), "--limit", "60", "-o", str(out))  # format from the suffix
    assert code == 0, err
    text = out.read_text()
    assert text.count("\\begin{table}") == 2 and "\\caption{Per class}" in text and "class9" in text
    code, _, err = run_cli(capsys, "eval", str(a), "-f", "docx")
    assert_one_line_error(code, err, "unknown format 'docx'", "latex")
