"""House rule: the engine packages never import the UI (docs/DESIGN.md section 1)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

ENGINE_PACKAGES = ["battui.engine", "battui.methods", "battui.attacks", "battui.data", "battui.models", "battui.report",
                    "battui.figures"]


def test_engine_packages_import_without_textual():
    code = (
        "import sys, importlib, pkgutil\n"
        f"for name in {ENGINE_PACKAGES!r}:\n"
        "    pkg = importlib.import_module(name)\n"
        "    for mod in pkgutil.walk_packages(pkg.__path__, name + '.'):\n"
        "        importlib.import_module(mod.name)\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "print('TEXTUAL' if bad else 'CLEAN')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "CLEAN"


# ---- the import layers, read from the source (lazy and TYPE_CHECKING imports included) -----------


# The data flow, lowest first (docs/DESIGN.md section 1): a module may import its own layer and lower ones.
LAYERS = [
    ("battui.errors",),
    ("battui.config", "battui.validate"),
    ("battui.data", "battui.models", "battui.attacks"),
    ("battui.methods",),
    ("battui.engine",),
    ("battui.report", "battui.figures"),
    ("battui.tui",),
    ("battui.cli", "battui.figures.cli", "battui.__main__", "battui"),  # figures/cli.py registers on the Typer app
]

# Against the flow, and only inside a function (docs/DESIGN.md section 1 names each): config checks
# methods by building them from the registries, and a run with run.tensorboard writes TensorBoard live.
LAZY_UPWARD = {
    ("battui.config", "battui.methods"),
    ("battui.validate", "battui.methods"),
    ("battui.validate", "battui.data"),
    ("battui.validate", "battui.models"),
    ("battui.engine.build", "battui.report.tensorboard"),  # a missing tensorboard fails before anything is written
    ("battui.engine.trainer", "battui.report.tensorboard"),
}


def _layer(module: str) -> tuple[int, str]:
    """(layer, package) of the longest listed prefix of `module`."""
    best = (-1, "")
    for rank, packages in enumerate(LAYERS):
        for package in packages:
            if (module == package or module.startswith(package + ".")) and len(package) > len(best[1]):
                best = (rank, package)
    assert best[0] >= 0, module
    return best


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported battui module, line, at module level) for every import in the file, nested ones included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [f"{base}.{alias.name}" if not node.module or node.level else base for alias in node.names]
        else:
            continue
        found += [(name, node.lineno, id(node) in top) for name in names if name.split(".")[0] == "battui"]
    return found


def _upward(path: Path, module: str) -> list[tuple[str, str, int, bool]]:
    mine = _layer(module)[0]
    return [(module, name, line, top) for name, line, top in _imports(path, module) if _layer(name)[0] > mine]


def _upward_imports() -> list[tuple[str, str, int, bool]]:
    return [hit for path in sorted((ROOT / "battui").rglob("*.py")) for hit in _upward(path, _module_name(path))]


def test_no_module_imports_from_a_higher_layer():
    bad = [f"{m}:{line} imports {name}" for m, name, line, top in _upward_imports()
           if top or not any(m.startswith(a) and name.startswith(b) for a, b in LAZY_UPWARD)]
    assert not bad, "imports against the data flow:\n" + "\n".join(bad)


def test_the_allowed_lazy_upward_imports_still_exist():
    used = {(a, b) for a, b in LAZY_UPWARD for m, name, _, _ in _upward_imports()
            if m.startswith(a) and name.startswith(b)}
    assert used == LAZY_UPWARD  # drop an entry once its import is gone


def test_the_layer_check_sees_lazy_type_checking_and_relative_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n"
                     "    from battui.tui.app import DashboardApp\n"
                     "from . import runs\n"
                     "def f():\n"
                     "    from ..cli import app\n"
                     "    import battui.report.sweep\n")
    hits = {(name, top) for _, name, _, top in _upward(probe, "battui.engine.probe")}
    assert hits == {("battui.tui.app", False), ("battui.cli.app", False), ("battui.report.sweep", False)}
    assert ("battui.engine.runs", 4, True) in _imports(probe, "battui.engine.probe")
