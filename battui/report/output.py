"""Where a report goes (`-o FILE`): checked before any work, written atomically, never over other files.

    target = check_output("out/table.md", "markdown", force=False, inputs=["runs/x/"])
    ...                                      # the evaluation / training
    write_report(target, text)               # tmp file + rename: the old report stays whole until then

A file that exists may be replaced only when battui wrote it (a report whose
first line is a "Table 1"/"Table 2" title or LaTeX's "% battui report", or JSON marked `"written_by":
"battui"`), or with `--force`; the checkpoints being read never.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from battui.errors import UserError

SUFFIX_FORMATS = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".json": "json", ".tex": "latex",
                  ".txt": "rich"}
MARKER = "battui"  # the value of "written_by" in JSON reports


def is_battui_report(path: Path) -> bool:
    """A report battui wrote: a Table 1/2 title on the first line, or battui's JSON marker."""
    try:
        if path.stat().st_size > 100_000_000:
            return False
        with open(path, "rb") as fh:
            raw = fh.read(512)
    except OSError:
        return False
    if b"\x00" in raw:
        return False
    head = raw.decode("utf-8", errors="ignore")  # 512 bytes may end inside a character
    first = head.lstrip("\ufeff").split("\n", 1)[0]
    if first.startswith("{"):
        return head.replace(" ", "").replace("\n", "").startswith(f'{{"written_by":"{MARKER}')
    if first.startswith("% battui report"):  # -f latex
        return True
    return first.lstrip('#" ').startswith(("Table 1", "Table 2"))


def _what(path: Path) -> str:
    from battui.engine.checkfile import describe_bytes

    try:
        what = describe_bytes(path)
    except OSError:
        return "an unreadable file"
    return "a PyTorch checkpoint or pickle" if what is None else what


def check_output(output: str | None, fmt: str, *, force: bool = False,
                 inputs: Iterable[str | Path] = ()) -> Path | None:
    """The `-o` file, refused now (before any work) when it cannot or must not be written."""
    if not output:
        return None
    path = Path(output)
    want = SUFFIX_FORMATS.get(path.suffix.lower())
    if want is not None and want != fmt:
        raise UserError(f"-f {fmt} does not match -o {output} ({path.suffix} is {want}); "
                        f"use -f {want}, or an -o name that ends in the format's suffix")
    if path.is_dir():
        raise UserError(f"-o {output} is a folder; give a file name, e.g. -o {path / 'report.md'}")
    parent = path.parent
    if not parent.exists():
        raise UserError(f"-o {output}: folder {parent} does not exist; create it first (mkdir -p {parent})")
    if not parent.is_dir():
        raise UserError(f"-o {output}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"-o {output}: folder {parent} is not writable; choose another place")
    if not path.exists():
        return path
    from battui.engine.checkpoint import checkpoint_file

    for item in inputs:
        try:
            same = path.samefile(checkpoint_file(item))
        except (OSError, UserError):  # a missing input is reported when it is read
            continue
        if same:
            raise UserError(f"-o {output} is a checkpoint being read; write the report to another file")
    if not path.is_file():
        raise UserError(f"-o {output} exists and is not a regular file; choose another file name")
    if not force and not is_battui_report(path):
        raise UserError(f"-o {output} exists and is not a report battui wrote (it is {_what(path)}); "
                        "choose another file name, or pass --force to overwrite it")
    return path


def write_report(path: Path, text: str) -> None:
    """Write `text` to a temporary file next to `path`, then rename it over `path`."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
