"""`--device auto|cpu|cuda|cuda:N` -> torch.device, with a line saying what was picked."""

from __future__ import annotations

import torch

from battui.errors import UserError


def resolve_device(spec: str = "auto") -> tuple[torch.device, str]:
    """Return (device, note). `auto` picks CUDA when present; the note says what it picked."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
            return dev, f"device auto -> {dev} ({torch.cuda.get_device_name(dev)})"
        return torch.device("cpu"), "device auto -> cpu (no CUDA device found)"
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UserError(f"unknown device '{spec}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {spec} asked for, but no CUDA device is available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device {spec} does not exist: {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise UserError(f"unsupported device '{spec}'; use auto, cpu, cuda or cuda:N")
    return dev, f"device {dev}"


def native_bf16(device: torch.device) -> bool:
    """Whether a CUDA device computes bf16 natively (compute capability 8.0+, Ampere and newer)."""
    return torch.cuda.get_device_capability(device) >= (8, 0)
