"""A census of host-device sync points, counted at the aten level (works on CPU).

A sync point is an operation after which the host cannot go on until the
device has finished the work queued so far: reading a value (``.item()``,
``float(t)``, ``bool(t)``, ``int(t)``: aten ``_local_scalar_dense``; ``torch.equal``),
anything whose output size depends on tensor values (boolean-mask indexing,
``nonzero``, ``masked_select``, ``unique``, ``bincount``, ``repeat_interleave``
without ``output_size``), copies between the host and a device (``_to_copy`` /
``copy_`` with one side on the CPU and the other not), and ``.tolist()`` /
``.numpy()`` / ``.cpu()`` (counted at the Python level: on a CPU tensor they
dispatch nothing). The operations are the same on CPU and CUDA, so a CPU test
guards the GPU hot path; only host<->device copies are invisible on a CPU-only run.

    from battui.engine.syncs import SyncCensus
    with SyncCensus() as census:
        for x, y in batches:
            census.mark()          # start a new segment (one per training step)
            step(x, y)
    census.per_segment()           # [n_syncs of segment 0, 1, ...]
    census.segments[1]             # Counter({"aten.nonzero": 10, "scalar": 1})

    with census_per_batch() as census:   # the same, marked by every batch a `Batches` yields
        train_epoch(trainer, 0)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# ops whose result shape depends on tensor values, or that return host values
_VALUE_DEPENDENT = {
    "nonzero", "nonzero_numpy", "argwhere", "masked_select", "bincount", "unique", "_unique", "_unique2",
    "unique_dim", "unique_consecutive", "unique_dim_consecutive", "equal", "is_nonzero", "histogram",
}
_PY_METHODS = ("tolist", "numpy", "cpu")


def _has_bool_index(indices) -> bool:
    return any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8) for t in indices or ())


def _devices(*ts) -> set[str]:
    return {t.device.type for t in ts if isinstance(t, torch.Tensor)}


def sync_kind(func, args, kwargs) -> str | None:
    """The sync category of one aten call, or None when it does not make the host wait."""
    name = func.overloadpacket.__name__
    if name in ("_local_scalar_dense", "item"):
        return "scalar"
    if name in _VALUE_DEPENDENT:
        return f"aten.{name}"
    if name == "repeat_interleave" and kwargs.get("output_size") is None and len(args) == 1:
        return "aten.repeat_interleave"
    if name in ("index", "_unsafe_index", "index_put", "index_put_", "_index_put_impl_") and len(args) > 1:
        if _has_bool_index(args[1]):
            return f"aten.{name}(bool mask)"
    if name == "_to_copy":
        dst = kwargs.get("device")
        src = args[0].device.type
        if dst is not None and torch.device(dst).type != src and "cpu" in (src, torch.device(dst).type):
            return "copy host<->device"
    if name == "copy_" and len(_devices(args[0], args[1])) > 1 and "cpu" in _devices(args[0], args[1]):
        return "copy host<->device"
    return None


class SyncCensus(TorchDispatchMode):
    """Counts sync points per segment (``mark()`` starts the next segment)."""

    def __init__(self) -> None:
        super().__init__()
        self.segments: list[Counter] = [Counter()]
        self._saved: dict[str, object] = {}

    def mark(self) -> None:
        self.segments.append(Counter())

    def per_segment(self) -> list[int]:
        return [sum(c.values()) for c in self.segments]

    @property
    def total(self) -> int:
        return sum(self.per_segment())

    def _count(self, kind: str) -> None:
        self.segments[-1][kind] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = sync_kind(func, args, kwargs)
        if kind is not None:
            self._count(kind)
        return func(*args, **kwargs)

    def __enter__(self):
        census = self
        for name in _PY_METHODS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def counted(t, *a, _orig=original, _name=name, **k):
                if not (_name == "cpu" and t.device.type != "cpu"):  # a device tensor's .cpu() dispatches a copy
                    census._count(f".{_name}()")
                return _orig(t, *a, **k)

            setattr(torch.Tensor, name, counted)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved.clear()
        return super().__exit__(*exc)


@contextmanager
def census_per_batch() -> Iterator[SyncCensus]:
    """A ``SyncCensus`` that starts a new segment at every batch any ``Batches`` yields
    inside the block (segment 0 is what runs before the first batch)."""
    from battui.data.batches import Batches

    census = SyncCensus()
    original = Batches.__iter__

    def marked(self):
        for item in original(self):
            census.mark()
            yield item

    Batches.__iter__ = marked
    try:
        with census:
            yield census
    finally:
        Batches.__iter__ = original
