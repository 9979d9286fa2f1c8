"""Count the device-scalar reads of a block of code: the host syncs a GPU would wait for.

`.item()`, `int(t)`, `float(t)` and `bool(t)` of a tensor dispatch to ``aten._local_scalar_dense``;
boolean indexing, ``nonzero`` and ``masked_select`` dispatch to ``aten.nonzero`` (their output shape
depends on the data). ``.tolist()`` and ``.numpy()`` of a CPU tensor dispatch nothing (they read the
memory directly), so they are counted at the Python level, as calls of those methods; on a GPU they
copy to the host first, which is counted as a device-to-host copy (``aten._to_copy`` / ``aten.copy_``
onto the CPU from another device). On a CUDA tensor each of them makes the host wait for the device; on
the CPU they are nearly free, which is why they are counted rather than timed. A read made by
`entropic.ops.dispatch.cpu_scalar` (a CPU-only fast path: it refuses tensors on any other device) is counted
apart, in ``cpu_reads``, not in ``total``.
"""

from __future__ import annotations

import sys
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = {
    torch.ops.aten._local_scalar_dense.default: "_local_scalar_dense",
    torch.ops.aten.nonzero.default: "nonzero",
    torch.ops.aten.masked_select.default: "masked_select",
}
HOST_READS = {torch.Tensor.tolist: "tolist", torch.Tensor.numpy: "numpy"}
COPIES = (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default)


def _to_host(func, args, kwargs) -> bool:
    """A copy from a non-CPU tensor onto the CPU."""
    if func not in COPIES:
        return False
    if func is torch.ops.aten.copy_.default:
        dst, src = args[0], args[1]
        return dst.device.type == "cpu" and src.device.type != "cpu"
    device = kwargs.get("device")
    return args[0].device.type != "cpu" and device is not None and torch.device(device).type == "cpu"


class _HostReads(TorchFunctionMode):
    def __init__(self, counts: Counter[str]) -> None:
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = HOST_READS.get(func)
        if name is not None:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def _in_cpu_scalar() -> bool:
    """Whether the read is made by `entropic.ops.dispatch.cpu_scalar`, which refuses non-CPU tensors."""
    frame = sys._getframe(1)
    while frame is not None:
        if (
            frame.f_code.co_name == "cpu_scalar"
            and frame.f_globals.get("__name__") == "entropic.ops.dispatch"
        ):
            return True
        frame = frame.f_back
    return False


class CountSyncs(TorchDispatchMode):
    """``with CountSyncs() as syncs: ...`` then ``syncs.total`` / ``syncs.counts`` (op name -> count)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.cpu_reads = 0
        self._reads = _HostReads(self.counts)

    def __enter__(self):
        self._reads.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._reads.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = SYNC_OPS.get(func)
        if name is not None and _in_cpu_scalar():
            self.cpu_reads += 1  # `entropic.ops.dispatch.cpu_scalar`: CPU tensors only, never a GPU wait
        elif name is not None:
            self.counts[name] += 1
        elif _to_host(func, args, kwargs):
            self.counts["device_to_host"] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
