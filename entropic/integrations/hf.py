"""Hugging Face ``transformers`` integration: entropic attention and logits processors for ``generate``.

* `register` installs entropic attention (α-entmax, α fixed, per head or scheduled by entropy) as an
  ``attn_implementation``, with its mask function; the returned `EntropicHFAttention` keeps the last
  layer's statistics (see `entropic.integrations._hf_attention`).

``transformers`` ships temperature, top-k, top-p, min-p, typical, epsilon and eta warpers; what it lacks
are the entropy-driven ones, provided here:

* `EntropixLogitsProcessor`: an `EntropixSampler` decides each row's token; the processor returns
  scores with every other token at ``-inf``, so greedy and sampling ``generate`` both emit it;
* `EntropyTargetLogitsProcessor`: divides each row's scores by the temperature at which its
  distribution has a target entropy (`entropic.sampling.temperature_for_entropy`).

>>> from transformers import LogitsProcessorList
>>> from entropic.sampling import EntropixSampler
>>> processors = LogitsProcessorList([EntropixLogitsProcessor(EntropixSampler(), seed=0)])
>>> model.generate(input_ids, logits_processor=processors, do_sample=False)  # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from transformers import LogitsProcessor

from entropic.integrations._hf_attention import EntropicHFAttention, entropic_attention_mask, register
from entropic.sampling.entropix import EntropixSampler, SamplerOutput
from entropic.sampling.entropy_target import temperature_for_entropy

__all__ = [
    "EntropicHFAttention",
    "EntropixLogitsProcessor",
    "EntropyTargetLogitsProcessor",
    "entropic_attention_mask",
    "register",
]


class EntropixLogitsProcessor(LogitsProcessor):
    """Let an `EntropixSampler` choose the next token inside ``model.generate``.

    Each call runs the sampler on the scores ``(B, V)`` with each row's previous token (so THINK never
    inserts the thinking token twice in a row) and returns ``0`` at the chosen token and ``-inf``
    elsewhere. Hugging Face does not pass attention to logits processors: give the processor the
    `EntropicHFAttention` that `register` returned (and run the model with that attention) and the
    sampler reads the Entropix attention signals of the last layer at every step; without it the
    attention terms are 0. Place it last in the list: processors after it see one token.

    Parameters
    ----------
    sampler : EntropixSampler, optional
        The sampler (default configuration when omitted).
    seed : int, optional
        Seeds a private ``torch.Generator`` on the scores' device at the first call (reproducible runs);
        None uses torch's global generator.
    record : bool
        Keep every step's `SamplerOutput` in ``history`` (tokens, decisions, metrics).
    attention : EntropicHFAttention, optional
        The registered attention whose ``last_metrics`` (recorded at the step's forward) feed the sampler.
    """

    def __init__(
        self,
        sampler: EntropixSampler | None = None,
        *,
        seed: int | None = None,
        record: bool = False,
        attention: EntropicHFAttention | None = None,
    ):
        if attention is not None and not isinstance(attention, EntropicHFAttention):
            raise TypeError(
                "attention must be the EntropicHFAttention returned by register(), "
                f"got {type(attention).__name__}"
            )
        self.sampler = sampler if sampler is not None else EntropixSampler()
        self.seed = seed
        self.record = record
        self.attention = attention
        self.history: list[SamplerOutput] = []
        self._generator: torch.Generator | None = None

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.seed is not None and (self._generator is None or self._generator.device != scores.device):
            self._generator = torch.Generator(scores.device).manual_seed(self.seed)
        attn = None
        if self.attention is not None:
            attn = self.attention.last_metrics
            if attn is None:
                raise RuntimeError(
                    "EntropixLogitsProcessor: the registered attention recorded no statistics; run the model "
                    "with its attn_implementation and record_stats=True"
                )
        out = self.sampler(scores, attn, generator=self._generator, prev_tokens=input_ids[:, -1])
        if self.record:
            self.history.append(out)
        return torch.full_like(scores, -math.inf).scatter(-1, out.tokens[:, None], 0.0)


class EntropyTargetLogitsProcessor(LogitsProcessor):
    """Rescale each row to the temperature at which its entropy equals `target_entropy`.

    ``scores / T`` with ``H(softmax(scores / T)) = target`` (see `temperature_for_entropy`). A target at
    or below the row's ``T -> 0`` limit keeps only the top token(s); one at or above the ``T -> ∞`` limit
    makes the unmasked tokens uniform.

    Parameters
    ----------
    target_entropy : float
        Target entropy in nats (in `base` units when given), >= 0.
    base : float, optional
        None for nats, 2 for bits.
    """

    def __init__(self, target_entropy: float, base: float | None = None):
        self.target_entropy = target_entropy
        self.base = base
        temperature_for_entropy(torch.zeros(1, 2), target_entropy, base)  # validate at construction

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        t = temperature_for_entropy(scores, self.target_entropy, self.base).unsqueeze(-1)  # (B, 1)
        cold, hot = t == 0, torch.isinf(t)
        x = scores.to(t.dtype)
        scaled = x / torch.where(cold | hot, torch.ones_like(t), t)
        scaled = torch.where(hot & torch.isfinite(x), torch.zeros_like(x), scaled)
        scaled = torch.where(cold & (x < x.amax(-1, keepdim=True)), torch.full_like(x, -math.inf), scaled)
        return scaled.to(scores.dtype)
