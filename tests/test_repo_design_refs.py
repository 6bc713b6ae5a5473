"""Every mention of the design document points at docs/DESIGN.md and at a section it has."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import ROOT

DESIGN = ROOT / "docs" / "DESIGN.md"
MENTION = re.compile(r"(\S*)DESIGN\.md(?:\s+(?:section|§)\s*([0-9]+(?:\.[0-9]+)?))?")


def _sources() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in ("battui", "tests", "benchmarks"):
        files += sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".yaml", ".md"))
    return [p for p in files if p not in (DESIGN, Path(__file__).resolve())]


def _sections() -> set[str]:
    heads = re.findall(r"^#{2,3} ([0-9]+(?:\.[0-9]+)?)[. ]", DESIGN.read_text(encoding="utf-8"), flags=re.M)
    return set(heads)


def test_design_mentions_resolve():
    sections = _sections()
    assert {"1", "2", "3", "3.1", "3.2", "4", "5", "6", "6.1", "7"} <= sections
    bad = []
    found = 0
    for path in _sources():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for prefix, section in MENTION.findall(line):
                found += 1
                where = f"{path.relative_to(ROOT)}:{lineno}"
                if not prefix.endswith("docs/"):
                    bad.append(f"{where}: names DESIGN.md without docs/")
                if section and section not in sections:
                    bad.append(f"{where}: section {section} is not a heading of docs/DESIGN.md")
    assert found >= 10  # the docstrings that cite it are still there
    assert not bad, "\n".join(bad)
