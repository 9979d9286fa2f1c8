"""Adaptive-p: draw tokens whose probability is near a target, steered by the probabilities drawn so far.

llama.cpp's adaptive-p sampler (``src/llama-sampler.cpp``: ``llama_sampler_adaptive_p_apply``,
``_accept`` and ``_reset``; pull request ggml-org/llama.cpp#17927). Per sequence it keeps an exponential
moving average of the *original* probabilities of the tokens it selected: ``p_i = softmax(x / T)_i``, the
distribution it receives (after the temperature and whatever truncation ran before it in llama.cpp's
chain), before its own transform. At each step, with target ``τ`` (clamped to ``[0, 1]``) and decay ``d``:

1. adapted target ``a = clamp(2τ - S / W, 0, 1)``, with ``S = Σ_j d^j p_sel(t-1-j)`` and ``W = Σ_j d^j``
   (the weighted mean ``S / W`` of the past selections' original probabilities);
2. every finite logit becomes ``5 - 10 · δ_i² / (1 + δ_i)``, ``δ_i = |p_i - a| / 0.3``
   (``PEAK_LOGIT_VALUE = 5``, ``SHARPNESS = 10``, ``DISTRIBUTION_WIDTH = 0.3``: quadratic near the target,
   linear in the tails); ``-inf`` logits stay ``-inf``;
3. draw from the softmax of the transformed logits;
4. ``S ← p_sel + d · S``, ``W ← 1 + d · W``, with ``p_sel`` the drawn token's original probability.

The state starts (and is reset) as if the target had always been hit: ``S = τ / (1 - d)``,
``W = 1 / (1 - d)``, so the first adapted target is ``τ`` (llama.cpp falls back to ``τ`` when ``W = 0``,
which this start rules out). The decay is used clamped to ``[0, 0.99]``, as ``llama_sampler_init_adaptive_p``
clamps it. A negative target switches the sampler
off: the row is drawn from ``p`` unchanged and its state is not updated.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from torch import Tensor

from entropic.sampling.draw import draw
from entropic.sampling.filters import SamplingParams, _check_range, _per_row, _tempered
from entropic.sampling.protocol import SamplerOutput, StepContext

DISTRIBUTION_WIDTH = 0.3  # |p - a| is measured in units of this width
PEAK_LOGIT_VALUE = 5.0  # the logit of a token exactly at the adapted target
SHARPNESS = 10.0  # how fast the logit falls away from the target
MAX_DECAY = 0.99  # llama_sampler_init_adaptive_p clamps the decay to [0, 0.99]


def adaptive_p_logits(probs: Tensor, logits: Tensor, adapted_target: Tensor) -> Tensor:
    """``5 - 10 · δ² / (1 + δ)`` with ``δ = |p - a| / 0.3`` where `logits` is finite, ``-inf`` elsewhere.

    `probs` and `logits` are ``(B, V)``, `adapted_target` ``(B,)``; the result has the dtype of `probs`.
    """
    dist = (probs - adapted_target.unsqueeze(-1)).abs() / DISTRIBUTION_WIDTH
    transformed = PEAK_LOGIT_VALUE - SHARPNESS * dist * dist / (1.0 + dist)
    return transformed.masked_fill(~torch.isfinite(logits), -math.inf)


class AdaptivePSampler:
    """Adaptive-p, its moving average kept per row on the instance (the sampler is stateful).

    See the module docstring for the definition. The state (``weighted_sum`` S and ``total_weight`` W) is
    reset at ``context.step == 0`` (the first step of every `generate` call) and whenever the batch size
    changes; `reset` does it by hand. So one instance serves one decoding loop at a time. Rows are
    independent: a row's state depends on its own logits and draws only.

    Parameters
    ----------
    adaptive_target : float or Tensor
        Target probability τ <= 1 (llama.cpp's ``adaptive_target``); negative switches the row off (a plain
        draw from ``softmax(x / T)``, the state untouched). Per row allowed.
    adaptive_decay : float or Tensor
        Decay d in ``[0, 1)`` of the moving average (llama.cpp's ``adaptive_decay``, default 0.9), used
        clamped to 0.99 as llama.cpp does: the history spans about ``1 / (1 - d)`` tokens. Per row allowed.
    temperature : float or Tensor
        ``T > 0`` applied first (``p = softmax(x / T)``: llama.cpp runs its temperature sampler before).
    impl : {"auto", "torch", "triton"}
        The draw's implementation (`entropic.sampling.draw.draw`).

    Attributes
    ----------
    weighted_sum, total_weight : Tensor or None
        ``(B,)`` float64 S and W after the last step, None before the first.

    The step's metrics: ``adapted_target`` (a, this step's; τ for rows switched off) and ``probability``
    (the drawn token's original probability ``p_sel``).

    Examples
    --------
    >>> sampler = AdaptivePSampler(adaptive_target=0.3)
    >>> out = sampler.step(torch.tensor([[2.0, 1.0, 0.0]]), StepContext(seeds=torch.tensor([0])))
    >>> sorted(out.metrics)
    ['adapted_target', 'probability']
    """

    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        adaptive_target: float | Tensor,
        adaptive_decay: float | Tensor = 0.9,
        temperature: float | Tensor = 1.0,
        impl: Literal["auto", "torch", "triton"] = "auto",
    ) -> None:
        _check_range("adaptive_target", adaptive_target)
        _check_range("adaptive_decay", adaptive_decay)
        _check_range("temperature", temperature)
        self.target, self.decay, self.temperature, self.impl = (
            adaptive_target,
            adaptive_decay,
            temperature,
            impl,
        )
        self.weighted_sum: Tensor | None = None
        self.total_weight: Tensor | None = None

    def __repr__(self) -> str:
        given = f"adaptive_target={self.target}, adaptive_decay={self.decay}, temperature={self.temperature}"
        return f"AdaptivePSampler({given})"

    def _rows(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """``(B,)`` float64 target and decay on the logits' device."""
        batch = logits.shape[:-1]
        out = []
        for value, name in ((self.target, "adaptive_target"), (self.decay, "adaptive_decay")):
            value = _per_row(value, logits, name)
            value = value.squeeze(-1) if isinstance(value, Tensor) else value
            out.append(torch.full(batch, 1.0, dtype=torch.float64, device=logits.device) * value)
        return out[0], out[1].clamp(max=MAX_DECAY)

    def reset(self, logits: Tensor) -> None:
        """Start every row as if its target had always been hit: ``S = τ / (1 - d)``, ``W = 1 / (1 - d)``."""
        target, decay = self._rows(logits)
        self.total_weight = 1.0 / (1.0 - decay)
        self.weighted_sum = target * self.total_weight

    def step(self, logits: Tensor, context: StepContext) -> SamplerOutput:
        """The trusted step (the `Sampler` protocol): transform, draw, update the average; no host sync."""
        if context.step == 0 or self.total_weight is None or self.total_weight.shape != logits.shape[:-1]:
            self.reset(logits)
        target, decay = self._rows(logits)
        on = target >= 0  # (B,)
        x = _tempered(logits, self.temperature)
        probs = torch.softmax(x.double(), dim=-1)  # (B, V) the original probabilities
        adapted = (2.0 * target.clamp(0.0, 1.0) - self.weighted_sum / self.total_weight).clamp(0.0, 1.0)
        transformed = adaptive_p_logits(probs, x, adapted).to(x.dtype)
        tokens, _ = draw(
            torch.where(on.unsqueeze(-1), transformed, x),
            SamplingParams.trusted(temperature=1.0),
            generator=context.generator,
            seeds=context.seeds,
            step=context.step,
            impl=self.impl,
        )
        p_sel = probs.gather(-1, tokens).squeeze(-1)  # (B,)
        self.weighted_sum = torch.where(on, p_sel + decay * self.weighted_sum, self.weighted_sum)
        self.total_weight = torch.where(on, 1.0 + decay * self.total_weight, self.total_weight)
        metrics = {"adapted_target": torch.where(on, adapted, target), "probability": p_sel}
        return SamplerOutput(tokens.squeeze(-1), metrics=metrics)
