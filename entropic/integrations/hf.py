"""Hugging Face ``transformers`` integration: entropic attention and logits processors for ``generate``.

* `register` installs entropic attention (α-entmax, α fixed, per head or scheduled by entropy) as an
  ``attn_implementation``, with its mask function; the returned `EntropicHFAttention` keeps the last
  layer's statistics (see `entropic.integrations._hf_attention`); `score_scale` multiplies the scores;
* `calibrate_attention` fits those score scales (per head, per layer or one) for a given α on
  calibration text: α-entmax is not scale-invariant (see `entropic.attention.calibration`);
* `trainable_attention` installs α-entmax whose per-(layer, head) α and score scale are parameters, for
  fine-tuning after the switch (see `entropic.integrations._hf_trainable`).

``transformers`` ships temperature, top-k, top-p, min-p, typical, epsilon and eta warpers; what it lacks
are the entropy-driven and adaptive samplers, provided here:

* `SamplerLogitsProcessor`: any `Sampler` (every one of `entropic.sampling.build_sampler`: Entropix,
  mirostat 1.0 and 2.0, adaptive-p, top-nσ, p-less, XTC, dynamic temperature, ...) decides each row's
  token; the processor returns scores with every other token at ``-inf``, so greedy and sampling
  ``generate`` both emit it. Stateful samplers (mirostat's μ, adaptive-p's average) start afresh at the
  first call of each ``generate``;
* `EntropixLogitsProcessor`: the same for an `EntropixSampler` (the default configuration when none is
  given), reading the registered attention's statistics;
* `EntropyTargetLogitsProcessor`: divides each row's scores by the temperature at which its
  distribution has a target entropy (`entropic.sampling.temperature_for_entropy`).

>>> from transformers import LogitsProcessorList
>>> from entropic.sampling import build_sampler
>>> processors = LogitsProcessorList([SamplerLogitsProcessor(build_sampler("mirostat"), seed=0)])
>>> model.generate(input_ids, logits_processor=processors, do_sample=False)  # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from transformers import LogitsProcessor

from entropic._validation import check_logits
from entropic.integrations._hf_attention import EntropicHFAttention, entropic_attention_mask, register
from entropic.integrations._hf_calibration import calibrate_attention
from entropic.integrations._hf_trainable import TrainableHFAttention, trainable_attention
from entropic.sampling.entropix import EntropixSampler
from entropic.sampling.entropy_target import temperature_for_entropy
from entropic.sampling.protocol import Sampler, SamplerOutput, StepContext

__all__ = [
    "EntropicHFAttention",
    "EntropixLogitsProcessor",
    "EntropyTargetLogitsProcessor",
    "SamplerLogitsProcessor",
    "TrainableHFAttention",
    "calibrate_attention",
    "entropic_attention_mask",
    "register",
    "trainable_attention",
]


class SamplerLogitsProcessor(LogitsProcessor):
    """Let a `Sampler` choose the next token inside ``model.generate``.

    Each call checks the scores ``(B, V)`` (`entropic._validation.check_logits`: no NaN, no +inf, a finite
    entry per row), runs the sampler's trusted ``step`` on them and returns ``0`` at the chosen token and
    ``-inf`` elsewhere. Place it last in the list: processors after it see one token. The sampler gets
    each row's previous token and the registered attention's statistics when its ``needs`` name them.

    **Generations.** The processor counts its calls: the `StepContext` of a call has ``step`` = the number
    of calls since the current generation began, so a stateful sampler (`MirostatSampler`,
    `MirostatV1Sampler`, `AdaptivePSampler`) resets its state at the first call of every ``generate``, as
    it does at the first step of entropic's `generate`. A call starts a new generation unless its
    ``input_ids`` are the previous call's plus one token per row (same batch, the same ids before the last
    column, compared exactly: one host read per call, which ``generate`` makes anyway); `reset` forces
    one. So one processor serves one generation at a time, decoding one token per call (greedy or sampling
    ``generate``; beam search reorders the rows and assisted decoding adds several tokens per call, and
    each would restart the sampler's state).

    Parameters
    ----------
    sampler : Sampler
        The sampler (`entropic.sampling.build_sampler`), built and checked once.
    seed : int, optional
        Seeds a private ``torch.Generator`` on the scores' device at the first call of every generation
        (so a generation is reproducible, and the draws equal entropic's `generate` with
        ``generator=torch.Generator().manual_seed(seed)`` on the same logits); None uses torch's global
        generator.
    record : bool
        Keep every step's `SamplerOutput` in ``history`` (tokens, decisions, metrics), over every
        generation.
    attention : EntropicHFAttention, optional
        The registered attention whose ``last_metrics`` (recorded at the step's forward) feed a sampler
        that needs ``"attention"``. Hugging Face does not pass attention to logits processors: give the
        processor the `EntropicHFAttention` that `register` returned (and run the model with that
        attention); without it the sampler gets none (Entropix's attention terms are then 0).
    """

    def __init__(
        self,
        sampler: Sampler,
        *,
        seed: int | None = None,
        record: bool = False,
        attention: EntropicHFAttention | None = None,
    ):
        if not isinstance(sampler, Sampler):
            raise TypeError(
                "sampler must follow the Sampler protocol (a step(logits, context) method and a needs set), "
                f"e.g. built by entropic.sampling.build_sampler; got {type(sampler).__name__}"
            )
        if attention is not None and not isinstance(attention, EntropicHFAttention):
            raise TypeError(
                "attention must be the EntropicHFAttention returned by register(), "
                f"got {type(attention).__name__}"
            )
        self.sampler = sampler
        self.seed = seed
        self.record = record
        self.attention = attention
        self.history: list[SamplerOutput] = []
        self._generator: torch.Generator | None = None
        self._previous_ids: Tensor | None = None
        self._step = 0

    def reset(self) -> None:
        """Make the next call the first of a new generation (step 0)."""
        self._previous_ids = None

    def _continues(self, input_ids: Tensor) -> bool:
        """Whether `input_ids` are the previous call's with one more token per row."""
        previous = self._previous_ids
        if previous is None or input_ids.shape != (previous.shape[0], previous.shape[1] + 1):
            return False
        return torch.equal(input_ids[:, :-1], previous.to(input_ids.device))

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        name = type(self).__name__
        check_logits(scores, name, name="scores")
        if not self._continues(input_ids):
            self._step = 0
            check_vocab_size = getattr(self.sampler, "check_vocab_size", None)
            if check_vocab_size is not None:
                check_vocab_size(scores.shape[-1])
        if self.seed is not None and (
            self._step == 0 or self._generator is None or self._generator.device != scores.device
        ):
            self._generator = torch.Generator(scores.device).manual_seed(self.seed)
        attention = None
        if self.attention is not None and "attention" in self.sampler.needs:
            attention = self.attention.last_metrics
            if attention is None:
                raise RuntimeError(
                    f"{name}: the registered attention recorded no statistics; run the model with its "
                    "attn_implementation and record_stats=True"
                )
        context = StepContext(
            attention=attention,
            prev_tokens=input_ids[:, -1] if "prev_tokens" in self.sampler.needs else None,
            generator=self._generator,
            step=self._step,
        )
        out = self.sampler.step(scores, context)
        self._previous_ids, self._step = input_ids, self._step + 1
        if self.record:
            self.history.append(out)
        return torch.full_like(scores, -math.inf).scatter(-1, out.tokens[:, None].to(scores.device), 0.0)


class EntropixLogitsProcessor(SamplerLogitsProcessor):
    """Let an `EntropixSampler` choose the next token inside ``model.generate``: `SamplerLogitsProcessor`
    with the default Entropix configuration when no sampler is given.

    Each call runs the sampler on the scores ``(B, V)`` with each row's previous token (so THINK never
    inserts the thinking token twice in a row) and returns ``0`` at the chosen token and ``-inf``
    elsewhere. Give the processor the `EntropicHFAttention` that `register` returned (and run the model
    with that attention) and the sampler reads the Entropix attention signals of the last layer at every
    step; without it the attention terms are 0. Place it last in the list: processors after it see one
    token.

    Parameters
    ----------
    sampler : EntropixSampler, optional
        The sampler (default configuration when omitted).
    seed, record, attention
        As in `SamplerLogitsProcessor`.
    """

    def __init__(
        self,
        sampler: EntropixSampler | None = None,
        *,
        seed: int | None = None,
        record: bool = False,
        attention: EntropicHFAttention | None = None,
    ):
        sampler = sampler if sampler is not None else EntropixSampler()
        super().__init__(sampler, seed=seed, record=record, attention=attention)


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
