"""The entropy schedule's shapes and constants, in one place for the kernel and the PyTorch schedule.

`entropic.attention.EntropySchedule` evaluates α from the normalised attention entropy in PyTorch; the
block-sparse α-entmax kernel evaluates the same formula in its first pass. Both read the shape names,
the kernel's integer code of each shape and the logistic's steepness from here.
"""

from __future__ import annotations

import math

# Schedule shape -> the kernel's constexpr code (0 is "no schedule").
SCHEDULE_CODES: dict[str, int] = {"linear": 1, "cosine": 2, "sigmoid": 3}
SCHEDULES: tuple[str, ...] = tuple(SCHEDULE_CODES)
# Steepness k of the logistic shape, which is rescaled to run exactly from 0 to 1 on [0, 1].
SIGMOID_STEEPNESS = 10.0


def sigmoid_bounds(k: float = SIGMOID_STEEPNESS) -> tuple[float, float]:
    """``(σ(-k/2), σ(k/2))``: the logistic at the ends of [0, 1], which the rescaling maps to 0 and 1."""
    return 1.0 / (1.0 + math.exp(k / 2)), 1.0 / (1.0 + math.exp(-k / 2))
