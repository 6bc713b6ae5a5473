"""Model zoo: `build_model(name, num_classes, in_channels=3, **kw) -> nn.Module`.

    from battui.models import build_model, MODELS
    model = build_model("resnet18", num_classes=10)                 # CIFAR ResNet-18
    model = build_model("cnn", num_classes=10, in_channels=1)        # digits
    logits = model(x)                                               # x float [B,C,H,W] in [0,1]

Names (`MODELS`): "cnn" (small 3-conv CNN, cnn.py), "resnet18" (He et al. 2016,
resnet.py), "preact-resnet18" (He et al. 2016b, preact_resnet.py), "wrn-28-10" and
"wrn-34-10" (Zagoruyko & Komodakis 2016, wide_resnet.py). Every model takes any
input size >= 8 and any number of channels and classes. Inputs are not normalised
unless you pass `mean=` and `std=` (per-channel sequences), which wraps the model
in `Normalized` so that normalisation lives inside the model and attacks still
work in [0, 1] pixel space. Other keyword arguments go to the model (e.g.
`width=` for cnn/resnet18/preact-resnet18, `dropout=` for WRNs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from battui.models.cnn import SmallCNN, cnn_options_from_state
from battui.models.preact_resnet import PreActResNet18
from battui.models.resnet import ResNet18
from battui.models.wide_resnet import WideResNet

MODELS = ("cnn", "resnet18", "preact-resnet18", "wrn-28-10", "wrn-34-10")

__all__ = ["MODELS", "Normalized", "PreActResNet18", "ResNet18", "SmallCNN", "WideResNet", "build_model",
           "model_options"]


class Normalized(nn.Module):
    """`model((x - mean) / std)`: keeps normalisation inside the model, inputs stay in [0, 1]."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def parse_normalize(text: str, what: str = "--normalize") -> tuple[list[float], list[float]]:
    """`0.4914,0.4822,0.4465/0.2471,0.2435,0.2616` -> (mean, std); ValueError naming `what` otherwise."""
    try:
        mean_text, std_text = text.split("/")
        mean = [float(v) for v in mean_text.split(",")]
        std = [float(v) for v in std_text.split(",")]
    except ValueError:
        raise ValueError(f"{what} expects MEAN/STD as comma lists, e.g. 0.4914,0.4822,0.4465/"
                         f"0.2471,0.2435,0.2616; got '{text}'") from None
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise ValueError(f"{what} needs as many means as stds, every std > 0; got '{text}'")
    return mean, std


def model_options(model_cfg, state: Mapping[str, torch.Tensor] | None = None) -> dict:
    """The `build_model` keywords of a config's `model` section: the cnn's depth and width, and
    `mean`/`std` when `model.normalize` is set.

    With `state` (weights to load), what the config leaves at 0 is read from the weights' own
    layout, so a checkpoint saved before a default changed still rebuilds as it was trained.
    """
    options = {key: getattr(model_cfg, key, 0) for key in ("depth", "width") if getattr(model_cfg, key, 0)}
    if getattr(model_cfg, "name", "") == "cnn" and state is not None:
        options = {**cnn_options_from_state(state), **options}  # what the config sets wins
    if getattr(model_cfg, "normalize", ""):
        options["mean"], options["std"] = parse_normalize(model_cfg.normalize, "model.normalize")
    return options


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kw,
) -> nn.Module:
    """A fresh model `name` (one of `MODELS`) for `num_classes` classes; ValueError for unknown names."""
    if name == "cnn":
        model: nn.Module = SmallCNN(num_classes, in_channels, **kw)
    elif name == "resnet18":
        model = ResNet18(num_classes, in_channels, **kw)
    elif name == "preact-resnet18":
        model = PreActResNet18(num_classes, in_channels, **kw)
    elif name in ("wrn-28-10", "wrn-34-10"):
        depth = int(name.split("-")[1])
        model = WideResNet(depth, 10, num_classes, in_channels, **kw)
    else:
        raise ValueError(f"unknown model '{name}'; models: {', '.join(MODELS)}")
    if mean is not None or std is not None:
        for stat in (mean, std):
            if stat is not None and len(stat) != in_channels:
                raise ValueError(f"normalisation gives {len(stat)} values per statistic; the data has "
                                 f"{in_channels} channel(s)")
        model = Normalized(model, mean if mean is not None else [0.0] * in_channels,
                           std if std is not None else [1.0] * in_channels)
    return model
