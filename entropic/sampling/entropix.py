"""The Entropix sampler, per row: entropy and varentropy of the logits choose a decoding strategy.

Entropix (github.com/xjdr-alt/entropix) reads the next-token distribution's entropy ``H`` and
varentropy ``V`` (with statistics of the attention) and picks one of five branches:

=============  ==================================  =================================================
decision       condition (first match wins)        action
=============  ==================================  =================================================
ARGMAX         ``H < low_H`` and ``V < low_V``     the most probable token
THINK          ``H > high_H`` and ``V < low_V``    insert `thinking_token_id` (see below)
EXPLORE        ``H < high_H`` and ``V > high_V``   sample hotter, with a top-k widened by head disagreement
RESAMPLE       ``H > medium_H`` and ``V > high_V`` sample at ``T >= 2`` with a top-p narrowed by attention
ADAPTIVE       otherwise                           best of n draws with parameters set by all the metrics
=============  ==================================  =================================================

What this implementation fixes relative to Entropix:

* decisions are taken **per row** with masks (Entropix averaged H and V over the batch, so one row
  decided for all); every row's parameters are tensors and one draw serves the whole batch;
* the draw is exact (`entropic.sampling.draw`), and min-p is applied (Entropix computed it, then
  dropped it);
* the random stream advances at every call (Entropix reused one PRNG key at every step);
* the thinking token is configured (`thinking_token_id`, no default; Entropix hard-coded id 2564 of the
  Llama 3 tokenizer) and is inserted only when the previous token of *that row* is not already it;
* thresholds and coefficients live in `EntropixConfig`, in one unit (nats by default, see below);
* attention statistics are inputs (`AttentionMetrics`) computed over the real keys by the attention
  code, never over a zero-padded cache;
* the ADAPTIVE score depends on the sample (Entropix's confidence term is the same for all candidates).

Units. Entropix divides the logit entropy by ln 2 (bits) and measures varentropy in bits², attention
entropy with log2, and then adds bits to bits² (``H + V``) in its adaptive formulas. Here every
threshold is in nats (nats² for varentropy) and every coefficient is per nat (per nat²), with ``H`` and
``V`` terms carrying separate coefficients; the defaults are Entropix's constants converted from bits
(threshold × ln 2 or × ln² 2, coefficient ÷ ln 2 or ÷ ln² 2). ``EntropixConfig().converted(2)`` gives
back Entropix's numbers exactly, with ``base=2``. Coefficients of the agreement (a probability) and of the
interaction strength (pre-softmax score units) carry no entropy unit and are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import IntEnum
from typing import ClassVar, Literal

import torch
from torch import Tensor

from entropic._validation import check_base, check_logits, check_param
from entropic.ops.entropy.dispatch import entropy_stats
from entropic.sampling.draw import Generators, draw
from entropic.sampling.filters import SamplingParams
from entropic.sampling.protocol import SamplerOutput, StepContext
from entropic.types import EntropixAttentionMetrics

_LN2 = math.log(2.0)


class Decision(IntEnum):
    """The branch a row took; values index `EntropixSampler`'s per-branch parameter tables."""

    ARGMAX = 0
    THINK = 1
    EXPLORE = 2
    RESAMPLE = 3
    ADAPTIVE = 4


# The Entropix attention signals at the last query, ``(B,)`` each, as the attention code computes them over
# the real keys (`entropic.attention.entropix_attention_metrics`): one type for producer and consumer.
AttentionMetrics = EntropixAttentionMetrics


