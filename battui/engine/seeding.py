"""The run's RNG: seeding every generator from one number, and capturing / restoring their states
(a mid-epoch `last.pt` carries every rank's).

    seed_epoch(cfg.train.seed, epoch, rank)     # or, resumed mid-epoch, from the states last.pt saved
    state = rng_state(); ...; set_rng_state(state)
"""

from __future__ import annotations

import random
from typing import Any

import torch

from battui.data.batches import mix_seed  # one seed mixer for data and engine
from battui.engine.distributed import DistInfo, gather_objects
from battui.errors import UserError


def seed_everything(seed: int) -> None:
    """torch (CPU and CUDA), python `random` and numpy from one seed."""
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:
        pass


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors / plain containers (loadable with weights_only=True)."""
    py = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": py[0], "state": torch.tensor(py[1], dtype=torch.int64), "gauss": py[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = {"kind": str(kind), "keys": torch.from_numpy(keys.astype("int64")),
                          "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
    except ImportError:
        pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (CUDA states only where the devices exist)."""
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        keys = n["keys"].numpy().astype("uint32")
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))


def rng_states(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's `rng_state()`, in rank order: what a checkpoint's `rng` holds (a collective
    under DDP: every rank calls it). Each rank draws its own attack starts and dropout, so a
    mid-epoch resume restores each rank's own states."""
    return gather_objects(rng_state(), info)


def resumed_rng_state(ckpt: dict[str, Any], info: DistInfo) -> dict[str, Any] | None:
    """This rank's RNG states from a mid-epoch `last.pt` (None at an epoch's end: the next epoch
    reseeds from (train.seed, epoch, rank)); `UserError` when it was saved by another number of
    ranks, whose batches and random streams this run cannot continue."""
    if not int(ckpt.get("batch", 0)):
        return None
    saved = ckpt["rng"]
    states = [saved] if isinstance(saved, dict) else list(saved)  # a dict: rank 0's alone, as older files hold
    if len(states) != info.world_size:
        raise UserError(f"{ckpt['path']} was saved mid-epoch (epoch {int(ckpt['epoch']) + 1} batch {ckpt['batch']}) "
                        f"with the RNG states of {len(states)} rank(s); resume it with {len(states)} "
                        f"(this run has {info.world_size}), as each continues its own shard and random streams")
    return states[info.rank]


def seed_epoch(seed: int, epoch: int, rank: int, start_batch: int = 0, saved: dict[str, Any] | None = None) -> None:
    """Epoch `epoch`'s randomness on this rank: from (seed, epoch, rank); resumed after batch `start_batch`,
    this rank's `saved` states of that moment (`resumed_rng_state`)."""
    if start_batch:
        set_rng_state(saved)  # exact: this rank's states saved after that batch
    else:
        seed_everything(mix_seed(seed, epoch, rank))
