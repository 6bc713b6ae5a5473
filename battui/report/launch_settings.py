"""What `battui table` is told about where its runs train: launcher, jobs at once, GPUs, Slurm settings.

    settings = LaunchSettings("slurm", slurm=slurm_settings("slurm.yaml", partition="gpu", time_limit="12:00:00"))
    parse_devices("0,1,2,3") == ["0", "1", "2", "3"];  parse_minutes("1-12") == 2160

Every parse error is a one-line `UserError` naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from battui.errors import UserError

LAUNCHERS = ("local", "submitit-local", "slurm")


@dataclass
class SlurmSettings:
    """What every job asks Slurm for (flags of `battui table` or a YAML file with these keys)."""

    partition: str = ""
    account: str = ""
    time: int = 24 * 60  # minutes per job; a longer run is requeued with its last.pt (max_requeues)
    gpus: int = 1  # per job
    cpus_per_task: int = 0  # 0: the cluster's default
    mem_gb: float = 0.0  # 0: the cluster's default
    sbatch: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, e.g. {qos: high}
    setup: list[str] = field(default_factory=list)  # shell lines before the job (module load, source venv)
    signal_delay_s: int = 120  # USR2 this long before the time limit: the worker saves and the job requeues
    max_requeues: int = 5  # submitit's max_num_timeout


@dataclass
class LaunchSettings:
    launcher: str = "local"
    jobs: int = 0  # runs at once; 0: 1 (local, submitit-local), every run (slurm), len(devices) with devices
    devices: list[str] = field(default_factory=list)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    def slots(self) -> int:
        if self.jobs:
            return self.jobs
        if self.devices:
            return len(self.devices)
        return 1 << 30 if self.launcher == "slurm" else 1


def parse_devices(text: str | None) -> list[str]:
    if not text:
        return []
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices or not all(d.isdigit() for d in devices):
        raise UserError(f"--devices takes GPU numbers separated by commas (e.g. 0,1,2,3), got '{text}'")
    return devices


def parse_minutes(text: str | int) -> int:
    """Slurm's time formats -> whole minutes: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    value = str(text).strip()
    try:
        days, dash, clock = value.partition("-") if "-" in value else ("0", "", value)
        parts = [int(p) for p in clock.split(":")]
        if any(p < 0 for p in parts) or len(parts) > 3:
            raise ValueError
        if dash:  # D-H, D-H:M, D-H:M:S
            hours, minutes, seconds = (parts + [0, 0])[:3]
        elif len(parts) == 3:  # H:M:S
            hours, minutes, seconds = parts
        else:  # M, M:S
            hours, (minutes, seconds) = 0, (parts + [0])[:2]
        total = int(days) * 24 * 60 + hours * 60 + minutes + (seconds > 0)
    except ValueError:
        raise UserError(f"--time: expected minutes, H:MM:SS or D-HH:MM:SS, got '{value}'") from None
    if total < 1:
        raise UserError(f"--time must be at least one minute, got '{value}'")
    return total


def _parse_assignments(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--sbatch takes key=value (e.g. qos=high or constraint=a100), got '{item}'")
        out[key.strip().lstrip("-")] = yaml.safe_load(raw) if raw else ""
    return out


def slurm_settings(config: str | None = None, *, partition: str | None = None, account: str | None = None,
                   time_limit: str | None = None, gpus: int | None = None, sbatch: list[str] = ()) -> SlurmSettings:
    """A YAML file's settings (if any), then the flags on top."""
    import yaml

    settings = SlurmSettings()
    if config:
        try:
            data = yaml.safe_load(Path(config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"--slurm-config {config}: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise UserError(f"--slurm-config {config}: expected a mapping of settings")
        known = set(SlurmSettings.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"--slurm-config {config}: unknown key(s) {', '.join(unknown)}; "
                            f"keys: {', '.join(sorted(known))}")
        for key, value in data.items():
            if key == "time":
                value = parse_minutes(value)
            elif key in ("sbatch", "setup") and not isinstance(value, dict if key == "sbatch" else list):
                raise UserError(f"--slurm-config {config}: '{key}' must be a "
                                f"{'mapping of sbatch options' if key == 'sbatch' else 'list of shell lines'}")
            setattr(settings, key, value)
    for key, value in (("partition", partition), ("account", account), ("gpus", gpus)):
        if value is not None:
            setattr(settings, key, value)
    if time_limit is not None:
        settings.time = parse_minutes(time_limit)
    settings.sbatch = {**settings.sbatch, **_parse_assignments(list(sbatch))}
    if settings.gpus < 0:
        raise UserError(f"--gpus-per-run must be >= 0, got {settings.gpus}")
    return settings
