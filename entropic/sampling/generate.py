"""A KV-cached decoding loop for entropic models and Hugging Face causal LMs.

Calling convention (the one of Hugging Face causal LMs, which entropic's own models follow)::

    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
    out.logits            # (B, n, V): logits of the n positions of `ids`
    out.past_key_values   # the cache to pass back at the next step
    out.attention_metrics # optional: AttentionMetrics of the last position, for samplers that need them

Hugging Face renamed the cache argument and output field ``past_key_values`` to ``cache`` in transformers
5 (the old name warns, and goes in 5.40): when the model's ``forward`` has a parameter named ``cache``,
the cache goes in and comes back under that name instead. The cache is whatever the model returns (a
``transformers.Cache`` for Hugging Face models, a list of `KVCache` for entropic's GPT); the first step
passes None and the model creates it.

``attention_mask`` covers the cached and the new positions, ``(B, past + n)``, 1 for real tokens; prompts
of different lengths are left-padded, and ``position_ids`` count real tokens only, so a padded row sees
the positions it would see alone.

The vocabulary size ``V`` is the model's ``config.vocab_size`` (the text config's, for a multimodal
Hugging Face config) or the rows of ``get_input_embeddings()``; `generate` checks the prompt's ids against
it, and a sampler's own token ids (``check_vocab_size``, e.g. Entropix's thinking token) against it, once,
before the first step. A model that exposes neither: the ids are checked to be >= 0 only, and the sampler
against the first logits' ``V``, before the first draw.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from entropic.ops.entropy.dispatch import entropy_stats
from entropic.sampling.protocol import Generators, Sampler, StepContext, as_sampler


@dataclass(frozen=True)
class GenerateStep:
    """One decoding step, as `generate` hands it to its ``on_step`` callback.

    Attributes
    ----------
    step : int
        Decoding position, 0 for the first new token.
    tokens : Tensor
        ``(B,)`` the token each row took (a finished row repeats its EOS).
    generated : Tensor
        ``(B,)`` bool, True where the row really generated `tokens` (up to and including its EOS).
    decisions : Tensor or None
        ``(B,)`` the sampler's decisions (`Decision` values of an `EntropixSampler`), else None.
    metrics : dict[str, Tensor]
        ``(B,)`` the sampler's metrics, with ``entropy`` and ``varentropy`` of the logits in nats when the
        sampler did not report them.
    """

    step: int
    tokens: Tensor
    generated: Tensor
    decisions: Tensor | None
    metrics: dict[str, Tensor]


@dataclass(frozen=True)
class GenerateOutput:
    """Result of `generate`.

    Attributes
    ----------
    sequences : Tensor
        ``(B, L + T)`` prompt (with its padding) then the ``T <= max_new_tokens`` generated tokens; after a
        row's EOS its remaining positions repeat the (first) EOS id.
    new_tokens : Tensor
        ``(B, T)`` the generated part of `sequences`.
    generated : Tensor
        ``(B, T)`` bool, True at the tokens a row really generated (up to and including its EOS).
    decisions : Tensor or None
        ``(B, T)`` per-row decisions of a sampler that takes them (`Decision` values of an
        `EntropixSampler`) when ``return_metrics``, else None.
    metrics : dict[str, Tensor] or None
        ``(B, T)`` per-step metrics (when ``return_metrics``): the sampler's `SamplerOutput.metrics`, with
        ``entropy`` and ``varentropy`` of the logits in nats when the sampler did not report them.
    """

    sequences: Tensor
    new_tokens: Tensor
    generated: Tensor
    decisions: Tensor | None = None
    metrics: dict[str, Tensor] | None = None


def _cache_name(model: Callable[..., object]) -> str:
    """``"cache"`` when the model's forward takes a parameter of that name, else ``"past_key_values"``."""
    try:
        params = inspect.signature(getattr(model, "forward", model)).parameters
    except (TypeError, ValueError):  # a callable without an introspectable signature
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _eos_ids(eos_token_id: int | Sequence[int] | None, device: torch.device) -> Tensor | None:
    if eos_token_id is None:
        return None
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if not ids or any(not isinstance(i, int) or i < 0 for i in ids):
        raise ValueError(
            f"eos_token_id must be a token id >= 0 or a non-empty list of them, got {eos_token_id!r}"
        )
    return torch.tensor(ids, device=device)