def as_attention_metrics(
    stats: AttentionMetrics | Mapping[str, Tensor], batch: int, check_finite: bool = True
) -> AttentionMetrics:
    """Check `stats` (an `AttentionMetrics` or a mapping with its four field names) against the batch;
    their values too (one host sync) unless ``check_finite=False`` (the trusted step)."""
    names = [f.name for f in fields(AttentionMetrics)]
    if isinstance(stats, Mapping):
        missing = [n for n in names if n not in stats]
        if missing:
            raise ValueError(f"attn_stats is missing {missing}; expected the keys {names}")
        stats = AttentionMetrics(**{n: stats[n] for n in names})
    else:
        raise TypeError(f"attn_stats must be AttentionMetrics or a mapping, got {type(stats).__name__}")
    for n in names:
        value = getattr(stats, n)
        if not isinstance(value, Tensor) or value.shape != (batch,):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"attn_stats.{n} must be a tensor of shape ({batch},), got {shape}")
        if check_finite and not bool(torch.isfinite(value).all()):
            raise ValueError(f"attn_stats.{n} must be finite")
    return stats


# Unit power of each field, in nats: +1 an entropy, +2 a varentropy, -1 per entropy, -2 per varentropy.
def _unit(power: int) -> dict[str, int]:
    return {"power": power}


