"""Multi-GPU (and multi-process CPU) training through PyTorch DDP and `torchrun`.

    torchrun --nproc_per_node=4 -m battui train --headless --preset cifar10-resnet18
    OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 -m battui train --headless \\
        --preset synthetic-tiny --device cpu                       # gloo on CPU
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --rdzv-backend=c10d \\
        --rdzv-endpoint=HOST0:29500 --rdzv-id=bat1 -m battui train --headless --preset ...
                                            # each node; node_rank 1 on the second

`train.batch_size` is the global batch: each of N ranks trains on batch_size / N
samples per step (exit 2 unless N divides it), so the paper's 128 at lr 0.1 means
the same on 1 or 8 GPUs. The methods' validation (FRL, CFA, WAT) is sharded over
the ranks and its sums all-reduced; the per-epoch and final evaluations run on rank 0
over the whole split (the others join the sums with no images), so their random starts,
and numbers, are one process's. A checkpoint's `rng` holds every rank's RNG states
(`gather_objects`), so a mid-epoch resume continues each rank's own streams.

`torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT;
`init_from_env` joins the process group (nccl on CUDA, gloo on CPU) and pins
each rank to `cuda:LOCAL_RANK`. Only rank 0 writes events and checkpoints.

DDP must see one forward and one backward per optimiser step, while every
method runs several forward passes (the attack, then the loss). `LossModule`
wraps `method.loss(model, x, y)` in one `nn.Module.forward`, and DDP wraps
that; the attack runs on the plain model inside and never touches parameter
gradients.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Each rank's share of `train.batch_size`, which is the global batch (so a preset trains
    with the same batch and learning rate on 1 or N GPUs); `UserError` unless it divides evenly."""
    from battui.errors import UserError

    if global_batch < 1:
        raise UserError("train.epochs and train.batch_size must be at least 1")
    if global_batch % world_size:
        raise UserError(f"train.batch_size {global_batch} is the global batch and must divide evenly over "
                        f"{world_size} ranks (e.g. {max(world_size, global_batch // world_size * world_size)})")
    return global_batch // world_size


def init_from_env(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1; returns (info, this rank's device)."""
    world = env_world_size()
    if world <= 1:
        return DistInfo(), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank), device


def shutdown() -> None:
    """Leave the process group together: without the barrier a rank that tears gloo down
    while its peer still finishes the run can abort ("terminate called without an active exception").

    Call it once the trainer is released: a DDP wrapper still alive keeps the process group (and
    gloo's worker threads) alive past `destroy_process_group`, to be torn down during interpreter
    finalization, where gloo can abort the same way (seen once in CI, after a completed run)."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()  # wrappers held only in reference cycles go now, while the interpreter is whole
        try:
            dist.barrier()
        except RuntimeError:  # a peer is already gone; nothing left to wait for
            pass
        dist.destroy_process_group()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's `obj` on every rank (e.g. the run directory's name)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's `obj`, in rank order, on every rank (`[obj]` when not distributed).
    A collective: every rank calls it."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, in place.

    DDP broadcasts them only at the start of a forward; the train-mode forwards after it
    update each rank's copy, so without this the ranks would evaluate, validate, average and
    save slightly different networks. Called before each of those (`Trainer.sync_network`)."""
    if not info.enabled:
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def agree_flags(flags: list[bool], info: DistInfo, device: torch.device) -> list[bool]:
    """Logical OR of per-rank flags, so every rank stops, saves or pauses at the same batch."""
    if not info.enabled:
        return flags
    # filled on the device from host scalars: no host-to-device copy to wait for
    t = torch.stack([torch.full((), int(f), dtype=torch.int32, device=device) for f in flags])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def any_nonfinite(value: torch.Tensor, info: DistInfo) -> bool:
    """Whether `value` (a device scalar) is NaN or infinite on any rank: one all-reduce on the
    device and one read, the only host sync of a training step outside the attack."""
    bad = (~torch.isfinite(value.detach())).to(torch.int32).reshape(1)
    if info.enabled:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bool(bad)


class LossModule(nn.Module):
    """`forward(x, y)` = `method.loss(model, x, y)` flattened to tensors DDP can follow.

    Returns (loss, steps_to_flip, adv_pred, parts dict).
    """

    def __init__(self, model: nn.Module, method) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        out = self.method.loss(self.model, x, y)
        return out.loss, out.attack.steps_to_flip, out.attack.adv_pred, out.parts


def wrap_for_training(model: nn.Module, method, info: DistInfo, device: torch.device) -> nn.Module:
    """`LossModule`, inside DDP when distributed."""
    module = LossModule(model, method)
    if not info.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids)
