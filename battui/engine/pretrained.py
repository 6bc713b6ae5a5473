"""Weights a run needs from another run: its start (`train.init_from`) and a teacher (`method.teacher`).

    model = build_with_weights(cfg.model, state, "file.pt", num_classes=10, in_channels=3,
                               battui_file=False, normalize="0.5/0.25")
    check_dependencies(method, cfg, resuming=False)       # FAAL's start, ABSLD's teacher named
    teacher = load_teacher(method, data_info, device)     # ABSLD: eval mode, on the device

`build_with_weights` is also how `battui eval` rebuilds a checkpoint (`report/foreign.py`),
so a teacher is read exactly as `battui eval` reads a file: a battui checkpoint rebuilds from
its own config; another code's file needs its architecture (`method.teacher_model`, as
`--model`) and, for weights trained on normalised inputs, `method.teacher_normalize` (as
`--normalize`). Every problem is a one-line `UserError`, raised before the run writes anything.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from battui.errors import UserError


def parse_normalize(text: str) -> tuple[list[float], list[float]]:
    """`0.4914,0.4822,0.4465/0.2471,0.2435,0.2616` -> (mean, std); a one-line UserError otherwise."""
    from battui.models import parse_normalize as parse

    try:
        return parse(text)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def build_with_weights(model_cfg: Any, state: dict, where: str, *, num_classes: int, in_channels: int,
                       battui_file: bool, normalize: str | None = None) -> nn.Module:
    """The model of `model_cfg` (depth/width left at 0 are read from `state`) with `state` loaded, wrapped in
    `Normalized` for `normalize` ("MEAN/STD"); `battui_file=False` maps another code's key names."""
    from battui.engine.checkpoint import load_model_state
    from battui.models import Normalized, build_model, model_options
    from battui.models.keymap import fit_state

    try:
        model = build_model(model_cfg.name, num_classes=num_classes, in_channels=in_channels,
                            **model_options(model_cfg, state))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if battui_file:
        load_model_state(model, state, where)
    else:
        fit_state(model, state, where, name=model_cfg.name)
    if normalize:
        mean, std = parse_normalize(normalize)
        if len(mean) not in (1, in_channels):
            raise UserError(f"{where}: the normalisation gives {len(mean)} values per statistic; the data has "
                            f"{in_channels} channels")
        model = Normalized(model, mean * (in_channels // len(mean)), std * (in_channels // len(std)))
    return model


def check_dependencies(method: Any, cfg: Any, resuming: bool) -> None:
    """A method that needs a start (FAAL) or a teacher (ABSLD) and was given none: one line saying how."""
    if method.needs_start and not cfg.train.init_from and not resuming:
        raise UserError(f"{method.name} fine-tunes a robust model: give its checkpoint with --set "
                        f"train.init_from=PATH (battui table trains a {method.fine_tunes_from} run first)")
    if method.teacher_from and not method.teacher:
        raise UserError(f"{method.name} distils a robust teacher: give its checkpoint with --set "
                        f"method.teacher=PATH (battui table trains a {method.teacher_from} run first)")


def load_teacher(method: Any, data_info: dict, device: torch.device) -> nn.Module:
    """The teacher `method.teacher` names, for a run with `data_info`'s classes, eval mode, on `device`."""
    from battui.config import ModelConfig, config_from_dict
    from battui.engine.checkpoint import load_checkpoint
    from battui.models import MODELS
    from battui.models.keymap import unwrap_state

    ckpt = load_checkpoint(method.teacher, battui_only=False)
    where = f"teacher {ckpt['path']}"
    k, channels = int(data_info["num_classes"]), int(data_info["in_channels"])
    if ckpt.get("format") is not None:
        info = ckpt.get("data_info") or {}
        if list(info.get("classes", [])) != list(data_info["classes"]):
            raise UserError(f"{where} was trained on the classes {info.get('classes')}; this run has "
                            f"{data_info['classes']}")
        model_cfg, state, battui_file = config_from_dict(ckpt["config"]).model, ckpt["model"], True
    else:
        if not method.teacher_model:
            raise UserError(f"{where} is not a battui checkpoint; name its architecture with --set "
                            f"method.teacher_model=NAME (models: {', '.join(MODELS)})")
        if method.teacher_model not in MODELS:
            raise UserError(f"unknown method.teacher_model '{method.teacher_model}'; models: {', '.join(MODELS)}")
        model_cfg, state, battui_file = ModelConfig(name=method.teacher_model), unwrap_state(ckpt["object"], where), \
            False
    model = build_with_weights(model_cfg, state, where, num_classes=k, in_channels=channels,
                               battui_file=battui_file, normalize=method.teacher_normalize or None)
    return model.to(device).eval().requires_grad_(False)
