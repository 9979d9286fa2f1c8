"""vLLM integration: entropic's samplers as a vLLM logits processor, with per-request parameters.

Any sampler of the registry (`entropic.sampling.build_sampler`: Entropix, the entropy target, mirostat,
top-nσ, p-less, XTC, dynamic temperature, …) chooses the next token of the requests that ask for it,
inside vLLM's engine. A request opts in through ``SamplingParams.extra_args`` (``vllm_xargs`` in a request
to the OpenAI-compatible server)::

    SamplingParams(max_tokens=64, extra_args={"entropic_sampler": "entropix", "entropic_seed": 7,
                                              "entropic_temperature": 0.5})

* ``entropic_sampler``: a registry name; without it the request is left to vLLM's own sampling.
* ``entropic_<param>``: a parameter of that sampler (``entropic_mirostat_tau``, ``entropic_top_n_sigma``, …);
  checked when the request is admitted (`EntropicLogitsProcessor.validate_params`: a bad value fails the
  request with the sampler's own error, an HTTP 400 from the server).
* ``entropic_seed``: the request's seed (default ``SamplingParams.seed``; with neither, a random one drawn
  when the request joins). The draw at output position t is entropic's counter-based draw of
  ``(seed, t)``: the tokens equal those of `entropic.sampling.generate` with ``seeds=`` on the same logits.
* ``entropic_tag``: a label written with the request's metrics (below).

**How it composes with vLLM's sampling.** The processor returns, for each opted-in row, 0 at the token its
sampler chose and ``-inf`` everywhere else, so whatever runs after it (penalties, the request's temperature,
top-k, top-p, min-p, greedy or random) can only keep that token: the entropic sampler's own parameters
(its temperature included, ``entropic_temperature``) decide, and the request's temperature, top-k, top-p and
min-p have no effect on those rows. It sees the raw logits: the legacy model runner (the one vLLM's CPU
wheel loads: the V2 model runner needs Triton on the device) applies processors that are not argmax-invariant
before penalties and temperature; the logprobs vLLM returns (``logprobs_mode="raw_logprobs"``, its default)
are those of the raw model distribution. Rows are grouped by sampler configuration and output position;
each group is one trusted sampler step (`entropic.sampling.protocol`), so a batch of requests with the same
settings costs one step. Stateful samplers (those with a ``reset`` method: mirostat, adaptive-p) keep one
instance per request, which is reset at its first output position. Entropix runs without attention
statistics here (vLLM does not expose the attention weights): its attention terms are 0.

**Per-token entropy and varentropy.** With the environment variable ``ENTROPIC_VLLM_METRICS`` set to a file
path in the engine's environment, the processor appends one JSON line per opted-in request and step:
``{"tag", "seed", "step", "token", "entropy", "varentropy", ...}`` (nats, of the raw logits) plus the
sampler's own metrics (Entropix's ``decision`` and temperature, mirostat's μ, …). Writing them reads the
step's results back to the host; without the variable nothing is written or read.

Load it with ``LLM(model, logits_processors=[EntropicLogitsProcessor])`` or
``vllm serve MODEL --logits-processors entropic.integrations.vllm:EntropicLogitsProcessor``. It implements the
legacy interface: on a GPU, where vLLM 0.32 runs its V2 model runner by default (whose processors have
another interface, and which refuses this one at start-up), set ``VLLM_USE_V2_MODEL_RUNNER=0``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from entropic.ops.entropy.dispatch import entropy_stats
from entropic.sampling.draw import FilterSampler
from entropic.sampling.entropix import EntropixConfig
from entropic.sampling.protocol import Sampler, StepContext
from entropic.sampling.registry import SAMPLERS, build_sampler

if TYPE_CHECKING:
    from vllm.config import VllmConfig

__all__ = ["METRICS_ENV", "PREFIX", "EntropicLogitsProcessor", "sampler_settings"]

PREFIX = "entropic_"
METRICS_ENV = "ENTROPIC_VLLM_METRICS"
_RESERVED = ("sampler", "seed", "tag")  # the keys after PREFIX that are not sampler parameters


@dataclass(frozen=True)
class Settings:
    """A request's entropic settings, read from its ``extra_args``."""

    name: str
    params: tuple[tuple[str, Any], ...]
    seed: int | None
    tag: str | None

    def build(self) -> Sampler:
        """The sampler these settings name, built (and checked) by the registry; its errors name the request's
        ``entropic_sampler``."""
        try:
            return build_sampler(self.name, **dict(self.params))
        except (TypeError, ValueError) as error:
            raise ValueError(f"extra_args: {PREFIX}sampler={self.name!r}: {error}") from error


def sampler_settings(extra_args: dict[str, Any] | None) -> Settings | None:
    """The entropic settings of a request's ``extra_args``, None when it names no ``entropic_sampler``;
    the sampler is built once to check its parameters (what admission runs).

    Raises
    ------
    ValueError
        An unknown sampler, a parameter the sampler refuses (its own message), a seed that is not an
        integer in ``[0, 2**63)``, or ``entropic_*`` keys without ``entropic_sampler``.
    """
    settings = _read_settings(extra_args)
    if settings is not None:
        settings.build()
    return settings


