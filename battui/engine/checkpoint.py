"""Checkpoints: plain tensors and containers, written atomically, loaded safely.

    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), ...})
    ckpt = load_checkpoint(path)               # weights_only=True, always
    model, cfg = model_from_checkpoint(path)   # rebuilt and loaded, eval mode

A checkpoint is a dict with `format: "battui"`, `version`, `model` (state dict),
`config` (the resolved config as plain data), `epoch` (epochs completed) and,
for `last.pt`, `optimizer`, `scheduler`, `method_state`, `rng` and `best_metric`.
Nothing in it needs pickle's code execution, so `torch.load(weights_only=True)`
reads it; a file that needs more (a pickled model object, a malicious payload)
is refused without running it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from battui.engine.checkfile import FORMAT, check_battui_payload, read_checkpoint_file
from battui.engine.faults import WriteFault
from battui.engine.rundir import RunDir
from battui.errors import UserError

VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    The folder is created if missing, its parent is not (a run folder removed mid-run stays
    removed). A failed write (disk full, permission, the folder gone) removes the temporary
    file, leaves `path` as it was and raises `faults.WriteFault` naming `path`.
    """
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    tmp = None
    try:
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        fault = WriteFault.from_exception(path, exc) if isinstance(exc, (OSError, RuntimeError)) else None
        if fault is not None:
            raise fault from None
        raise
    return path


def checkpoint_file(path: str | Path) -> Path:
    """The file a checkpoint argument names: a run folder means its checkpoints/best.pt (else last.pt)."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        for candidate in (run.best, path / run.best.name, run.last):  # (best.pt beside: an older layout)
            if candidate.is_file():
                return candidate
        raise UserError(f"{path} is a folder with no checkpoints/best.pt or last.pt in it")
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    mmap: bool = False, battui_only: bool = True) -> dict[str, Any]:
    """A battui checkpoint, read safely (`read_checkpoint_file`) and checked; any problem is a one-line UserError.

    `mmap=True` maps the tensors instead of reading them (cheap when only the config is needed).
    `battui_only=False` returns a readable file of another format as `{"format": None, "object": ..., "path": ...}`
    (for `battui.report.foreign`, which reads it as a model of a named architecture).
    """
    path = checkpoint_file(path)
    ckpt = read_checkpoint_file(path, map_location, mmap=mmap)
    if not battui_only and not (isinstance(ckpt, dict) and ckpt.get("format") == FORMAT):
        return {"format": None, "object": ckpt, "path": str(path)}
    check_battui_payload(ckpt, path)
    ckpt["path"] = str(path)
    return ckpt


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """`load_state_dict` through `battui.models.keymap.fit_state` (wrapper prefixes, older key names),
    with a one-line error naming the first missing and unexpected keys."""
    from battui.models.keymap import fit_state

    fit_state(model, state, where)


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model a checkpoint was trained with and load its weights (eval mode).

    Returns (model, config, checkpoint dict).
    """
    from battui.config import config_from_dict
    from battui.models import build_model, model_options

    ckpt = load_checkpoint(path)
    cfg = config_from_dict(ckpt["config"])
    info = ckpt.get("data_info") or {}  # num_classes, in_channels, classes, image_size
    num_classes = int(info.get("num_classes", 10))
    in_channels = int(info.get("in_channels", 3))
    model = build_model(cfg.model.name, num_classes=num_classes, in_channels=in_channels,
                        **model_options(cfg.model, ckpt["model"]))
    load_model_state(model, ckpt["model"], ckpt["path"])
    model.to(device).eval()
    return model, cfg, ckpt
