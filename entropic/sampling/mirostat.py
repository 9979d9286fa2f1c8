"""Mirostat (Basu et al. 2021, "Mirostat: a neural text decoding algorithm that directly controls
perplexity"): a feedback loop that holds the surprisal of the sampled tokens near a target τ (bits).

Both versions keep, per sequence, a threshold μ (bits) initialised to 2τ, and at each step, over
``p = softmax(x / T)`` (llama.cpp runs its temperature sampler before mirostat in the chain):

1. truncate the candidates with μ (the two versions differ here only);
2. draw a token from the kept ones, renormalised to ``q``;
3. update ``μ ← μ - η · (s - τ)`` with ``s = -log2 q(token)``, the sampled token's surprisal under the
   renormalised distribution (llama.cpp takes ``-log2f`` of the probability recomputed after the cut).

* `MirostatSampler`, Mirostat 2.0 (Algorithm 2; llama.cpp's ``llama_sampler_mirostat_v2_apply`` in
  ``src/llama-sampler.cpp``): keep the tokens with surprisal ``-log2 p_i <= μ``, at least the most
  probable one.
* `MirostatV1Sampler`, Mirostat 1.0 (Algorithm 1; llama.cpp's ``llama_sampler_mirostat_apply``): estimate
  the Zipf exponent ŝ of the sorted probabilities from the top ``m`` tokens, turn ŝ, μ and the vocabulary
  size N into a top-k, and keep the k most probable tokens.

`_MirostatLoop` holds what they share: the parameters, μ per row, its reset and its update. (llama.cpp's
``src/llama-sampler.cpp`` was ``src/llama-sampling.cpp`` before its rename; the two functions are unchanged.)
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from torch import Tensor

from entropic._ranges import RANGES
from entropic._validation import check_param
from entropic.sampling.draw import draw
from entropic.sampling.filters import SamplingParams, _check_range, _per_row, _tempered
from entropic.sampling.protocol import SamplerOutput, StepContext

_LN2 = math.log(2.0)


def _row_values(value: float | Tensor, logits: Tensor, name: str) -> float | Tensor:
    """A number, or a per-row tensor as ``(B,)`` float64 on the logits' device (shape checked)."""
    value = _per_row(value, logits, name)
    return value.squeeze(-1).double() if isinstance(value, Tensor) else value


class _MirostatLoop:
    """The feedback loop both versions share; a subclass says which tokens μ keeps (`_keep`).

    The state is reset to ``μ = 2τ`` at ``context.step == 0`` (the first step of every `generate` call)
    and whenever the batch size changes; `reset` does it by hand. So one instance serves one decoding loop
    at a time. Rows are independent: a row's μ depends on its own logits and draws only.
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

    def _given(self) -> str:
        return f"mirostat_tau={self.tau}, mirostat_eta={self.eta}, temperature={self.temperature}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._given()})"

    def reset(self, logits: Tensor) -> None:
        """Set every row's μ to 2τ, for a batch shaped like `logits` ``(B, V)``."""
        tau = _row_values(self.tau, logits, "mirostat_tau")
        self.mu = torch.full(logits.shape[:-1], 2.0, dtype=torch.float64, device=logits.device) * tau

    def _keep(self, x: Tensor, metrics: dict[str, Tensor]) -> Tensor:
        """``(B, V)`` bool: the tokens the current μ keeps, for tempered logits `x`; may add metrics."""
        raise NotImplementedError

    def step(self, logits: Tensor, context: StepContext) -> SamplerOutput:
        """The trusted step (the `Sampler` protocol): truncate with μ, draw, update μ; no host sync."""
        if context.step == 0 or self.mu is None or self.mu.shape != logits.shape[:-1]:
            self.reset(logits)
        x = _tempered(logits, self.temperature)
        metrics: dict[str, Tensor] = {}
        truncated = x.masked_fill(~self._keep(x, metrics), -math.inf)
        tokens, log_q = draw(
            truncated,
            SamplingParams.trusted(temperature=1.0),
            generator=context.generator,
            seeds=context.seeds,
            step=context.step,
            impl=self.impl,
            log_q=True,
        )
        surprisal = -log_q.squeeze(-1).double() / _LN2
        eta = _row_values(self.eta, logits, "mirostat_eta")
        tau = _row_values(self.tau, logits, "mirostat_tau")
        self.mu = self.mu - eta * (surprisal - tau)
        metrics |= {"surprisal": surprisal, "mirostat_mu": self.mu}
        return SamplerOutput(tokens.squeeze(-1), metrics=metrics)