@dataclass
class EntropixConfig:
    """Thresholds and coefficients of `EntropixSampler` (hydra-friendly: plain numbers only).

    Entropy thresholds are in nats (nats² for varentropy) and coefficients per nat, or in `base` units
    when `base` is set (``converted`` rewrites a config in another base). Defaults: Entropix's
    ``SamplerConfig`` (xjdr-alt/entropix, ``torch_sampler.py``/``sampler.py``), converted from bits;
    the upstream value is given in each comment. Inconsistent thresholds fail at construction.
    """

    base: float | None = None  # None: nats; 2: bits
    # Base sampling parameters (upstream temp, top_p, top_k, min_p).
    temperature: float = 0.666
    top_p: float = 0.90
    top_k: int = 27
    min_p: float = 0.03
    # State thresholds (upstream low_ent_thresh 0.1, med_ent_thresh 3.0, high_ent_thresh 5.0 bits;
    # low_vent_thresh 0.1, high_vent_thresh 5.0 bits²).
    low_entropy: float = field(default=0.1 * _LN2, metadata=_unit(1))
    medium_entropy: float = field(default=3.0 * _LN2, metadata=_unit(1))
    high_entropy: float = field(default=5.0 * _LN2, metadata=_unit(1))
    low_varentropy: float = field(default=0.1 * _LN2**2, metadata=_unit(2))
    high_varentropy: float = field(default=5.0 * _LN2**2, metadata=_unit(2))
    # Per-state switches: a disabled state is never chosen; its rows fall to the next matching state.
    enable_argmax: bool = True
    enable_think: bool = True
    enable_explore: bool = True
    enable_resample: bool = True
    # THINK (upstream "high entropy, low varentropy"). With no id, or when the row's previous token
    # already is the id, the row samples at T = min(think_max_temperature,
    # temperature · (offset + coef · attention entropy)) (upstream helv_attn_ent_offset 1.3,
    # helv_attn_ent_coef 0.2 per bit, cap 1.5).
    thinking_token_id: int | None = None
    think_attn_entropy_offset: float = 1.3
    think_attn_entropy_coef: float = field(default=0.2 / _LN2, metadata=_unit(-1))
    think_max_temperature: float = 1.5
    # EXPLORE (upstream "low entropy, high varentropy"): T = min(cap, temperature · (1.2 + 0.3 · interaction
    # strength)), top_k = max(5, floor(top_k · (1 + 0.5 · (1 - agreement)))).
    explore_interaction_offset: float = 1.2
    explore_interaction_coef: float = 0.3
    explore_max_temperature: float = 1.5
    explore_top_k_agreement_coef: float = 0.5
    explore_min_top_k: int = 5
    # RESAMPLE (upstream "high entropy, high varentropy"): T = max(2, temperature · (2.0 + 0.5 per bit² ·
    # attention varentropy)), top_p = max(0.5, top_p - 0.2 per bit · attention entropy).
    resample_attn_varentropy_offset: float = 2.0
    resample_attn_varentropy_coef: float = field(default=0.5 / _LN2**2, metadata=_unit(-2))
    resample_min_temperature: float = 2.0
    resample_attn_entropy_coef: float = field(default=0.2 / _LN2, metadata=_unit(-1))
    resample_min_top_p: float = 0.5
    # ADAPTIVE (upstream ada_*; the upstream coefficient of "H + V" is split into an H and a V term):
    # T = temperature · (1 + 0.3 (H + V) + 0.2 (attn H + attn V) - 0.2 agreement),
    # top_p = clip(top_p · (1 + 0.1 attn V), 0.1, 1), top_k = clip(round(top_k · (1 + 0.3 interaction
    # - 0.2 agreement)), 1, 100), min_p = clip(min_p · (1 - 0.5 (H + V)), 0.01, 0.5), n = 5 draws.
    n_adaptive_samples: int = 5
    ada_temp_entropy: float = field(default=0.3 / _LN2, metadata=_unit(-1))
    ada_temp_varentropy: float = field(default=0.3 / _LN2**2, metadata=_unit(-2))
    ada_temp_attn_entropy: float = field(default=0.2 / _LN2, metadata=_unit(-1))
    ada_temp_attn_varentropy: float = field(default=0.2 / _LN2**2, metadata=_unit(-2))
    ada_temp_agreement: float = 0.2
    ada_top_p_attn_varentropy: float = field(default=0.1 / _LN2**2, metadata=_unit(-2))
    ada_min_top_p: float = 0.1
    ada_top_k_interaction: float = 0.3
    ada_top_k_agreement: float = 0.2
    ada_max_top_k: int = 100
    ada_min_p_entropy: float = field(default=0.5 / _LN2, metadata=_unit(-1))
    ada_min_p_varentropy: float = field(default=0.5 / _LN2**2, metadata=_unit(-2))
    ada_min_min_p: float = 0.01
    ada_max_min_p: float = 0.5
    # Candidate score (ours; see EntropixSampler): log q(y) - ada_score_typicality · |-log p(y) - H(p)|.
    ada_score_typicality: float = 1.0

    def __post_init__(self) -> None:
        check_base(self.base)
        check_param(self.temperature, "temperature", 0.0, math.inf, low_open=True, high_open=True)
        check_param(self.top_p, "top_p", 0.0, 1.0, low_open=True)
        check_param(self.top_k, "top_k", 1, math.inf, integer=True)
        check_param(self.min_p, "min_p", 0.0, 1.0)
        check_param(self.low_entropy, "low_entropy", 0.0, math.inf, high_open=True)
        check_param(self.low_varentropy, "low_varentropy", 0.0, math.inf, high_open=True)
        for low, high in (
            ("low_entropy", "medium_entropy"),
            ("medium_entropy", "high_entropy"),
            ("low_varentropy", "high_varentropy"),
        ):
            if not getattr(self, low) < getattr(self, high):
                a, b = getattr(self, low), getattr(self, high)
                raise ValueError(f"EntropixConfig: {low} must be < {high}, got {a} >= {b}")
        if self.thinking_token_id is not None:
            check_param(self.thinking_token_id, "thinking_token_id", 0, math.inf, integer=True)
        check_param(self.n_adaptive_samples, "n_adaptive_samples", 1, math.inf, integer=True)
        for name in ("think_max_temperature", "explore_max_temperature", "resample_min_temperature"):
            check_param(getattr(self, name), name, 0.0, math.inf, low_open=True, high_open=True)
        check_param(self.explore_min_top_k, "explore_min_top_k", 1, math.inf, integer=True)
        check_param(self.ada_max_top_k, "ada_max_top_k", 1, math.inf, integer=True)
        check_param(self.resample_min_top_p, "resample_min_top_p", 0.0, 1.0, low_open=True)
        check_param(self.ada_min_top_p, "ada_min_top_p", 0.0, 1.0, low_open=True)
        check_param(self.ada_min_min_p, "ada_min_min_p", 0.0, 1.0)
        check_param(self.ada_max_min_p, "ada_max_min_p", self.ada_min_min_p, 1.0)
        check_param(self.ada_score_typicality, "ada_score_typicality", 0.0, math.inf, high_open=True)

    def converted(self, base: float | None) -> EntropixConfig:
        """The same sampler with thresholds and coefficients expressed in `base` units (None: nats)."""
        old, new = check_base(self.base) or 1.0, check_base(base) or 1.0
        changes: dict[str, object] = {"base": base}
        for f in fields(self):
            power = f.metadata.get("power")
            if power is not None:
                changes[f.name] = getattr(self, f.name) * (old / new) ** power
        return replace(self, **changes)


