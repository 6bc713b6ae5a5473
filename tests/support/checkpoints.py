"""battui checkpoints built directly (no Trainer), quickly, for the report and CLI tests.

A checkpoint is `save_checkpoint` around a small `build_model("cnn", ...)` with
the synthetic-tiny config, optionally trained for a few clean steps so that its
errors are neither 0 nor 100.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from battui.config import Config, load_config
from battui.data import Batches, build_datasets
from battui.engine.checkpoint import save_checkpoint
from battui.models import build_model, model_options


def tiny_config(overrides: tuple[str, ...] = ()) -> Config:
    return load_config("synthetic-tiny", list(overrides))


def make_checkpoint(path: Path, cfg: Config, *, seed: int = 0, train_steps: int = 0) -> Path:
    """Write a battui checkpoint of a cnn for `cfg`'s data, trained `train_steps` clean Adam steps."""
    splits = build_datasets(cfg.data, seed=cfg.train.seed)
    torch.manual_seed(seed)
    model = build_model(cfg.model.name, num_classes=splits.num_classes, in_channels=splits.in_channels,
                        **model_options(cfg.model))
    if train_steps:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        step, epoch = 0, 0
        while step < train_steps:
            for x, y in Batches(splits.train, 64, shuffle=True, seed=seed + epoch):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
                step += 1
                if step >= train_steps:
                    break
            epoch += 1
    info = {"num_classes": splits.num_classes, "in_channels": splits.in_channels, "classes": splits.classes,
            "image_size": splits.image_size}
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # save_checkpoint makes checkpoints/, never a run folder
    return save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 1,
                                  "data_info": info})


def needed_weights(folder: Path, method: str) -> list[str]:
    """The `--set`s a method needs to train on synthetic-tiny: a start (FAAL) or a teacher (ABSLD),
    an untrained cnn checkpoint written to `folder`; [] for the others."""
    from battui.methods import method_class

    cls = method_class(method)
    if not (cls.needs_start or cls.teacher_from):
        return []
    path = make_checkpoint(folder / "weights.pt", tiny_config())
    return [f"train.init_from={path}"] if cls.needs_start else [f"method.teacher={path}"]
