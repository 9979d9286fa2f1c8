"""Whether the fused sampling kernel can serve a draw, and if not, why: the op's one dispatch question.

The kernel (`entropic.ops.sampling.triton.fused_candidates`) applies temperature, top-nσ, top-k, top-p, min-p,
p-less and the dynamic temperature (thresholds and a scale computed from statistics of the row) and draws from
per-row Philox streams; typical, epsilon, eta and XTC (cuts on sorted or ranked masses, or a coin) run on
PyTorch. `fused_sampling_blocker` adds what it implements to what every kernel needs (`kernel_blocker`), and
the samplers' one draw path (`entropic.sampling.draw.draw`) asks it.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from entropic.ops.dispatch import SUPPORTED_DTYPES, kernel_blocker

# What the kernel applies besides the temperature, by their `SamplingParams` names
FUSED_FILTERS = ("top_n_sigma", "top_k", "top_p", "min_p", "p_less", "dynatemp_range", "dynatemp_exponent")


def fused_sampling_blocker(logits: Tensor, truncations: Iterable[str], seeded: bool) -> str | None:
    """Why the fused sampling kernel cannot draw from `logits` with these truncation filters (their names,
    the temperature aside) and per-row seeds (`seeded`) or a generator, or None when it can."""
    if not seeded:
        return "needs per-row seeds (the generator path runs on PyTorch); pass seeds="
    unsupported = [name for name in truncations if name not in FUSED_FILTERS]
    if unsupported:
        return (
            "applies temperature, top_n_sigma, top_k, top_p, min_p, p_less and the dynamic temperature only, "
            f"got {', '.join(unsupported)}"
        )
    if logits.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES[:-1])
        last = str(SUPPORTED_DTYPES[-1]).removeprefix("torch.")
        return f"takes {names} or {last} logits, got {logits.dtype}"
    return kernel_blocker("fused_sample", logits)