def _vocab_size(model: Callable[..., object]) -> int | None:
    """The model's vocabulary size when it exposes one (its config, else its input embeddings)."""
    config = getattr(model, "config", None)
    if config is not None:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        size = getattr(text, "vocab_size", None)
        if isinstance(size, int) and not isinstance(size, bool):
            return size
    embeddings = getattr(model, "get_input_embeddings", None)
    if callable(embeddings):
        size = getattr(embeddings(), "num_embeddings", None)
        if isinstance(size, int):
            return size
    return None


@torch.no_grad()
def generate(
    model: Callable[..., object],
    input_ids: Tensor,
    sampler: Sampler | Callable[..., Tensor],
    max_new_tokens: int,
    *,
    attention_mask: Tensor | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    generator: Generators = None,
    seeds: Tensor | None = None,
    return_metrics: bool = False,
    use_cache: bool = True,
    on_step: Callable[[GenerateStep], object] | None = None,
) -> GenerateOutput:
    """Decode up to `max_new_tokens` tokens per row with a KV cache.

    Parameters
    ----------
    model : callable
        A causal LM following the calling convention of this module (any Hugging Face
        ``*ForCausalLM``, or an entropic model).
    input_ids : Tensor
        ``(B, L)`` int64 prompts, ``L >= 1``, left-padded when their lengths differ; ids in ``[0, V)``.
    sampler : Sampler or callable
        A `Sampler` built once (`entropic.sampling.build_sampler`): its trusted ``step`` gets the logits and
        a `StepContext` with the randomness, plus the model's ``attention_metrics`` and each row's previous
        token when its ``needs`` name them. Or any callable ``logits (B, V) -> tokens (B,)``, e.g.
        ``functools.partial(sample, top_p=0.9)``, which receives ``generator=`` when one is given,
        ``seeds=`` and ``step=`` when seeds are (`as_sampler`).
    max_new_tokens : int
        Number of decoding steps at most (fewer when every row has emitted an EOS).
    attention_mask : Tensor, optional
        ``(B, L)`` 1 for real tokens, 0 for left padding; all ones when omitted.
    eos_token_id : int or list of int, optional
        A row stops at the first of these it emits.
    generator : torch.Generator or sequence of B generators, optional
        Randomness for the sampler; it advances at each step.
    seeds : Tensor, optional
        ``(B,)`` integer seeds, one per row, instead of `generator`: the sampler draws step ``t`` (0 for the
        first new token) from ``(seeds[b], t)``, counter-based (`entropic.sampling.sample`), so a row's
        tokens depend on its own prompt and seed only, and CUDA logits take the fused sampling kernel.
    return_metrics : bool
        Also return per-step metrics and decisions.
    use_cache : bool
        False recomputes the whole sequence at every step (a reference for the cached path).
    on_step : callable, optional
        Called after each step with a `GenerateStep` (that step's tokens, decisions and metrics, on the
        model's device), e.g. to print tokens as they are decided. The loop itself reads no device scalar
        (beyond the EOS test) whether or not one is given; whatever the callback reads (``.tolist()``)
        waits for the device at that step.

    Returns
    -------
    GenerateOutput

    Examples
    --------
    >>> from entropic.sampling import build_sampler
    >>> out = generate(model, prompt_ids, build_sampler("temperature", temperature=0.7), 20)  # doctest: +SKIP
    """
    if input_ids.dim() != 2 or input_ids.dtype != torch.long:
        raise ValueError(
            "input_ids must be a (B, L) int64 tensor, "
            f"got shape {tuple(input_ids.shape)} and dtype {input_ids.dtype}"
        )
    if 0 in input_ids.shape:
        raise ValueError(
            f"input_ids must hold at least one row of at least one token (B, L >= 1), "
            f"got shape {tuple(input_ids.shape)}"
        )
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    batch, device = input_ids.shape[0], input_ids.device
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
            f"got {tuple(attention_mask.shape)}"
        )
    attention_mask = attention_mask.to(device=device, dtype=torch.long)
    # One read of the device for every check of the inputs' values.
    last_real, unpadded, low, high = torch.stack(
        [attention_mask[:, -1].all().long(), attention_mask.all().long(), input_ids.min(), input_ids.max()]
    ).tolist()
    if not last_real:
        raise ValueError(
            "attention_mask: prompts must be left-padded (every row's last position a real token)"
        )
    vocab = _vocab_size(model)
    if low < 0 or (vocab is not None and high >= vocab):
        bad, expected = (low, ">= 0") if low < 0 else (high, f"< the model's vocabulary size {vocab}")
        raise ValueError(f"input_ids must be token ids {expected}, got {bad}")
    eos = _eos_ids(eos_token_id, device)
    if seeds is not None and generator is not None:
        raise ValueError("generate: pass either generator or seeds, not both")
    if seeds is not None and (not isinstance(seeds, Tensor) or seeds.shape != (batch,)):
        shape = tuple(seeds.shape) if isinstance(seeds, Tensor) else type(seeds).__name__
        raise ValueError(f"generate: seeds must be a tensor of shape ({batch},), one per row, got {shape}")
    sampler = as_sampler(sampler)
    check_vocab_size = getattr(sampler, "check_vocab_size", None)
    if vocab is not None and check_vocab_size is not None:
        check_vocab_size(vocab)
    needs_attention, needs_prev = "attention" in sampler.needs, "prev_tokens" in sampler.needs

    mask = attention_mask
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    sequences = input_ids
    step_ids, step_pos, cache = input_ids, positions, None
    cache_name = _cache_name(model)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens_out: list[Tensor] = []
    generated: list[Tensor] = []
    decisions: list[Tensor] = []
    metrics: list[dict[str, Tensor]] = []
    for step in range(max_new_tokens):
        out = model(
            input_ids=step_ids if use_cache else sequences,
            attention_mask=None if unpadded else mask,  # no mask: the attention kernels take none
            position_ids=step_pos if use_cache else positions,
            use_cache=use_cache,
            **{cache_name: cache},
        )
        logits = out.logits[:, -1, :]
        if step == 0 and vocab is None and check_vocab_size is not None:  # V known from the logits only
            check_vocab_size(logits.shape[-1])
        cache = getattr(out, cache_name) if use_cache else None
        context = StepContext(
            attention=getattr(out, "attention_metrics", None) if needs_attention else None,
            prev_tokens=sequences[:, -1] if needs_prev else None,
            generator=generator,
            seeds=seeds,
            step=step,
        )
        result = sampler.step(logits, context)
        tokens = result.tokens
        step_metrics = dict(result.metrics)
        if (return_metrics or on_step is not None) and "entropy" not in step_metrics:
            # the trusted op: the logits are the model's own, checked by nobody here (no host sync)
            step_metrics["entropy"], step_metrics["varentropy"], _ = entropy_stats(logits, fn="generate")
        if return_metrics:
            metrics.append(step_metrics)
            if result.decisions is not None:
                decisions.append(result.decisions)
        tokens = tokens.to(device=device, dtype=torch.long)
        generated.append(~finished)
        if eos is not None:
            tokens = torch.where(finished, eos[0], tokens)
            finished = finished | torch.isin(tokens, eos)
        tokens_out.append(tokens)
        if on_step is not None:
            on_step(GenerateStep(step, tokens, generated[-1], result.decisions, step_metrics))
        sequences = torch.cat([sequences, tokens[:, None]], dim=-1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        step_ids, step_pos = tokens[:, None], step_pos[:, -1:] + 1
        positions = torch.cat([positions, step_pos], dim=-1)
        if eos is not None and bool(finished.all()):
            break

    new_tokens = torch.stack(tokens_out, 1) if tokens_out else input_ids.new_zeros(batch, 0)
    gen_mask = (
        torch.stack(generated, 1) if generated else torch.zeros(batch, 0, dtype=torch.bool, device=device)
    )
    if not return_metrics:
        return GenerateOutput(sequences, new_tokens, gen_mask)
    stacked = {k: torch.stack([m[k] for m in metrics], 1) for k in metrics[0]} if metrics else {}
    return GenerateOutput(
        sequences,
        new_tokens,
        gen_mask,
        decisions=torch.stack(decisions, 1) if decisions else None,
        metrics=stacked,
    )
