"""Count the device-scalar reads of a block of code: the host syncs a GPU would wait for.

`.item()`, `.tolist()`, `int(t)`, `float(t)` and `bool(t)` of a tensor all dispatch to
``aten._local_scalar_dense``; boolean indexing, ``nonzero`` and ``masked_select`` dispatch to
``aten.nonzero`` (their output shape depends on the data). On a CUDA tensor each of them makes the host
wait for the device; on the CPU they are nearly free, which is why they are counted rather than timed.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = {
    torch.ops.aten._local_scalar_dense.default: "_local_scalar_dense",
    torch.ops.aten.nonzero.default: "nonzero",
    torch.ops.aten.masked_select.default: "masked_select",
}


class CountSyncs(TorchDispatchMode):
    """``with CountSyncs() as syncs: ...`` then ``syncs.total`` / ``syncs.counts`` (op name -> count)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = SYNC_OPS.get(func)
        if name is not None:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())
