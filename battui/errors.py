"""Errors that a user can fix: the CLI prints them on one line and exits with code 2.

Also the one number check that raises them and the limits it checks against, here at the bottom
layer so that config validation, method parameters and CLI options share them without an import
cycle (battui.validate re-exports them)."""

from __future__ import annotations

import math
from typing import Any

MAX_ATTACK_STEPS = 1000  # PGD steps (training, evaluation, a method's validation attack)
MAX_RESTARTS = 100
MAX_BATCH_SIZE = 16384
MAX_EPOCHS = 100_000
MAX_IMAGE_SIZE = 1024


class UserError(Exception):
    """Bad input (unknown preset, wrong --set value, missing dataset, bad checkpoint).

    The message is one line that says what is wrong and what to do about it.
    """


def fmt_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)


def check_number(key: str, value: Any, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, hint: str = "") -> None:
    """`value` is a finite number in [low, high] ((low, high] with `low_open`); else a one-line UserError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key} must be a finite number, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if not (too_low or too_high):
        return
    if low is not None and high is not None:
        lo, hi = fmt_value(low), fmt_value(high)
        want = f"> {lo} and <= {hi}" if low_open else f"between {lo} and {hi}"
    elif low is not None:
        want = f"> {fmt_value(low)}" if low_open else f">= {fmt_value(low)}"
    else:
        want = f"<= {fmt_value(high)}"
    raise UserError(f"{key} must be {want}, got {fmt_value(value)}{hint}")
