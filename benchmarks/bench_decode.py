"""Decoding steps: one token per row through a GPT with a KV cache, then a sampler, as `generate` runs them.

A step is the model's forward on the B new tokens (every layer's attention against the cached keys) and the
sampler's choice of the next token. The model is a randomly initialised `entropic.models.GPT` (4 layers,
d_model 128, 4 heads: the ``small`` config) whose attention is softmax (α = 1), α-entmax at α = 1.5 or the
default entropy schedule; samplers are top-p sampling (p = 0.9) and the Entropix sampler. The cache holds
a prompt of ``--context`` tokens, so the attention of every step reads that many keys.

Metric ``ms/step``: the median (p20, p80) over repetitions of one decoding step from the same cache
(the cache is restored after each step, so every repetition decodes at the same length). Timing as every
script here: ``torch.utils.benchmark`` on the CPU, ``triton.testing.do_bench`` on CUDA.

Run: ``python benchmarks/bench_decode.py [--quick] [--device cpu]`` (appends to benchmarks/results.csv).
"""

from __future__ import annotations

import itertools
from functools import partial

import torch
from common import ResultWriter, measure, parser, progress, select, sizes

from entropic.attention import EntropySchedule
from entropic.models import GPT, AttentionConfig, GPTConfig
from entropic.sampling import EntropixSampler, generate, sample

ATTENTION = {"softmax": 1.0, "entmax-1.5": 1.5, "scheduled": EntropySchedule()}
SAMPLERS = {"top_p": lambda: partial(sample, top_p=0.9), "entropix": EntropixSampler}


def step_fn(model: GPT, prompt: torch.Tensor, sampler: object) -> partial:
    """One decoding step after `prompt`: `generate` for one new token on a copy of the prompt's cache."""
    with torch.no_grad():
        cache = model(input_ids=prompt[:, :-1], use_cache=True).past_key_values

    def step() -> torch.Tensor:
        saved = [(c.k, c.v) for c in cache]
        out = generate(_Cached(model, cache), prompt[:, -1:], sampler, 1)
        for c, (k, v) in zip(cache, saved, strict=True):
            c.k, c.v = k, v
        return out.new_tokens

    return step


class _Cached:
    """The model behind `generate`, resumed from a prefilled cache: the prompt's last token is the first
    input, at its true position, attending to the cached prompt."""

    def __init__(self, model: GPT, cache: list) -> None:
        self.model, self.cache = model, cache

    @torch.no_grad()
    def __call__(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, **_):
        past = len(self.cache[0])
        if past_key_values is None:  # generate's first call: resume from the prefilled cache
            past_key_values = self.cache
        b, n = input_ids.shape
        positions = torch.arange(past, past + n, device=input_ids.device).expand(b, n)
        return self.model(
            input_ids=input_ids, position_ids=positions, past_key_values=past_key_values, use_cache=True
        )


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batches", type=sizes, help="B values (default: 1,8; --quick: 2)")
    p.add_argument("--context", type=int, help="tokens in the cache (default: 512; --quick: 32)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default: %(default)s)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    batches = args.batches or ([2] if args.quick else [1, 8])
    context = args.context or (32 if args.quick else 512)
    writer = ResultWriter(args.output, device)
    samplers = select(SAMPLERS, args.providers)
    configs = list(itertools.product(ATTENTION.items(), samplers.items(), batches))

    def describe(config: tuple) -> str:
        (attention, _), (name, _), batch = config
        return f"{attention} {name} B={batch}"

    for (attention, alpha), (name, make), batch in progress(configs, "decode", args.time_budget, describe):
        torch.manual_seed(0)
        config = GPTConfig(n_layer=4, n_head=4, d_model=128, attention=AttentionConfig(alpha=alpha))
        model = GPT(config).to(device).eval()
        prompt = torch.randint(0, config.vocab_size, (batch, context + 1), device=device)
        t = measure(step_fn(model, prompt, make()), device, args.quick)
        shape = {"batch": batch, "heads": config.n_head, "seq_q": 1, "seq_k": context + 1}
        shape |= {"head_dim": config.d_model // config.n_head, "vocab": config.vocab_size, "causal": True}
        writer.add("decode_step", f"{attention}+{name}", "fwd", torch.float32, shape, "ms/step", t)
        print(f"{attention} + {name}, B = {batch}: {t.median:.3f} ms/step")


if __name__ == "__main__":
    main()
