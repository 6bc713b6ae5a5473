"""House rule: the engine packages never import the UI (docs/DESIGN.md section 1)."""

from __future__ import annotations

import subprocess
import sys

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
