"""The entropy schedule's shapes and constants, in one place for the kernel and the PyTorch schedule.

`entropic.attention.EntropySchedule` evaluates α from the normalised attention entropy in PyTorch; the
block-sparse α-entmax kernel evaluates the same formula in its first pass. Both read the shape names,
the kernel's integer code of each shape and the logistic's steepness from here; `ScheduleArgs` is a
schedule as the kernel's launch takes it, one named structure.
"""

from __future__ import annotations

import math
from typing import NamedTuple

# Schedule shape -> the kernel's constexpr code (0 is "no schedule").
SCHEDULE_CODES: dict[str, int] = {"linear": 1, "cosine": 2, "sigmoid": 3}
SCHEDULES: tuple[str, ...] = tuple(SCHEDULE_CODES)
# Steepness k of the logistic shape, which is rescaled to run exactly from 0 to 1 on [0, 1].
SIGMOID_STEEPNESS = 10.0


def sigmoid_bounds(k: float = SIGMOID_STEEPNESS) -> tuple[float, float]:
    """``(σ(-k/2), σ(k/2))``: the logistic at the ends of [0, 1], which the rescaling maps to 0 and 1."""
    return 1.0 / (1.0 + math.exp(k / 2)), 1.0 / (1.0 + math.exp(-k / 2))


class ScheduleArgs(NamedTuple):
    """An entropy schedule as the α-entmax kernel reads it: built once (`EntropySchedule.kernel_args`),
    passed to the launch by name.

    `code` is the shape's `SCHEDULE_CODES` entry (0: α is read from a tensor, no schedule); `gated` says
    whether queries with varentropy below `varentropy_threshold` keep `fixed_alpha`; `sigmoid_lo` and
    `sigmoid_hi` are `sigmoid_bounds()`, which rescale the logistic shape.
    """

    code: int
    gated: bool
    alpha_min: float
    alpha_max: float
    low: float
    high: float
    varentropy_threshold: float
    fixed_alpha: float
    sigmoid_lo: float
    sigmoid_hi: float

    @classmethod
    def of(
        cls,
        shape: str,
        *,
        low: float,
        high: float,
        alpha_min: float,
        alpha_max: float,
        varentropy_threshold: float | None,
        fixed_alpha: float,
    ) -> ScheduleArgs:
        """From a schedule's (validated) fields; a threshold of None turns the gate off."""
        gated = varentropy_threshold is not None
        return cls(
            SCHEDULE_CODES[shape], gated, float(alpha_min), float(alpha_max), float(low), float(high),
            float(varentropy_threshold) if gated else 0.0, float(fixed_alpha), *sigmoid_bounds(),
        )  # fmt: skip


# What a launch without a schedule passes: the kernel reads α from a tensor and never these values.
NO_SCHEDULE = ScheduleArgs(0, False, 1.0, 2.0, 0.0, 1.0, 0.0, 1.5, 0.0, 1.0)
