"""The ranges of the sampling parameters and the check of a number against a range, without torch.

One home for both: `entropic.sampling.filters` and the fused sampling step's oracle read `RANGES`;
`entropic._validation.check_param` checks numbers (and words every range error) with `check_number`; the
command line checks its sampling flags with them before it imports torch, so that a bad value is reported
at once.
"""

from __future__ import annotations

import math
from numbers import Real

# The range of every sampling parameter, keyed by its name: (low, high, check options). A temperature
# of 0 (greedy decoding) is allowed where a caller says so (`SamplingParams`), not by this table.
RANGES: dict[str, tuple[float, float, dict[str, bool]]] = {
    "temperature": (0.0, math.inf, {"low_open": True, "high_open": True}),
    "top_k": (1, math.inf, {"integer": True}),
    "top_p": (0.0, 1.0, {"low_open": True}),
    "min_p": (0.0, 1.0, {}),
    "typical": (0.0, 1.0, {"low_open": True}),
    "epsilon": (0.0, 1.0, {"high_open": True}),
    "eta": (0.0, 1.0, {"high_open": True}),
    "top_n_sigma": (0.0, math.inf, {"low_open": True, "high_open": True}),
    "xtc_threshold": (0.0, 1.0, {}),
    "xtc_probability": (0.0, 1.0, {}),
    "dynatemp_range": (0.0, math.inf, {"high_open": True}),
    "dynatemp_exponent": (0.0, math.inf, {"high_open": True}),
    "mirostat_tau": (0.0, math.inf, {"high_open": True}),
    "mirostat_eta": (0.0, math.inf, {"high_open": True}),
    "mirostat_m": (2, math.inf, {"integer": True}),  # ŝ needs one ratio p_(1) / p_(2) at least
    "adaptive_target": (-math.inf, 1.0, {"low_open": True}),  # negative: adaptive-p is off (plain draw)
    "adaptive_decay": (0.0, 1.0, {"high_open": True}),  # used clamped to 0.99, as llama.cpp does
    "target": (0.0, math.inf, {"high_open": True}),  # EntropyTargetSampler's entropy
    "thinking_token_id": (
        0,
        math.inf,
        {"integer": True},
    ),  # EntropixConfig's token (< V: checked with the model)
}


def expected(
    low: float, high: float, low_open: bool = False, high_open: bool = False, integer: bool = False
) -> str:
    """How an error states a range: ``in (0.0, 1.0]``, ``>= 1``, ``an integer >= 1``."""
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    text = f"in {lo}{low}, {high}{hi}" if high != math.inf else (f"> {low}" if low_open else f">= {low}")
    return f"an integer {text}" if integer else text


def check_number(
    value: float,
    name: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> None:
    """Raise unless the Python number `value` is in the range (TypeError for a non-number, ValueError naming
    `name` and the range otherwise)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    text = expected(low, high, low_open, high_open, integer)
    if integer and int(value) != value:
        raise ValueError(f"{name} must be {text}, got {value}")
    ok = not math.isnan(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{name} must be {text}, got {value}")
