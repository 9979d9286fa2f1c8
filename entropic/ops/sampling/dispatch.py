"""Whether the fused sampling kernel can serve a draw, and if not, why: the op's one dispatch question.

The kernel (`entropic.ops.sampling.triton.fused_candidates`) applies temperature, top-k, top-p and min-p and
draws from per-row Philox streams; `fused_sampling_blocker` adds what it implements to what every kernel
needs (`kernel_blocker`), and the samplers' one draw path (`entropic.sampling.draw.draw`) asks it.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from entropic.ops.dispatch import SUPPORTED_DTYPES, kernel_blocker

FUSED_FILTERS = ("top_k", "top_p", "min_p")  # what the kernel applies after the temperature


def fused_sampling_blocker(logits: Tensor, truncations: Iterable[str], seeded: bool) -> str | None:
    """Why the fused sampling kernel cannot draw from `logits` with these truncation filters (their names,
    the temperature aside) and per-row seeds (`seeded`) or a generator, or None when it can."""
    if not seeded:
        return "needs per-row seeds (the generator path runs on PyTorch); pass seeds="
    unsupported = [name for name in truncations if name not in FUSED_FILTERS]
    if unsupported:
        return f"applies temperature, top_k, top_p and min_p only, got {', '.join(unsupported)}"
    if logits.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES[:-1])
        last = str(SUPPORTED_DTYPES[-1]).removeprefix("torch.")
        return f"takes {names} or {last} logits, got {logits.dtype}"
    return kernel_blocker("fused_sample", logits)