def _read_settings(extra_args: dict[str, Any] | None) -> Settings | None:
    """`sampler_settings` without building the sampler: the keys, the name and the seed checked."""
    args = {k[len(PREFIX) :]: v for k, v in (extra_args or {}).items() if k.startswith(PREFIX)}
    if "sampler" not in args:
        if args:
            raise ValueError(
                f"extra_args: {', '.join(PREFIX + k for k in sorted(args))} given without "
                f"{PREFIX}sampler (one of {', '.join(SAMPLERS)})"
            )
        return None
    name, seed, tag = args.pop("sampler"), args.pop("seed", None), args.pop("tag", None)
    args = {k: _as_switch(v) if k in _switches() else v for k, v in args.items()}
    if name not in SAMPLERS:
        raise ValueError(f"extra_args: {PREFIX}sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ValueError(f"extra_args: {PREFIX}seed must be an integer in [0, 2**63), got {seed!r}")
    return Settings(name, tuple(sorted(args.items())), seed, None if tag is None else str(tag))


@functools.cache
def _switches() -> frozenset[str]:
    """The samplers' on/off parameters (``p_less``, Entropix's ``enable_*``): the server's ``vllm_xargs``
    carries numbers and strings only, so 1/0 and "true"/"false" stand for them."""
    names = {name for name, p in inspect.signature(FilterSampler).parameters.items() if p.default is False}
    names |= {f.name for f in dataclasses.fields(EntropixConfig) if isinstance(f.default, bool)}
    return frozenset(names | {"p_less"})


def _as_switch(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value  # anything else: the sampler's own check names it


@dataclass
class _Request:
    """One opted-in request of the persistent batch."""

    settings: Settings
    seed: int
    sampler: Sampler  # shared by the requests of one configuration, or the request's own when stateful
    prompt: list[int] | None
    output: list[int]  # vLLM's running list of the request's output tokens (a reference, kept current)
    stateful: bool = field(default=False)

    @property
    def step(self) -> int:
        return len(self.output)

    def prev_token(self) -> int:
        return self.output[-1] if self.output else (self.prompt[-1] if self.prompt else 0)


class EntropicLogitsProcessor(LogitsProcessor):
    """entropic's samplers in vLLM's engine: the legacy model-runner interface (`vllm.v1.sample`).

    See the module docstring for the per-request arguments and how the processor composes with vLLM's own
    sampling.
    """

    def __init__(self, vllm_config: VllmConfig | None, device: torch.device, is_pin_memory: bool) -> None:
        self.device = torch.device(device)
        self.requests: dict[int, _Request] = {}
        self._shared: dict[Settings, Sampler] = {}
        path = os.environ.get(METRICS_ENV)
        self._metrics = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 (lives with us)

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        sampler_settings(sampling_params.extra_args)

    def is_argmax_invariant(self) -> bool:
        return False  # it chooses the token: greedy requests see its choice too

    def _add(self, index: int, params: SamplingParams, prompt: list[int] | None, output: list[int]) -> None:
        settings = _read_settings(params.extra_args)  # checked at admission; built below, once
        if settings is None:
            self.requests.pop(index, None)
            return
        seed = settings.seed if settings.seed is not None else params.seed
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        sampler = self._shared.get(settings)
        if sampler is None:
            sampler = settings.build()
        stateful = hasattr(sampler, "reset")
        if not stateful:
            self._shared[settings] = sampler
        self.requests[index] = _Request(settings, seed % 2**63, sampler, prompt, output, stateful)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.requests.pop(index, None)
        for index, params, prompt, output in batch_update.added:
            self._add(index, params, prompt, output)
        for a, b, direction in batch_update.moved:
            first, second = self.requests.pop(a, None), self.requests.pop(b, None)
            if first is not None:
                self.requests[b] = first
            if second is not None and direction == MoveDirectionality.SWAP:
                self.requests[a] = second

    def apply(self, logits: Tensor) -> Tensor:
        if not self.requests:
            return logits
        groups: dict[tuple[object, int], list[int]] = defaultdict(list)
        for index, request in self.requests.items():
            owner = id(request.sampler) if request.stateful else request.settings
            groups[(owner, request.step)].append(index)
        for (_, step), rows in groups.items():
            requests = [self.requests[i] for i in rows]
            index = torch.tensor(rows, device=logits.device)
            sampler = requests[0].sampler
            context = StepContext(
                prev_tokens=(
                    torch.tensor([r.prev_token() for r in requests], device=logits.device)
                    if "prev_tokens" in sampler.needs
                    else None
                ),
                seeds=torch.tensor([r.seed for r in requests], device=logits.device),
                step=step,
            )
            own = logits.index_select(0, index)
            out = sampler.step(own, context)
            if self._metrics is not None:
                self._write_metrics(requests, step, own, out)
            chosen = torch.full_like(own, -math.inf).scatter_(-1, out.tokens.view(-1, 1).long(), 0.0)
            logits.index_copy_(0, index, chosen)
        return logits

    def _write_metrics(self, requests: list[_Request], step: int, logits: Tensor, out: object) -> None:
        entropy, varentropy, _ = entropy_stats(logits, fn="EntropicLogitsProcessor")
        columns = dict(out.metrics) | {"entropy": entropy, "varentropy": varentropy}
        if out.decisions is not None:
            columns["decision"] = out.decisions
        values = {k: v.detach().double().cpu().tolist() for k, v in columns.items()}
        tokens = out.tokens.cpu().tolist()
        for i, request in enumerate(requests):
            line = {"tag": request.settings.tag, "sampler": request.settings.name, "seed": request.seed}
            line |= {"step": step, "token": tokens[i]} | {k: v[i] for k, v in values.items()}
            self._metrics.write(json.dumps(line) + "\n")
        self._metrics.flush()
