"""The command line: presets, help, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from battui.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def run_ok(capsys, *args: str) -> str:
    try:
        main(list(args))
    except SystemExit as exc:  # typer may exit 0 explicitly
        assert exc.code in (0, None)
    return capsys.readouterr().out


def test_presets_lists_every_preset(capsys):
    out = run_ok(capsys, "presets")
    for name in ("digits-cnn", "synthetic-tiny", "cifar10-resnet18", "cifar100-resnet18",
                 "imagenette-resnet18", "cifar10-wrn28-10"):
        assert name in out
    assert "resnet18" in out and "digits" in out


def test_help_names_every_command(capsys):
    out = run_ok(capsys, "--help")
    for command in ("train", "watch", "eval", "compare", "table", "presets"):
        assert command in out


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "battui", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "train" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "cifar11-resnet18"], "did you mean 'cifar10-resnet18'"),
        (["--set", "train.epoch=3"], "did you mean 'epochs'"),
        (["--set", "train.epochs=many"], "train.epochs must be int"),
        (["--set", "method.name=bat", "--set", "method.alpha=x"], "method.alpha must be float"),
    ],
)
def test_train_bad_input_is_one_line_exit_2(capsys, tmp_path, args, message):
    code, out, err = run_cli(capsys, "train", "--headless", "--set", f"run.root={tmp_path}", *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir()), "nothing may be written for bad input"


def test_malformed_preset_file_names_the_line(capsys, tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("data:\n  name: digits\nmodel: [cnn\n")
    code, _, err = run_cli(capsys, "train", "--headless", "--preset", str(bad))
    assert code == 2
    assert "malformed YAML" in err and "line" in err


def test_missing_cifar_root_says_where_it_looked(capsys, tmp_path):
    root = tmp_path / "nowhere"
    code, _, err = run_cli(capsys, "train", "--headless", "--preset", "cifar10-resnet18",
                           "--set", f"data.root={root}", "--set", f"run.root={tmp_path / 'runs'}",
                           "--device", "cpu")
    assert code == 2
    assert str(root) in err.replace("\n", "")
    assert "download" in err
    assert not (tmp_path / "runs").exists()
