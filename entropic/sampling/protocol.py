"""The sampler protocol: built and validated once, then one trusted step per decoding position.

A sampler is an object with a ``step(logits, context) -> SamplerOutput`` method and a ``needs`` set that
names the parts of the `StepContext` it reads beyond the randomness (``"attention"``, ``"prev_tokens"``).
Its parameters were checked when it was built, and ``step`` trusts its inputs: it never re-checks the
logits nor its parameters, and reads no device scalar, so a GPU decoding loop never waits for the host.
The samplers' public calls (`entropic.sampling.sample`, ``EntropixSampler.__call__``, ``FilterSampler
.__call__``) are the other front door: they check their arguments, then take the same step.

A sampler that emits token ids of its own (Entropix's thinking token) may also define
``check_vocab_size(vocab_size: int) -> None``, raising ValueError when one of them is not below the model's
vocabulary size: `generate` calls it once, before the first step, and the sampler's public call with the
logits' ``V``.

`generate` builds the context of each step, calls ``step``, and keeps the tokens, the decisions (None for
samplers without any) and the metrics. A plain callable ``logits -> tokens`` (``functools.partial(sample,
top_p=0.9)``) still works: `as_sampler` wraps it in a `FunctionSampler`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from torch import Tensor

from entropic.ops.sampling.torch import Generators
from entropic.types import EntropixAttentionMetrics

# Randomness of a draw: torch's global generator (None), one generator, or one generator per row.

CONTEXT = frozenset({"attention", "prev_tokens"})  # what a sampler may declare in `needs`


@dataclass(frozen=True)
class StepContext:
    """What a decoding loop knows at one step, beyond the logits.

    Attributes
    ----------
    attention : EntropixAttentionMetrics or mapping, optional
        ``(B,)`` attention signals of the last position (given to samplers that need ``"attention"``).
    prev_tokens : Tensor, optional
        ``(B,)`` previous token of each row (given to samplers that need ``"prev_tokens"``).
    generator : torch.Generator or sequence of B generators, optional
        Randomness (advances at every draw); exclusive with `seeds`.
    seeds : Tensor, optional
        ``(B,)`` integer seeds, one per row: the draw at `step` is a function of ``(seeds[b], step)``.
    step : int
        Decoding position, the counter of a seeded draw.
    """

    attention: EntropixAttentionMetrics | Mapping[str, Tensor] | None = None
    prev_tokens: Tensor | None = None
    generator: Generators = None
    seeds: Tensor | None = None
    step: int = 0


@dataclass(frozen=True)
class SamplerOutput:
    """What a sampler chose at one step, for every row.

    Attributes
    ----------
    tokens : Tensor
        ``(B,)`` int64 token ids.
    decisions : Tensor or None
        ``(B,)`` int64 per-row decisions of samplers that take one (`entropic.sampling.Decision` for
        `EntropixSampler`), else None.
    metrics : dict[str, Tensor]
        ``(B,)`` per-row metrics the sampler computed anyway (e.g. ``temperature``, ``entropy``).
    """

    tokens: Tensor
    decisions: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


@runtime_checkable
class Sampler(Protocol):
    """A sampler built once: ``step(logits (B, V), StepContext) -> SamplerOutput``, no checks, no sync."""

    needs: ClassVar[frozenset[str]]

    def step(self, logits: Tensor, context: StepContext) -> SamplerOutput: ...


class FunctionSampler:
    """A plain callable ``logits (B, V) -> tokens (B,)`` as a `Sampler`.

    The callable receives ``generator=`` when the context has one, ``seeds=`` and ``step=`` when it has
    seeds (the convention of `entropic.sampling.sample`); whatever it checks, it checks at every step.
    """

    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        if not callable(fn):
            raise TypeError(f"a sampler must have a step method or be callable, got {type(fn).__name__}")
        self.fn = fn

    def __repr__(self) -> str:
        return f"FunctionSampler({self.fn!r})"

    def step(self, logits: Tensor, context: StepContext) -> SamplerOutput:
        randomness: dict[str, object] = {}
        if context.generator is not None:
            randomness["generator"] = context.generator
        if context.seeds is not None:
            randomness |= {"seeds": context.seeds, "step": context.step}
        return SamplerOutput(self.fn(logits, **randomness))


def as_sampler(sampler: Sampler | Callable[..., Tensor]) -> Sampler:
    """`sampler` itself when it follows the protocol, else the callable wrapped in a `FunctionSampler`."""
    return sampler if isinstance(sampler, Sampler) else FunctionSampler(sampler)