class MirostatSampler(_MirostatLoop):
    """Mirostat 2.0, μ kept per row on the instance (the sampler is stateful).

    Keeps the tokens with surprisal ``-log2 p_i <= μ`` (at least the most probable one), as llama.cpp's
    ``llama_sampler_mirostat_v2_apply`` (``src/llama-sampler.cpp``) does; see the module docstring for
    the loop. The state is reset to ``μ = 2τ`` at ``context.step == 0`` (the first step of every
    `generate` call) and whenever the batch size changes; `reset` does it by hand.

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

    def _keep(self, x: Tensor, metrics: dict[str, Tensor]) -> Tensor:
        log2_p = torch.log_softmax(x.double(), dim=-1) / _LN2
        top = x == x.amax(dim=-1, keepdim=True)
        return (-log2_p <= self.mu.unsqueeze(-1)) | top


class MirostatV1Sampler(_MirostatLoop):
    """Mirostat 1.0, μ kept per row on the instance (the sampler is stateful).

    Basu et al. 2021, Algorithm 1, as llama.cpp's ``llama_sampler_mirostat_apply``
    (``src/llama-sampler.cpp``) computes it, at every step over ``p = softmax(x / T)`` sorted in
    decreasing order ``p_(1) >= p_(2) >= ...``:

    1. the Zipf exponent, by least squares through the origin over the top ``m`` tokens::

           ŝ = Σ_i t_i b_i / Σ_i t_i²,  t_i = ln((i + 1) / i),  b_i = ln(p_(i) / p_(i+1)),
           i = 1 ... min(m, n) - 1

       with ``n`` the number of candidates (the finite logits: fewer than ``m`` of them shorten the sum);
    2. ``k = (ε̂ · 2^μ / (1 - N^(-ε̂)))^(1/ŝ)`` with ``ε̂ = ŝ - 1`` and ``N`` the vocabulary size (the logits'
       width ``V``: llama.cpp passes the model's ``n_vocab``, not the number of candidates);
    3. keep the ``max(⌊k⌋, 1)`` most probable tokens (llama.cpp truncates ``int(k)``; at most the ``n``
       candidates), draw from them renormalised, and update μ from the drawn token's surprisal under that
       renormalised distribution (module docstring).

    Where llama.cpp's float arithmetic has no value, the limits are taken: ``ŝ = 1`` exactly uses
    ``ε̂ / (1 - N^(-ε̂)) → 1 / ln N``; an infinite ``k`` (``ŝ = 0``: a flat top, or ``2^μ`` beyond the float
    range) keeps every candidate; with a single candidate ŝ is undefined and that candidate is kept. Ties
    at the cut are broken toward the lower token id (llama.cpp's partial sort breaks them arbitrarily).
    The statistics are computed in float64 (llama.cpp: float32).

    Parameters
    ----------
    mirostat_tau : float or Tensor
        Target surprisal τ >= 0 in bits (llama.cpp's ``mirostat_tau``, default 5), per row allowed.
    mirostat_eta : float or Tensor
        Learning rate η >= 0 (llama.cpp's ``mirostat_eta``, default 0.1), per row allowed.
    mirostat_m : int
        Tokens used to estimate ŝ, >= 2 (one ratio at least); llama.cpp's common sampler uses 100.
    temperature : float or Tensor
        ``T > 0`` applied before the truncation (``p = softmax(x / T)``).
    impl : {"auto", "torch", "triton"}
        The draw's implementation (`entropic.sampling.draw.draw`).

    Attributes
    ----------
    mu : Tensor or None
        ``(B,)`` float64 thresholds (bits) after the last step, None before the first.

    The step's metrics add ``mirostat_s_hat`` (ŝ) and ``mirostat_k`` (the number of tokens kept) to
    ``surprisal`` and ``mirostat_mu``.

    Examples
    --------
    >>> sampler = MirostatV1Sampler(mirostat_tau=3.0, mirostat_eta=0.1)
    >>> out = sampler.step(torch.tensor([[2.0, 1.0, 0.0]]), StepContext(seeds=torch.tensor([0])))
    >>> sorted(out.metrics)
    ['mirostat_k', 'mirostat_mu', 'mirostat_s_hat', 'surprisal']
    """

    def __init__(
        self,
        *,
        mirostat_tau: float | Tensor = 5.0,
        mirostat_eta: float | Tensor = 0.1,
        mirostat_m: int = 100,
        temperature: float | Tensor = 1.0,
        impl: Literal["auto", "torch", "triton"] = "auto",
    ) -> None:
        if isinstance(mirostat_m, Tensor):
            raise TypeError("mirostat_m must be a Python integer (one window for every row), got a tensor")
        low, high, options = RANGES["mirostat_m"]
        check_param(mirostat_m, "mirostat_m", low, high, **options)
        super().__init__(
            mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta, temperature=temperature, impl=impl
        )
        self.m = int(mirostat_m)

    def _given(self) -> str:
        return f"{super()._given()}, mirostat_m={self.m}"

    def _keep(self, x: Tensor, metrics: dict[str, Tensor]) -> Tensor:
        vocab = x.shape[-1]
        log_p = torch.log_softmax(x.double(), dim=-1)  # (B, V)
        sorted_log_p, order = log_p.sort(dim=-1, descending=True, stable=True)
        n = torch.isfinite(x).sum(-1)  # (B,) candidates
        window = min(self.m, vocab)
        i = torch.arange(1, window, device=x.device, dtype=torch.float64)  # 1 ... window - 1
        t = torch.log((i + 1) / i)  # (window - 1,)
        b = sorted_log_p[..., : window - 1] - sorted_log_p[..., 1:window]  # (B, window - 1)
        pair = i < n.unsqueeze(-1)  # both ends of the ratio are candidates
        s_hat = torch.where(pair, t * b, 0.0).sum(-1) / torch.where(pair, t * t, 0.0).sum(-1)
        eps = s_hat - 1.0
        ln_n = math.log(vocab)
        limit = 1.0 / ln_n if vocab > 1 else math.inf  # ε̂ / (1 - N^(-ε̂)) at ε̂ = 0
        ratio = torch.where(eps == 0, limit, eps / -torch.expm1(-eps * ln_n))
        k = torch.exp((torch.log(ratio) + self.mu * _LN2) / s_hat)  # in logs: 2^μ may overflow alone
        k = torch.nan_to_num(k, nan=1.0).floor().clamp(min=1.0).minimum(n.double())  # (B,)
        positions = torch.arange(vocab, device=x.device).expand_as(order)
        rank = torch.empty_like(order).scatter_(-1, order, positions)  # each token's place in the order
        metrics |= {"mirostat_s_hat": s_hat, "mirostat_k": k}
        return rank < k.unsqueeze(-1)
