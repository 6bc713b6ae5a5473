"""Running battui's command line in tests: in-process, as one process, or many forked cheaply.

    code, out, err = run_cli(capsys, "eval", "m.pt")    # in-process: exit code, captured stdout, stderr
    assert_one_line_error(code, err, "needle")          # exit code 2, one stderr line naming the needle
    proc = battui("train", "--headless")                # `python -m battui ARGS` as a user runs it
    results = run_many([["train", "--set", "attack.eps=-1"], ...], cwd=tmp_path, tmp=tmp_path)
    results[0].code, results[0].err                     # exit status and stderr of that process

`run_many`: one Python process imports battui once, then forks a child per command line:
each child has its own stdout/stderr files, working directory and exit status,
exactly as `python -m battui ARGS` would, without paying torch's import each time.
An uncaught exception in a child prints its traceback to that child's stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from battui.cli import main
from tests.support import ROOT

DRIVER = r"""
import json, os, sys, traceback
from battui.cli import main
cases = json.loads(sys.stdin.read())
out = []
for i, case in enumerate(cases):
    files = [os.path.join(case["tmp"], f"case{i}.{s}") for s in ("out", "err")]
    pid = os.fork()
    if pid == 0:
        os.chdir(case["cwd"])
        for fd, name in ((1, files[0]), (2, files[1])):
            os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        code = 0
        try:
            main(case["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    out.append({"code": os.waitstatus_to_exitcode(status), "out": open(files[0]).read(), "err": open(files[1]).read()})
print(json.dumps(out))
"""


@dataclass
class Result:
    argv: list[str]
    code: int
    out: str
    err: str

    def one_line_error(self) -> str:
        """The single stderr line of a refused command (asserts exit code 2, one line, no traceback)."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert self.code == 2, (self.argv, self.code, self.err)
        assert "Traceback" not in self.err, (self.argv, self.err)
        assert len(lines) == 1, (self.argv, self.err)
        assert "\x1b" not in self.err, (self.argv, self.err)
        return lines[0]


def child_env(**extra: str) -> dict[str, str]:
    """A child process's environment: this checkout's battui, one thread, unbuffered output, wide lines."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **extra}


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `battui ARGS` in-process; returns (exit code, stdout, stderr)."""
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]




def run_many(argvs: list[list[str]], cwd: Path, tmp: Path, **env: str) -> list[Result]:
    """Each argv in its own forked process (working directory `cwd`); output files go to `tmp`;
    `env` is added to the children's environment (`child_env`)."""
    cases = [{"argv": list(map(str, argv)), "cwd": str(cwd), "tmp": str(tmp)} for argv in argvs]
    proc = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(cases), capture_output=True, text=True,
                          env=child_env(**env), cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return [Result(case["argv"], **r) for case, r in zip(cases, json.loads(proc.stdout.splitlines()[-1]))]


def battui(*args: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m battui ARGS` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "battui", *map(str, args)], capture_output=True, text=True,
                          env=child_env(), cwd=cwd, timeout=timeout)
