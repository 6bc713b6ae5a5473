"""Building what a run needs from its config: optimiser, LR schedule, speed settings
(the method: `battui.methods.method_from_config`).

    optimizer = build_optimizer(cfg.train, model.parameters())
    scheduler = build_scheduler(cfg.train, optimizer)       # stepped once per epoch
    speed = SpeedSettings.resolve(cfg.train, device)        # amp / channels_last / compile
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from battui.config import TrainConfig
from battui.errors import UserError


def build_optimizer(train: TrainConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if train.lr <= 0:
        raise UserError(f"train.lr must be > 0, got {train.lr}")
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
    raise UserError(f"unknown train.optimizer '{train.optimizer}'; use sgd or adam")


class EpochSchedule:
    """LR factor per epoch: multistep (x gamma at each milestone fraction), cosine, constant.

    A plain callable object, so `LambdaLR.state_dict()` stays tensors and plain numbers.
    """

    def __init__(self, train: TrainConfig) -> None:
        self.kind = train.schedule
        self.epochs = max(1, train.epochs)
        self.gamma = train.gamma
        if self.kind not in ("multistep", "cosine", "constant"):
            raise UserError(f"unknown train.schedule '{self.kind}'; use multistep, cosine or constant")
        bad = [m for m in train.milestones if not isinstance(m, (int, float)) or not 0 < m <= train.epochs]
        if self.kind == "multistep" and bad:
            raise UserError(f"train.milestones must be fractions of the epochs (0..1] or epoch numbers, got {bad}")
        self.milestones = sorted(int(round(m * train.epochs)) if m <= 1 else int(m) for m in train.milestones)

    def __call__(self, epoch: int) -> float:
        import math

        if self.kind == "multistep":
            return self.gamma ** sum(1 for m in self.milestones if epoch >= m)
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))
        return 1.0


def build_scheduler(train: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, EpochSchedule(train))


def resume_schedule(train: TrainConfig, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """After a checkpoint's optimizer and scheduler states are loaded: the config's settings win.

    Every param group gets train.lr as its base and the lr the config's schedule (maybe extended or
    changed) gives at the resumed epoch, and train.momentum / train.weight_decay; the loaded states
    would keep the old ones. The optimizer's buffers (momentum, Adam moments) are kept.
    """
    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    settings = {"weight_decay": train.weight_decay}
    if train.optimizer == "sgd":
        settings["momentum"] = train.momentum
    for group in optimizer.param_groups:
        group.update(settings, initial_lr=train.lr, lr=train.lr * factor)
    scheduler.base_lrs = [train.lr] * len(optimizer.param_groups)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _flag(value: str | bool, on_cuda: bool, key: str) -> bool:
    text = str(value).strip().lower()
    if text == "auto":
        return on_cuda
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise UserError(f"{key} must be auto, true or false, got {value!r}")


PRECISIONS = ("fp32", "bf16")


def resolve_precision(value: str | bool, device: torch.device) -> tuple[str, str]:
    """`train.amp` -> the training precision, "bf16" (autocast) or "fp32", and why (a few words).

    auto: bf16 on a CUDA device with native bf16 (compute capability 8.0 or newer: A100,
    RTX 30xx, H100, ...), else fp32. On older GPUs (V100, T4) bf16 is emulated (slower than
    fp32) or fails at the first batch; fp16 with a gradient scaler is not offered, because
    the attacks' input gradients (`torch.autograd.grad` inside `pgd`, which a scaler does not
    cover) would underflow in fp16 and their sign() would turn to 0. true asks for bf16 and
    is refused on such a GPU; false is fp32. The CPU runs fp32 unless true.
    """
    from battui.engine.device import native_bf16

    cuda = device.type == "cuda"
    if str(value).strip().lower() == "auto":
        if not cuda:
            return "fp32", "train.amp=auto, not a CUDA device"
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
        if native_bf16(device):
            return "bf16", f"train.amp=auto, native bf16 (capability {capability})"
        return "fp32", f"train.amp=auto, no native bf16 (capability {capability} < 8.0)"
    if not _flag(value, cuda, "train.amp"):
        return "fp32", "train.amp=false"
    if cuda and not native_bf16(device):
        raise UserError(f"train.amp=true asks for bf16, which {device} has no native support for "
                        "(compute capability below 8.0); use train.amp=auto (fp32 there) or false")
    return "bf16", "train.amp=true"


@dataclass
class SpeedSettings:
    precision: str = "fp32"  # "bf16" = bf16 autocast in training (`resolve_precision`)
    channels_last: bool = False
    compile: bool = False
    device_type: str = "cpu"
    precision_reason: str = ""  # why `precision`: "train.amp=auto, not a CUDA device", ...

    @classmethod
    def resolve(cls, train: TrainConfig, device: torch.device) -> SpeedSettings:
        cuda = device.type == "cuda"
        precision, reason = resolve_precision(train.amp, device)
        return cls(precision=precision, channels_last=_flag(train.channels_last, cuda, "train.channels_last"),
                   compile=bool(train.compile), device_type=device.type, precision_reason=reason)

    @property
    def precision_note(self) -> str:
        """The training precision and why, as env.json, the run's header line and the dashboard show it."""
        return f"{self.precision} ({self.precision_reason})" if self.precision_reason else self.precision

    @property
    def amp(self) -> bool:
        """Whether training runs under bf16 autocast."""
        return self.precision == "bf16"

    def autocast(self) -> AbstractContextManager:
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def compiled(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to run: itself, or `torch.compile`d (`compile_model`)."""
        return compile_model(model) if self.compile else model


COMPILE_BACKEND = "inductor"  # torch.compile's backend (tests count recompilations with "eager", no codegen)


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """`torch.compile(model)` with a dynamic batch dimension from the first call.

    The model sees a few batch sizes (the batch, the epoch's last one, the early-stopping
    attacks' buckets, the evaluation's) in three modes (the attack: eval mode with an input
    gradient; p(x) and predictions: eval mode without grad; the loss: train mode): compiled
    for each mode once, with a symbolic batch size, it never recompiles after the first epoch.
    """
    return torch.compile(model, backend=COMPILE_BACKEND, dynamic=True)


SMALL_INPUT = 256  # values per image (digits: 64, synthetic-tiny: 192); CIFAR has 3072
SMALL_INPUT_THREADS = 2


def tune_cpu_threads(device: torch.device, values_per_image: int) -> int:
    """At most two intra-op threads on CPU for tiny images, unless OMP_NUM_THREADS says otherwise;
    returns the old count.

    Convolutions on 8x8 images are too small to split many ways. On the quiet 2-core
    development VM the digits-cnn default took 44 s with two threads and 58-64 s with one
    (docs/PERFORMANCE.md); on a busy machine extra threads wait for each other instead
    (3 epochs of the older digits CNN: 36 s with two threads, 15 s with one), so
    OMP_NUM_THREADS=1 is the setting for a machine shared with other jobs. The count changes a
    CPU run's numbers, so nothing else sets it: `battui table --jobs N` leaves it to this rule
    (engine/numerics.py records it).
    """
    previous = torch.get_num_threads()
    if device.type == "cpu" and values_per_image <= SMALL_INPUT and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(min(previous, SMALL_INPUT_THREADS))
    return previous


def apply_determinism(deterministic: bool, device: torch.device) -> tuple[bool, bool, bool, bool]:
    """Deterministic kernels for exact resumes (`train.deterministic`), else cuDNN autotuning on CUDA.

    Returns the previous global flags for `restore_determinism` (a run in a longer-lived process,
    such as a test session, leaves them as it found them).
    """
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return previous


def restore_determinism(previous: tuple[bool, bool, bool, bool]) -> None:
    enabled, warn_only, benchmark, cudnn_deterministic = previous
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.deterministic = cudnn_deterministic
