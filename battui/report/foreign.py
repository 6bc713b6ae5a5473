"""Opening a checkpoint for evaluation: battui's own, or weights saved by other code.

    opts = Foreign(model="resnet18", dataset="cifar10", sets=("data.root=/data",), normalize=None)
    opened = open_for_eval("model_test.pt", opts, device="cpu")
    opened.model, opened.cfg, opened.state, opened.label, opened.splits

A battui checkpoint carries its config: it is rebuilt from it (plus `--set`
overrides, e.g. `data.root` or `eval.amp`). Any other readable file (always read
with `weights_only=True`) is a foreign checkpoint: `--model NAME --dataset NAME`
say what it is; the config is the dataset's preset (its evaluation eps and data
settings) with that model and the `--set` overrides; the weights are found and
renamed by `battui.models.keymap` (containers, `module.`/`_orig_mod.`/`model.`
prefixes, TRADES' WideResNet names). `--normalize MEAN/STD` wraps the model in
`Normalized` for weights trained on normalised inputs, so attacks still work in
[0, 1] pixel space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from battui.engine.pretrained import build_with_weights, parse_normalize
from battui.errors import UserError

DATASET_PRESETS = {
    "cifar10": "cifar10-resnet18",
    "cifar100": "cifar100-resnet18",
    "imagenette": "imagenette-resnet18",
    "digits": "digits-cnn",
    "synthetic": "synthetic-tiny",
}


@dataclass(frozen=True)
class Foreign:
    """How to read files that are not battui checkpoints (`--model`, `--dataset`, `--normalize`), and `--set`."""

    model: str | None = None
    dataset: str | None = None
    sets: tuple[str, ...] = ()
    normalize: str | None = None

    def check(self) -> None:
        if bool(self.model) != bool(self.dataset):
            raise UserError("--model and --dataset go together: name the architecture and the dataset of the file")
        if self.dataset and self.dataset not in DATASET_PRESETS:
            raise UserError(f"unknown dataset '{self.dataset}'; datasets: {', '.join(DATASET_PRESETS)}")
        if self.normalize:
            parse_normalize(self.normalize)


@dataclass
class Opened:
    model: torch.nn.Module
    cfg: Any
    state: dict[str, torch.Tensor]
    path: Path
    label: str
    method: dict
    epoch: int | None
    data_info: dict
    splits: Any = None  # the built datasets, when opening needed them
    identity: dict | None = None  # what else goes into the cache key (foreign: model, normalize)


def _config(path: Path, ckpt: dict, opts: Foreign):
    from battui.config import apply_overrides, config_from_dict, load_config

    if ckpt.get("format") is not None:
        return apply_overrides(config_from_dict(ckpt["config"]), opts.sets)
    if not opts.model:
        from battui.engine.checkfile import check_battui_payload

        check_battui_payload(ckpt["object"], path)  # says what the file holds, and how to name foreign weights
        raise UserError(f"{path} is not a battui checkpoint (no config inside); to evaluate weights saved by "
                        "other code, say what they are: --model NAME --dataset NAME (e.g. --model resnet18 "
                        "--dataset cifar10)")
    # The cnn's depth and width come from the file's own weights (a preset says nothing of another file).
    return load_config(DATASET_PRESETS[opts.dataset],
                       [f"model.name={opts.model}", "model.depth=0", "model.width=0", "model.normalize=",
                        *opts.sets])


def open_config(path: str | Path, opts: Foreign) -> tuple[Any, dict]:
    """The config a checkpoint is evaluated with, and the loaded file (`format` None for a foreign one)."""
    from battui.engine.checkpoint import load_checkpoint

    opts.check()
    ckpt = load_checkpoint(path, battui_only=False)
    return _config(Path(ckpt["path"]), ckpt, opts), ckpt


def open_for_eval(path: str | Path, opts: Foreign, device: str | torch.device = "cpu") -> Opened:
    """Rebuild the model of a battui or foreign checkpoint, weights loaded, eval mode, on `device`."""
    from battui.data import build_datasets
    from battui.models import MODELS
    from battui.models.keymap import unwrap_state

    cfg, ckpt = open_config(path, opts)
    where = Path(ckpt["path"])
    splits = None
    if ckpt.get("format") is not None:
        info = ckpt.get("data_info") or {}  # num_classes, in_channels, classes, image_size
        state, label_info = ckpt["model"], None
    else:
        if cfg.model.name not in MODELS:
            raise UserError(f"unknown model '{cfg.model.name}'; models: {', '.join(MODELS)}")
        state = unwrap_state(ckpt["object"], str(where))
        splits = build_datasets(cfg.data, seed=cfg.train.seed)
        info = {"num_classes": splits.num_classes, "in_channels": splits.in_channels,
                "classes": list(splits.classes), "image_size": splits.image_size}
        label_info = {"model": cfg.model.name, "normalize": opts.normalize}
    model = build_with_weights(cfg.model, state, str(where), num_classes=int(info.get("num_classes", 10)),
                               in_channels=int(info.get("in_channels", 3)), battui_file=label_info is None,
                               normalize=opts.normalize)
    if opts.normalize:
        label_info = {**(label_info or {}), "normalize": opts.normalize}
    model.to(device).eval()
    if ckpt.get("format") is not None:
        label, method = method_label(cfg), {"name": cfg.method.name, "params": dict(cfg.method.params or {})}
    else:
        label, method = where.stem, {"name": "external", "params": {"model": cfg.model.name}}
    return Opened(model=model, cfg=cfg, state=state, path=where, label=label, method=method,
                  epoch=ckpt.get("epoch"), data_info=info, splits=splits, identity=label_info)


def method_label(cfg) -> str:
    """A short name for a checkpoint's method: `bat`, `trades(beta=6)`."""
    params = ",".join(f"{k}={v}" for k, v in sorted((cfg.method.params or {}).items()))
    return f"{cfg.method.name}({params})" if params else cfg.method.name
