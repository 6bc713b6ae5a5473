"""Report output: the same sections as Rich tables, Markdown, CSV or JSON.

A report is a list of `Section`s (a titled table of cells) plus the raw data it
was built from. Cells are strings, numbers (printed with two decimals), `None`
(printed as a dash) or `Bar`s (a per-class error drawn as a bar, with its delta
against a reference). The lowest value of a column can be marked bold, as in
the paper's tables.

    sections = [Section("Table 1", ["Method", "Avg. Std."], [["BAT", 12.9]], bold={(0, 1)})]
    emit(sections, data, fmt="markdown", output="table.md", console=console)

JSON output is the raw data (every per-class number), not the sections.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from battui.errors import UserError
from battui.report.latex import to_latex
from battui.report.sections import MARK, Bar, Estimate, MeanStd, Section, cell_text, lowest_bold  # noqa: F401

FORMATS = ("rich", "markdown", "csv", "json", "latex")


def _rich_cell(value: Any, bold: bool) -> Text:
    if isinstance(value, Bar):
        text = Text(value.bar(), style="cyan")
        text.append(f" {value.value:5.1f}")
        if value.delta is not None:
            style = "green" if value.delta < 0 else "red" if value.delta > 0 else "dim"
            text.append(f" {value.delta:+.1f}", style=style)
        return text
    if isinstance(value, Estimate) and value.significant:
        text = Text(value.text(mark=""), style="bold" if bold else "")
        text.append(MARK, style="bold yellow")
        return text
    return Text(cell_text(value), style="bold" if bold else "")


def render_rich(sections: list[Section], console: Console) -> None:
    """Print every section as a Rich table (bold = lowest in its column)."""
    for section in sections:
        table = Table(title=section.title, title_justify="left", title_style="bold")
        for i, name in enumerate(section.columns):
            table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
        for r, row in enumerate(section.rows):
            table.add_row(*(_rich_cell(v, (r, c) in section.bold) for c, v in enumerate(row)))
        console.print(table)
        for note in section.notes:
            console.print(Text(note, style="dim"))
        console.print()


def to_markdown(sections: list[Section]) -> str:
    """GitHub Markdown tables; bold cells as **x**."""
    out: list[str] = []
    for section in sections:
        out.append(f"### {section.title}\n")
        out.append("| " + " | ".join(section.columns) + " |")
        out.append("|" + "|".join(":---" if i == 0 else "---:" for i in range(len(section.columns))) + "|")
        for r, row in enumerate(section.rows):
            cells = []
            for c, v in enumerate(row):
                text = cell_text(v).replace("|", "\\|")
                if isinstance(v, Bar):
                    text = f"`{v.bar()}` {v.number()}"
                if isinstance(v, Estimate):
                    text = v.text(mark="\\" + MARK)
                cells.append(f"**{text}**" if (r, c) in section.bold else text)
            out.append("| " + " | ".join(cells) + " |")
        out.extend(["", *(f"_{note}_\n" for note in section.notes)])
    return "\n".join(out).rstrip() + "\n"


def _csv_kind(rows: list[list[Any]], c: int) -> str:
    cells = [row[c] for row in rows if c < len(row)]
    if any(isinstance(v, MeanStd) for v in cells):
        return "mean_std"
    if any(isinstance(v, Bar) and v.delta is not None for v in cells):
        return "delta"
    if any(isinstance(v, Estimate) and v.p is not None for v in cells):
        return "test"
    if any(isinstance(v, Estimate) for v in cells):
        return "estimate"
    return "plain"


_CSV_PARTS = {"mean_std": ["mean", "std"], "delta": ["", "delta"], "estimate": ["", "low", "high"],
              "test": ["", "low", "high", "p", "significant"]}


def _csv_parts(value: Any, kind: str) -> list[Any]:
    if kind == "mean_std":
        return [value.mean, value.std] if isinstance(value, MeanStd) else [value, None]
    if kind == "delta":
        return [value, value.delta if isinstance(value, Bar) else None]
    if not isinstance(value, Estimate):
        return [value] + [None] * (len(_CSV_PARTS[kind]) - 1)
    parts = [value.value, value.low, value.high]
    if kind == "test":
        parts += [value.p, None if value.significant is None else int(value.significant)]
    return parts


def to_csv(sections: list[Section]) -> str:
    """One CSV block per section (its title as the first header cell), blocks separated by a blank line.

    Every cell is one number or one label: mean ± std becomes `<col> mean`, `<col> std`; a bar with
    a delta becomes `<col>`, `<col> delta`; a number with its interval `<col>`, `<col> low`, `<col> high`
    (a tested difference also `<col> p`, `<col> significant` 0/1); no value is an empty cell.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for i, section in enumerate(sections):
        if i:
            buf.write("\n")
        kinds = [_csv_kind(section.rows, c) for c in range(len(section.columns))]
        header: list[str] = []
        for name, kind in zip(section.columns, kinds):
            header += [f"{name} {part}".strip() for part in _CSV_PARTS.get(kind, [""])]
        header[0] = f"{section.title}: {header[0]}"
        writer.writerow(header)
        for row in section.rows:
            cells: list[str] = []
            for value, kind in zip(row, kinds):
                cells += [_csv_cell(v) for v in (_csv_parts(value, kind) if kind != "plain" else [value])]
            writer.writerow(cells)
    return buf.getvalue()


def _csv_cell(value: Any) -> str:
    if isinstance(value, Bar):
        value = value.value
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    if value is None:
        return ""
    return str(value)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=_json_default) + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, MeanStd):
        return {"mean": value.mean, "std": value.std, "n": value.n}
    if isinstance(value, Estimate):
        return {"value": value.value, "low": value.low, "high": value.high, "p": value.p,
                "significant": value.significant}
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def resolve_format(fmt: str | None, output: str | None) -> str:
    """`--format` wins; else the output file's extension; else Rich on the console."""
    if fmt:
        fmt = fmt.lower()
        if fmt == "md":
            fmt = "markdown"
        if fmt == "tex":
            fmt = "latex"
        if fmt not in FORMATS:
            raise UserError(f"unknown format '{fmt}'; use one of: {', '.join(FORMATS)}")
        return fmt
    if output:
        suffix = Path(output).suffix.lower()
        from battui.report.output import SUFFIX_FORMATS

        return SUFFIX_FORMATS.get(suffix, "markdown")
    return "rich"


def emit(sections: list[Section], data: Any, *, fmt: str, output: str | Path | None, console: Console) -> None:
    """Write the report in `fmt` to `output` (a file checked by `output.check_output`) or to the console."""
    from battui.report.output import MARKER, write_report

    if fmt == "rich":
        if output:
            buf = io.StringIO()
            render_rich(sections, Console(file=buf, width=160, color_system=None))
            write_report(Path(output), buf.getvalue())
        elif console.is_terminal:
            render_rich(sections, console)
        else:  # a pipe or log file: wide enough that the Table 1 columns are never cut
            render_rich(sections, Console(file=console.file, width=max(console.width, 160), color_system=None))
        return
    if fmt == "json" and isinstance(data, dict):
        data = {"written_by": MARKER, **data}
    text = {"markdown": lambda: to_markdown(sections), "csv": lambda: to_csv(sections), "json": lambda: to_json(data),
            "latex": lambda: to_latex(sections)}[fmt]()
    if output:
        write_report(Path(output), text)
    else:
        console.file.write(text)
        console.file.flush()
