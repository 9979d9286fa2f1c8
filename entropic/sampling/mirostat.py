"""Mirostat 2.0 (Basu et al. 2021, "Mirostat: a neural text decoding algorithm that directly controls
perplexity", Algorithm 2): a feedback loop that holds the surprisal of the sampled tokens near a target τ.

Per sequence it keeps a threshold μ (bits), initialised to 2τ. At each step, over ``p = softmax(x / T)``:

1. keep the tokens with surprisal ``-log2 p_i <= μ`` (at least the most probable one);
2. draw a token from the kept ones, renormalised;
3. update ``μ ← μ - η · (s - τ)`` with ``s = -log2 q`` the sampled token's surprisal under the
   renormalised distribution ``q``.

This is llama.cpp's ``llama_sampler_mirostat_v2_apply`` (``src/llama-sampling.cpp``), where the temperature
sampler runs before it in the chain. Mirostat 1.0 (the Zipf-exponent estimate of Algorithm 1) is not here.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from torch import Tensor

from entropic.sampling.draw import draw
from entropic.sampling.filters import SamplingParams, _check_range, _per_row, _tempered
from entropic.sampling.protocol import SamplerOutput, StepContext


class MirostatSampler:
    """Mirostat 2.0, μ kept per row on the instance (the sampler is stateful).

    The state is reset to ``μ = 2τ`` at ``context.step == 0`` (the first step of every `generate` call)
    and whenever the batch size changes; `reset` does it by hand. So one instance serves one decoding loop
    at a time. Rows are independent: a row's μ depends on its own draws only.

    Parameters
    ----------
    mirostat_tau : float or Tensor
        Target surprisal τ >= 0 in bits (llama.cpp's ``mirostat_tau``, default 5), per row allowed.
    mirostat_eta : float or Tensor
        Learning rate η >= 0 (llama.cpp's ``mirostat_eta``, default 0.1), per row allowed.
    temperature : float or Tensor
        ``T > 0`` applied before the truncation (``p = softmax(x / T)``).
    impl : {"auto", "torch", "triton"}
        The draw's implementation (`entropic.sampling.draw.draw`).

    Attributes
    ----------
    mu : Tensor or None
        ``(B,)`` float64 thresholds (bits) after the last step, None before the first.

    Examples
    --------
    >>> sampler = MirostatSampler(mirostat_tau=3.0, mirostat_eta=0.1)
    >>> out = sampler.step(torch.tensor([[2.0, 1.0, 0.0]]), StepContext(seeds=torch.tensor([0])))
    >>> sorted(out.metrics)
    ['mirostat_mu', 'surprisal']
    """

    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        mirostat_tau: float | Tensor = 5.0,
        mirostat_eta: float | Tensor = 0.1,
        temperature: float | Tensor = 1.0,
        impl: Literal["auto", "torch", "triton"] = "auto",
    ) -> None:
        _check_range("mirostat_tau", mirostat_tau)
        _check_range("mirostat_eta", mirostat_eta)
        _check_range("temperature", temperature)
        self.tau, self.eta, self.temperature, self.impl = mirostat_tau, mirostat_eta, temperature, impl
        self.mu: Tensor | None = None

    def __repr__(self) -> str:
        given = f"mirostat_tau={self.tau}, mirostat_eta={self.eta}, temperature={self.temperature}"
        return f"MirostatSampler({given})"

    def reset(self, logits: Tensor) -> None:
        """Set every row's μ to 2τ, for a batch shaped like `logits` ``(B, V)``."""
        tau = _per_row(self.tau, logits, "mirostat_tau")
        tau = tau.squeeze(-1) if isinstance(tau, Tensor) else tau
        self.mu = torch.full(logits.shape[:-1], 2.0, dtype=torch.float64, device=logits.device) * tau

    def step(self, logits: Tensor, context: StepContext) -> SamplerOutput:
        """The trusted step (the `Sampler` protocol): truncate at μ, draw, update μ; no host sync."""
        if context.step == 0 or self.mu is None or self.mu.shape != logits.shape[:-1]:
            self.reset(logits)
        x = _tempered(logits, self.temperature)
        log2_p = torch.log_softmax(x.double(), dim=-1) / math.log(2.0)
        top = x == x.amax(dim=-1, keepdim=True)
        keep = (-log2_p <= self.mu.unsqueeze(-1)) | top
        truncated = x.masked_fill(~keep, -math.inf)
        tokens, log_q = draw(
            truncated,
            SamplingParams.trusted(temperature=1.0),
            generator=context.generator,
            seeds=context.seeds,
            step=context.step,
            impl=self.impl,
            log_q=True,
        )
        surprisal = -log_q.squeeze(-1).double() / math.log(2.0)
        eta, tau = (
            _per_row(v, logits, n) for v, n in ((self.eta, "mirostat_eta"), (self.tau, "mirostat_tau"))
        )
        eta, tau = (v.squeeze(-1).double() if isinstance(v, Tensor) else v for v in (eta, tau))
        self.mu = self.mu - eta * (surprisal - tau)
        return SamplerOutput(tokens.squeeze(-1), metrics={"surprisal": surprisal, "mirostat_mu": self.mu})
