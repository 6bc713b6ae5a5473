"""Reading the ecosystem's checkpoints: state-dict containers, wrapper prefixes and key layouts.

    state = unwrap_state(torch.load(path, weights_only=True))   # bare, {'state_dict'|'model'|'net': ...}
    fit_state(model, state, where=str(path))                   # map the keys, check them, load

Public robust-training code saves its weights in a handful of ways; all of them
reach battui's models here, with no pickled code involved:

- containers: a bare state dict, or one under `state_dict`, `model` or `net`
  (nested containers too, e.g. a battui checkpoint's `model`);
- wrapper prefixes on every key: `module.` (DataParallel/DDP), `_orig_mod.`
  (torch.compile), `model.` (a wrapper module), in any combination;
- layouts: the standard CIFAR ResNet-18 (`conv1, bn1, layer1..layer4, linear`,
  blocks with `shortcut`, as in TRADES, BAT, FAT, GAIRAT, CFA and the AutoAttack
  authors' example) is battui's own; battui's older ResNet-18 names
  (`layers.0..3`) map to it; TRADES' WideResNet names (`block1..3.layer.N`,
  `convShortcut`, a final `bn1`, `fc`, and the unused `sub_block1`) map to
  battui's `wrn-28-10` / `wrn-34-10`.

A state that still does not fit after that is refused with one line naming the
first missing and the first unexpected key (or the first shape mismatch).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from battui.errors import UserError

CONTAINER_KEYS = ("state_dict", "model", "net")
PREFIXES = ("module.", "_orig_mod.", "model.")


def unwrap_state(obj: object, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside `obj`: `obj` itself or its `state_dict` / `model` / `net` entry (nested)."""
    for _ in range(4):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    what = f"a dict with keys {', '.join(map(str, list(obj)[:6]))}" if isinstance(obj, Mapping) else type(obj).__name__
    raise UserError(f"{where} holds no state dict of tensors ({what}); expected a bare state dict or one under "
                    f"{', '.join(repr(k) for k in CONTAINER_KEYS)}")


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove `module.`, `_orig_mod.` and `model.` wherever every key carries it, repeatedly."""
    changed = True
    while changed and state:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _rename(state: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


# battui <= this change called ResNet-18's stages `layers.0..3`.
RESNET_OLD_NAMES = [(r"^layers\.(\d)\.", lambda m: f"layer{int(m.group(1)) + 1}.")]

# TRADES' models/wideresnet.py (yaodongyu/TRADES) -> battui's WideResNet.
TRADES_WRN_NAMES = [
    (r"^block(\d)\.layer\.", lambda m: f"layers.{int(m.group(1)) - 1}."),
    (r"\.convShortcut\.", ".shortcut."),
    (r"^bn1\.", "bn."),
    (r"^fc\.", "linear."),
]


def to_battui_layout(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a foreign (or older battui) layout to `model`'s keys; a no-op for keys already right."""
    from battui.models.resnet import ResNet18
    from battui.models.wide_resnet import WideResNet

    if isinstance(model, ResNet18):
        return _rename(state, RESNET_OLD_NAMES)
    if isinstance(model, WideResNet) and any(k.startswith("block1.layer.") for k in state):
        # TRADES builds a `sub_block1` that its forward never uses: its weights mean nothing.
        return _rename({k: v for k, v in state.items() if not k.startswith("sub_block1.")}, TRADES_WRN_NAMES)
    return state


def _first(keys: list[str]) -> str:
    return f"{keys[0]}" + (f" (+{len(keys) - 1} more)" if len(keys) > 1 else "")


def fit_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: str, name: str = "") -> None:
    """Map `state` onto `model` (prefixes, layouts) and load it; one-line `UserError` when it does not fit."""
    state = to_battui_layout(model, strip_prefixes(dict(state)))
    own = model.state_dict()
    # BatchNorm counters are absent from checkpoints older than PyTorch 0.4.1; they do not affect eval.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    label = f"the configured model{f' ({name})' if name else ''}"
    if missing or unexpected:
        parts = ([f"missing key {_first(missing)}"] if missing else []) + (
            [f"unexpected key {_first(unexpected)}"] if unexpected else [])
        raise UserError(f"{where} does not fit {label}: {'; '.join(parts)}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise UserError(f"{where} does not fit {label}: {key} has shape {list(value.shape)} in the file, "
                            f"{list(own[key].shape)} in the model (another number of classes or width?)")
    model.load_state_dict(state, strict=False)