def _by_decision(decisions: Tensor, table: Mapping[Decision, Tensor | float]) -> Tensor:
    """Per-row value of the row's decision: ``table[decisions[b]][b]`` (every Decision in `table`)."""
    batch = decisions.shape[0]
    columns = [torch.as_tensor(table[d], device=decisions.device).expand(batch) for d in Decision]
    stacked = torch.stack(torch.broadcast_tensors(*columns))  # (5, B)
    return stacked.gather(0, decisions.unsqueeze(0)).squeeze(0)


class EntropixSampler:
    """Entropy-varentropy state machine over the next-token logits, decided per row.

    ``sampler(logits, attn_stats=None, *, generator=None, prev_tokens=None) -> SamplerOutput`` checks its
    arguments; ``sampler.step(logits, context)`` (the `Sampler` protocol, what `generate` calls) trusts
    them and reads no device scalar.

    Every branch's sampling parameters are computed for every row as ``(B,)`` tensors and the row's
    decision selects among them (``torch.where``/``gather``, no Python branch over rows, no host sync).
    All rows then share one filtered distribution ``q`` (temperature, top-k, top-p, min-p with per-row
    parameters in a `SamplingParams`, `entropic.sampling.apply_filters`) and one draw (`draw`) of
    ``n_adaptive_samples`` candidates per row; ARGMAX rows take the argmax of the logits, THINK,
    EXPLORE and RESAMPLE rows their first candidate, and ADAPTIVE rows the candidate of best score

        score(y) = log q(y) - λ · |-log p(y) - H(p)|,    λ = ada_score_typicality,

    the log-probability of ``y`` under the adapted distribution ``q`` (best-of-n favours what ``q`` trusts)
    minus a local-typicality penalty under the model's own ``p`` (Meister et al.): candidates whose
    surprisal is far from the expected surprisal ``H(p)`` lose, which keeps best-of-n from collapsing
    onto the mode of ``q``. Entropix scored with ``log q(y)`` plus a confidence term that is the same
    for every candidate of a row, so only its first term could ever change the choice.

    Parameters
    ----------
    config : EntropixConfig, optional
        Thresholds and coefficients (defaults: Entropix's, in nats).
    impl : {"auto", "torch", "triton"}
        The draw's implementation at every `step` (see ``__call__``).

    Examples
    --------
    >>> sampler = EntropixSampler(EntropixConfig(thinking_token_id=3))
    >>> logits = torch.stack([torch.tensor([20.0, 0.0, 0.0, 0.0]), torch.zeros(4)])
    >>> out = sampler(logits, generator=torch.Generator().manual_seed(0))
    >>> [Decision(d).name for d in out.decisions.tolist()]
    ['ARGMAX', 'ADAPTIVE']
    """

    needs: ClassVar[frozenset[str]] = frozenset({"attention", "prev_tokens"})

    def __init__(
        self, config: EntropixConfig | None = None, *, impl: Literal["auto", "torch", "triton"] = "auto"
    ) -> None:
        self.config = config if config is not None else EntropixConfig()
        if not isinstance(self.config, EntropixConfig):
            raise TypeError(f"config must be an EntropixConfig, got {type(self.config).__name__}")
        self.impl = impl
        c = self.config
        # Every branch's top-k is at most this (EXPLORE's with the agreement in its range [0, 2]), so the
        # top-k filter never reads the largest per-row k back from the device.
        explore = math.ceil(c.top_k * (1 + abs(c.explore_top_k_agreement_coef))) + 1
        self._explore_max_top_k = max(explore, c.explore_min_top_k)
        self._top_k_max = max(c.top_k, self._explore_max_top_k, c.ada_max_top_k)

    def __repr__(self) -> str:
        return f"EntropixSampler({self.config!r})"

    def check_vocab_size(self, vocab_size: int) -> None:
        """Raise ValueError when `thinking_token_id` is not a token of a vocabulary of `vocab_size` ids
        (`generate` calls it once with the model's size, ``__call__`` with the logits' ``V``)."""
        token = self.config.thinking_token_id
        if token is not None and token >= vocab_size:
            raise ValueError(
                f"thinking_token_id must be a token id < the vocabulary size V = {vocab_size}, got {token}"
            )

    def decide(self, entropy: Tensor, varentropy: Tensor) -> Tensor:
        """``(B,)`` `Decision` of each row from its entropy and varentropy (config units)."""
        c = self.config
        states = (
            (Decision.ARGMAX, c.enable_argmax, (entropy < c.low_entropy) & (varentropy < c.low_varentropy)),
            (Decision.THINK, c.enable_think, (entropy > c.high_entropy) & (varentropy < c.low_varentropy)),
            (
                Decision.EXPLORE,
                c.enable_explore,
                (entropy < c.high_entropy) & (varentropy > c.high_varentropy),
            ),
            (
                Decision.RESAMPLE,
                c.enable_resample,
                (entropy > c.medium_entropy) & (varentropy > c.high_varentropy),
            ),
        )
        decisions = torch.full(entropy.shape, int(Decision.ADAPTIVE), dtype=torch.long, device=entropy.device)
        for state, enabled, condition in reversed(states):  # the first matching state wins
            if enabled:
                decisions = torch.where(condition, int(state), decisions)
        return decisions

    def parameters(
        self, logits: Tensor, attn_stats: AttentionMetrics | Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """Per-row decisions and sampling parameters, before any draw.

        Returns
        -------
        (decisions, params, metrics)
            ``(B,)`` `Decision` values; ``params`` maps temperature (0 for ARGMAX rows), top_k, top_p and
            min_p to ``(B,)`` tensors; ``metrics`` holds entropy, varentropy (config units) and the
            attention signals when given, as in `SamplerOutput`.
        """
        row_max = check_logits(logits, "EntropixSampler.parameters")
        attn = None if attn_stats is None else as_attention_metrics(attn_stats, logits.shape[0])
        decisions, params, metrics, _ = self._parameters(logits, row_max, attn)
        return decisions, params, metrics

    def _parameters(
        self, logits: Tensor, row_max: Tensor, attn_stats: AttentionMetrics | None
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor], Tensor]:
        """`parameters` for checked logits and attention signals, plus the log-partition of the logits
        (nats), (B,). Every parameter is in its filter's range by construction (clamped), for any finite
        signals: no check needed downstream."""
        c = self.config
        batch, device = logits.shape[0], logits.device
        log_base = check_base(c.base) or 1.0
        h_nats, v_nats, log_z = entropy_stats(logits, row_max=row_max, fn="EntropixSampler")
        h, v = h_nats / log_base, v_nats / log_base**2
        given = attn_stats is not None
        attn = attn_stats if given else AttentionMetrics.zeros(batch, device)
        a_h, a_v = attn.entropy.to(h) / log_base, attn.varentropy.to(h) / log_base**2
        agree, inter = attn.agreement.to(h), attn.interaction_strength.to(h)
        decisions = self.decide(h, v)

        t0 = c.temperature
        think_t = (t0 * (c.think_attn_entropy_offset + c.think_attn_entropy_coef * a_h)).clamp(
            0.0, c.think_max_temperature
        )
        explore_t = (t0 * (c.explore_interaction_offset + c.explore_interaction_coef * inter)).clamp(
            0.0, c.explore_max_temperature
        )
        explore_k = (
            (c.top_k * (1 + c.explore_top_k_agreement_coef * (1 - agree)))
            .floor()
            .clamp(c.explore_min_top_k, self._explore_max_top_k)
        )
        resample_t = (t0 * (c.resample_attn_varentropy_offset + c.resample_attn_varentropy_coef * a_v)).clamp(
            min=c.resample_min_temperature
        )
        resample_p = (c.top_p - c.resample_attn_entropy_coef * a_h).clamp(min=c.resample_min_top_p, max=1.0)
        ada_t = t0 * (
            1
            + c.ada_temp_entropy * h
            + c.ada_temp_varentropy * v
            + c.ada_temp_attn_entropy * a_h
            + c.ada_temp_attn_varentropy * a_v
            - c.ada_temp_agreement * agree
        )
        ada_p = (c.top_p * (1 + c.ada_top_p_attn_varentropy * a_v)).clamp(c.ada_min_top_p, 1.0)
        ada_k = (c.top_k * (1 + c.ada_top_k_interaction * inter - c.ada_top_k_agreement * agree)).round()
        ada_k = ada_k.clamp(1, c.ada_max_top_k)
        ada_min_p = (c.min_p * (1 - c.ada_min_p_entropy * h - c.ada_min_p_varentropy * v)).clamp(
            c.ada_min_min_p, c.ada_max_min_p
        )

        temperature = _by_decision(
            decisions,
            {
                Decision.ARGMAX: 0.0,
                Decision.THINK: think_t,
                Decision.EXPLORE: explore_t,
                Decision.RESAMPLE: resample_t,
                Decision.ADAPTIVE: ada_t.clamp_min(0.0),
            },
        )
        top_k = _by_decision(
            decisions,
            {
                Decision.ARGMAX: float(c.top_k),
                Decision.THINK: float(c.top_k),
                Decision.EXPLORE: explore_k,
                Decision.RESAMPLE: float(c.top_k),
                Decision.ADAPTIVE: ada_k,
            },
        ).long()
        top_p = _by_decision(
            decisions,
            {
                Decision.ARGMAX: c.top_p,
                Decision.THINK: c.top_p,
                Decision.EXPLORE: c.top_p,
                Decision.RESAMPLE: resample_p,
                Decision.ADAPTIVE: ada_p,
            },
        )
        min_p = torch.where(decisions == Decision.ADAPTIVE, ada_min_p, torch.full_like(ada_min_p, c.min_p))

        metrics = {"entropy": h, "varentropy": v}
        if given:
            metrics |= {
                "attn_entropy": a_h,
                "attn_varentropy": a_v,
                "agreement": agree,
                "interaction_strength": inter,
            }
        params = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p}
        return decisions, params, metrics, log_z

    def __call__(
        self,
        logits: Tensor,
        attn_stats: AttentionMetrics | Mapping[str, Tensor] | None = None,
        *,
        generator: Generators = None,
        prev_tokens: Tensor | None = None,
        seeds: Tensor | None = None,
        step: int = 0,
        impl: Literal["auto", "torch", "triton"] | None = None,
    ) -> SamplerOutput:
        """Choose one token per row, after checking the logits and the attention signals.

        Parameters
        ----------
        logits : Tensor
            ``(B, V)`` next-token logits.
        attn_stats : AttentionMetrics or mapping, optional
            ``(B,)`` attention statistics in nats (see `AttentionMetrics`); without them every attention
            term is 0 (the formulas reduce to their logit terms).
        generator : torch.Generator or sequence of B generators, optional
            Randomness, as in `entropic.sampling.sample`.
        prev_tokens : Tensor, optional
            ``(B,)`` previous token of each row; a THINK row whose previous token is the thinking token
            samples instead of inserting it again.
        seeds, step : optional
            Per-row integer seeds and the decoding position, instead of `generator`: each row's draws are a
            function of its own ``(seed, step)`` (candidate i of a row uses counter ``step · n + i``).
        impl : {"auto", "torch", "triton"}, optional
            With `seeds`, "triton" draws every candidate of every row in one launch of the fused sampling
            kernel (`entropic.ops.sampling.triton.fused_candidates`, which also returns their log q), and
            "auto" does so for CUDA logits. Without seeds the draw is PyTorch's. Either way the draw is
            `entropic.sampling.draw.draw`, the one draw path of the samplers. None: the sampler's own.

        Returns
        -------
        SamplerOutput
            ``tokens`` and ``decisions`` (`Decision` values), ``(B,)`` each; ``metrics``: ``entropy`` and
            ``varentropy`` of the logits (config units), ``temperature`` (the temperature the row was
            sampled at; 0 for ARGMAX and inserted thinking tokens), and the attention statistics
            ``attn_entropy``, ``attn_varentropy``, ``agreement``, ``interaction_strength`` when given.
        """
        row_max = check_logits(logits, "EntropixSampler")
        if logits.dim() != 2:
            raise ValueError(f"EntropixSampler: logits must have shape (B, V), got {tuple(logits.shape)}")
        batch = logits.shape[0]
        self.check_vocab_size(logits.shape[-1])
        if prev_tokens is not None and (
            not isinstance(prev_tokens, Tensor)
            or prev_tokens.shape != (batch,)
            or prev_tokens.is_floating_point()
            or prev_tokens.is_complex()
        ):
            got = (
                f"shape {tuple(prev_tokens.shape)} and dtype {prev_tokens.dtype}"
                if isinstance(prev_tokens, Tensor)
                else type(prev_tokens).__name__
            )
            raise ValueError(
                f"EntropixSampler: prev_tokens must be an integer tensor of shape (B,) = ({batch},), one "
                f"token per row, got {got}"
            )
        attn = None if attn_stats is None else as_attention_metrics(attn_stats, batch)
        context = StepContext(attn, prev_tokens, generator, seeds, step)
        return self._step(logits, context, self.impl if impl is None else impl, row_max)

    def step(self, logits: Tensor, context: StepContext) -> SamplerOutput:
        """The trusted step (the `Sampler` protocol): `__call__` without its checks; no host sync."""
        attn = context.attention
        if attn is not None:
            attn = as_attention_metrics(attn, logits.shape[0], check_finite=False)
        return self._step(logits, replace(context, attention=attn), self.impl)

    def _step(
        self, logits: Tensor, context: StepContext, impl: str, row_max: Tensor | None = None
    ) -> SamplerOutput:
        c = self.config
        if row_max is None:  # the public call has it from its check of the logits
            row_max = logits.detach().amax(-1)
        decisions, params, metrics, log_z = self._parameters(logits, row_max, context.attention)
        candidates, log_q = draw(
            logits,
            SamplingParams.trusted(**params, top_k_max=self._top_k_max),  # in range by construction
            n=c.n_adaptive_samples,
            generator=context.generator,
            seeds=context.seeds,
            step=context.step,
            impl=impl,
            log_q=True,
            fn="EntropixSampler",
            row_max=row_max,
        )  # (B, n) each; greedy (ARGMAX) rows: the argmax n times
        h_nats = metrics["entropy"] * (check_base(c.base) or 1.0)
        log_p = logits.gather(-1, candidates).to(log_q.dtype) - log_z.to(log_q.dtype).unsqueeze(-1)
        score = log_q - c.ada_score_typicality * (-log_p - h_nats.to(log_p).unsqueeze(-1)).abs()
        best = candidates.gather(-1, score.argmax(-1, keepdim=True)).squeeze(-1)
        tokens = torch.where(decisions == Decision.ADAPTIVE, best, candidates[:, 0])
        temperature = params["temperature"]

        if c.thinking_token_id is not None:
            insert = decisions == Decision.THINK
            if context.prev_tokens is not None:
                insert = insert & (context.prev_tokens.to(logits.device) != c.thinking_token_id)
            tokens = torch.where(insert, c.thinking_token_id, tokens)
            temperature = torch.where(insert, torch.zeros_like(temperature), temperature)

        metrics["temperature"] = temperature
        return SamplerOutput(tokens=tokens, decisions=decisions, metrics=metrics)
